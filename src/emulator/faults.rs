//! Injected failures (set through `POST /_emulator/faults`) so clients' retry, backoff and
//! cancel-failure paths can be exercised.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Share of ECS requests answered `Throttling.User`.
    pub throttle_rate: f64,
    /// Share of ECS requests answered `ServiceUnavailable` (503) or `InternalError` (500).
    pub error_rate: f64,
    /// Delay added before answering each ECS request.
    pub latency_ms: u64,
    /// CancelCopyImage of an in-flight copy fails with `CancelNotSupported`.
    pub cancel_not_supported: bool,
    /// CancelTask of an in-flight task fails with `CancelTaskFailed`.
    pub cancel_task_failed: bool,
}

/// A partial update: absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultsPatch {
    pub throttle_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub cancel_not_supported: Option<bool>,
    pub cancel_task_failed: Option<bool>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultsError {
    #[error("{0} must be between 0 and 1, got {1}")]
    RateOutOfRange(&'static str, f64),
}

impl Faults {
    pub fn apply(&mut self, patch: FaultsPatch) -> Result<(), FaultsError> {
        for (name, rate) in [
            ("throttleRate", patch.throttle_rate),
            ("errorRate", patch.error_rate),
        ] {
            if let Some(rate) = rate.filter(|r| !(0.0..=1.0).contains(r)) {
                return Err(FaultsError::RateOutOfRange(name, rate));
            }
        }
        if let Some(v) = patch.throttle_rate {
            self.throttle_rate = v;
        }
        if let Some(v) = patch.error_rate {
            self.error_rate = v;
        }
        if let Some(v) = patch.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = patch.cancel_not_supported {
            self.cancel_not_supported = v;
        }
        if let Some(v) = patch.cancel_task_failed {
            self.cancel_task_failed = v;
        }
        Ok(())
    }

    /// Rolls the dice for one request: throttling first (the gateway rejects before the
    /// service sees the call), then a server-side failure.
    pub fn roll(&self) -> Option<ApiError> {
        let mut rng = rand::rng();
        if self.throttle_rate > 0.0 && rng.random_bool(self.throttle_rate) {
            return Some(ApiError::throttled());
        }
        if self.error_rate > 0.0 && rng.random_bool(self.error_rate) {
            return Some(if rng.random_bool(0.5) {
                ApiError::service_unavailable()
            } else {
                ApiError::internal_error()
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_merge_and_rates_are_checked() {
        let mut faults = Faults::default();
        faults
            .apply(FaultsPatch {
                throttle_rate: Some(1.0),
                ..Default::default()
            })
            .unwrap();
        faults
            .apply(FaultsPatch {
                latency_ms: Some(5),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(faults.throttle_rate, 1.0);
        assert_eq!(faults.latency_ms, 5);
        assert_eq!(faults.roll().unwrap().code, "Throttling.User");
        assert!(
            faults
                .apply(FaultsPatch {
                    error_rate: Some(1.5),
                    ..Default::default()
                })
                .is_err()
        );
        faults.throttle_rate = 0.0;
        assert!(faults.roll().is_none());
    }
}
