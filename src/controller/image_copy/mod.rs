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
use crate::api::image_copy::{CopyPhase, ImageCopy, ImageCopyStatus};
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
    if let Error::WaitingForCopy(_) = error {
        return Action::requeue(ctx.timing.poll_interval);
    }
    ctx.metrics.failed(KIND, &error.metric_code());
    let delay = ctx.backoff_after_failure(&uid);
    warn!(object = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(obj: &ImageCopy, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let namespace = obj.namespace().unwrap_or_default();
    let status = obj.status.clone().unwrap_or_default();
    let spec = &obj.spec;

    let ecs = match credentials::for_object(
        ctx,
        &namespace,
        spec.credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str()),
    )
    .await
    {
        Ok(ecs) => ecs,
        Err(Error::Credentials { reason, message }) => {
            return stall(obj, ctx, &status, reason, &message).await;
        }
        Err(e) => return Err(e),
    };

    let observation = match observe(obj, ctx, &ecs, &status, &uid).await {
        Ok(observation) => observation,
        Err(e) => return ecs_failure(obj, ctx, &status, e).await,
    };

    let outcome = match decide::decide_apply(&observation) {
        ApplyStep::Wait => return Ok(Action::requeue(ctx.timing.poll_interval)),
        ApplyStep::Recopy => Outcome::Lost {
            image_id: status.image_id.clone().unwrap_or_default(),
        },
        ApplyStep::Follow { image, adopted } => {
            if adopted {
                info!(object = %obj.name_any(), image = %image.image_id, "adopting the destination image this object already owns");
            }
            Outcome::Observed(image)
        }
        ApplyStep::StartCopy => {
            let attempt = status.copy_attempts.unwrap_or(0);
            let request = copy_request(obj, &uid, attempt);
            match ecs.client.copy_image(&request).await {
                Ok(response) => {
                    info!(object = %obj.name_any(), image = %response.image_id, "CopyImage started");
                    Outcome::CopyStarted {
                        image_id: response.image_id,
                    }
                }
                Err(e) => return ecs_failure(obj, ctx, &status, e).await,
            }
        }
    };
    let lost = matches!(outcome, Outcome::Lost { .. });
    let next = write_status(obj, ctx, &status, &outcome).await?;
    ctx.reset_failures(&uid);
    track_metrics(obj, ctx, &uid, &status, &next);
    Ok(match next.phase {
        _ if lost => Action::requeue(Duration::ZERO),
        Some(CopyPhase::Available) => Action::requeue(ctx.timing.resync_interval),
        Some(CopyPhase::Failed) => Action::requeue(ctx.timing.stalled_retry),
        _ => Action::requeue(ctx.timing.poll_interval),
    })
}

/// What ECS says about this object's destination image: the owner-tag lookup when status has
/// no image yet (a crash after CopyImage must not copy twice), else the shared region listing.
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
    if let Some(image) = listing.images.get(image_id) {
        return Ok(Observation::Listed(snapshot(image)));
    }
    let recorded = status
        .start_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    Ok(if listing.taken_at > recorded + LISTING_MARGIN {
        Observation::Missing
    } else {
        Observation::NotListedYet
    })
}

async fn lookup_owned(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    uid: &str,
) -> Result<Option<ImageSnapshot>, EcsError> {
    let images = ecs
        .describe_all_images(&DescribeImagesRequest {
            region: region.to_string(),
            status: followed_statuses(),
            image_owner_alias: Some("self".into()),
            tags: vec![(OWNER_UID_TAG.to_string(), uid.to_string())],
            ..Default::default()
        })
        .await?;
    // Prefer a copy that is alive over a failed leftover.
    let best = images
        .iter()
        .map(snapshot)
        .min_by_key(|s| matches!(s.state, ImageState::Failed(_)));
    Ok(best)
}

async fn describe_one(
    ecs: &crate::ecs::EcsClient,
    region: &str,
    image_id: &str,
) -> Result<Option<ImageSnapshot>, EcsError> {
    let response = ecs
        .describe_images(&DescribeImagesRequest {
            region: region.to_string(),
            image_id: Some(image_id.to_string()),
            status: followed_statuses(),
            ..Default::default()
        })
        .await;
    match response {
        Ok(r) => Ok(r
            .images
            .iter()
            .find(|i| i.image_id == image_id)
            .map(snapshot)),
        Err(e) if e.code() == Some("InvalidImageId.NotFound") => Ok(None),
        Err(e) => Err(e),
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
            note: Some(notice.message.chars().take(1000).collect()),
            action: notice.action.clone(),
            secondary: None,
        };
        // An event that cannot be recorded must not fail the reconciliation.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(object = %obj.name_any(), error = %e, "cannot publish event");
        }
    }
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

