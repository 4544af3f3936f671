//! The `ImageExport` decisions as pure functions. ExportImage takes neither tags nor a
//! ClientToken, so the task is the only handle: it is written to status before any waiting, and
//! before any ExportImage the running export of the image is looked up and adopted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::image_export::{ExportPhase, ImageExportStatus};
use crate::controller::conditions::{READY, RECONCILING, STALLED, Wanted};
use crate::controller::ecs_tasks::{TaskSnapshot, TaskState};
use crate::controller::task::decide::{
    Common, Notice, finish, next_common, progress_step_crossed, task_status,
};

/// What the reconciler learned this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// No task recorded: the export of the image to adopt, if any (see [`adoptable`]).
    Unrecorded { found: Option<TaskSnapshot> },
    /// The recorded task as ECS shows it.
    Task(TaskSnapshot),
    /// ECS does not know the recorded task.
    TaskGone,
    /// Cannot tell yet (the running-exports listing predates the task); look again next tick.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyStep {
    /// Record one more attempt, then call ExportImage.
    StartExport,
    /// Record what ECS reports about the task (`adopted`: found running, not started here).
    Follow {
        task: TaskSnapshot,
        adopted: bool,
    },
    /// The recorded task is gone.
    Lose,
    Wait,
}

pub fn decide_apply(observation: &Observation) -> ApplyStep {
    match observation {
        Observation::Unrecorded { found: Some(task) } => ApplyStep::Follow {
            task: task.clone(),
            adopted: true,
        },
        Observation::Unrecorded { found: None } => ApplyStep::StartExport,
        Observation::Task(task) => ApplyStep::Follow {
            task: task.clone(),
            adopted: false,
        },
        Observation::TaskGone => ApplyStep::Lose,
        Observation::Unknown => ApplyStep::Wait,
    }
}

/// When an ExportImage was begun without its task being recorded (a crash or a lost reply in
/// between): the time of that attempt.
pub fn unrecorded_attempt(status: &ImageExportStatus) -> Option<Timestamp> {
    if status.task_id.is_some() || status.export_attempts.unwrap_or(0) <= 0 {
        return None;
    }
    status.start_time.as_ref().map(|t| t.0)
}

/// The export task of the image to adopt instead of starting another: a running one; or, after
/// an unrecorded attempt at `attempted_at`, the newest one ECS created since (in any state: it
/// may have finished while the operator was down). ECS gives task times to the minute only.
pub fn adoptable(attempted_at: Option<Timestamp>, tasks: &[TaskSnapshot]) -> Option<TaskSnapshot> {
    let newest = |candidates: Vec<&TaskSnapshot>| {
        candidates
            .into_iter()
            .max_by(|a, b| a.created.cmp(&b.created).then(a.task_id.cmp(&b.task_id)))
            .cloned()
    };
    let running: Vec<&TaskSnapshot> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .collect();
    if !running.is_empty() {
        return newest(running);
    }
    let since = attempted_at?
        .checked_sub(SignedDuration::from_secs(60))
        .ok()?;
    newest(
        tasks
            .iter()
            .filter(|t| t.created.is_some_and(|created| created >= since))
            .collect(),
    )
}

/// Whether the recorded task has ended, as ECS last reported it: then nothing runs that a
/// deletion would have to cancel, and nothing needs polling.
pub fn task_ended(status: &ImageExportStatus) -> bool {
    status.task_id.is_some()
        && status
            .task_status
            .as_deref()
            .is_some_and(|s| TaskState::from_ecs(s) != TaskState::Running)
}

/// Whether deleting needs the cloud: not when ExportImage was never begun or its task ended
/// (the OSS object is the user's; deletion never touches it).
pub fn nothing_to_release(status: &ImageExportStatus) -> bool {
    let never_started = status.task_id.is_none() && status.export_attempts.unwrap_or(0) <= 0;
    never_started || task_ended(status)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An ExportImage is about to be sent: record the attempt first.
    ExportAttempted,
    ExportStarted {
        task_id: String,
    },
    Observed(TaskSnapshot),
    /// ECS does not know the recorded task.
    TaskGone {
        task_id: String,
    },
    /// ExportImage answered with a terminal error: stalled, and the attempt no longer counts.
    ExportRefused {
        code: String,
        message: String,
    },
    Common(Common),
}

