//! When and how long to wait before the client tries a call again.

use std::time::Duration;

use rand::Rng;

use super::error::EcsError;

/// Jittered exponential backoff. Throttled calls start from a larger base because ECS counts
/// limits per minute: hammering again within a second only burns more quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub throttling_base: Duration,
    pub max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            throttling_base: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// Delay before retry number `retry` (1 for the first retry). The gateway's
    /// `x-acs-retry-after` wins when present; otherwise `d = base * 2^(retry-1)` capped at
    /// `max_delay`, drawn uniformly from `[d/2, d]` so that clients do not retry in lockstep.
    pub fn delay(&self, retry: u32, error: &EcsError) -> Duration {
        if let Some(asked) = error.retry_after() {
            return asked.min(self.max_delay);
        }
        let base = if error.is_throttling() {
            self.throttling_base
        } else {
            self.base
        };
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        let ceiling = base.saturating_mul(factor).min(self.max_delay);
        let floor = ceiling / 2;
        let spread = (ceiling - floor).as_millis() as u64;
        floor + Duration::from_millis(rand::rng().random_range(0..=spread))
    }
}

/// Actions that do the same thing when sent twice, so even an ambiguous failure (timeout,
/// 5xx: ECS may have acted) can be retried.
const IDEMPOTENT_ACTIONS: &[&str] = &[
    "CancelCopyImage",
    "CancelTask",
    "DeleteImage",
    "TagResources",
    "UntagResources",
];

/// Whether retrying `action` after `error` is both useful and safe. Reads and calls carrying
/// a `ClientToken` are idempotent; for anything else (e.g. `ExportImage`) only an explicit
/// refusal (throttling, service unavailable) proves ECS did nothing, so only those are retried.
pub fn retry_is_safe(action: &str, params: &[(String, String)], error: &EcsError) -> bool {
    if !error.is_transient() {
        return false;
    }
    let idempotent = action.starts_with("Describe")
        || action.starts_with("List")
        || IDEMPOTENT_ACTIONS.contains(&action)
        || params
            .iter()
            .any(|(k, v)| k == "ClientToken" && !v.is_empty());
    idempotent
        || error.is_throttling()
        || error
            .code()
            .is_some_and(|code| code.starts_with("ServiceUnavailable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::error::ApiErrorDetails;

    fn api(status: u16, code: &str, retry_after: Option<Duration>) -> EcsError {
        EcsError::Api {
            status,
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
            details: Box::new(ApiErrorDetails {
                retry_after,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let backoff = Backoff::default();
        let internal = api(500, "InternalError", None);
        for retry in 1..=8 {
            let ceiling = (backoff.base * (1 << (retry - 1))).min(backoff.max_delay);
            let delay = backoff.delay(retry, &internal);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{retry}: {delay:?}"
            );
        }
        let throttled = api(400, "Throttling.User", None);
        assert!(backoff.delay(1, &throttled) >= backoff.throttling_base / 2);
        let asked = api(429, "Throttling", Some(Duration::from_millis(1234)));
        assert_eq!(backoff.delay(1, &asked), Duration::from_millis(1234));
        let too_long = api(429, "Throttling", Some(Duration::from_secs(3600)));
        assert_eq!(backoff.delay(1, &too_long), backoff.max_delay);
    }

    #[test]
    fn ambiguous_failures_are_retried_only_when_idempotent() {
        let timeout = EcsError::Timeout(Duration::from_secs(1));
        let token = vec![("ClientToken".to_string(), "uid".to_string())];
        assert!(retry_is_safe("DescribeImages", &[], &timeout));
        assert!(retry_is_safe("CopyImage", &token, &timeout));
        assert!(!retry_is_safe("CopyImage", &[], &timeout));
        assert!(!retry_is_safe(
            "ExportImage",
            &[],
            &api(500, "InternalError", None)
        ));
        assert!(retry_is_safe(
            "ExportImage",
            &[],
            &api(400, "Throttling", None)
        ));
        assert!(retry_is_safe(
            "ExportImage",
            &[],
            &api(503, "ServiceUnavailable", None)
        ));
        assert!(!retry_is_safe(
            "DescribeImages",
            &[],
            &api(404, "InvalidRegionId.NotFound", None)
        ));
    }
}