/// The finalizer: cancel a copy in flight, or apply `deletionPolicy` to a finished one.
async fn cleanup(obj: &ImageCopy, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let namespace = obj.namespace().unwrap_or_default();
    let status = obj.status.clone().unwrap_or_default();
    let region = obj.spec.destination_region_id.clone();
    ctx.metrics.set_in_flight(&uid, None);
    let ecs = credentials::for_object(
        ctx,
        &namespace,
        obj.spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str()),
    )
    .await?;

    let mut image = match &status.image_id {
        Some(id) => describe_one(&ecs.client, &region, id).await?,
        None => lookup_owned(&ecs.client, &region, &uid).await?,
    };
    // At most: cancel → (finished meanwhile) → delete/retain.
    for _ in 0..3 {
        match decide::decide_cleanup(obj.spec.deletion_policy, &status, image.as_ref()) {
            CleanupStep::Done => return Ok(Action::await_change()),
            CleanupStep::WaitForCopy => {
                return Err(Error::WaitingForCopy(
                    image.map(|i| i.image_id).unwrap_or_default(),
                ));
            }
            CleanupStep::Retain { image_id } => {
                publish(
                    obj,
                    ctx,
                    &[Notice::normal(
                        "Retained",
                        format!("deletionPolicy Retain: kept destination image {image_id}"),
                    )],
                )
                .await;
                return Ok(Action::await_change());
            }
            CleanupStep::Delete { image_id } => {
                ecs.client.delete_image(&region, &image_id, false).await?;
                info!(object = %obj.name_any(), image = %image_id, "deleted destination image");
                publish(
                    obj,
                    ctx,
                    &[Notice::normal(
                        "Deleted",
                        format!("deleted destination image {image_id}"),
                    )],
                )
                .await;
                return Ok(Action::await_change());
            }
            CleanupStep::Cancel { image_id } => {
                publish(
                    obj,
                    ctx,
                    &[Notice::normal(
                        "CancelRequested",
                        format!("cancelling the copy to {image_id}"),
                    )],
                )
                .await;
                let error = match ecs.client.cancel_copy_image(&region, &image_id).await {
                    Ok(()) => {
                        info!(object = %obj.name_any(), image = %image_id, "cancelled copy");
                        publish(
                            obj,
                            ctx,
                            &[Notice::normal(
                                "Cancelled",
                                format!("cancelled the copy; ECS removed {image_id}"),
                            )],
                        )
                        .await;
                        return Ok(Action::await_change());
                    }
                    Err(e) => e,
                };
                let code = error.code().unwrap_or_default().to_string();
                match decide::classify_cancel_error(&code, &error.message_for_status()) {
                    CancelRefusal::NothingToCancel => return Ok(Action::await_change()),
                    CancelRefusal::AlreadyFinished => {
                        image = describe_one(&ecs.client, &region, &image_id).await?;
                        if image.as_ref().is_some_and(|i| i.state.in_flight()) {
                            return Err(Error::Ecs(error));
                        }
                    }
                    CancelRefusal::NotSupported => {
                        let message = format!(
                            "ECS cannot cancel the copy to {image_id}; waiting for it to finish, then applying deletionPolicy"
                        );
                        publish(
                            obj,
                            ctx,
                            &[Notice::warning(
                                decide::CANCEL_NOT_SUPPORTED,
                                message.clone(),
                            )],
                        )
                        .await;
                        let outcome = Outcome::Deleting {
                            phase: CopyPhase::Cancelling,
                            reason: decide::CANCEL_NOT_SUPPORTED,
                            message,
                        };
                        write_status(obj, ctx, &status, &outcome).await?;
                        return Err(Error::WaitingForCopy(image_id));
                    }
                    CancelRefusal::Other => return Err(Error::Ecs(error)),
                }
            }
        }
    }
    Err(Error::WaitingForCopy(status.image_id.unwrap_or_default()))
}
