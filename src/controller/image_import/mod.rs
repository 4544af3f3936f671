//! `ImageImport` on the cloud-task core: ImportImage of disk images in OSS. The new image
//! carries the owner tags and the import's ClientToken comes from the UID, so it is found,
//! adopted, followed (shared region listing) and released like a copy's destination image;
//! on delete a running import is cancelled with CancelTask.

pub mod decide;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::{info, warn};

use super::Error;
use super::conditions;
use super::drift::Settled;
use super::ecs_tasks::{self, Cancelled, TaskSnapshot};
use super::owned_images::{self, CleanupStep, ImageSnapshot, Lookup, describe_one};
use super::task::decide::client_token;
use super::task::{
    CloudTask, Common, CommonPhase, Next, Notice, Pass, Released, is_refusal, wire_name,
};
use super::uid::Uid;
use crate::api::image_copy::DeletionPolicy;
use crate::api::image_import::{ImageImport, ImageImportStatus, ImportPhase};
use crate::api::{OWNER_TAG, OWNER_UID_TAG};
use crate::ecs::{DiskDeviceMapping, EcsError, ImportImageRequest};
use decide::{ApplyStep, Observation, Outcome};

const KIND: &str = "ImageImport";
const TASK_ACTION: &str = "ImportImage";
/// Reason of the `Reconciling` condition while ECS refuses to cancel the import.
const CANCEL_NOT_SUPPORTED: &str = "TaskActionNotSupport";
const NOUN: &str = "imported image";

impl CloudTask for ImageImport {
    const KIND: &'static str = KIND;
    type Status = ImageImportStatus;
    type Outcome = Outcome;

    fn status(&self) -> Option<&ImageImportStatus> {
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
        previous: &ImageImportStatus,
        generation: Option<i64>,
        outcome: &Outcome,
        now: &Time,
    ) -> (ImageImportStatus, Vec<Notice>) {
        decide::next_status(previous, generation, outcome, now)
    }

    fn nothing_to_release(status: &ImageImportStatus) -> bool {
        decide::nothing_started(status)
    }

    fn in_flight(status: &ImageImportStatus) -> bool {
        matches!(
            status.phase,
            Some(ImportPhase::Pending | ImportPhase::Importing)
        )
    }

    fn settled(&self, status: &ImageImportStatus) -> Option<Settled> {
        match status.phase? {
            ImportPhase::Available => Some(Settled {
                image_id: status.image_id.clone()?,
                usable: conditions::is_true(&status.conditions, conditions::READY),
            }),
            _ => None,
        }
    }

    async fn apply(pass: &mut Pass<'_, Self>) -> Result<Next, Error> {
        apply(pass).await
    }

    async fn cleanup(pass: &mut Pass<'_, Self>) -> Result<Released, Error> {
        cleanup(pass).await
    }
}

async fn apply(pass: &mut Pass<'_, ImageImport>) -> Result<Next, Error> {
    let observation = observe(pass).await?;
    let mut duplicates = Vec::new();
    let outcome = match decide::decide_apply(&pass.status, &observation) {
        ApplyStep::Wait => return Ok(Next::Poll),
        ApplyStep::Reimport => Outcome::Lost {
            image_id: pass.status.image_id.clone().unwrap_or_default(),
        },
        ApplyStep::Fail(task) => Outcome::TaskFailed(task),
        ApplyStep::Follow {
            image,
            mut task,
            adopted,
            duplicates: extra,
        } => {
            if adopted {
                info!(object = %pass.name(), image = %image.image_id, "adopting the imported image this object already owns");
                task = task_of(pass, &image.image_id).await?;
            }
            duplicates = extra;
            Outcome::Observed { image, task }
        }
        ApplyStep::StartImport {
            token_index,
            record_attempt,
        } => {
            if record_attempt {
                pass.write(&Outcome::ImportAttempted).await?;
            }
            let request = import_request(pass.obj, &pass.uid, token_index);
            match pass.ecs.client.import_image(&request).await {
                Ok(response) => {
                    info!(object = %pass.name(), image = %response.image_id, task = %response.task_id, "ImportImage started");
                    Outcome::ImportStarted {
                        image_id: response.image_id,
                        task_id: response.task_id,
                    }
                }
                // Only a fresh attempt: a retried one may have started an import before.
                Err(e) if record_attempt && is_refusal(&e) => {
                    let refusal = |code, message| Outcome::ImportRefused { code, message };
                    pass.refused("ImportImage", &e, refusal).await?;
                    return Ok(Next::StalledRetry);
                }
                Err(e) => return Err(Error::Ecs(e)),
            }
        }
    };
    let lost = matches!(outcome, Outcome::Lost { .. });
    pass.write(&outcome).await?;
    let kept = pass.status.image_id.clone().unwrap_or_default();
    for duplicate in &duplicates {
        remove_duplicate(pass, duplicate, &kept).await;
    }
    Ok(match pass.status.phase {
        _ if lost => Next::Now,
        Some(ImportPhase::Available) => Next::Resync,
        Some(ImportPhase::Failed) => Next::StalledRetry,
        _ => Next::Poll,
    })
}

