//! The `ImageImport` decisions as pure functions of (status, what ECS reported) → next step and
//! next status. The imported image carries the owner tags, so it is found, followed and
//! released like a copy's destination image; the task adds its status and failure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::image_import::{ImageImportStatus, ImportPhase};
use crate::controller::conditions::{READY, RECONCILING, STALLED, Wanted};
use crate::controller::ecs_tasks::{TaskSnapshot, TaskState};
use crate::controller::owned_images::{ImageSnapshot, ImageState, keep_best};
use crate::controller::task::decide::{
    Common, Notice, finish, next_common, progress_step_crossed, task_status,
};

/// What the reconciler learned this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// No image recorded; the owner-tag lookup found these (empty: nothing owned is visible).
    Lookup(Vec<ImageSnapshot>),
    /// The recorded image, its task when it was looked up, and other images carrying this
    /// object's owner tag.
    Found {
        image: ImageSnapshot,
        task: Option<TaskSnapshot>,
        duplicates: Vec<ImageSnapshot>,
    },
    /// The recorded image is confirmed gone; its task, if ECS still knows it.
    Missing { task: Option<TaskSnapshot> },
    /// Cannot tell yet; look again next tick.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyStep {
    /// Call ImportImage with the ClientToken of `token_index`, after recording the attempt when
    /// `record_attempt`.
    StartImport {
        token_index: i32,
        record_attempt: bool,
    },
    /// Record what ECS reports (adopting an image found by the lookup when `adopted`), then
    /// remove the `duplicates`.
    Follow {
        image: ImageSnapshot,
        task: Option<TaskSnapshot>,
        adopted: bool,
        duplicates: Vec<ImageSnapshot>,
    },
    /// The import failed and ECS removed its image: show the task's error, import nothing.
    Fail(TaskSnapshot),
    /// The image was lost after the import: import again.
    Reimport,
    Wait,
}

pub fn decide_apply(status: &ImageImportStatus, observation: &Observation) -> ApplyStep {
    match observation {
        Observation::Lookup(images) if images.is_empty() => {
            let attempts = status.import_attempts.unwrap_or(0).max(0);
            ApplyStep::StartImport {
                token_index: (attempts - 1).max(0),
                record_attempt: attempts == 0,
            }
        }
        Observation::Lookup(images) => {
            let (image, duplicates) = keep_best(images);
            ApplyStep::Follow {
                image,
                task: None,
                adopted: true,
                duplicates,
            }
        }
        Observation::Found {
            image,
            task,
            duplicates,
        } => ApplyStep::Follow {
            image: image.clone(),
            task: task.clone(),
            adopted: false,
            duplicates: duplicates.clone(),
        },
        Observation::Missing {
            task: Some(task), ..
        } if task.state == TaskState::Failed => ApplyStep::Fail(task.clone()),
        Observation::Missing {
            task: Some(task), ..
        } if task.state == TaskState::Running => ApplyStep::Wait,
        Observation::Missing { .. } => ApplyStep::Reimport,
        Observation::Unknown => ApplyStep::Wait,
    }
}

/// Whether the task of an image in this state must be looked up: to confirm `Finished` before
/// Ready, and to read the failure of a failed import. Not while it runs: the shared image
/// listing carries the progress.
pub fn task_needed(status: &ImageImportStatus, image: &ImageSnapshot) -> bool {
    let recorded = status.task_status.as_deref();
    match image.state {
        ImageState::Available => recorded != Some("Finished"),
        ImageState::Failed(_) => recorded != Some("Failed"),
        ImageState::Waiting | ImageState::Creating => image.progress.is_none(),
    }
}

/// Whether deleting needs the cloud: not when ImportImage was never begun.
pub fn nothing_started(status: &ImageImportStatus) -> bool {
    status.image_id.is_none() && status.import_attempts.unwrap_or(0) <= 0
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An ImportImage is about to be sent: record the attempt first.
    ImportAttempted,
    ImportStarted {
        image_id: String,
        task_id: String,
    },
    Observed {
        image: ImageSnapshot,
        task: Option<TaskSnapshot>,
    },
    /// The import failed: the task's error.
    TaskFailed(TaskSnapshot),
    /// The imported image vanished; it will be imported again.
    Lost {
        image_id: String,
    },
    /// ImportImage answered with a terminal error: stalled, and the attempt no longer counts.
    ImportRefused {
        code: String,
        message: String,
    },
    Common(Common),
}

