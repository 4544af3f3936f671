//! Injected failures and real-cloud behaviours (set through `POST /_emulator/faults`, described
//! in `docs/emulator.md`) so clients' retry, backoff, cancel-failure, eventual-consistency and
//! decoding paths can be exercised on demand.

use std::time::Duration;

use chrono::TimeDelta;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::errors::{self, ApiError};
use super::state::TaskFailure;
use super::{actions, regions};

/// Longest lag or delay a fault may ask for, as for the emulator's duration flags.
const MAX_SECONDS: f64 = 1e7;

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
    /// Seconds the tag index lags writes: an image is invisible to tag-filtered queries until
    /// this long after it was created or its tags last changed.
    pub tag_index_lag_seconds: f64,
    /// CopyImage and ImportImage disregard `ClientToken`, as older API versions did.
    pub ignore_client_token: bool,
    /// Seconds a copied image reports `Usable: false` after turning `Available`.
    pub usable_delay_seconds: f64,
    /// Documented errors answered to matching requests, first matching rule first.
    pub inject: Vec<InjectRule>,
    /// Import/export tasks that fail halfway through, first matching rule first.
    pub fail_tasks: Vec<FailTaskRule>,
    /// Share of DescribeImages items left out of the answer (`TotalCount` still counts them).
    pub listing_drop_rate: f64,
    /// Share of DescribeImages items sent with a malformed shape.
    pub malformed_item_rate: f64,
    /// Share of ECS requests that wait `hang_ms` before being handled.
    pub hang_rate: f64,
    pub hang_ms: u64,
}

/// Answer `action` requests (in `region_id`, if given) with the documented error `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectRule {
    pub action: String,
    pub code: String,
    /// How many more requests get the error; absent means until the rule is cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Share of matching requests that get the error.
    #[serde(default = "always")]
    pub rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    /// One of the HTTP statuses documented for the code, for codes documented with several;
    /// absent means the first documented one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

fn always() -> f64 {
    1.0
}

/// Make the next tasks `action` starts (in `region_id`, if given) fail with `errorCode` and
/// `errorMsg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailTaskRule {
    /// `ImportImage` or `ExportImage`.
    pub action: String,
    /// How many more tasks fail; absent means every one until the rule is cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    /// Absent means the action's default failure (see [`default_task_failure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
}