/// The owner-tag lookup when no image is recorded but an ImportImage was begun; else the shared region listing, with a
/// lookup by id before an image counts as gone, and the task only when the image's state needs
/// it (finished, failed, or no progress listed).
async fn observe(pass: &Pass<'_, ImageImport>) -> Result<Observation, Error> {
    let region = &pass.obj.spec.region_id;
    let client = &pass.ecs.client;
    let Some(image_id) = &pass.status.image_id else {
        if decide::nothing_started(&pass.status) {
            // No ImportImage begun, as far as status knows: an image owned anyway (status lost)
            // is long in the shared region listing.
            let listing = pass.owned_images().await?;
            return Ok(Observation::Lookup(
                listing.owned_by(&Uid::new(&pass.uid)).cloned().collect(),
            ));
        }
        return Ok(Observation::Lookup(
            owned_images::lookup_owned(client, region, &pass.uid).await?,
        ));
    };
    let listing = pass.owned_images().await?;
    let duplicates: Vec<ImageSnapshot> = listing
        .owned_by(&Uid::new(&pass.uid))
        .filter(|image| image.image_id != *image_id)
        .cloned()
        .collect();
    let image = match listing.image(image_id) {
        Some(image) => image.clone(),
        None => {
            let recorded = pass.status.start_time.as_ref().map(|t| t.0);
            if !owned_images::listed_after(recorded, listing.taken_at) {
                return Ok(Observation::Unknown);
            }
            match describe_one(client, region, image_id).await? {
                Lookup::Exists(image) => {
                    pass.ctx.metrics.listing_missed(KIND);
                    image
                }
                Lookup::Absent => {
                    let task = recorded_task(pass).await?;
                    return Ok(Observation::Missing { task });
                }
                Lookup::Unreadable => return Ok(Observation::Unknown),
            }
        }
    };
    let task = if decide::task_needed(&pass.status, &image) {
        recorded_task(pass).await?
    } else {
        None
    };
    Ok(Observation::Found {
        image,
        task,
        duplicates,
    })
}

async fn recorded_task(pass: &Pass<'_, ImageImport>) -> Result<Option<TaskSnapshot>, EcsError> {
    match &pass.status.task_id {
        Some(task_id) => {
            ecs_tasks::describe(&pass.ecs.client, &pass.obj.spec.region_id, task_id).await
        }
        None => match &pass.status.image_id {
            Some(image_id) => task_of(pass, image_id).await,
            None => Ok(None),
        },
    }
}

/// The import task that makes `image_id`, with its progress and failure.
async fn task_of(
    pass: &Pass<'_, ImageImport>,
    image_id: &str,
) -> Result<Option<TaskSnapshot>, EcsError> {
    let region = &pass.obj.spec.region_id;
    let listed = ecs_tasks::tasks_on(&pass.ecs.client, region, TASK_ACTION, image_id, None).await?;
    match listed.first() {
        Some(task) => ecs_tasks::describe(&pass.ecs.client, region, &task.task_id).await,
        None => Ok(None),
    }
}

/// An extra image carrying this object's owner tag (a cloud that ignored the ClientToken
/// started a second import): its import is cancelled, or the finished image deleted.
async fn remove_duplicate(pass: &Pass<'_, ImageImport>, duplicate: &ImageSnapshot, kept: &str) {
    let region = &pass.obj.spec.region_id;
    let id = &duplicate.image_id;
    let result = async {
        if duplicate.state.in_flight()
            && let Some(task) = task_of(pass, id).await?
        {
            match ecs_tasks::cancel(&pass.ecs.client, region, &task.task_id).await? {
                Cancelled::Yes | Cancelled::NoSuchTask => return Ok(()),
                Cancelled::AlreadyEnded => {}
                Cancelled::NotSupported => {
                    return Err(EcsError::Transport {
                        message: "ECS cannot cancel the second import".into(),
                    });
                }
            }
        }
        match pass.ecs.client.delete_image(region, id, false).await {
            Err(e) if e.code() == Some("InvalidImageId.NotFound") => Ok(()),
            other => other,
        }
    }
    .await;
    match result {
        Ok(()) => {
            pass.ctx.metrics.duplicate_removed(KIND);
            warn!(object = %pass.name(), image = %id, "removed a second image owned by this object");
            let note = format!(
                "removed {id}, a second import carrying this object's owner tag; kept {kept}"
            );
            pass.publish(&[Notice::warning("DuplicateRemoved", note)])
                .await;
        }
        Err(e) => {
            warn!(object = %pass.name(), image = %id, error = %e, "cannot remove a second image owned by this object yet");
        }
    }
}