pub fn next_status(
    previous: &ImageImportStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> (ImageImportStatus, Vec<Notice>) {
    let mut status = previous.clone();
    let mut notices = Vec::new();
    let wanted: Vec<Wanted> = match outcome {
        Outcome::Common(common) => return next_common(previous, generation, common, now),
        Outcome::ImportRefused { code, message } => {
            let stalled = Common::Stalled {
                code: code.clone(),
                message: message.clone(),
            };
            let (mut status, notices) = next_common(previous, generation, &stalled, now);
            if status.image_id.is_none() {
                status.import_attempts = Some((previous.import_attempts.unwrap_or(0) - 1).max(0));
            }
            return (status, notices);
        }
        Outcome::ImportAttempted => {
            status.import_attempts = Some(previous.import_attempts.unwrap_or(0).max(0) + 1);
            importing("starting the import")
        }
        Outcome::ImportStarted { image_id, task_id } => {
            status.image_id = Some(image_id.clone());
            status.task_id = Some(task_id.clone());
            status.task_status = Some("Processing".into());
            status.import_attempts = Some(previous.import_attempts.unwrap_or(0).max(1));
            status.phase = Some(ImportPhase::Importing);
            status.progress = Some("0%".into());
            status.start_time = Some(now.clone());
            status.completion_time = None;
            notices.push(Notice::normal(
                "ImportStarted",
                format!("ImportImage started task {task_id} for image {image_id}"),
            ));
            importing(&format!("importing {image_id}"))
        }
        Outcome::Observed { image, task } => observed(
            &mut status,
            previous,
            image,
            task.as_ref(),
            now,
            &mut notices,
        ),
        Outcome::TaskFailed(task) => {
            status.phase = Some(ImportPhase::Failed);
            status.task_status = Some(task.state.label().to_string());
            let (code, message) = failure(task);
            if previous.phase != Some(ImportPhase::Failed) {
                notices.push(Notice::warning("Failed", format!("{code}: {message}")));
            }
            vec![
                Wanted::new(READY, false, "Failed", format!("{code}: {message}")),
                Wanted::new(RECONCILING, false, "Failed", ""),
                Wanted::new(STALLED, true, &code, message),
            ]
        }
        Outcome::Lost { image_id } => {
            status.image_id = None;
            status.task_id = None;
            status.task_status = None;
            status.import_attempts = Some(previous.import_attempts.unwrap_or(0).max(1) + 1);
            status.phase = Some(ImportPhase::Pending);
            status.progress = None;
            status.start_time = None;
            status.completion_time = None;
            let message =
                format!("imported image {image_id} no longer exists in ECS; importing again");
            notices.push(Notice::warning("ImageMissing", message.clone()));
            vec![
                Wanted::new(READY, false, "ImageMissing", message.clone()),
                Wanted::new(RECONCILING, true, "ImageMissing", message),
                Wanted::new(STALLED, false, "Progressing", ""),
            ]
        }
    };
    (finish(status, previous, generation, &wanted, now), notices)
}

fn importing(message: &str) -> Vec<Wanted> {
    vec![
        Wanted::new(READY, false, "Importing", message),
        Wanted::new(RECONCILING, true, "Importing", message),
        Wanted::new(STALLED, false, "Progressing", ""),
    ]
}

/// The task's failure, or what the image state says when ECS gave no error.
fn failure(task: &TaskSnapshot) -> (String, String) {
    task.error.clone().unwrap_or_else(|| {
        (
            "ImportTaskFailed".into(),
            format!("ECS reports import task {} as failed", task.task_id),
        )
    })
}

fn observed(
    status: &mut ImageImportStatus,
    previous: &ImageImportStatus,
    image: &ImageSnapshot,
    task: Option<&TaskSnapshot>,
    now: &Time,
    notices: &mut Vec<Notice>,
) -> Vec<Wanted> {
    let id = &image.image_id;
    if status.image_id.as_deref() != Some(id.as_str()) {
        status.image_id = Some(id.clone());
        status.start_time = Some(now.clone());
    }
    status.import_attempts = Some(previous.import_attempts.unwrap_or(0).max(1));
    if status.start_time.is_none() {
        status.start_time = Some(now.clone());
    }
    if let Some(task) = task {
        status.task_id = Some(task.task_id.clone());
        status.task_status = Some(task.state.label().to_string());
    }
    let task_finished = status.task_status.as_deref() == Some("Finished");
    match &image.state {
        ImageState::Available if task_finished => {
            status.phase = Some(ImportPhase::Available);
            status.progress = Some("100%".into());
            if status.completion_time.is_none() {
                status.completion_time = Some(now.clone());
            }
            if previous.phase != Some(ImportPhase::Available) {
                notices.push(Notice::normal(
                    "Available",
                    format!("imported image {id} is Available"),
                ));
            }
            vec![
                Wanted::new(
                    READY,
                    true,
                    "Available",
                    format!("imported image {id} is Available"),
                ),
                Wanted::new(RECONCILING, false, "Available", ""),
                Wanted::new(STALLED, false, "Available", ""),
            ]
        }
        ImageState::Failed(ecs_status) => {
            status.phase = Some(ImportPhase::Failed);
            let (code, message) = match task.filter(|t| t.error.is_some()) {
                Some(task) => failure(task),
                None => (
                    format!("ImportedImage{ecs_status}"),
                    format!("ECS reports imported image {id} as {ecs_status}"),
                ),
            };
            if previous.phase != Some(ImportPhase::Failed) {
                notices.push(Notice::warning("Failed", format!("{code}: {message}")));
            }
            vec![
                Wanted::new(READY, false, "Failed", format!("{code}: {message}")),
                Wanted::new(RECONCILING, false, "Failed", ""),
                Wanted::new(STALLED, true, &code, message),
            ]
        }
        // Running, or Available while the task has not reported Finished yet.
        _ => {
            status.phase = Some(ImportPhase::Importing);
            let progress = image
                .progress
                .as_deref()
                .map(str::to_string)
                .or_else(|| task.and_then(|t| t.progress.clone()))
                .or_else(|| previous.progress.clone())
                .unwrap_or_else(|| "0%".into());
            if let Some(step) = progress_step_crossed(previous.progress.as_deref(), &progress) {
                notices.push(
                    Notice::normal("Progress", format!("import of {id} at {step}%"))
                        .with_action(format!("Import{step}Percent")),
                );
            }
            status.progress = Some(progress.clone());
            importing(&format!("importing {id}: {progress}"))
        }
    }
}

task_status!(ImageImportStatus, ImportPhase {
    Pending => Pending,
    Failed => Failed,
    Cancelling => Cancelling,
    Deleting => Deleting,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Word;
    use crate::controller::conditions;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn image(state: ImageState, progress: Option<&str>) -> ImageSnapshot {
        ImageSnapshot {
            image_id: "m-imported".into(),
            state,
            progress: progress.map(Word::new),
            usable: None,
        }
    }

    fn task(state: TaskState) -> TaskSnapshot {
        TaskSnapshot {
            task_id: "t-1".into(),
            state,
            progress: None,
            error: None,
            oss_object: None,
            created: None,
        }
    }

    fn ready(status: &ImageImportStatus) -> &str {
        &conditions::find(&status.conditions, READY)
            .expect("Ready")
            .status
    }

    #[test]
    fn nothing_owned_imports_once_and_a_retry_reuses_the_token() {
        let fresh = ImageImportStatus::default();
        assert_eq!(
            decide_apply(&fresh, &Observation::Lookup(vec![])),
            ApplyStep::StartImport {
                token_index: 0,
                record_attempt: true
            }
        );
        let (attempted, _) = next_status(&fresh, None, &Outcome::ImportAttempted, &now());
        assert_eq!(attempted.import_attempts, Some(1));
        assert!(!nothing_started(&attempted), "an import may exist now");
        assert_eq!(
            decide_apply(&attempted, &Observation::Lookup(vec![])),
            ApplyStep::StartImport {
                token_index: 0,
                record_attempt: false
            },
            "after a crash the same ClientToken is sent again"
        );
        let owned = image(ImageState::Creating, Some("10%"));
        assert!(matches!(
            decide_apply(&attempted, &Observation::Lookup(vec![owned])),
            ApplyStep::Follow { adopted: true, .. }
        ));
    }

    #[test]
    fn the_task_and_image_are_recorded_before_any_waiting() {
        let (status, notices) = next_status(
            &ImageImportStatus::default(),
            None,
            &Outcome::ImportStarted {
                image_id: "m-imported".into(),
                task_id: "t-1".into(),
            },
            &now(),
        );
        assert_eq!(status.task_id.as_deref(), Some("t-1"));
        assert_eq!(status.image_id.as_deref(), Some("m-imported"));
        assert_eq!(status.phase, Some(ImportPhase::Importing));
        assert_eq!(notices[0].reason, "ImportStarted");
    }

    #[test]
    fn ready_only_when_the_task_finished_and_the_image_is_available() {
        let (importing, _) = next_status(
            &ImageImportStatus::default(),
            None,
            &Outcome::ImportStarted {
                image_id: "m-imported".into(),
                task_id: "t-1".into(),
            },
            &now(),
        );
        let available = image(ImageState::Available, Some("100%"));
        assert!(task_needed(&importing, &available));
        let (still, _) = next_status(
            &importing,
            None,
            &Outcome::Observed {
                image: available.clone(),
                task: Some(task(TaskState::Running)),
            },
            &now(),
        );
        assert_eq!(still.phase, Some(ImportPhase::Importing));
        assert_eq!(ready(&still), "False");
        let (done, notices) = next_status(
            &still,
            None,
            &Outcome::Observed {
                image: available.clone(),
                task: Some(task(TaskState::Finished)),
            },
            &now(),
        );
        assert_eq!(done.phase, Some(ImportPhase::Available));
        assert_eq!(ready(&done), "True");
        assert_eq!(done.task_status.as_deref(), Some("Finished"));
        assert!(notices.iter().any(|n| n.reason == "Available"));
        assert!(!task_needed(&done, &available), "no more task lookups");
    }

    #[test]
    fn progress_comes_from_the_image_listing_and_else_from_the_task() {
        let base = ImageImportStatus::default();
        let (from_image, notices) = next_status(
            &base,
            None,
            &Outcome::Observed {
                image: image(ImageState::Creating, Some("45%")),
                task: None,
            },
            &now(),
        );
        assert_eq!(from_image.progress.as_deref(), Some("45%"));
        assert!(notices.iter().any(|n| n.reason == "Progress"));
        let without = image(ImageState::Creating, None);
        assert!(task_needed(&from_image, &without));
        let mut running = task(TaskState::Running);
        running.progress = Some("60%".into());
        let (from_task, _) = next_status(
            &from_image,
            None,
            &Outcome::Observed {
                image: without,
                task: Some(running),
            },
            &now(),
        );
        assert_eq!(from_task.progress.as_deref(), Some("60%"));
    }

    #[test]
    fn a_failed_task_stalls_with_its_error_and_is_not_imported_again() {
        let mut failed = task(TaskState::Failed);
        failed.error = Some((
            "InvalidOSSObject.NotFound".into(),
            "The OSS object does not exist".into(),
        ));
        let recorded = ImageImportStatus {
            image_id: Some("m-imported".into()),
            import_attempts: Some(1),
            ..Default::default()
        };
        let step = decide_apply(
            &recorded,
            &Observation::Missing {
                task: Some(failed.clone()),
            },
        );
        assert_eq!(step, ApplyStep::Fail(failed.clone()));
        let (status, notices) = next_status(&recorded, None, &Outcome::TaskFailed(failed), &now());
        assert_eq!(status.phase, Some(ImportPhase::Failed));
        let stalled = conditions::find(&status.conditions, STALLED).unwrap();
        assert_eq!(stalled.reason, "InvalidOSSObject.NotFound");
        assert!(notices[0].warning);
        assert_eq!(
            decide_apply(&recorded, &Observation::Missing { task: None }),
            ApplyStep::Reimport,
            "an image lost without a failed task is imported again"
        );
    }

    #[test]
    fn a_refused_import_is_not_an_attempt() {
        let (attempted, _) = next_status(
            &ImageImportStatus::default(),
            None,
            &Outcome::ImportAttempted,
            &now(),
        );
        let (refused, _) = next_status(
            &attempted,
            None,
            &Outcome::ImportRefused {
                code: "InvalidImageName.Duplicated".into(),
                message: "name taken".into(),
            },
            &now(),
        );
        assert_eq!(refused.import_attempts, Some(0));
        assert!(nothing_started(&refused));
        assert_eq!(refused.phase, Some(ImportPhase::Failed));
    }
}
