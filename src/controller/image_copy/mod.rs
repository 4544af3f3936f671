//! The `ImageCopy` reconciler: gathers what ECS reports, asks [`decide`] what to do, does it,
//! and writes status (server-side apply), events and metrics.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::credentials::{self, ObjectEcs};
use super::listings::followed_statuses;
use super::{Context, Error};
use crate::api::image_copy::{CopyPhase, DeletionPolicy, ImageCopy, ImageCopyStatus};
use crate::api::{FINALIZER, OWNER_TAG, OWNER_UID_TAG};
use crate::ecs::{CopyImageRequest, DescribeImagesRequest, EcsError, Image};
use decide::{
    ApplyStep, CancelRefusal, CleanupStep, ImageSnapshot, ImageState, Notice, Observation, Outcome,
};

pub const KIND: &str = "ImageCopy";
pub const FIELD_MANAGER: &str = "ecs-image-operator";

/// A listing must start this long after the copy was recorded before an absent image counts as
/// lost: `startTime` has whole seconds only.
const LISTING_MARGIN: SignedDuration = SignedDuration::from_secs(2);

pub async fn reconcile(obj: Arc<ImageCopy>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(KIND);
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<ImageCopy> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(&obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await;
    match result {
        Ok(action) => Ok(action),
        Err(
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e),
        ) => Err(e),
        Err(
            kube::runtime::finalizer::Error::AddFinalizer(e)
            | kube::runtime::finalizer::Error::RemoveFinalizer(e),
        ) => Err(Error::Kube(e)),
        Err(kube::runtime::finalizer::Error::UnnamedObject) => {
            Err(Error::MissingObjectField("metadata.name"))
        }
        Err(kube::runtime::finalizer::Error::InvalidFinalizer) => {
            Err(Error::MissingObjectField("a valid finalizer"))
        }
    }
}