fn import_request(obj: &ImageImport, uid: &str, attempt: i32) -> ImportImageRequest {
    let spec = &obj.spec;
    let mut tags: Vec<(String, String)> =
        spec.tags.clone().unwrap_or_default().into_iter().collect();
    tags.push((OWNER_UID_TAG.into(), uid.into()));
    tags.push((
        OWNER_TAG.into(),
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
    ));
    ImportImageRequest {
        region: spec.region_id.clone(),
        image_name: spec.image_name.clone(),
        description: spec.description.clone(),
        os_type: wire_name(&spec.os_type),
        platform: spec.platform.clone(),
        architecture: wire_name(&spec.architecture),
        disk_device_mappings: spec
            .disk_device_mappings
            .iter()
            .map(|disk| DiskDeviceMapping {
                oss_bucket: disk.oss_bucket.clone(),
                oss_object: disk.oss_object.clone(),
                format: disk.format.as_ref().and_then(wire_name),
                disk_image_size: disk
                    .disk_image_size
                    .and_then(|size| u32::try_from(size).ok()),
            })
            .collect(),
        tags,
        client_token: Some(client_token(uid, attempt)),
        ..Default::default()
    }
}

/// The finalizer: for every image this object owns, cancel its running import, or apply
/// `deletionPolicy` to the finished image (duplicates are always deleted).
async fn cleanup(pass: &mut Pass<'_, ImageImport>) -> Result<Released, Error> {
    let images = owned_images::with_policies(
        &pass.ecs.client,
        &pass.obj.spec.region_id,
        pass.status.image_id.as_deref(),
        &pass.uid,
        pass.obj.spec.deletion_policy,
    )
    .await?;
    for (image, policy) in images {
        if let Released::Waiting(what) = release(pass, image, policy).await? {
            return Ok(Released::Waiting(what));
        }
    }
    Ok(Released::Done)
}

fn cancel_refused(status: &ImageImportStatus) -> bool {
    super::conditions::find(&status.conditions, super::conditions::RECONCILING)
        .is_some_and(|c| c.status == "True" && c.reason == CANCEL_NOT_SUPPORTED)
}

/// Cancels the import of one owned image, or deletes or retains the finished image.
async fn release(
    pass: &mut Pass<'_, ImageImport>,
    mut image: ImageSnapshot,
    policy: DeletionPolicy,
) -> Result<Released, Error> {
    let region = pass.obj.spec.region_id.clone();
    // At most: cancel → (finished meanwhile) → delete/retain.
    for _ in 0..3 {
        let refused = cancel_refused(&pass.status);
        match owned_images::release_step(policy, Some(&image), refused) {
            CleanupStep::Done => return Ok(Released::Done),
            CleanupStep::WaitForTask => {
                return Ok(Released::Waiting(format!(
                    "the import of {}",
                    image.image_id
                )));
            }
            CleanupStep::Retain { image_id } => {
                owned_images::retain(pass, &image_id, NOUN).await;
                return Ok(Released::Done);
            }
            CleanupStep::Delete { image_id } => {
                owned_images::delete(pass, &region, &image_id, NOUN).await?;
                return Ok(Released::Done);
            }
            CleanupStep::Cancel { image_id } => {
                let task_id = match pass.status.task_id.clone() {
                    Some(task_id) if pass.status.image_id.as_deref() == Some(image_id.as_str()) => {
                        task_id
                    }
                    _ => match task_of(pass, &image_id).await? {
                        Some(task) => task.task_id,
                        // The task of a running import is not listed yet: look again later.
                        None => {
                            return Ok(Released::Waiting(format!("the import of {image_id}")));
                        }
                    },
                };
                let note = format!("cancelling import task {task_id} of {image_id}");
                pass.publish(&[Notice::normal("CancelRequested", note)])
                    .await;
                match ecs_tasks::cancel(&pass.ecs.client, &region, &task_id).await? {
                    Cancelled::Yes => {
                        info!(object = %pass.name(), task = %task_id, "cancelled import");
                        let note = format!("cancelled import task {task_id}");
                        pass.publish(&[Notice::normal("Cancelled", note)]).await;
                    }
                    Cancelled::NoSuchTask | Cancelled::AlreadyEnded => {}
                    Cancelled::NotSupported => {
                        let message = format!(
                            "ECS cannot cancel import task {task_id}; waiting for it to finish, then applying deletionPolicy"
                        );
                        pass.publish(&[Notice::warning(CANCEL_NOT_SUPPORTED, message.clone())])
                            .await;
                        pass.write_common(Common::Deleting {
                            phase: CommonPhase::Cancelling,
                            reason: CANCEL_NOT_SUPPORTED,
                            message,
                        })
                        .await?;
                        return Ok(Released::Waiting(format!("import task {task_id}")));
                    }
                }
                // Whatever the cancel said, what is left of the image decides the rest: a
                // cancelled import normally takes its image with it.
                match describe_one(&pass.ecs.client, &region, &image_id).await? {
                    Lookup::Absent => return Ok(Released::Done),
                    Lookup::Exists(now) if !now.state.in_flight() => image = now,
                    _ => return Ok(Released::Waiting(format!("the import of {image_id}"))),
                }
            }
        }
    }
    Ok(Released::Waiting(format!(
        "the import of {}",
        image.image_id
    )))
}
