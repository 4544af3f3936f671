//! The `ImageCopy` decisions as pure functions of (spec, status, what ECS reported) → next step
//! and next status. No IO here: the reconciler gathers observations, calls these, and acts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::image_copy::{CopyPhase, DeletionPolicy, ImageCopyStatus};
use crate::controller::conditions::{self, QUEUED, READY, RECONCILING, STALLED, Wanted};
pub use crate::controller::owned_images::{
    CleanupStep, ImageSnapshot, ImageState, keep_best, release_step,
};
use crate::controller::task::decide::{
    Common, Notice, finish, next_common, progress_step_crossed, task_status,
};

/// Reason of the `Reconciling` condition while ECS refuses to cancel a copy.
pub const CANCEL_NOT_SUPPORTED: &str = "CancelNotSupported";

/// What the reconciler learned about the destination image this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// No image recorded in status; the owner-tag lookup in the destination region found these
    /// (empty: nothing owned by this object is visible).
    Lookup(Vec<ImageSnapshot>),
    /// The recorded image as ECS shows it — from the shared region listing, or from a direct
    /// lookup by id when the listing lacked it — and any other images carrying this object's
    /// owner tag (copies made twice by a cloud that ignored the ClientToken).
    Found {
        image: ImageSnapshot,
        duplicates: Vec<ImageSnapshot>,
    },
    /// The recorded image is absent from a listing taken after it was recorded, and a direct
    /// `DescribeImages ImageId=` (no tag filter) confirms it does not exist.
    Missing,
    /// Cannot tell yet: the listing predates the copy, or the direct lookup answered with items
    /// it could not decode. Look again next tick; never copy on a guess.
    Unknown,
}

/// The next step of the apply path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyStep {
    /// Nothing owned exists: call CopyImage with the ClientToken of `token_index`, after
    /// recording the attempt in status when `record_attempt` (so a crash after the call still
    /// knows a copy may exist, and a retry reuses the token).
    StartCopy {
        token_index: i32,
        record_attempt: bool,
    },
    /// Record what ECS reports (adopting an owned image found by the lookup, if `adopted`), then
    /// cancel or delete the `duplicates`.
    Follow {
        image: ImageSnapshot,
        adopted: bool,
        duplicates: Vec<ImageSnapshot>,
    },
    /// The recorded image was confirmed gone: forget it and copy again.
    Recopy,
    /// Not sure what exists; look again next tick.
    Wait,
}

pub fn decide_apply(status: &ImageCopyStatus, observation: &Observation) -> ApplyStep {
    match observation {
        Observation::Lookup(images) if images.is_empty() => {
            let attempts = status.copy_attempts.unwrap_or(0).max(0);
            // An attempt begun without an image recorded may have created one the lookup cannot
            // see yet: retry it with the same token, which ECS answers with the same image.
            ApplyStep::StartCopy {
                token_index: (attempts - 1).max(0),
                record_attempt: attempts == 0,
            }
        }
        Observation::Lookup(images) => {
            let (image, duplicates) = keep_best(images);
            ApplyStep::Follow {
                image,
                adopted: true,
                duplicates,
            }
        }
        Observation::Found { image, duplicates } => ApplyStep::Follow {
            image: image.clone(),
            adopted: false,
            duplicates: duplicates.clone(),
        },
        Observation::Missing => ApplyStep::Recopy,
        Observation::Unknown => ApplyStep::Wait,
    }
}

/// Whether deleting the object needs the cloud at all: not when no CopyImage was ever begun
/// (a refused CopyImage does not count) and no image was ever recorded.
pub fn nothing_started(status: &ImageCopyStatus) -> bool {
    status.image_id.is_none() && status.copy_attempts.unwrap_or(0) <= 0
}

/// `image` is the destination image as ECS shows it now (`None`: it does not exist).
pub fn decide_cleanup(
    policy: DeletionPolicy,
    status: &ImageCopyStatus,
    image: Option<&ImageSnapshot>,
) -> CleanupStep {
    let cancel_refused = conditions::find(&status.conditions, RECONCILING)
        .is_some_and(|c| c.status == "True" && c.reason == CANCEL_NOT_SUPPORTED);
    release_step(policy, image, cancel_refused)
}

/// How a CancelCopyImage error changes the delete path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelRefusal {
    /// The copy finished meanwhile: apply the deletion policy to the image.
    AlreadyFinished,
    /// The copy failed or the image is gone: nothing left to do.
    NothingToCancel,
    /// ECS cannot cancel this copy: wait for it, then apply the policy.
    NotSupported,
    /// Any other error: handled like any failed call.
    Other,
}