pub fn error_policy(obj: Arc<ImageCopy>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.uid().unwrap_or_default();
    match error {
        // Not failures: a copy ECS cannot cancel, and a replica that may not lead right now.
        Error::WaitingForCopy(_) | Error::Ecs(EcsError::Fenced(_)) => {
            return Action::requeue(ctx.timing.poll_interval);
        }
        _ => {}
    }
    ctx.metrics.failed(KIND, &error.metric_code());
    let delay = ctx.backoff_after_failure(&uid);
    warn!(object = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(obj: &ImageCopy, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let mut status = obj.status.clone().unwrap_or_default();

    let ecs = match object_ecs(obj, ctx).await {
        Ok(ecs) => ecs,
        Err(Error::Credentials { reason, message }) => {
            return stall(obj, ctx, &status, reason, &message).await;
        }
        Err(Error::Ecs(e)) => return ecs_failure(obj, ctx, &status, e).await,
        Err(e) => return Err(e),
    };

    let observation = match observe(obj, ctx, &ecs, &status, &uid).await {
        Ok(observation) => observation,
        Err(e) => return ecs_failure(obj, ctx, &status, e).await,
    };

    let mut duplicates = Vec::new();
    let outcome = match decide::decide_apply(&status, &observation) {
        ApplyStep::Wait => return Ok(Action::requeue(ctx.timing.poll_interval)),
        ApplyStep::Recopy => Outcome::Lost {
            image_id: status.image_id.clone().unwrap_or_default(),
        },
        ApplyStep::Follow {
            image,
            adopted,
            duplicates: extra,
        } => {
            if adopted {
                info!(object = %obj.name_any(), image = %image.image_id, "adopting the destination image this object already owns");
            }
            duplicates = extra;
            Outcome::Observed(image)
        }
        ApplyStep::StartCopy {
            token_index,
            record_attempt,
        } => {
            if record_attempt {
                status = write_status(obj, ctx, &status, &Outcome::CopyAttempted).await?;
            }
            let request = copy_request(obj, &uid, token_index);
            match ecs.client.copy_image(&request).await {
                Ok(response) => {
                    info!(object = %obj.name_any(), image = %response.image_id, "CopyImage started");
                    Outcome::CopyStarted {
                        image_id: response.image_id,
                    }
                }
                // Only a fresh attempt: a retried one may have made a copy before it was refused.
                Err(e) if record_attempt && is_refusal(&e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    ctx.metrics.failed(KIND, &code);
                    warn!(object = %obj.name_any(), %code, "CopyImage refused");
                    let outcome = Outcome::CopyRefused {
                        code,
                        message: e.message_for_status(),
                    };
                    write_status(obj, ctx, &status, &outcome).await?;
                    return Ok(Action::requeue(ctx.timing.stalled_retry));
                }
                Err(e) => return ecs_failure(obj, ctx, &status, e).await,
            }
        }
    };
    let lost = matches!(outcome, Outcome::Lost { .. });
    let next = write_status(obj, ctx, &status, &outcome).await?;
    // Only once the image to keep is recorded: a crash in between must not lose both.
    let kept = next.image_id.clone().unwrap_or_default();
    for duplicate in &duplicates {
        remove_duplicate(obj, ctx, &ecs, duplicate, &kept).await;
    }
    ctx.reset_failures(&uid);
    track_metrics(obj, ctx, &uid, &status, &next);
    Ok(match next.phase {
        _ if lost => Action::requeue(Duration::ZERO),
        Some(CopyPhase::Available) => Action::requeue(ctx.timing.resync_interval),
        Some(CopyPhase::Failed) => Action::requeue(ctx.timing.stalled_retry),
        _ => Action::requeue(ctx.timing.poll_interval),
    })
}

/// An ECS answer that proves CopyImage made nothing: a definite refusal, not an outage and not
/// a lost answer (after which the copy may exist).
fn is_refusal(error: &EcsError) -> bool {
    matches!(error, EcsError::Api { .. }) && !error.is_transient()
}

async fn object_ecs(obj: &ImageCopy, ctx: &Context) -> Result<ObjectEcs, Error> {
    credentials::for_object(
        ctx,
        &obj.namespace().unwrap_or_default(),
        obj.spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str()),
    )
    .await
}

/// What ECS says about this object's destination image: the owner-tag lookup when status has
/// no image yet (a crash after CopyImage must not copy twice), else the shared region listing.
/// An image the listing lacks is looked up by id, without any tag filter, before it counts as
/// gone: tag indexes lag, owner tags get removed, and a listing item can fail to decode.
async fn observe(
    obj: &ImageCopy,
    ctx: &Context,
    ecs: &ObjectEcs,
    status: &ImageCopyStatus,
    uid: &str,
) -> Result<Observation, EcsError> {
    let region = &obj.spec.destination_region_id;
    let Some(image_id) = &status.image_id else {
        return Ok(Observation::Lookup(
            lookup_owned(&ecs.client, region, uid).await?,
        ));
    };
    let listing = ctx
        .listings
        .get(&ecs.client, &ecs.access_key_id, region)
        .await?;
    let duplicates: Vec<ImageSnapshot> = listing
        .owned_by(uid)
        .filter(|image| image.image_id != *image_id)
        .map(snapshot)
        .collect();
    if let Some(image) = listing.images.get(image_id) {
        return Ok(Observation::Found {
            image: snapshot(image),
            duplicates,
        });
    }
    let recorded = status.start_time.as_ref().map(|t| t.0);
    if !listed_after(recorded, listing.taken_at) {
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

/// Whether a listing taken at `taken_at` started clearly after the image was recorded at
/// `recorded` (a missing or absurd time — status is user-writable — counts as not after).
fn listed_after(recorded: Option<Timestamp>, taken_at: Timestamp) -> bool {
    recorded
        .and_then(|t| t.checked_add(LISTING_MARGIN).ok())
        .is_some_and(|t| taken_at > t)
}

/// The images in `region` tagged as owned by `uid`, through the tag index.
async fn lookup_owned(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    uid: &str,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    let tag = (OWNER_UID_TAG.to_string(), uid.to_string());
    owned_images_in(ecs, region, uid, vec![tag]).await
}

/// The images of the account in `region` whose tags name `uid` as owner, found without a tag
/// filter (so without the tag index); costs a listing of every own image in the region, so it
/// is only for the rare case of an unrecorded copy on the delete path.
async fn lookup_owned_untagged(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    uid: &str,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    owned_images_in(ecs, region, uid, Vec::new()).await
}

/// Own images of `region` matching the `tags` filter whose owner tag is `uid`.
async fn owned_images_in(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    uid: &str,
    tags: Vec<(String, String)>,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    let images = ecs
        .describe_all_images(&DescribeImagesRequest {
            region: region.to_string(),
            status: followed_statuses(),
            image_owner_alias: Some("self".into()),
            tags,
            page_size: Some(crate::ecs::MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await?;
    Ok(images
        .iter()
        .filter(|image| image.tag(OWNER_UID_TAG) == Some(uid))
        .map(snapshot)
        .collect())
}

/// What a lookup by image id found.
enum Lookup {
    Exists(ImageSnapshot),
    Absent,
    /// ECS listed something that could not be decoded: neither present nor absent.
    Unreadable,
}

async fn describe_one(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    image_id: &str,
) -> Result<Lookup, EcsError> {
    let response = ecs
        .describe_images(&DescribeImagesRequest {
            region: region.to_string(),
            image_id: Some(image_id.to_string()),
            status: followed_statuses(),
            ..Default::default()
        })
        .await;
    match response {
        Ok(r) => Ok(match r.images.iter().find(|i| i.image_id == image_id) {
            Some(image) => Lookup::Exists(snapshot(image)),
            None if r.total_count > r.images.len() as u64 => Lookup::Unreadable,
            None => Lookup::Absent,
        }),
        Err(e) if e.code() == Some("InvalidImageId.NotFound") => Ok(Lookup::Absent),
        Err(e) => Err(e),
    }
}

/// Cancels or deletes an extra image carrying this object's owner tag (a cloud that ignored
/// the ClientToken made it); the recorded image is kept.
async fn remove_duplicate(
    obj: &ImageCopy,
    ctx: &Context,
    ecs: &ObjectEcs,
    duplicate: &ImageSnapshot,
    kept: &str,
) {
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
            publish(
                obj,
                ctx,
                &[Notice::warning(
                    "DuplicateRemoved",
                    format!(
                        "removed {id}, a second copy carrying this object's owner tag; kept {kept}"
                    ),
                )],
            )
            .await;
        }
        // CancelNotSupported and the like: the next poll tries again.
        Err(e) => {
            warn!(object = %obj.name_any(), image = %id, error = %e, "cannot remove a second image owned by this object yet");
        }
    }
}

fn snapshot(image: &Image) -> ImageSnapshot {
    ImageSnapshot {
        image_id: image.image_id.clone(),
        state: ImageState::from_ecs(image.status.as_str()),
        progress: image.progress.clone(),
        usable: image.usable,
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
        client_token: Some(decide::client_token(uid, attempt)),
    }
}

/// Transient ECS errors keep `Reconciling` and go back to the controller for backoff; terminal
/// ones stall the object with the ECS code and a long wait (no hot loop).
async fn ecs_failure(
    obj: &ImageCopy,
    ctx: &Context,
    status: &ImageCopyStatus,
    error: EcsError,
) -> Result<Action, Error> {
    if matches!(error, EcsError::Fenced(_)) {
        // Not this replica's turn: no status change, look again once leadership is settled.
        return Ok(Action::requeue(ctx.timing.poll_interval));
    }
    let code = error.code().unwrap_or("Transport").to_string();
    let message = error.message_for_status();
    if error.is_transient() {
        write_status(obj, ctx, status, &Outcome::Retrying { code, message }).await?;
        return Err(Error::Ecs(error));
    }
    ctx.metrics.failed(KIND, &code);
    stall(obj, ctx, status, &code, &message).await
}

async fn stall(
    obj: &ImageCopy,
    ctx: &Context,
    status: &ImageCopyStatus,
    code: &str,
    message: &str,
) -> Result<Action, Error> {
    warn!(object = %obj.name_any(), code, message, "stalled");
    let outcome = Outcome::Stalled {
        code: code.to_string(),
        message: message.to_string(),
    };
    write_status(obj, ctx, status, &outcome).await?;
    Ok(Action::requeue(ctx.timing.stalled_retry))
}

/// Applies the next status (only when it changed) and publishes its events.
async fn write_status(
    obj: &ImageCopy,
    ctx: &Context,
    previous: &ImageCopyStatus,
    outcome: &Outcome,
) -> Result<ImageCopyStatus, Error> {
    let now = Time(Timestamp::now());
    let (next, notices) = decide::next_status(previous, obj.metadata.generation, outcome, &now);
    if next != *previous {
        let api: Api<ImageCopy> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": KIND,
            "status": next,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    publish(obj, ctx, &notices).await;
    Ok(next)
}

async fn publish(obj: &ImageCopy, ctx: &Context, notices: &[Notice]) {
    let reference = obj.object_ref(&());
    for notice in notices {
        let event = KubeEvent {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.into(),
            note: Some(truncate_to_bytes(&notice.message, EVENT_NOTE_MAX_BYTES)),
            action: notice.action.clone(),
            secondary: None,
        };
        // An event that cannot be recorded must not fail the reconciliation.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(object = %obj.name_any(), error = %e, "cannot publish event");
        }
    }
}

/// The Events API refuses a note longer than 1 KiB (bytes, not characters).
const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// The longest prefix of `text` within `max` bytes that ends on a character boundary.
fn truncate_to_bytes(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn track_metrics(
    obj: &ImageCopy,
    ctx: &Context,
    uid: &str,
    previous: &ImageCopyStatus,
    next: &ImageCopyStatus,
) {
    let in_flight = matches!(
        next.phase,
        Some(CopyPhase::Pending | CopyPhase::Queued | CopyPhase::Copying)
    );
    ctx.metrics.set_in_flight(
        uid,
        in_flight.then_some(obj.spec.destination_region_id.as_str()),
    );
    if next.phase == Some(CopyPhase::Available)
        && previous.phase != Some(CopyPhase::Available)
        && let Some(start) = &next.start_time
    {
        let took = Duration::try_from(Timestamp::now().duration_since(start.0)).unwrap_or_default();
        ctx.metrics.copy_finished(
            &obj.spec.source_region_id,
            &obj.spec.destination_region_id,
            took,
        );
    }
}

/// The finalizer: cancel a copy in flight, or apply `deletionPolicy` to a finished one — for
/// every image this object owns (the recorded one and any other carrying its owner tag).
async fn cleanup(obj: &ImageCopy, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let status = obj.status.clone().unwrap_or_default();
    ctx.metrics.set_in_flight(&uid, None);
    if decide::nothing_started(&status) {
        // No CopyImage was ever sent: nothing in the cloud can be this object's, and deleting
        // it must not depend on credentials that may be what was wrong with it.
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let ecs = match object_ecs(obj, ctx).await {
        Ok(ecs) => ecs,
        Err(Error::Credentials { reason, message }) => {
            return deletion_blocked(obj, ctx, &status, reason, &message).await;
        }
        Err(Error::Ecs(e)) => return cleanup_failure(obj, ctx, &status, e).await,
        Err(e) => return Err(e),
    };
    let images = match owned_images(obj, &ecs, &status, &uid).await {
        Ok(images) => images,
        Err(Error::Ecs(e)) => return cleanup_failure(obj, ctx, &status, e).await,
        Err(e) => return Err(e),
    };
    for (image, policy) in images {
        match release(obj, ctx, &ecs, &status, image, policy).await {
            Ok(Released::Done) => {}
            Ok(Released::Waiting(image_id)) => return Err(Error::WaitingForCopy(image_id)),
            Err(Error::Ecs(e)) => return cleanup_failure(obj, ctx, &status, e).await,
            Err(e) => return Err(e),
        }
    }
    ctx.forget(&uid);
    Ok(Action::await_change())
}

/// Every image this object owns in the destination region, each with the policy it gets: the
/// recorded image (or, if none, the best one found) follows `deletionPolicy`; any other is a
/// duplicate and is removed. Duplicates come first so the kept image is handled last.
async fn owned_images(
    obj: &ImageCopy,
    ecs: &ObjectEcs,
    status: &ImageCopyStatus,
    uid: &str,
) -> Result<Vec<(ImageSnapshot, DeletionPolicy)>, Error> {
    let region = &obj.spec.destination_region_id;
    let mut recorded = None;
    if let Some(id) = &status.image_id {
        match describe_one(&ecs.client, region, id).await? {
            Lookup::Exists(image) => recorded = Some(image),
            Lookup::Absent => {}
            Lookup::Unreadable => {
                return Err(Error::Unreadable(format!(
                    "ECS answered about {id} with an item that could not be decoded"
                )));
            }
        }
    }
    let mut tagged = lookup_owned(&ecs.client, region, uid).await?;
    if status.image_id.is_none() {
        // A CopyImage was sent but its image never recorded (a crash in between). The tag index
        // may not show that image yet, and releasing the finalizer now would orphan it: read
        // the owner tag off every image of the account in the region instead.
        for image in lookup_owned_untagged(&ecs.client, region, uid).await? {
            if !tagged.iter().any(|t| t.image_id == image.image_id) {
                tagged.push(image);
            }
        }
    }
    tagged.retain(|image| Some(&image.image_id) != status.image_id.as_ref());
    let (kept, duplicates) = match recorded {
        Some(image) => (Some(image), tagged),
        None if tagged.is_empty() => (None, tagged),
        None => {
            let (best, rest) = decide::keep_best(&tagged);
            (Some(best), rest)
        }
    };
    let mut images: Vec<_> = duplicates
        .into_iter()
        .map(|image| (image, DeletionPolicy::Delete))
        .collect();
    images.extend(kept.map(|image| (image, obj.spec.deletion_policy)));
    Ok(images)
}

enum Released {
    Done,
    /// ECS cannot cancel this copy: the finalizer waits for it to finish.
    Waiting(String),
}

/// Cancels, deletes or retains one owned image.
async fn release(
    obj: &ImageCopy,
    ctx: &Context,
    ecs: &ObjectEcs,
    status: &ImageCopyStatus,
    mut image: ImageSnapshot,
    policy: DeletionPolicy,
) -> Result<Released, Error> {
    let region = obj.spec.destination_region_id.clone();
    // At most: cancel → (finished meanwhile) → delete/retain.
    for _ in 0..3 {
        match decide::decide_cleanup(policy, status, Some(&image)) {
            CleanupStep::Done => return Ok(Released::Done),
            CleanupStep::WaitForCopy => return Ok(Released::Waiting(image.image_id)),
            CleanupStep::Retain { image_id } => {
                let note = format!("deletionPolicy Retain: kept destination image {image_id}");
                publish(obj, ctx, &[Notice::normal("Retained", note)]).await;
                return Ok(Released::Done);
            }
            CleanupStep::Delete { image_id } => {
                match ecs.client.delete_image(&region, &image_id, false).await {
                    Ok(()) => {}
                    Err(e) if e.code() == Some("InvalidImageId.NotFound") => {}
                    Err(e) => return Err(Error::Ecs(e)),
                }
                info!(object = %obj.name_any(), image = %image_id, "deleted destination image");
                let note = format!("deleted destination image {image_id}");
                publish(obj, ctx, &[Notice::normal("Deleted", note)]).await;
                return Ok(Released::Done);
            }
            CleanupStep::Cancel { image_id } => {
                let note = format!("cancelling the copy to {image_id}");
                publish(obj, ctx, &[Notice::normal("CancelRequested", note)]).await;
                let error = match ecs.client.cancel_copy_image(&region, &image_id).await {
                    Ok(()) => {
                        info!(object = %obj.name_any(), image = %image_id, "cancelled copy");
                        let note = format!("cancelled the copy; ECS removed {image_id}");
                        publish(obj, ctx, &[Notice::normal("Cancelled", note)]).await;
                        return Ok(Released::Done);
                    }
                    Err(e) => e,
                };
                let code = error.code().unwrap_or_default().to_string();
                match decide::classify_cancel_error(&code, &error.message_for_status()) {
                    CancelRefusal::NothingToCancel => return Ok(Released::Done),
                    CancelRefusal::AlreadyFinished => {
                        match describe_one(&ecs.client, &region, &image_id).await? {
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
                        publish(obj, ctx, &[notice]).await;
                        let outcome = Outcome::Deleting {
                            phase: CopyPhase::Cancelling,
                            reason: decide::CANCEL_NOT_SUPPORTED,
                            message,
                        };
                        write_status(obj, ctx, status, &outcome).await?;
                        return Ok(Released::Waiting(image_id));
                    }
                    CancelRefusal::Other => return Err(Error::Ecs(error)),
                }
            }
        }
    }
    Ok(Released::Waiting(image.image_id))
}

/// An ECS error on the delete path: transient ones retry with backoff; a refusal (the image is
/// in use, shared, forbidden …) is shown on the object while the finalizer stays.
async fn cleanup_failure(
    obj: &ImageCopy,
    ctx: &Context,
    status: &ImageCopyStatus,
    error: EcsError,
) -> Result<Action, Error> {
    // Any `Ok` from the cleanup releases the finalizer: everything unfinished is an `Err`.
    if error.is_transient() || matches!(error, EcsError::Fenced(_)) {
        return Err(Error::Ecs(error));
    }
    let code = error
        .code()
        .unwrap_or_else(|| error.metric_label())
        .to_string();
    deletion_blocked(obj, ctx, status, &code, &error.message_for_status()).await
}

async fn deletion_blocked(
    obj: &ImageCopy,
    ctx: &Context,
    status: &ImageCopyStatus,
    code: &str,
    message: &str,
) -> Result<Action, Error> {
    let outcome = Outcome::DeletionBlocked {
        code: code.to_string(),
        message: message.to_string(),
    };
    write_status(obj, ctx, status, &outcome).await?;
    Err(Error::DeletionBlocked {
        code: code.to_string(),
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_counts_only_when_taken_after_the_recording() {
        let now = Timestamp::now();
        let earlier = now - SignedDuration::from_secs(10);
        assert!(listed_after(Some(earlier), now));
        assert!(!listed_after(Some(now), now));
        assert!(!listed_after(None, now));
        assert!(
            !listed_after(Some(Timestamp::MAX), now),
            "a start time at the end of time neither panics nor counts"
        );
    }

    #[test]
    fn event_notes_are_cut_by_bytes_on_a_character_boundary() {
        let chinese = "镜像".repeat(400);
        let cut = truncate_to_bytes(&chinese, EVENT_NOTE_MAX_BYTES);
        assert!(cut.len() <= EVENT_NOTE_MAX_BYTES);
        assert!(cut.len() > EVENT_NOTE_MAX_BYTES - 3);
        assert!(chinese.starts_with(&cut));
        assert_eq!(truncate_to_bytes("short", EVENT_NOTE_MAX_BYTES), "short");
    }
}
