//! Decisions every kind shares, as pure functions: the status after a terminal error, a
//! retryable error or a blocked deletion, event notices, progress steps and ClientTokens.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::api::Condition;

use crate::controller::conditions::{self, READY, RECONCILING, STALLED, Wanted};

/// The status of a kind, as far as the core needs to see it.
pub trait TaskStatus: Clone + Default + PartialEq + Serialize + Send + Sync + 'static {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>);
    fn set_observed_generation(&mut self, generation: Option<i64>);
    fn has_phase(&self) -> bool;
    fn set_phase(&mut self, phase: CommonPhase);
}

/// Implements [`TaskStatus`] for a status struct with `conditions`, `observed_generation` and
/// `phase: Option<Phase>` fields, given which of the kind's phases each [`CommonPhase`] is.
macro_rules! task_status {
    ($status:ty, $phase:ident { $($common:ident => $own:ident),+ $(,)? }) => {
        impl $crate::controller::task::decide::TaskStatus for $status {
            fn conditions(&self) -> &[$crate::api::Condition] {
                &self.conditions
            }

            fn set_conditions(
                &mut self,
                conditions: Vec<$crate::api::Condition>,
            ) {
                self.conditions = conditions;
            }

            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }

            fn has_phase(&self) -> bool {
                self.phase.is_some()
            }

            fn set_phase(&mut self, phase: $crate::controller::task::decide::CommonPhase) {
                use $crate::controller::task::decide::CommonPhase;
                self.phase = Some(match phase {
                    $(CommonPhase::$common => $phase::$own,)+
                });
            }
        }
    };
}
pub(crate) use task_status;

/// The phases every kind has, whatever else it names its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommonPhase {
    Pending,
    Failed,
    /// Being deleted: a cancel was sent, or ECS cannot cancel and the task is awaited.
    Cancelling,
    /// Being deleted: the finished result is being deleted.
    Deleting,
}

/// Outcomes every kind shows the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Common {
    /// A terminal error: `code` is the ECS error code (or our own reason).
    Stalled { code: String, message: String },
    /// A retryable error; the work goes on.
    Retrying { code: String, message: String },
    /// The object is being deleted but the finalizer cannot finish: `code` is the ECS error
    /// code or our own reason (for example `SecretNotFound`).
    DeletionBlocked { code: String, message: String },
    /// Being deleted.
    Deleting {
        phase: CommonPhase,
        reason: &'static str,
        message: String,
    },
}

/// Something that happened, to become a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    /// The Event's `action`. Events with equal reason and action are merged into one series
    /// that keeps the first message, so notices that must each be seen differ in action.
    pub action: String,
}

impl Notice {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Notice {
            warning: false,
            reason,
            message: message.into(),
            action: "Reconcile".into(),
        }
    }

    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Notice {
            warning: true,
            ..Notice::normal(reason, message)
        }
    }

    pub fn with_action(mut self, action: String) -> Self {
        self.action = action;
        self
    }
}

/// The status after a [`Common`] outcome, plus the events worth publishing.
pub fn next_common<S: TaskStatus>(
    previous: &S,
    generation: Option<i64>,
    outcome: &Common,
    now: &Time,
) -> (S, Vec<Notice>) {
    let mut status = previous.clone();
    let mut notices = Vec::new();
    let wanted = match outcome {
        Common::Stalled { code, message } => {
            status.set_phase(CommonPhase::Failed);
            // The same error again keeps the first message: ECS messages carry a new RequestId
            // each time, and a status that changes on every attempt re-triggers the reconcile
            // at once (the watch sees the change), defeating the backoff.
            let message = match conditions::find(previous.conditions(), STALLED) {
                Some(c) if c.status == "True" && c.reason == *code => c.message.clone(),
                _ => {
                    notices.push(Notice::warning("Failed", format!("{code}: {message}")));
                    message.clone()
                }
            };
            vec![
                Wanted::new(READY, false, "Stalled", format!("{code}: {message}")),
                Wanted::new(RECONCILING, false, "Stalled", ""),
                Wanted::new(STALLED, true, code.as_str(), message),
            ]
        }
        Common::Retrying { code, message } => {
            // As for Stalled: the same error again leaves the status (and so the watch) quiet.
            let message = match conditions::find(previous.conditions(), RECONCILING) {
                Some(c) if c.status == "True" && c.reason == *code => c.message.clone(),
                _ => format!("retrying after {code}: {message}"),
            };
            vec![
                Wanted::new(RECONCILING, true, code.as_str(), message),
                Wanted::new(STALLED, false, "Retrying", ""),
            ]
        }
        Common::DeletionBlocked { code, message } => {
            status.set_phase(CommonPhase::Deleting);
            let message = match conditions::find(previous.conditions(), STALLED) {
                Some(c) if c.status == "True" && c.reason == *code => c.message.clone(),
                _ => {
                    notices.push(Notice::warning(
                        "DeletionBlocked",
                        format!("{code}: {message}; the finalizer stays until this is resolved"),
                    ));
                    message.clone()
                }
            };
            vec![
                Wanted::new(
                    READY,
                    false,
                    "Deleting",
                    format!("deletion blocked: {code}"),
                ),
                Wanted::new(
                    RECONCILING,
                    true,
                    "Deleting",
                    format!("deletion blocked: {code}: {message}"),
                ),
                Wanted::new(STALLED, true, code.as_str(), message),
            ]
        }
        Common::Deleting {
            phase,
            reason,
            message,
        } => {
            status.set_phase(*phase);
            vec![
                Wanted::new(READY, false, "Deleting", message.clone()),
                Wanted::new(RECONCILING, true, reason, message.clone()),
            ]
        }
    };
    (finish(status, previous, generation, &wanted, now), notices)
}

/// Fills in what every status written gets: the generation it describes, a phase (`Pending`
/// until there is another), and the merged conditions.
pub fn finish<S: TaskStatus>(
    mut status: S,
    previous: &S,
    generation: Option<i64>,
    wanted: &[Wanted],
    now: &Time,
) -> S {
    status.set_observed_generation(generation);
    if !status.has_phase() {
        status.set_phase(CommonPhase::Pending);
    }
    status.set_conditions(conditions::merge(
        previous.conditions(),
        wanted,
        generation,
        now,
    ));
    status
}

/// The 10% step crossed between two progress readings, if any (for at most one event per 10%).
pub fn progress_step_crossed(previous: Option<&str>, current: &str) -> Option<u8> {
    let parse = |p: &str| p.trim().trim_end_matches('%').parse::<u8>().ok();
    let now = parse(current)?;
    let before = previous.and_then(parse).unwrap_or(0);
    (now / 10 > before / 10 && now < 100).then_some(now / 10 * 10)
}

/// The ClientToken of the `attempt`-th call (0-based): the UID first, then `UID-n`, so a
/// retried call returns the same result while one made again after a loss is new.
pub fn client_token(uid: &str, attempt: i32) -> String {
    if attempt == 0 {
        uid.to_string()
    } else {
        format!("{uid}-{attempt}")
    }
}