pub fn classify_cancel_error(code: &str, message: &str) -> CancelRefusal {
    match code {
        "IncorrectImageStatus" if message.to_ascii_lowercase().contains("fail") => {
            CancelRefusal::NothingToCancel
        }
        "IncorrectImageStatus" => CancelRefusal::AlreadyFinished,
        "InvalidImageId.NotFound" => CancelRefusal::NothingToCancel,
        "CancelNotSupported" => CancelRefusal::NotSupported,
        _ => CancelRefusal::Other,
    }
}

/// The outcome the status should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A CopyImage is about to be sent: record the attempt first.
    CopyAttempted,
    /// CopyImage returned `image_id`; nothing observed yet.
    CopyStarted {
        image_id: String,
    },
    Observed(ImageSnapshot),
    /// The recorded image vanished; a new copy will be made.
    Lost {
        image_id: String,
    },
    /// Shown the same way by every kind.
    Common(Common),
    /// CopyImage answered with a terminal error, so the attempt recorded before it made
    /// nothing: stalled like `Common::Stalled`, and the attempt no longer counts.
    CopyRefused {
        code: String,
        message: String,
    },
}

/// The status after `outcome`, plus the events worth publishing. Pure: `now` is passed in.
pub fn next_status(
    previous: &ImageCopyStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> (ImageCopyStatus, Vec<Notice>) {
    let mut status = previous.clone();
    let mut notices = Vec::new();
    let wanted: Vec<Wanted>;
    match outcome {
        Outcome::CopyAttempted => {
            status.copy_attempts = Some(previous.copy_attempts.unwrap_or(0).max(0) + 1);
            if status.phase.is_none() {
                status.phase = Some(CopyPhase::Pending);
            }
            wanted = vec![
                Wanted::new(READY, false, "Copying", "starting the copy"),
                Wanted::new(RECONCILING, true, "Copying", "starting the copy"),
            ];
        }
        Outcome::CopyStarted { image_id } => {
            status.image_id = Some(image_id.clone());
            // The attempt was recorded before the call; older objects may lack it.
            status.copy_attempts = Some(previous.copy_attempts.unwrap_or(0).max(1));
            status.phase = Some(CopyPhase::Copying);
            status.progress = Some("0%".into());
            status.start_time = Some(now.clone());
            status.completion_time = None;
            notices.push(Notice::normal(
                "CopyStarted",
                format!("CopyImage started destination image {image_id}"),
            ));
            wanted = vec![
                Wanted::new(READY, false, "Copying", format!("copying to {image_id}")),
                Wanted::new(
                    RECONCILING,
                    true,
                    "Copying",
                    format!("copying to {image_id}"),
                ),
                Wanted::new(STALLED, false, "Progressing", ""),
                Wanted::new(QUEUED, false, "Copying", ""),
            ];
        }
        Outcome::Observed(image) => {
            if status.image_id.as_deref() != Some(image.image_id.as_str()) {
                status.image_id = Some(image.image_id.clone());
                status.start_time = Some(now.clone());
            }
            // An adopted image counts as an attempt, so a copy made again after it is lost
            // gets a token of its own rather than the adopted copy's.
            status.copy_attempts = Some(previous.copy_attempts.unwrap_or(0).max(1));
            if status.start_time.is_none() {
                status.start_time = Some(now.clone());
            }
            let previous_phase = previous.phase;
            let id = &image.image_id;
            match &image.state {
                ImageState::Waiting => {
                    status.phase = Some(CopyPhase::Queued);
                    status.progress = Some(image.progress.as_deref().unwrap_or("0%").to_string());
                    if previous_phase != Some(CopyPhase::Queued) {
                        notices.push(Notice::normal(
                            "Queued",
                            format!(
                                "ECS queued the copy to {id} behind other copies to this region"
                            ),
                        ));
                    }
                    wanted = vec![
                        Wanted::new(
                            READY,
                            false,
                            "Queued",
                            "waiting for other copies to the destination region",
                        ),
                        Wanted::new(
                            RECONCILING,
                            true,
                            "Queued",
                            "waiting for other copies to the destination region",
                        ),
                        Wanted::new(STALLED, false, "Progressing", ""),
                        Wanted::new(
                            QUEUED,
                            true,
                            "Waiting",
                            "ECS reports the destination image as Waiting",
                        ),
                    ];
                }
                ImageState::Creating => {
                    let progress = image.progress.as_deref().unwrap_or("0%").to_string();
                    status.phase = Some(CopyPhase::Copying);
                    if let Some(step) =
                        progress_step_crossed(previous.progress.as_deref(), &progress)
                    {
                        notices.push(
                            Notice::normal("Progress", format!("copy to {id} at {step}%"))
                                .with_action(format!("Copy{step}Percent")),
                        );
                    }
                    status.progress = Some(progress.clone());
                    wanted = vec![
                        Wanted::new(
                            READY,
                            false,
                            "Copying",
                            format!("copying to {id}: {progress}"),
                        ),
                        Wanted::new(
                            RECONCILING,
                            true,
                            "Copying",
                            format!("copying to {id}: {progress}"),
                        ),
                        Wanted::new(STALLED, false, "Progressing", ""),
                        Wanted::new(QUEUED, false, "Copying", ""),
                    ];
                }
                ImageState::Available => {
                    status.phase = Some(CopyPhase::Available);
                    status.progress = Some("100%".into());
                    if status.completion_time.is_none() {
                        status.completion_time = Some(now.clone());
                    }
                    if previous_phase != Some(CopyPhase::Available) {
                        notices.push(Notice::normal(
                            "Available",
                            format!("destination image {id} is Available"),
                        ));
                    }
                    let ready = image.usable != Some(false);
                    let (reason, message) = if ready {
                        ("Available", format!("destination image {id} is Available"))
                    } else {
                        (
                            "NotUsable",
                            format!(
                                "destination image {id} is Available but ECS reports it as not usable"
                            ),
                        )
                    };
                    wanted = vec![
                        Wanted::new(READY, ready, reason, message),
                        Wanted::new(RECONCILING, false, "Available", ""),
                        Wanted::new(STALLED, false, "Available", ""),
                        Wanted::new(QUEUED, false, "Available", ""),
                    ];
                }
                ImageState::Failed(ecs_status) => {
                    status.phase = Some(CopyPhase::Failed);
                    let message = format!("ECS reports destination image {id} as {ecs_status}");
                    if previous_phase != Some(CopyPhase::Failed) {
                        notices.push(Notice::warning("Failed", message.clone()));
                    }
                    wanted = vec![
                        Wanted::new(READY, false, "Failed", message.clone()),
                        Wanted::new(RECONCILING, false, "Failed", ""),
                        Wanted::new(
                            STALLED,
                            true,
                            &format!("DestinationImage{ecs_status}"),
                            message,
                        ),
                        Wanted::new(QUEUED, false, "Failed", ""),
                    ];
                }
            }
        }
        Outcome::Lost { image_id } => {
            status.image_id = None;
            // The next copy is a new attempt with a new token: the lost copy's token would
            // only return the lost image.
            status.copy_attempts = Some(previous.copy_attempts.unwrap_or(0).max(1) + 1);
            status.phase = Some(CopyPhase::Pending);
            status.progress = None;
            status.start_time = None;
            status.completion_time = None;
            let message =
                format!("destination image {image_id} no longer exists in ECS; copying again");
            notices.push(Notice::warning("DestinationImageMissing", message.clone()));
            wanted = vec![
                Wanted::new(READY, false, "DestinationImageMissing", message.clone()),
                Wanted::new(RECONCILING, true, "DestinationImageMissing", message),
                Wanted::new(STALLED, false, "Progressing", ""),
                Wanted::new(QUEUED, false, "Pending", ""),
            ];
        }
        Outcome::Common(common) => return next_common(previous, generation, common, now),
        Outcome::CopyRefused { code, message } => {
            let stalled = Common::Stalled {
                code: code.clone(),
                message: message.clone(),
            };
            let (mut status, notices) = next_common(previous, generation, &stalled, now);
            if status.image_id.is_none() {
                status.copy_attempts = Some((previous.copy_attempts.unwrap_or(0) - 1).max(0));
            }
            return (status, notices);
        }
    }
    (finish(status, previous, generation, &wanted, now), notices)
}

task_status!(ImageCopyStatus, CopyPhase {
    Pending => Pending,
    Failed => Failed,
    Cancelling => Cancelling,
    Deleting => Deleting,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Word;
    use crate::controller::task::decide::{CommonPhase, client_token};
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn image(state: ImageState, progress: &str) -> ImageSnapshot {
        ImageSnapshot {
            image_id: "m-dest".into(),
            state,
            progress: Some(Word::new(progress)),
            usable: Some(true),
        }
    }

    fn cond<'a>(s: &'a ImageCopyStatus, t: &str) -> &'a crate::api::Condition {
        conditions::find(&s.conditions, t).expect("condition present")
    }

    #[test]
    fn no_owned_image_means_copy_and_an_owned_one_is_adopted() {
        let fresh = ImageCopyStatus::default();
        assert_eq!(
            decide_apply(&fresh, &Observation::Lookup(vec![])),
            ApplyStep::StartCopy {
                token_index: 0,
                record_attempt: true
            }
        );
        let owned = image(ImageState::Creating, "30%");
        assert_eq!(
            decide_apply(&fresh, &Observation::Lookup(vec![owned.clone()])),
            ApplyStep::Follow {
                image: owned,
                adopted: true,
                duplicates: vec![]
            }
        );
    }

    #[test]
    fn an_unrecorded_attempt_is_retried_with_its_own_token() {
        let (attempted, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::CopyAttempted,
            &now(),
        );
        assert_eq!(attempted.copy_attempts, Some(1));
        assert!(
            !nothing_started(&attempted),
            "a CopyImage may have been sent"
        );
        assert_eq!(
            decide_apply(&attempted, &Observation::Lookup(vec![])),
            ApplyStep::StartCopy {
                token_index: 0,
                record_attempt: false
            },
            "the crash-and-retry case reuses the token, so ECS answers with the same image"
        );
    }

    #[test]
    fn a_refused_copy_is_not_an_attempt_so_deletion_needs_no_cloud() {
        let (attempted, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::CopyAttempted,
            &now(),
        );
        let (refused, notices) = next_status(
            &attempted,
            None,
            &Outcome::CopyRefused {
                code: "InvalidAccessKeyId.NotFound".into(),
                message: "no such key".into(),
            },
            &now(),
        );
        assert_eq!(refused.copy_attempts, Some(0));
        assert_eq!(
            cond(&refused, STALLED).reason,
            "InvalidAccessKeyId.NotFound"
        );
        assert!(notices[0].warning);
        assert!(nothing_started(&refused));
        assert!(nothing_started(&ImageCopyStatus::default()));
    }

    #[test]
    fn several_owned_images_keep_the_best_and_remove_the_rest() {
        let mut creating = image(ImageState::Creating, "30%");
        creating.image_id = "m-a".into();
        let mut available = image(ImageState::Available, "100%");
        available.image_id = "m-b".into();
        let mut failed = image(ImageState::Failed("CreateFailed".into()), "0%");
        failed.image_id = "m-c".into();
        let step = decide_apply(
            &ImageCopyStatus::default(),
            &Observation::Lookup(vec![failed.clone(), creating.clone(), available.clone()]),
        );
        assert_eq!(
            step,
            ApplyStep::Follow {
                image: available,
                adopted: true,
                duplicates: vec![creating, failed]
            }
        );
    }

    #[test]
    fn only_a_confirmed_absence_recopies() {
        let status = ImageCopyStatus::default();
        assert_eq!(
            decide_apply(&status, &Observation::Unknown),
            ApplyStep::Wait
        );
        assert_eq!(
            decide_apply(&status, &Observation::Missing),
            ApplyStep::Recopy
        );
    }

    #[test]
    fn adopting_or_losing_an_image_moves_the_token_on() {
        let (adopted, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Observed(image(ImageState::Available, "100%")),
            &now(),
        );
        assert_eq!(adopted.copy_attempts, Some(1));
        let (lost, _) = next_status(
            &adopted,
            None,
            &Outcome::Lost {
                image_id: "m-dest".into(),
            },
            &now(),
        );
        assert_eq!(lost.copy_attempts, Some(2));
        assert_eq!(
            decide_apply(&lost, &Observation::Lookup(vec![])),
            ApplyStep::StartCopy {
                token_index: 1,
                record_attempt: false
            },
            "the copy after a loss uses a new token, not the adopted copy's"
        );
    }

    #[test]
    fn a_blocked_deletion_is_shown_once_with_its_code() {
        let outcome = Outcome::Common(Common::DeletionBlocked {
            code: "ImageUsingByInstance".into(),
            message: "The image is in use".into(),
        });
        let (first, n1) = next_status(&ImageCopyStatus::default(), None, &outcome, &now());
        assert_eq!(first.phase, Some(CopyPhase::Deleting));
        assert_eq!(cond(&first, STALLED).reason, "ImageUsingByInstance");
        assert_eq!(cond(&first, READY).status, "False");
        assert_eq!(n1.len(), 1);
        assert!(n1[0].warning);
        assert_eq!(n1[0].reason, "DeletionBlocked");
        let (second, n2) = next_status(&first, None, &outcome, &now());
        assert!(n2.is_empty());
        assert_eq!(second, first);
    }

    #[test]
    fn copy_started_records_the_image_before_any_waiting() {
        let (status, notices) = next_status(
            &ImageCopyStatus::default(),
            Some(3),
            &Outcome::CopyStarted {
                image_id: "m-new".into(),
            },
            &now(),
        );
        assert_eq!(status.image_id.as_deref(), Some("m-new"));
        assert_eq!(status.copy_attempts, Some(1));
        assert_eq!(client_token("uid", 0), "uid");
        assert_eq!(client_token("uid", 1), "uid-1");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.start_time, Some(now()));
        assert_eq!(notices[0].reason, "CopyStarted");
        assert_eq!(cond(&status, READY).status, "False");
        assert_eq!(cond(&status, RECONCILING).status, "True");
    }

    #[test]
    fn waiting_is_queued_creating_is_copying_available_is_ready() {
        let (queued, n1) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Observed(image(ImageState::Waiting, "0%")),
            &now(),
        );
        assert_eq!(queued.phase, Some(CopyPhase::Queued));
        assert_eq!(cond(&queued, QUEUED).status, "True");
        assert_eq!(n1[0].reason, "Queued");

        let (copying, n2) = next_status(
            &queued,
            None,
            &Outcome::Observed(image(ImageState::Creating, "45%")),
            &now(),
        );
        assert_eq!(copying.phase, Some(CopyPhase::Copying));
        assert_eq!(n2[0].reason, "Progress");
        assert_eq!(
            n2[0].action, "Copy40Percent",
            "each 10% step is its own event, not a merged series"
        );
        assert_eq!(copying.progress.as_deref(), Some("45%"));
        assert_eq!(cond(&copying, QUEUED).status, "False");

        let (done, n3) = next_status(
            &copying,
            None,
            &Outcome::Observed(image(ImageState::Available, "100%")),
            &now(),
        );
        assert_eq!(done.phase, Some(CopyPhase::Available));
        assert_eq!(cond(&done, READY).status, "True");
        assert_eq!(cond(&done, RECONCILING).status, "False");
        assert!(done.completion_time.is_some());
        assert_eq!(n3[0].reason, "Available");

        let (again, n4) = next_status(
            &done,
            None,
            &Outcome::Observed(image(ImageState::Available, "100%")),
            &now(),
        );
        assert!(n4.is_empty(), "no repeated Available event");
        assert_eq!(again.conditions, done.conditions);
    }

    #[test]
    fn available_but_not_usable_is_not_ready() {
        let mut img = image(ImageState::Available, "100%");
        img.usable = Some(false);
        let (status, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Observed(img),
            &now(),
        );
        assert_eq!(cond(&status, READY).status, "False");
        assert_eq!(cond(&status, READY).reason, "NotUsable");
    }

    #[test]
    fn create_failed_stalls() {
        let (status, notices) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Observed(image(ImageState::Failed("CreateFailed".into()), "10%")),
            &now(),
        );
        assert_eq!(status.phase, Some(CopyPhase::Failed));
        assert_eq!(cond(&status, STALLED).status, "True");
        assert_eq!(
            cond(&status, STALLED).reason,
            "DestinationImageCreateFailed"
        );
        assert!(notices[0].warning);
    }

    #[test]
    fn terminal_error_stalls_with_the_ecs_code_and_warns_once() {
        let outcome = Outcome::Common(Common::Stalled {
            code: "InvalidImageId.NotFound".into(),
            message: "The specified ImageId does not exist.".into(),
        });
        let (first, n1) = next_status(&ImageCopyStatus::default(), None, &outcome, &now());
        assert_eq!(first.phase, Some(CopyPhase::Failed));
        assert_eq!(cond(&first, STALLED).reason, "InvalidImageId.NotFound");
        assert_eq!(n1.len(), 1);
        let again = Outcome::Common(Common::Stalled {
            code: "InvalidImageId.NotFound".into(),
            message: "The specified ImageId does not exist. (RequestId R2)".into(),
        });
        let (second, n2) = next_status(&first, None, &again, &now());
        assert!(n2.is_empty(), "the same stall is not announced twice");
        assert_eq!(
            second, first,
            "the same error again leaves the status unchanged"
        );
    }

    #[test]
    fn transient_error_keeps_reconciling() {
        let outcome = Outcome::Common(Common::Retrying {
            code: "Throttling.User".into(),
            message: "flow control".into(),
        });
        let (status, notices) = next_status(&ImageCopyStatus::default(), None, &outcome, &now());
        assert_eq!(cond(&status, RECONCILING).status, "True");
        assert_eq!(cond(&status, STALLED).status, "False");
        assert!(notices.is_empty());
        let again = Outcome::Common(Common::Retrying {
            code: "Throttling.User".into(),
            message: "flow control (RequestId R2)".into(),
        });
        let (second, _) = next_status(&status, None, &again, &now());
        assert_eq!(
            second, status,
            "the same error again leaves the status unchanged"
        );
    }

    #[test]
    fn lost_image_is_forgotten_and_announced() {
        let (copying, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Observed(image(ImageState::Available, "100%")),
            &now(),
        );
        let (status, notices) = next_status(
            &copying,
            None,
            &Outcome::Lost {
                image_id: "m-dest".into(),
            },
            &now(),
        );
        assert_eq!(status.image_id, None);
        assert_eq!(status.phase, Some(CopyPhase::Pending));
        assert_eq!(notices[0].reason, "DestinationImageMissing");
    }

    #[test]
    fn progress_events_at_most_every_ten_percent() {
        assert_eq!(progress_step_crossed(Some("5%"), "12%"), Some(10));
        assert_eq!(progress_step_crossed(Some("12%"), "19%"), None);
        assert_eq!(progress_step_crossed(Some("19%"), "41%"), Some(40));
        assert_eq!(progress_step_crossed(None, "3%"), None);
        assert_eq!(
            progress_step_crossed(Some("95%"), "100%"),
            None,
            "Available announces 100%"
        );
    }

    #[test]
    fn cleanup_cancels_in_flight_copies_including_queued_ones() {
        let status = ImageCopyStatus::default();
        for state in [ImageState::Waiting, ImageState::Creating] {
            assert_eq!(
                decide_cleanup(DeletionPolicy::Retain, &status, Some(&image(state, "1%"))),
                CleanupStep::Cancel {
                    image_id: "m-dest".into()
                }
            );
        }
    }

    #[test]
    fn cleanup_applies_the_policy_to_finished_copies() {
        let status = ImageCopyStatus::default();
        let done = image(ImageState::Available, "100%");
        assert_eq!(
            decide_cleanup(DeletionPolicy::Delete, &status, Some(&done)),
            CleanupStep::Delete {
                image_id: "m-dest".into()
            }
        );
        assert_eq!(
            decide_cleanup(DeletionPolicy::Retain, &status, Some(&done)),
            CleanupStep::Retain {
                image_id: "m-dest".into()
            }
        );
        assert_eq!(
            decide_cleanup(DeletionPolicy::Delete, &status, None),
            CleanupStep::Done
        );
    }

    #[test]
    fn cleanup_waits_when_ecs_refused_to_cancel() {
        let (status, _) = next_status(
            &ImageCopyStatus::default(),
            None,
            &Outcome::Common(Common::Deleting {
                phase: CommonPhase::Cancelling,
                reason: CANCEL_NOT_SUPPORTED,
                message: "cannot cancel".into(),
            }),
            &now(),
        );
        assert_eq!(
            decide_cleanup(
                DeletionPolicy::Delete,
                &status,
                Some(&image(ImageState::Creating, "50%"))
            ),
            CleanupStep::WaitForTask
        );
        assert_eq!(
            decide_cleanup(
                DeletionPolicy::Delete,
                &status,
                Some(&image(ImageState::Available, "100%"))
            ),
            CleanupStep::Delete {
                image_id: "m-dest".into()
            }
        );
    }

    #[test]
    fn cancel_errors_are_classified_per_the_docs() {
        assert_eq!(
            classify_cancel_error("IncorrectImageStatus", "The image is copied finished."),
            CancelRefusal::AlreadyFinished
        );
        assert_eq!(
            classify_cancel_error("IncorrectImageStatus", "The Image copy has been failed."),
            CancelRefusal::NothingToCancel
        );
        assert_eq!(
            classify_cancel_error("InvalidImageId.NotFound", ""),
            CancelRefusal::NothingToCancel
        );
        assert_eq!(
            classify_cancel_error("CancelNotSupported", ""),
            CancelRefusal::NotSupported
        );
        assert_eq!(
            classify_cancel_error("InternalError", ""),
            CancelRefusal::Other
        );
    }
}
