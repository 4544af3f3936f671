//! `ImageCopy` on the cloud-task core: gathers what ECS reports about the destination image,
//! asks [`decide`] what to do, and does it.

pub mod decide;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use super::Error;
use super::conditions;
use super::drift::Settled;
use super::in_flight::{Followed, listed_since};
use super::owned_images::{self, ImageState, Lookup, describe_one, lookup_owned};
use super::task::{CloudTask, Common, CommonPhase, Next, Notice, Pass, Released, is_refusal};
use super::uid::Uid;
use crate::api::image_copy::{CopyPhase, DeletionPolicy, ImageCopy, ImageCopyStatus};
use crate::api::{OWNER_TAG, OWNER_UID_TAG};
use crate::ecs::{CopyImageRequest, EcsError};
use decide::{ApplyStep, CancelRefusal, CleanupStep, ImageSnapshot, Observation, Outcome};

const KIND: &str = "ImageCopy";

impl CloudTask for ImageCopy {
    const KIND: &'static str = KIND;
    type Status = ImageCopyStatus;
    type Outcome = Outcome;

    fn status(&self) -> Option<&ImageCopyStatus> {
        self.status.as_ref()
    }

    fn credentials_secret(&self) -> Option<&str> {
        self.spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str())
    }

    fn region(&self) -> &str {
        &self.spec.destination_region_id
    }

    fn common(outcome: Common) -> Outcome {
        Outcome::Common(outcome)
    }

    fn next_status(
        previous: &ImageCopyStatus,
        generation: Option<i64>,
        outcome: &Outcome,
        now: &Time,
    ) -> (ImageCopyStatus, Vec<Notice>) {
        decide::next_status(previous, generation, outcome, now)
    }

    fn nothing_to_release(status: &ImageCopyStatus) -> bool {
        decide::nothing_started(status)
    }

    fn in_flight(status: &ImageCopyStatus) -> bool {
        matches!(
            status.phase,
            Some(CopyPhase::Pending | CopyPhase::Queued | CopyPhase::Copying)
        )
    }

    fn followed(&self, status: &ImageCopyStatus) -> Option<Followed> {
        let state = match status.phase? {
            CopyPhase::Queued => ImageState::Waiting,
            CopyPhase::Copying => ImageState::Creating,
            _ => return None,
        };
        Some(Followed {
            image_id: status.image_id.clone()?,
            started: status
                .start_time
                .as_ref()
                .map_or_else(Timestamp::now, |t| t.0),
            object_since: listed_since(self),
            state,
            progress: status.progress.clone(),
        })
    }

    fn settled(&self, status: &ImageCopyStatus) -> Option<Settled> {
        match status.phase? {
            CopyPhase::Available => Some(Settled {
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

async fn apply(pass: &mut Pass<'_, ImageCopy>) -> Result<Next, Error> {
    let observation = observe(pass).await?;
    let mut duplicates = Vec::new();
    let outcome = match decide::decide_apply(&pass.status, &observation) {
        ApplyStep::Wait => return Ok(Next::Poll),
        ApplyStep::Recopy => Outcome::Lost {
            image_id: pass.status.image_id.clone().unwrap_or_default(),
        },
        ApplyStep::Follow {
            image,
            adopted,
            duplicates: extra,
        } => {
            if adopted {
                info!(object = %pass.name(), image = %image.image_id, "adopting the destination image this object already owns");
            }
            duplicates = extra;
            Outcome::Observed(image)
        }
        ApplyStep::StartCopy {
            token_index,
            record_attempt,
        } => {
            let source = &pass.obj.spec.source_region_id;
            let object = pass.object_key();
            if pass
                .ctx
                .start_slots
                .turn(source, &pass.uid, &object)
                .is_some()
            {
                return Ok(Next::AtTurn);
            }
            if record_attempt {
                pass.write(&Outcome::CopyAttempted).await?;
            }
            let request = copy_request(pass.obj, &pass.uid, token_index);
            match pass.ecs.client.copy_image(&request).await {
                Ok(response) => {
                    info!(object = %pass.name(), image = %response.image_id, "CopyImage started");
                    Outcome::CopyStarted {
                        image_id: response.image_id,
                    }
                }
                // Only a fresh attempt: a retried one may have made a copy before it was refused.
                Err(e) if record_attempt && is_refusal(&e) => {
                    let refusal = |code, message| Outcome::CopyRefused { code, message };
                    pass.refused("CopyImage", &e, refusal).await?;
                    return Ok(Next::StalledRetry);
                }
                Err(e) => return Err(Error::Ecs(e)),
            }
        }
    };
    let lost = matches!(outcome, Outcome::Lost { .. });
    let previous_phase = pass.status.phase;
    pass.write(&outcome).await?;
    // Only once the image to keep is recorded: a crash in between must not lose both.
    let kept = pass.status.image_id.clone().unwrap_or_default();
    for duplicate in &duplicates {
        remove_duplicate(pass, duplicate, &kept).await;
    }
    if pass.status.phase == Some(CopyPhase::Available)
        && previous_phase != Some(CopyPhase::Available)
        && let Some(start) = &pass.status.start_time
    {
        let took = Duration::try_from(Timestamp::now().duration_since(start.0)).unwrap_or_default();
        let spec = &pass.obj.spec;
        pass.ctx
            .metrics
            .copy_finished(&spec.source_region_id, &spec.destination_region_id, took);
    }
    Ok(match pass.status.phase {
        _ if lost => Next::Now,
        Some(CopyPhase::Available) => Next::Resync,
        Some(CopyPhase::Failed) => Next::StalledRetry,
        _ => Next::Poll,
    })
}

/// What ECS says about this object's destination image: the owner-tag lookup when status has
/// no image yet but a CopyImage was begun (a crash after CopyImage must not copy twice), else
/// the shared region listing (recent while the copy runs, the drift listing once finished).
/// An image the listing lacks is looked up by id, without any tag filter, before it counts as
/// gone: tag indexes lag, owner tags get removed, and a listing item can fail to decode.
async fn observe(pass: &Pass<'_, ImageCopy>) -> Result<Observation, EcsError> {
    let (obj, ctx, ecs, status, uid) = (pass.obj, pass.ctx, &pass.ecs, &pass.status, &pass.uid);
    let region = &obj.spec.destination_region_id;
    let Some(image_id) = &status.image_id else {
        if decide::nothing_started(status) {
            // No CopyImage begun, as far as status knows (each is recorded before it is sent):
            // an image owned anyway (status lost, or written by an older version) is long in the
            // shared region listing, which costs no call of this object's own.
            let listing = pass.owned_images().await?;
            return Ok(Observation::Lookup(
                listing.owned_by(&Uid::new(uid)).cloned().collect(),
            ));
        }
        return Ok(Observation::Lookup(
            lookup_owned(&ecs.client, region, uid).await?,
        ));
    };
    let listing = pass.owned_images().await?;
    let duplicates: Vec<ImageSnapshot> = listing
        .owned_by(&Uid::new(uid))
        .filter(|image| image.image_id != *image_id)
        .cloned()
        .collect();
    if let Some(image) = listing.image(image_id) {
        return Ok(Observation::Found {
            image: image.clone(),
            duplicates,
        });
    }
    let recorded = status.start_time.as_ref().map(|t| t.0);
    if !owned_images::listed_after(recorded, listing.taken_at) {
        return Ok(Observation::Unknown);
    }
    Ok(match describe_one(&ecs.client, region, image_id).await? {
        Lookup::Exists(image) => {
            ctx.metrics.listing_missed(KIND);
            info!(object = %obj.name_any(), image = %image_id, "the region listing lacked the image; a lookup by id found it");
            Observation::Found { image, duplicates }
        }
        Lookup::Absent => Observation::Missing,
        Lookup::Unreadable => Observation::Unknown,
    })
}

/// Cancels or deletes an extra image carrying this object's owner tag (a cloud that ignored
/// the ClientToken made it); the recorded image is kept.
async fn remove_duplicate(pass: &Pass<'_, ImageCopy>, duplicate: &ImageSnapshot, kept: &str) {
    let (obj, ctx, ecs) = (pass.obj, pass.ctx, &pass.ecs);
    let region = &obj.spec.destination_region_id;
    let id = &duplicate.image_id;
    let result = if duplicate.state.in_flight() {
        match ecs.client.cancel_copy_image(region, id).await {
            Err(e)
                if decide::classify_cancel_error(
                    e.code().unwrap_or_default(),
                    &e.message_for_status(),
                ) == CancelRefusal::AlreadyFinished =>
            {
                ecs.client.delete_image(region, id, false).await
            }
            Err(e) if e.code() == Some("InvalidImageId.NotFound") => Ok(()),
            other => other,
        }
    } else {
        ecs.client.delete_image(region, id, false).await
    };
    match result {
        Ok(()) => {
            ctx.metrics.duplicate_removed(KIND);
            warn!(object = %obj.name_any(), image = %id, "removed a second image owned by this object");
            pass.publish(&[Notice::warning(
                "DuplicateRemoved",
                format!(
                    "removed {id}, a second copy carrying this object's owner tag; kept {kept}"
                ),
            )])
            .await;
        }
        // CancelNotSupported and the like: the next poll tries again.
        Err(e) => {
            warn!(object = %obj.name_any(), image = %id, error = %e, "cannot remove a second image owned by this object yet");
        }
    }
}

fn copy_request(obj: &ImageCopy, uid: &str, attempt: i32) -> CopyImageRequest {
    let spec = &obj.spec;
    let mut tags: Vec<(String, String)> =
        spec.tags.clone().unwrap_or_default().into_iter().collect();
    tags.push((OWNER_UID_TAG.into(), uid.into()));
    tags.push((
        OWNER_TAG.into(),
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
    ));
    CopyImageRequest {
        source_region: spec.source_region_id.clone(),
        image_id: spec.source_image_id.clone(),
        destination_region: spec.destination_region_id.clone(),
        destination_image_name: spec.destination_image_name.clone(),
        destination_description: spec.destination_description.clone(),
        encrypted: spec.encrypted,
        kms_key_id: spec.kms_key_id.clone(),
        resource_group_id: spec.resource_group_id.clone(),
        tags,
        client_token: Some(super::task::decide::client_token(uid, attempt)),
    }
}

/// The finalizer: cancel a copy in flight, or apply `deletionPolicy` to a finished one — for
/// every image this object owns (the recorded one and any other carrying its owner tag).
async fn cleanup(pass: &mut Pass<'_, ImageCopy>) -> Result<Released, Error> {
    let images = owned_images::with_policies(
        &pass.ecs.client,
        &pass.obj.spec.destination_region_id,
        pass.status.image_id.as_deref(),
        &pass.uid,
        pass.obj.spec.deletion_policy,
    )
    .await?;
    for (image, policy) in images {
        if let Released::Waiting(image_id) = release(pass, image, policy).await? {
            return Ok(Released::Waiting(format!("the copy to {image_id}")));
        }
    }
    Ok(Released::Done)
}

/// Cancels, deletes or retains one owned image.
async fn release(
    pass: &mut Pass<'_, ImageCopy>,
    mut image: ImageSnapshot,
    policy: DeletionPolicy,
) -> Result<Released, Error> {
    let region = pass.obj.spec.destination_region_id.clone();
    // At most: cancel → (finished meanwhile) → delete/retain.
    for _ in 0..3 {
        match decide::decide_cleanup(policy, &pass.status, Some(&image)) {
            CleanupStep::Done => return Ok(Released::Done),
            CleanupStep::WaitForTask => return Ok(Released::Waiting(image.image_id)),
            CleanupStep::Retain { image_id } => {
                owned_images::retain(pass, &image_id, "destination image").await;
                return Ok(Released::Done);
            }
            CleanupStep::Delete { image_id } => {
                owned_images::delete(pass, &region, &image_id, "destination image").await?;
                return Ok(Released::Done);
            }
            CleanupStep::Cancel { image_id } => {
                let note = format!("cancelling the copy to {image_id}");
                pass.publish(&[Notice::normal("CancelRequested", note)])
                    .await;
                let error = match pass.ecs.client.cancel_copy_image(&region, &image_id).await {
                    Ok(()) => {
                        info!(object = %pass.name(), image = %image_id, "cancelled copy");
                        let note = format!("cancelled the copy; ECS removed {image_id}");
                        pass.publish(&[Notice::normal("Cancelled", note)]).await;
                        return Ok(Released::Done);
                    }
                    Err(e) => e,
                };
                let code = error.code().unwrap_or_default().to_string();
                match decide::classify_cancel_error(&code, &error.message_for_status()) {
                    CancelRefusal::NothingToCancel => return Ok(Released::Done),
                    CancelRefusal::AlreadyFinished => {
                        match describe_one(&pass.ecs.client, &region, &image_id).await? {
                            Lookup::Exists(now) if !now.state.in_flight() => image = now,
                            Lookup::Absent => return Ok(Released::Done),
                            _ => return Err(Error::Ecs(error)),
                        }
                    }
                    CancelRefusal::NotSupported => {
                        let message = format!(
                            "ECS cannot cancel the copy to {image_id}; waiting for it to finish, then applying deletionPolicy"
                        );
                        let notice = Notice::warning(decide::CANCEL_NOT_SUPPORTED, message.clone());
                        pass.publish(&[notice]).await;
                        pass.write_common(Common::Deleting {
                            phase: CommonPhase::Cancelling,
                            reason: decide::CANCEL_NOT_SUPPORTED,
                            message,
                        })
                        .await?;
                        return Ok(Released::Waiting(image_id));
                    }
                    CancelRefusal::Other => return Err(Error::Ecs(error)),
                }
            }
        }
    }
    Ok(Released::Waiting(image.image_id))
}