/// The failure a task reports when its rule names none: the OSS side missing, the most common
/// reason an import or export fails.
pub fn default_task_failure(action: &str) -> TaskFailure {
    let (code, message) = if action == "ExportImage" {
        (
            "ExportImage.OssBucketNotFound",
            "The specified OSS bucket does not exist or the export role cannot write to it.",
        )
    } else {
        (
            "ImportImage.OssObjectNotFound",
            "The specified OSS object does not exist or the import role cannot read it.",
        )
    };
    TaskFailure {
        code: code.to_string(),
        message: message.to_string(),
    }
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
    pub tag_index_lag_seconds: Option<f64>,
    pub ignore_client_token: Option<bool>,
    pub usable_delay_seconds: Option<f64>,
    /// Replaces the previous rules; `[]` clears them.
    pub inject: Option<Vec<InjectRule>>,
    /// Replaces the previous rules; `[]` clears them.
    pub fail_tasks: Option<Vec<FailTaskRule>>,
    pub listing_drop_rate: Option<f64>,
    pub malformed_item_rate: Option<f64>,
    pub hang_rate: Option<f64>,
    pub hang_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultsError {
    #[error("{0} must be between 0 and 1, got {1}")]
    RateOutOfRange(&'static str, f64),
    #[error("{0} must be between 0 and {MAX_SECONDS} seconds, got {1}")]
    SecondsOutOfRange(&'static str, f64),
    #[error("inject: unknown action {0:?}")]
    UnknownAction(String),
    #[error("inject: unknown error code {0:?}")]
    UnknownCode(String),
    #[error("inject: count must be at least 1 (leave it out for a rule that never runs out)")]
    ZeroCount,
    #[error("failTasks: action must be ImportImage or ExportImage, got {0:?}")]
    NotATaskAction(String),
    #[error("failTasks: count must be at least 1 (leave it out for a rule that never runs out)")]
    ZeroFailCount,
    #[error("failTasks: unknown region {0:?}")]
    UnknownFailRegion(String),
    #[error("failTasks: errorCode must not be empty")]
    EmptyFailCode,
    #[error("inject: unknown region {0:?}")]
    UnknownRegion(String),
    #[error(
        "inject: {code} from {action} is documented with HTTP status {documented:?}, not {status}"
    )]
    UndocumentedStatus {
        action: String,
        code: String,
        status: u16,
        documented: Vec<u16>,
    },
}

fn check_rate(name: &'static str, rate: Option<f64>) -> Result<(), FaultsError> {
    match rate {
        Some(rate) if !(0.0..=1.0).contains(&rate) => Err(FaultsError::RateOutOfRange(name, rate)),
        _ => Ok(()),
    }
}

fn check_seconds(name: &'static str, seconds: Option<f64>) -> Result<(), FaultsError> {
    match seconds {
        Some(s) if !(0.0..=MAX_SECONDS).contains(&s) => {
            Err(FaultsError::SecondsOutOfRange(name, s))
        }
        _ => Ok(()),
    }
}

fn check_rule(rule: &InjectRule) -> Result<(), FaultsError> {
    if !actions::is_ecs_action(&rule.action) {
        return Err(FaultsError::UnknownAction(rule.action.clone()));
    }
    if !errors::is_documented(&rule.code) {
        return Err(FaultsError::UnknownCode(rule.code.clone()));
    }
    if let Some(region) = rule.region_id.as_deref().filter(|r| !regions::is_known(r)) {
        return Err(FaultsError::UnknownRegion(region.to_string()));
    }
    if rule.count == Some(0) {
        return Err(FaultsError::ZeroCount);
    }
    check_rate("inject rate", Some(rule.rate))?;
    if let Some(status) = rule.http_status {
        let documented = errors::documented_statuses(&rule.action, &rule.code);
        if !documented.contains(&status) {
            return Err(FaultsError::UndocumentedStatus {
                action: rule.action.clone(),
                code: rule.code.clone(),
                status,
                documented,
            });
        }
    }
    Ok(())
}

fn check_fail_rule(rule: &FailTaskRule) -> Result<(), FaultsError> {
    if !matches!(rule.action.as_str(), "ImportImage" | "ExportImage") {
        return Err(FaultsError::NotATaskAction(rule.action.clone()));
    }
    if rule.count == Some(0) {
        return Err(FaultsError::ZeroFailCount);
    }
    if let Some(region) = rule.region_id.as_deref().filter(|r| !regions::is_known(r)) {
        return Err(FaultsError::UnknownFailRegion(region.to_string()));
    }
    if rule.error_code.as_deref().is_some_and(str::is_empty) {
        return Err(FaultsError::EmptyFailCode);
    }
    Ok(())
}

/// `seconds` as a duration of emulated time.
fn seconds_delta(seconds: f64) -> TimeDelta {
    // Bounded by MAX_SECONDS, so the product fits an i64 of milliseconds.
    TimeDelta::milliseconds((seconds * 1000.0).round() as i64)
}

/// How a malformed DescribeImages item is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformation {
    /// `"ImageId": {"bad": true}` where a string belongs.
    ImageIdObject,
    /// `"Status": 42` where a string belongs.
    StatusNumber,
}

