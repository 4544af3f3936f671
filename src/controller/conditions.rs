//! Condition bookkeeping shared by every kind: `lastTransitionTime` moves only when a
//! condition's status flips, so `kubectl wait` and alerting see real transitions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Condition, Word};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const QUEUED: &str = "Queued";

/// The wanted state of one condition, before timestamps and generations are filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Wanted {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Merges `wanted` into `previous`: a condition keeps its `lastTransitionTime` unless its status
/// changed. Conditions of other types in `previous` are kept as they are.
pub fn merge(
    previous: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = previous
        .iter()
        .filter(|c| !wanted.iter().any(|w| c.type_ == w.type_))
        .cloned()
        .collect();
    for w in wanted {
        let status = Word::from_static(if w.status { "True" } else { "False" });
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == w.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        merged.push(Condition {
            type_: Word::from_static(w.type_),
            status,
            reason: Word::new(&w.reason),
            message: w.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by(|a, b| a.type_.as_str().cmp(b.type_.as_str()));
    merged
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            &[Wanted::new(READY, false, "Copying", "12%")],
            Some(1),
            &at(10),
        );
        let same = merge(
            &first,
            &[Wanted::new(READY, false, "Copying", "50%")],
            Some(1),
            &at(20),
        );
        assert_eq!(same[0].last_transition_time, at(10));
        assert_eq!(same[0].message, "50%");
        let flipped = merge(
            &same,
            &[Wanted::new(READY, true, "Available", "")],
            Some(1),
            &at(30),
        );
        assert_eq!(flipped[0].last_transition_time, at(30));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn other_condition_types_are_kept() {
        let prev = merge(&[], &[Wanted::new(STALLED, false, "Ok", "")], None, &at(1));
        let next = merge(
            &prev,
            &[Wanted::new(READY, true, "Available", "")],
            None,
            &at(2),
        );
        assert_eq!(next.len(), 2);
        assert!(is_true(&next, READY));
        assert!(!is_true(&next, STALLED));
    }
}