pub fn next_status(
    previous: &ImageExportStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> (ImageExportStatus, Vec<Notice>) {
    let mut status = previous.clone();
    let mut notices = Vec::new();
    let wanted: Vec<Wanted> = match outcome {
        Outcome::Common(common) => return next_common(previous, generation, common, now),
        Outcome::ExportRefused { code, message } => {
            let stalled = Common::Stalled {
                code: code.clone(),
                message: message.clone(),
            };
            let (mut status, notices) = next_common(previous, generation, &stalled, now);
            if status.task_id.is_none() {
                status.export_attempts = Some((previous.export_attempts.unwrap_or(0) - 1).max(0));
            }
            return (status, notices);
        }
        Outcome::ExportAttempted => {
            status.export_attempts = Some(previous.export_attempts.unwrap_or(0).max(0) + 1);
            // Kept as the attempt's time: after a lost reply, the task to adopt is one created since.
            status.start_time = Some(now.clone());
            exporting("starting the export")
        }
        Outcome::ExportStarted { task_id } => {
            status.task_id = Some(task_id.clone());
            status.task_status = Some("Processing".into());
            status.phase = Some(ExportPhase::Exporting);
            status.progress = Some("0%".into());
            status.start_time = Some(now.clone());
            status.completion_time = None;
            notices.push(Notice::normal(
                "ExportStarted",
                format!("ExportImage started task {task_id}"),
            ));
            exporting(&format!("export task {task_id} running"))
        }
        Outcome::Observed(task) => observed(&mut status, previous, task, now, &mut notices),
        Outcome::TaskGone { task_id } => {
            status.phase = Some(ExportPhase::Failed);
            let code = "InvalidTaskId.NotFound";
            let message = format!("ECS no longer knows export task {task_id}");
            if previous.phase != Some(ExportPhase::Failed) {
                notices.push(Notice::warning("Failed", format!("{code}: {message}")));
            }
            failed(code, message)
        }
    };
    (finish(status, previous, generation, &wanted, now), notices)
}

fn exporting(message: &str) -> Vec<Wanted> {
    vec![
        Wanted::new(READY, false, "Exporting", message),
        Wanted::new(RECONCILING, true, "Exporting", message),
        Wanted::new(STALLED, false, "Progressing", ""),
    ]
}

fn failed(code: &str, message: String) -> Vec<Wanted> {
    vec![
        Wanted::new(READY, false, "Failed", format!("{code}: {message}")),
        Wanted::new(RECONCILING, false, "Failed", ""),
        Wanted::new(STALLED, true, code, message),
    ]
}

fn observed(
    status: &mut ImageExportStatus,
    previous: &ImageExportStatus,
    task: &TaskSnapshot,
    now: &Time,
    notices: &mut Vec<Notice>,
) -> Vec<Wanted> {
    let id = &task.task_id;
    if status.task_id.as_deref() != Some(id.as_str()) {
        status.task_id = Some(id.clone());
        status.start_time = Some(now.clone());
    }
    // An adopted export counts as an attempt.
    status.export_attempts = Some(previous.export_attempts.unwrap_or(0).max(1));
    if status.start_time.is_none() {
        status.start_time = Some(now.clone());
    }
    status.task_status = Some(task.state.label().to_string());
    if task.oss_object.is_some() {
        status.oss_object = task.oss_object.clone();
    }
    match &task.state {
        TaskState::Running => {
            status.phase = Some(ExportPhase::Exporting);
            let progress = task
                .progress
                .clone()
                .or_else(|| previous.progress.clone())
                .unwrap_or_else(|| "0%".into());
            if let Some(step) = progress_step_crossed(previous.progress.as_deref(), &progress) {
                notices.push(
                    Notice::normal("Progress", format!("export task {id} at {step}%"))
                        .with_action(format!("Export{step}Percent")),
                );
            }
            status.progress = Some(progress.clone());
            exporting(&format!("export task {id}: {progress}"))
        }
        TaskState::Finished => {
            status.phase = Some(ExportPhase::Exported);
            status.progress = Some("100%".into());
            if status.completion_time.is_none() {
                status.completion_time = Some(now.clone());
            }
            let message = match &status.oss_object {
                Some(object) => format!("export task {id} finished: {object}"),
                None => format!("export task {id} finished"),
            };
            if previous.phase != Some(ExportPhase::Exported) {
                notices.push(Notice::normal("Exported", message.clone()));
            }
            vec![
                Wanted::new(READY, true, "Exported", message),
                Wanted::new(RECONCILING, false, "Exported", ""),
                Wanted::new(STALLED, false, "Exported", ""),
            ]
        }
        TaskState::Failed | TaskState::Ended(_) => {
            status.phase = Some(ExportPhase::Failed);
            let (code, message) = task.error.clone().unwrap_or_else(|| {
                (
                    format!("ExportTask{}", task.state.label()),
                    format!("ECS reports export task {id} as {}", task.state.label()),
                )
            });
            if previous.phase != Some(ExportPhase::Failed) {
                notices.push(Notice::warning("Failed", format!("{code}: {message}")));
            }
            failed(&code, message)
        }
    }
}

// An export leaves nothing to delete: both delete-path phases are a cancel.
task_status!(ImageExportStatus, ExportPhase {
    Pending => Pending,
    Failed => Failed,
    Cancelling => Cancelling,
    Deleting => Cancelling,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn task(state: TaskState, progress: Option<&str>) -> TaskSnapshot {
        TaskSnapshot {
            task_id: "t-export".into(),
            state,
            progress: progress.map(Into::into),
            error: None,
            oss_object: None,
            created: None,
        }
    }

    #[test]
    fn a_running_export_of_the_image_is_adopted_instead_of_started_again() {
        let running = task(TaskState::Running, None);
        assert_eq!(
            decide_apply(&Observation::Unrecorded {
                found: Some(running.clone())
            }),
            ApplyStep::Follow {
                task: running.clone(),
                adopted: true
            }
        );
        assert_eq!(
            decide_apply(&Observation::Unrecorded { found: None }),
            ApplyStep::StartExport
        );
        assert_eq!(
            adoptable(None, std::slice::from_ref(&running)),
            Some(running)
        );
    }

    #[test]
    fn after_a_lost_reply_a_task_finished_meanwhile_is_adopted_but_not_an_older_one() {
        let at = |text: &str| Some(text.parse::<Timestamp>().unwrap());
        let mut older = task(TaskState::Finished, None);
        older.task_id = "t-last-week".into();
        older.created = at("2026-11-20T10:00:00Z");
        let mut ours = task(TaskState::Finished, None);
        ours.created = at("2026-11-27T10:15:00Z");
        let tasks = [older.clone(), ours.clone()];
        assert_eq!(
            adoptable(at("2026-11-27T10:15:40Z"), &tasks),
            Some(ours),
            "created in the attempt's minute: ours, finished while the operator was down"
        );
        assert_eq!(
            adoptable(at("2026-11-27T11:00:00Z"), &[older.clone()]),
            None,
            "an export from before the attempt is someone else's"
        );
        assert_eq!(
            adoptable(None, &[older]),
            None,
            "without an unrecorded attempt only a running export is adopted"
        );
        let (attempted, _) = next_status(
            &ImageExportStatus::default(),
            None,
            &Outcome::ExportAttempted,
            &now(),
        );
        assert_eq!(unrecorded_attempt(&attempted), Some(now().0));
    }

    #[test]
    fn the_task_is_recorded_before_any_waiting_and_deletion_then_needs_the_cloud() {
        let fresh = ImageExportStatus::default();
        assert!(nothing_to_release(&fresh));
        let (attempted, _) = next_status(&fresh, None, &Outcome::ExportAttempted, &now());
        assert!(
            !nothing_to_release(&attempted),
            "an export may be running after a lost reply"
        );
        let (started, notices) = next_status(
            &attempted,
            None,
            &Outcome::ExportStarted {
                task_id: "t-export".into(),
            },
            &now(),
        );
        assert_eq!(started.task_id.as_deref(), Some("t-export"));
        assert_eq!(started.phase, Some(ExportPhase::Exporting));
        assert_eq!(notices[0].reason, "ExportStarted");
        assert!(!nothing_to_release(&started));
    }

    #[test]
    fn a_finished_task_is_ready_with_its_object_and_needs_no_cleanup() {
        let mut finished = task(TaskState::Finished, Some("100%"));
        finished.oss_object = Some("golden_m-1_t-export.raw".into());
        let (status, notices) = next_status(
            &ImageExportStatus::default(),
            None,
            &Outcome::Observed(finished),
            &now(),
        );
        assert_eq!(status.phase, Some(ExportPhase::Exported));
        assert_eq!(
            status.oss_object.as_deref(),
            Some("golden_m-1_t-export.raw")
        );
        let ready = conditions::find(&status.conditions, READY).unwrap();
        assert_eq!(ready.status, "True");
        assert!(notices.iter().any(|n| n.reason == "Exported"));
        assert!(task_ended(&status));
        assert!(nothing_to_release(&status));
    }

    #[test]
    fn progress_rises_with_events_every_ten_percent() {
        let (first, _) = next_status(
            &ImageExportStatus::default(),
            None,
            &Outcome::Observed(task(TaskState::Running, Some("35%"))),
            &now(),
        );
        assert_eq!(first.progress.as_deref(), Some("35%"));
        let (second, notices) = next_status(
            &first,
            None,
            &Outcome::Observed(task(TaskState::Running, None)),
            &now(),
        );
        assert_eq!(
            second.progress.as_deref(),
            Some("35%"),
            "a listing without progress keeps the last reading"
        );
        assert!(notices.is_empty());
    }

    #[test]
    fn a_failed_or_cancelled_task_stalls_with_its_error() {
        let mut failed = task(TaskState::Failed, None);
        failed.error = Some(("InvalidOSSBucket.NotFound".into(), "no bucket".into()));
        let (status, notices) = next_status(
            &ImageExportStatus::default(),
            None,
            &Outcome::Observed(failed),
            &now(),
        );
        assert_eq!(status.phase, Some(ExportPhase::Failed));
        let stalled = conditions::find(&status.conditions, STALLED).unwrap();
        assert_eq!(stalled.reason, "InvalidOSSBucket.NotFound");
        assert!(notices[0].warning);
        let (cancelled, _) = next_status(
            &ImageExportStatus::default(),
            None,
            &Outcome::Observed(task(TaskState::Ended("Cancelled".into()), None)),
            &now(),
        );
        let stalled = conditions::find(&cancelled.conditions, STALLED).unwrap();
        assert_eq!(stalled.reason, "ExportTaskCancelled");
    }
}