impl Faults {
    /// Validates the whole patch before changing anything, so a refused patch changes nothing.
    pub fn apply(&mut self, patch: FaultsPatch) -> Result<(), FaultsError> {
        for (name, rate) in [
            ("throttleRate", patch.throttle_rate),
            ("errorRate", patch.error_rate),
            ("listingDropRate", patch.listing_drop_rate),
            ("malformedItemRate", patch.malformed_item_rate),
            ("hangRate", patch.hang_rate),
        ] {
            check_rate(name, rate)?;
        }
        check_seconds("tagIndexLagSeconds", patch.tag_index_lag_seconds)?;
        check_seconds("usableDelaySeconds", patch.usable_delay_seconds)?;
        for rule in patch.inject.iter().flatten() {
            check_rule(rule)?;
        }
        for rule in patch.fail_tasks.iter().flatten() {
            check_fail_rule(rule)?;
        }
        let Self {
            throttle_rate,
            error_rate,
            latency_ms,
            cancel_not_supported,
            cancel_task_failed,
            tag_index_lag_seconds,
            ignore_client_token,
            usable_delay_seconds,
            inject,
            fail_tasks,
            listing_drop_rate,
            malformed_item_rate,
            hang_rate,
            hang_ms,
        } = self;
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *field = value;
            }
        }
        set(throttle_rate, patch.throttle_rate);
        set(error_rate, patch.error_rate);
        set(latency_ms, patch.latency_ms);
        set(cancel_not_supported, patch.cancel_not_supported);
        set(cancel_task_failed, patch.cancel_task_failed);
        set(tag_index_lag_seconds, patch.tag_index_lag_seconds);
        set(ignore_client_token, patch.ignore_client_token);
        set(usable_delay_seconds, patch.usable_delay_seconds);
        set(inject, patch.inject);
        set(fail_tasks, patch.fail_tasks);
        set(listing_drop_rate, patch.listing_drop_rate);
        set(malformed_item_rate, patch.malformed_item_rate);
        set(hang_rate, patch.hang_rate);
        set(hang_ms, patch.hang_ms);
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

    /// The injected error for one `action` request in `region`, if a rule fires; a rule whose
    /// count runs out is removed.
    pub fn injected(&mut self, action: &str, region: &str) -> Option<ApiError> {
        let mut rng = rand::rng();
        let index = self.inject.iter().position(|rule| {
            rule.action == action
                && rule.region_id.as_deref().is_none_or(|r| r == region)
                && rng.random_bool(rule.rate)
        })?;
        let rule = &mut self.inject[index];
        let error = ApiError::documented(action, &rule.code, rule.http_status);
        if let Some(count) = &mut rule.count {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.inject.remove(index);
            }
        }
        error
    }

    /// The failure of a task `action` is starting in `region`, if a rule says it fails; a rule
    /// whose count runs out is removed.
    pub fn task_failure(&mut self, action: &str, region: &str) -> Option<TaskFailure> {
        let index = self.fail_tasks.iter().position(|rule| {
            rule.action == action && rule.region_id.as_deref().is_none_or(|r| r == region)
        })?;
        let rule = &mut self.fail_tasks[index];
        let default = default_task_failure(action);
        let failure = TaskFailure {
            code: rule.error_code.clone().unwrap_or(default.code),
            message: rule.error_msg.clone().unwrap_or(default.message),
        };
        if let Some(count) = &mut rule.count {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.fail_tasks.remove(index);
            }
        }
        Some(failure)
    }

    /// How long this request hangs before it is handled, if it does.
    pub fn hang(&self) -> Option<Duration> {
        (self.hang_rate > 0.0 && rand::rng().random_bool(self.hang_rate))
            .then(|| Duration::from_millis(self.hang_ms))
    }

    pub fn tag_index_lag(&self) -> TimeDelta {
        seconds_delta(self.tag_index_lag_seconds)
    }

    pub fn usable_delay(&self) -> TimeDelta {
        seconds_delta(self.usable_delay_seconds)
    }

    /// Whether one DescribeImages item is left out.
    pub fn drop_item(&self) -> bool {
        self.listing_drop_rate > 0.0 && rand::rng().random_bool(self.listing_drop_rate)
    }

    /// How one DescribeImages item is broken, if it is.
    pub fn malform_item(&self) -> Option<Malformation> {
        let mut rng = rand::rng();
        (self.malformed_item_rate > 0.0 && rng.random_bool(self.malformed_item_rate)).then(|| {
            if rng.random_bool(0.5) {
                Malformation::ImageIdObject
            } else {
                Malformation::StatusNumber
            }
        })
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

    fn rule(action: &str, code: &str) -> InjectRule {
        InjectRule {
            action: action.into(),
            code: code.into(),
            count: None,
            rate: 1.0,
            region_id: None,
            http_status: None,
        }
    }

    fn inject(rules: Vec<InjectRule>) -> FaultsPatch {
        FaultsPatch {
            inject: Some(rules),
            ..Default::default()
        }
    }

    #[test]
    fn inject_rules_come_from_json_with_defaults() {
        let patch: FaultsPatch = serde_json::from_value(serde_json::json!({
            "inject": [{"action": "DeleteImage", "code": "ImageUsingByInstance", "count": 3,
                        "regionId": "cn-shanghai"}]
        }))
        .unwrap();
        let rules = patch.inject.unwrap();
        assert_eq!(rules[0].rate, 1.0);
        assert_eq!(rules[0].count, Some(3));
        assert_eq!(rules[0].region_id.as_deref(), Some("cn-shanghai"));
        assert!(
            serde_json::from_value::<FaultsPatch>(
                serde_json::json!({"inject": [{"action": "DeleteImage", "code": "x", "cnt": 1}]})
            )
            .is_err()
        );
    }

    #[test]
    fn bad_patches_are_refused_whole_and_name_the_problem() {
        let mut faults = Faults::default();
        let typo = faults
            .apply(inject(vec![rule("DeleteImage", "ImageUsingByInstanse")]))
            .unwrap_err();
        assert_eq!(
            typo,
            FaultsError::UnknownCode("ImageUsingByInstanse".into())
        );
        assert!(typo.to_string().contains("ImageUsingByInstanse"));
        assert_eq!(
            faults.apply(inject(vec![rule("DeleteImages", "Forbidden")])),
            Err(FaultsError::UnknownAction("DeleteImages".into()))
        );
        let mut elsewhere = rule("DeleteImage", "Forbidden");
        elsewhere.region_id = Some("mars-1".into());
        assert_eq!(
            faults.apply(inject(vec![elsewhere])),
            Err(FaultsError::UnknownRegion("mars-1".into()))
        );
        let mut never = rule("DeleteImage", "Forbidden");
        never.count = Some(0);
        assert_eq!(
            faults.apply(inject(vec![never])),
            Err(FaultsError::ZeroCount)
        );
        let mut wrong_status = rule("CopyImage", "QuotaExceed.Image");
        wrong_status.http_status = Some(500);
        assert!(matches!(
            faults.apply(inject(vec![wrong_status])),
            Err(FaultsError::UndocumentedStatus { .. })
        ));
        let mut odd_rate = rule("DeleteImage", "Forbidden");
        odd_rate.rate = 1.5;
        assert!(faults.apply(inject(vec![odd_rate])).is_err());
        for patch in [
            FaultsPatch {
                hang_rate: Some(-0.1),
                ..Default::default()
            },
            FaultsPatch {
                listing_drop_rate: Some(1.1),
                ..Default::default()
            },
            FaultsPatch {
                malformed_item_rate: Some(2.0),
                ..Default::default()
            },
            FaultsPatch {
                tag_index_lag_seconds: Some(-1.0),
                ..Default::default()
            },
            FaultsPatch {
                usable_delay_seconds: Some(1e9),
                ..Default::default()
            },
            // A good field next to a bad one is not applied either.
            FaultsPatch {
                hang_ms: Some(5),
                hang_rate: Some(3.0),
                ..Default::default()
            },
        ] {
            assert!(faults.apply(patch).is_err());
        }
        assert_eq!(faults, Faults::default());
    }

    #[test]
    fn counted_rules_run_out_and_regions_narrow_them() {
        let mut faults = Faults::default();
        let mut counted = rule("DeleteImage", "ImageUsingByInstance");
        counted.count = Some(2);
        counted.region_id = Some("cn-shanghai".into());
        faults
            .apply(inject(vec![
                counted,
                rule("CancelTask", "CancelTaskFailed"),
            ]))
            .unwrap();
        assert_eq!(faults.injected("DeleteImage", "cn-hangzhou"), None);
        assert_eq!(faults.injected("CopyImage", "cn-shanghai"), None);
        for _ in 0..2 {
            let error = faults.injected("DeleteImage", "cn-shanghai").unwrap();
            assert_eq!(
                (error.status.as_u16(), error.code.as_str()),
                (403, "ImageUsingByInstance")
            );
        }
        assert_eq!(faults.injected("DeleteImage", "cn-shanghai"), None);
        assert_eq!(faults.inject.len(), 1, "the used-up rule is gone");
        // A rule without a count stays until cleared.
        for _ in 0..5 {
            assert!(faults.injected("CancelTask", "cn-hangzhou").is_some());
        }
        faults.apply(inject(vec![])).unwrap();
        assert_eq!(faults.injected("CancelTask", "cn-hangzhou"), None);
    }

    #[test]
    fn fail_task_rules_count_down_and_default_their_reason() {
        let mut faults = Faults::default();
        let patch: FaultsPatch = serde_json::from_value(serde_json::json!({
            "failTasks": [
                {"action": "ExportImage", "count": 1, "regionId": "cn-shanghai",
                 "errorCode": "ExportImage.Custom", "errorMsg": "custom"},
                {"action": "ImportImage", "count": 2}
            ]
        }))
        .unwrap();
        faults.apply(patch).unwrap();
        assert_eq!(faults.task_failure("ExportImage", "cn-hangzhou"), None);
        assert_eq!(
            faults.task_failure("ExportImage", "cn-shanghai"),
            Some(TaskFailure {
                code: "ExportImage.Custom".into(),
                message: "custom".into()
            })
        );
        assert_eq!(faults.task_failure("ExportImage", "cn-shanghai"), None);
        for _ in 0..2 {
            assert_eq!(
                faults.task_failure("ImportImage", "cn-beijing"),
                Some(default_task_failure("ImportImage"))
            );
        }
        assert_eq!(faults.task_failure("ImportImage", "cn-beijing"), None);
        assert!(faults.fail_tasks.is_empty());
        for (rule, error) in [
            (
                serde_json::json!({"action": "CopyImage"}),
                FaultsError::NotATaskAction("CopyImage".into()),
            ),
            (
                serde_json::json!({"action": "ImportImage", "count": 0}),
                FaultsError::ZeroFailCount,
            ),
            (
                serde_json::json!({"action": "ImportImage", "regionId": "mars-1"}),
                FaultsError::UnknownFailRegion("mars-1".into()),
            ),
            (
                serde_json::json!({"action": "ImportImage", "errorCode": ""}),
                FaultsError::EmptyFailCode,
            ),
        ] {
            let patch: FaultsPatch =
                serde_json::from_value(serde_json::json!({ "failTasks": [rule] })).unwrap();
            assert_eq!(faults.apply(patch), Err(error));
        }
    }

    #[test]
    fn rule_rates_are_shares_of_matching_requests() {
        let mut faults = Faults::default();
        let mut never = rule("DeleteImage", "Forbidden");
        never.rate = 0.0;
        faults.apply(inject(vec![never])).unwrap();
        assert!((0..100).all(|_| faults.injected("DeleteImage", "cn-hangzhou").is_none()));
        let mut half = rule("DeleteImage", "Forbidden");
        half.rate = 0.5;
        faults.apply(inject(vec![half])).unwrap();
        let hits = (0..1000)
            .filter(|_| faults.injected("DeleteImage", "cn-hangzhou").is_some())
            .count();
        // Binomial(1000, 0.5) leaves this range with a probability below 1e-20.
        assert!((350..=650).contains(&hits), "{hits} of 1000");
    }

    #[test]
    fn a_rule_may_pick_among_documented_statuses() {
        let mut faults = Faults::default();
        let mut rare = rule("CopyImage", "InternalError");
        rare.http_status = Some(403);
        faults
            .apply(inject(vec![rare, rule("CopyImage", "InternalError")]))
            .unwrap();
        assert_eq!(
            faults
                .injected("CopyImage", "cn-hangzhou")
                .unwrap()
                .status
                .as_u16(),
            403
        );
        faults.inject.remove(0);
        assert_eq!(
            faults
                .injected("CopyImage", "cn-hangzhou")
                .unwrap()
                .status
                .as_u16(),
            500
        );
    }

    #[test]
    fn listing_faults_and_hangs_follow_their_rates() {
        let mut faults = Faults::default();
        assert!(!faults.drop_item());
        assert_eq!(faults.malform_item(), None);
        assert_eq!(faults.hang(), None);
        faults
            .apply(FaultsPatch {
                listing_drop_rate: Some(1.0),
                malformed_item_rate: Some(1.0),
                hang_rate: Some(1.0),
                hang_ms: Some(250),
                tag_index_lag_seconds: Some(1.5),
                usable_delay_seconds: Some(2.0),
                ..Default::default()
            })
            .unwrap();
        assert!(faults.drop_item());
        assert!(faults.malform_item().is_some());
        assert_eq!(faults.hang(), Some(Duration::from_millis(250)));
        assert_eq!(faults.tag_index_lag(), TimeDelta::milliseconds(1500));
        assert_eq!(faults.usable_delay(), TimeDelta::seconds(2));
    }
}
