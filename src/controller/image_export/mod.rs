//! `ImageExport` on the cloud-task core: ExportImage of an image to the user's OSS bucket.
//! Running exports are followed from one shared `DescribeTasks` listing per region; progress
//! comes from `DescribeTaskAttribute`, read at most once per progress interval per object. On
//! delete a running export is cancelled with CancelTask; the OSS object is never touched.

pub mod decide;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::info;

use super::Error;
use super::ecs_tasks::{self, Cancelled, TaskSnapshot, TaskState};
use super::owned_images::listed_after;
use super::task::{
    CloudTask, Common, CommonPhase, Next, Notice, Pass, Released, is_refusal, wire_name,
};
use crate::api::image_export::{ExportPhase, ImageExport, ImageExportStatus};
use crate::ecs::{EcsError, ExportImageRequest};
use decide::{ApplyStep, Observation, Outcome};

const KIND: &str = "ImageExport";
const TASK_ACTION: &str = "ExportImage";
/// Reason of the `Reconciling` condition while ECS refuses to cancel the export.
const CANCEL_NOT_SUPPORTED: &str = "TaskActionNotSupport";

impl CloudTask for ImageExport {
    const KIND: &'static str = KIND;
    type Status = ImageExportStatus;
    type Outcome = Outcome;

    fn status(&self) -> Option<&ImageExportStatus> {
        self.status.as_ref()
    }

    fn credentials_secret(&self) -> Option<&str> {
        self.spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str())
    }

    fn region(&self) -> &str {
        &self.spec.region_id
    }

    fn common(outcome: Common) -> Outcome {
        Outcome::Common(outcome)
    }

    fn next_status(
        previous: &ImageExportStatus,
        generation: Option<i64>,
        outcome: &Outcome,
        now: &Time,
    ) -> (ImageExportStatus, Vec<Notice>) {
        decide::next_status(previous, generation, outcome, now)
    }

    fn nothing_to_release(status: &ImageExportStatus) -> bool {
        decide::nothing_to_release(status)
    }

    fn in_flight(status: &ImageExportStatus) -> bool {
        matches!(
            status.phase,
            Some(ExportPhase::Pending | ExportPhase::Exporting)
        )
    }

    async fn apply(pass: &mut Pass<'_, Self>) -> Result<Next, Error> {
        apply(pass).await
    }

    async fn cleanup(pass: &mut Pass<'_, Self>) -> Result<Released, Error> {
        cleanup(pass).await
    }
}

async fn apply(pass: &mut Pass<'_, ImageExport>) -> Result<Next, Error> {
    if decide::task_ended(&pass.status) {
        // A finished or failed export never runs again: nothing to poll.
        return Ok(match pass.status.phase {
            Some(ExportPhase::Exported) => Next::Resync,
            _ => Next::StalledRetry,
        });
    }
    let observation = observe(pass).await?;
    let outcome = match decide::decide_apply(&observation) {
        ApplyStep::Wait => return Ok(Next::Poll),
        ApplyStep::Lose => Outcome::TaskGone {
            task_id: pass.status.task_id.clone().unwrap_or_default(),
        },
        ApplyStep::Follow { task, adopted } => {
            if adopted {
                info!(object = %pass.name(), task = %task.task_id, "adopting the running export of this image");
            }
            Outcome::Observed(task)
        }
        ApplyStep::StartExport => match start_export(pass).await? {
            Some(outcome) => outcome,
            None => return Ok(Next::StalledRetry),
        },
    };
    pass.write(&outcome).await?;
    Ok(match pass.status.phase {
        Some(ExportPhase::Exported) => Next::Resync,
        Some(ExportPhase::Failed) => Next::StalledRetry,
        _ => Next::Poll,
    })
}

/// Records the attempt and calls ExportImage. `None`: ECS refused it and the object now says so.
async fn start_export(pass: &mut Pass<'_, ImageExport>) -> Result<Option<Outcome>, Error> {
    pass.write(&Outcome::ExportAttempted).await?;
    let spec = &pass.obj.spec;
    let request = ExportImageRequest {
        region: spec.region_id.clone(),
        image_id: spec.image_id.clone(),
        oss_bucket: spec.oss_bucket.clone(),
        oss_prefix: spec.oss_prefix.clone(),
        image_format: spec.image_format.as_ref().and_then(wire_name),
        role_name: None,
    };
    match pass.ecs.client.export_image(&request).await {
        Ok(response) => {
            info!(object = %pass.name(), task = %response.task_id, "ExportImage started");
            Ok(Some(Outcome::ExportStarted {
                task_id: response.task_id,
            }))
        }
        // An export of this image runs that the listing did not show yet (ours, after a lost
        // reply, or someone else's): adopt it once it is listed, never start another.
        Err(e) if e.code() == Some("ImageIsExporting") => match export_to_adopt(pass).await? {
            Some(task) => Ok(Some(Outcome::Observed(task))),
            None => Err(Error::Ecs(e)),
        },
        Err(e) if is_refusal(&e) => {
            let refusal = |code, message| Outcome::ExportRefused { code, message };
            pass.refused("ExportImage", &e, refusal).await?;
            Ok(None)
        }
        Err(e) => Err(Error::Ecs(e)),
    }
}

async fn observe(pass: &Pass<'_, ImageExport>) -> Result<Observation, Error> {
    let Some(task_id) = &pass.status.task_id else {
        return Ok(Observation::Unrecorded {
            found: export_to_adopt(pass).await?,
        });
    };
    let region = &pass.obj.spec.region_id;
    let listing = pass
        .ctx
        .running_exports
        .get(&pass.ecs.client, &pass.ecs.signer, region)
        .await?;
    if let Some(listed) = listing.tasks.get(task_id) {
        if pass.ctx.progress_reads.due(&pass.uid) {
            return Ok(describe(pass, task_id).await?);
        }
        return Ok(Observation::Task(TaskSnapshot::from_listed(listed)));
    }
    let recorded = pass.status.start_time.as_ref().map(|t| t.0);
    if !listed_after(recorded, listing.taken_at) {
        return Ok(Observation::Unknown);
    }
    // No longer running: read how it ended.
    Ok(describe(pass, task_id).await?)
}

async fn describe(pass: &Pass<'_, ImageExport>, task_id: &str) -> Result<Observation, EcsError> {
    Ok(
        match ecs_tasks::describe(&pass.ecs.client, &pass.obj.spec.region_id, task_id).await? {
            Some(task) => Observation::Task(task),
            None => Observation::TaskGone,
        },
    )
}

/// The export of this object's image to adopt (see [`decide::adoptable`]), with its progress.
async fn export_to_adopt(pass: &Pass<'_, ImageExport>) -> Result<Option<TaskSnapshot>, EcsError> {
    let spec = &pass.obj.spec;
    let attempted_at = decide::unrecorded_attempt(&pass.status);
    // Without an unrecorded attempt only a running export is of interest.
    let status = attempted_at.is_none().then_some("Processing");
    let tasks = ecs_tasks::tasks_on(
        &pass.ecs.client,
        &spec.region_id,
        TASK_ACTION,
        &spec.image_id,
        status,
    )
    .await?;
    match decide::adoptable(attempted_at, &tasks) {
        Some(task) => ecs_tasks::describe(&pass.ecs.client, &spec.region_id, &task.task_id).await,
        None => Ok(None),
    }
}

/// The finalizer: cancel the running export. A finished export leaves nothing to release (the
/// core does not even call this then): the object in OSS is the user's.
async fn cleanup(pass: &mut Pass<'_, ImageExport>) -> Result<Released, Error> {
    let task_id = match &pass.status.task_id {
        Some(task_id) => task_id.clone(),
        // ExportImage was sent but its task never recorded: the export it started, if any.
        None => match export_to_adopt(pass).await? {
            Some(task) if task.state == TaskState::Running => task.task_id,
            _ => return Ok(Released::Done),
        },
    };
    let region = pass.obj.spec.region_id.clone();
    let refused = super::conditions::find(&pass.status.conditions, super::conditions::RECONCILING)
        .is_some_and(|c| c.status == "True" && c.reason == CANCEL_NOT_SUPPORTED);
    if refused {
        return Ok(
            match ecs_tasks::describe(&pass.ecs.client, &region, &task_id).await? {
                Some(task) if task.state == TaskState::Running => {
                    Released::Waiting(format!("export task {task_id}"))
                }
                _ => Released::Done,
            },
        );
    }
    let note = format!("cancelling export task {task_id}");
    pass.publish(&[Notice::normal("CancelRequested", note)])
        .await;
    match ecs_tasks::cancel(&pass.ecs.client, &region, &task_id).await? {
        Cancelled::Yes => {
            info!(object = %pass.name(), task = %task_id, "cancelled export");
            let note = format!("cancelled export task {task_id}; the OSS bucket is left as it is");
            pass.publish(&[Notice::normal("Cancelled", note)]).await;
            Ok(Released::Done)
        }
        Cancelled::NoSuchTask | Cancelled::AlreadyEnded => Ok(Released::Done),
        Cancelled::NotSupported => {
            let message =
                format!("ECS cannot cancel export task {task_id}; waiting for it to finish");
            pass.publish(&[Notice::warning(CANCEL_NOT_SUPPORTED, message.clone())])
                .await;
            pass.write_common(Common::Deleting {
                phase: CommonPhase::Cancelling,
                reason: CANCEL_NOT_SUPPORTED,
                message,
            })
            .await?;
            Ok(Released::Waiting(format!("export task {task_id}")))
        }
    }
}
