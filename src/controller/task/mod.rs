//! The kind-neutral core every kind runs on: one `finalizer(apply | cleanup)` per reconcile,
//! credentials, status writes (server-side apply, only on change), events, backoff, the
//! Stalled / Retrying / DeletionBlocked handling and the requeue choice. A kind is one
//! [`CloudTask`] impl: how it starts its cloud task, observes it, and releases what it made.

pub mod decide;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use cpu_time::ThreadTime;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::credentials::{self, ObjectEcs};
use super::drift::Settled;
use super::in_flight::{Followed, ObjectKey, listed_since};
use super::listings::Listing;
use super::{Context, Error};
use crate::api::{FINALIZER, Word};
use crate::ecs::EcsError;
pub use decide::{Common, CommonPhase, Notice, TaskStatus};

/// A listing this long after an object's creation surely saw everything made before it.
const LISTING_AFTER_CREATION: Duration = Duration::from_secs(2);

fn created_at<K: Resource>(obj: &K) -> Timestamp {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |created| created.0)
}

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "ecs-image-operator";

/// When to look at an object again after a successful pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Work is in flight: at the poll interval.
    Poll,
    /// Finished: woken by the drift check when its image changes (see `drift`), else (a kind
    /// without a [`CloudTask::settled`] image) at the resync interval.
    Resync,
    /// Failed for good: after the stalled-retry wait.
    StalledRetry,
    /// At once: the step just taken needs another (a lost result to make again).
    Now,
    /// When its turn to start comes: the start slots wake it then (see `start_slots`).
    AtTurn,
}

/// How far a kind's cleanup got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// Everything this object made is cancelled, deleted or retained: the finalizer goes.
    Done,
    /// ECS is still working on something it cannot cancel (named here): the finalizer stays.
    Waiting(String),
}

/// One kind of object that drives one ECS task.
pub trait CloudTask:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    type Status: TaskStatus;
    /// What a pass may want the status to show; [`Common`] outcomes are built by the core.
    type Outcome: Send + Sync;

    fn status(&self) -> Option<&Self::Status>;
    /// Name of the Secret with this object's credentials, if it has one.
    fn credentials_secret(&self) -> Option<&str>;
    /// The region the task runs in (for metrics).
    fn region(&self) -> &str;

    fn common(outcome: Common) -> Self::Outcome;
    /// The status after `outcome`, plus the events worth publishing. Pure.
    fn next_status(
        previous: &Self::Status,
        generation: Option<i64>,
        outcome: &Self::Outcome,
        now: &Time,
    ) -> (Self::Status, Vec<Notice>);
    /// No ECS call that could have made something was ever begun: deleting needs no cloud.
    fn nothing_to_release(status: &Self::Status) -> bool;
    fn in_flight(status: &Self::Status) -> bool;
    /// The image in flight this object wants to be woken about (see `in_flight`), if the kind
    /// is followed that way; a kind that is not polls at the poll interval.
    fn followed(&self, _status: &Self::Status) -> Option<Followed> {
        None
    }
    /// The finished image the drift check watches for this object (see `drift`), if the kind
    /// is checked that way; a kind that is not looks again at the resync interval.
    fn settled(&self, _status: &Self::Status) -> Option<Settled> {
        None
    }

    /// Observe, decide, act, and write the status through `pass`. An `Error::Ecs` returned here
    /// becomes `Retrying` (transient) or `Stalled` (terminal) in the core.
    fn apply(pass: &mut Pass<'_, Self>) -> impl Future<Output = Result<Next, Error>> + Send;

    /// Cancel what runs, apply the deletion policy to what finished. An `Error::Ecs` returned
    /// here is retried (transient) or shown as a blocked deletion (terminal).
    fn cleanup(pass: &mut Pass<'_, Self>) -> impl Future<Output = Result<Released, Error>> + Send;
}

/// The value a spec enum has on the wire (its serde name), which is also ECS's spelling.
pub fn wire_name<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

/// One reconcile of one object: what a kind's `apply` and `cleanup` work with.
pub struct Pass<'a, K: CloudTask> {
    pub obj: &'a K,
    pub ctx: &'a Context,
    pub ecs: ObjectEcs,
    pub uid: String,
    /// The status as last written in this pass.
    pub status: K::Status,
}

impl<K: CloudTask> Pass<'_, K> {
    /// The owned images of the object's region: while its work is in flight or not begun, a
    /// recent listing shared with the region's poller; once
    /// finished, the slow drift listing that notices out-of-band changes. A second image the
    /// object owns from before its followed one shows in the drift listing once it is finished.
    pub async fn owned_images(&self) -> Result<Arc<Listing>, EcsError> {
        let (ctx, ecs, region) = (self.ctx, &self.ecs, self.obj.region());
        if K::in_flight(&self.status) || K::nothing_to_release(&self.status) {
            // A followed image needs the listing only back to itself; anything else, back to
            // the object's creation.
            let followed = self.obj.followed(&self.status);
            let since = match &followed {
                Some(followed) => ctx
                    .in_flight
                    .since(&ecs.client, &ecs.signer, region, followed),
                None => listed_since(self.obj),
            };
            // Before anything started, what the object may own was made before the status that
            // says so was lost, so any listing taken since the object exists will do (however
            // long it waited for its turn); work in flight needs one a poll interval old at most,
            // or as old as the poller's schedule allows when the poller follows it already.
            let taken_after = if K::nothing_to_release(&self.status) {
                created_at(self.obj) + LISTING_AFTER_CREATION
            } else {
                let age_limit = followed.as_ref().map_or(ctx.timing.poll_interval, |f| {
                    ctx.in_flight
                        .listing_age_limit(&ecs.signer, region, &self.uid, &f.image_id)
                });
                Timestamp::now() - age_limit
            };
            ctx.in_flight
                .listing(
                    &ecs.client,
                    &ecs.signer,
                    region,
                    since,
                    taken_after,
                    followed.as_ref().map(|f| f.image_id.as_str()),
                )
                .await
        } else {
            ctx.listings.get(&ecs.client, &ecs.signer, region).await
        }
    }

    pub fn name(&self) -> String {
        self.obj.name_any()
    }

    /// How the object is woken (by the pollers, the drift check, the start slots).
    pub fn object_key(&self) -> ObjectKey {
        ObjectKey {
            kind: K::KIND,
            namespace: Word::new(&self.obj.namespace().unwrap_or_default()),
            name: self.obj.name_any(),
        }
    }

    /// Applies the status after `outcome` (only when it changed) and publishes its events.
    pub async fn write(&mut self, outcome: &K::Outcome) -> Result<(), Error> {
        self.status = write_status(self.obj, self.ctx, &self.status, outcome).await?;
        Ok(())
    }

    pub async fn write_common(&mut self, outcome: Common) -> Result<(), Error> {
        self.write(&K::common(outcome)).await
    }

    pub async fn publish(&self, notices: &[Notice]) {
        publish(self.obj, self.ctx, notices).await;
    }

    /// Shows that ECS refused the call `action` that was to start the task: `outcome` builds the
    /// status from the ECS code and message (stalled; the attempt taken back).
    pub async fn refused(
        &mut self,
        action: &str,
        error: &EcsError,
        outcome: impl FnOnce(String, String) -> K::Outcome,
    ) -> Result<(), Error> {
        let code = error.code().unwrap_or_default().to_string();
        self.ctx.metrics.failed(K::KIND, &code);
        warn!(kind = K::KIND, object = %self.name(), %code, "{action} refused");
        self.write(&outcome(code, error.message_for_status())).await
    }
}

/// An ECS answer that proves a call made nothing: a definite refusal, not an outage and not a
/// lost answer (after which what it was to make may exist).
pub fn is_refusal(error: &EcsError) -> bool {
    matches!(error, EcsError::Api { .. }) && !error.is_transient()
}

pub async fn reconcile<K: CloudTask>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(K::KIND);
    let (result, cpu) = CpuTimed::new(reconcile_once(obj, ctx.clone())).await;
    ctx.metrics.reconcile_cpu(K::KIND, cpu);
    result
}

/// A future and the CPU time of its own polls (the thread's CPU clock read around each poll),
/// which leaves out whatever it waits for.
struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

impl<F: Future> CpuTimed<F> {
    fn new(inner: F) -> Self {
        CpuTimed {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let start = ThreadTime::now();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += start.elapsed();
        polled.map(|output| (output, self.spent))
    }
}

async fn reconcile_once<K: CloudTask>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj.as_ref(), &ctx).await,
        }
    })
    .await;
    result.map_err(finalizer_error)
}

/// The error of a `finalizer()` call as the controllers report it.
pub fn finalizer_error(error: FinalizerError<Error>) -> Error {
    match error {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e) => Error::Kube(e),
        FinalizerError::UnnamedObject => Error::MissingObjectField("metadata.name"),
        FinalizerError::InvalidFinalizer => Error::MissingObjectField("a valid finalizer"),
    }
}

pub fn error_policy<K: CloudTask>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        // Not failures: work ECS cannot cancel, and a replica that may not lead right now.
        Error::WaitingForTask(_) | Error::Ecs(EcsError::Fenced(_)) => {
            return Action::requeue(ctx.timing.poll_interval);
        }
        _ => {}
    }
    ctx.metrics.failed(K::KIND, &error.metric_code());
    let delay = ctx.backoff_after_failure(&obj.uid().unwrap_or_default());
    warn!(kind = K::KIND, object = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply<K: CloudTask>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let status = obj.status().cloned().unwrap_or_default();
    let ecs = match object_ecs(obj, ctx).await {
        Ok(ecs) => ecs,
        Err(Error::Credentials { reason, message }) => {
            stall(obj, ctx, &status, reason, &message).await?;
            return Ok(Action::requeue(ctx.timing.stalled_retry));
        }
        Err(Error::Ecs(e)) => return ecs_failure(obj, ctx, &status, e).await,
        Err(e) => return Err(e),
    };
    let mut pass = Pass {
        obj,
        ctx,
        ecs,
        uid,
        status,
    };
    match K::apply(&mut pass).await {
        Ok(next) => {
            ctx.reset_failures(&pass.uid);
            let in_flight = K::in_flight(&pass.status).then_some(obj.region());
            ctx.metrics.set_in_flight(K::KIND, &pass.uid, in_flight);
            let followed = obj.followed(&pass.status);
            let woken = followed.is_some();
            let object = pass.object_key();
            match followed {
                Some(followed) => ctx.in_flight.follow(
                    &pass.ecs.client,
                    &pass.ecs.signer,
                    obj.region(),
                    &pass.uid,
                    object.clone(),
                    followed,
                ),
                None => ctx.in_flight.unfollow(&pass.uid),
            }
            let settled = match next {
                Next::Resync => obj.settled(&pass.status),
                _ => None,
            };
            let checked = settled.is_some();
            match settled {
                Some(settled) => ctx.drift.watch(
                    &pass.ecs.client,
                    &pass.ecs.signer,
                    obj.region(),
                    &pass.uid,
                    object,
                    settled,
                ),
                None => ctx.drift.unwatch(&pass.uid),
            }
            Ok(match next {
                // The drift check wakes it when its image changes: no timer of its own.
                Next::Resync if checked => Action::await_change(),
                // The region's poller wakes it when its image changes; the requeue is a
                // safety net only.
                Next::Poll if woken => Action::requeue(ctx.timing.resync_interval),
                Next::Poll => Action::requeue(ctx.timing.poll_interval),
                Next::Resync => Action::requeue(ctx.timing.resync_interval),
                Next::StalledRetry => Action::requeue(ctx.timing.stalled_retry),
                Next::Now => Action::requeue(Duration::ZERO),
                // The start slots wake it at its turn: no timer of its own either.
                Next::AtTurn => Action::await_change(),
            })
        }
        Err(error) => {
            // The backoff decides when to look again, not the poller or the drift check.
            ctx.in_flight.unfollow(&pass.uid);
            ctx.drift.unwatch(&pass.uid);
            match error {
                Error::Ecs(e) => ecs_failure(obj, ctx, &pass.status, e).await,
                e => Err(e),
            }
        }
    }
}

async fn cleanup<K: CloudTask>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let status = obj.status().cloned().unwrap_or_default();
    ctx.metrics.set_in_flight(K::KIND, &uid, None);
    // Deleting retries on its own schedule; a changed image must not wake it sooner.
    ctx.in_flight.unfollow(&uid);
    ctx.drift.unwatch(&uid);
    if K::nothing_to_release(&status) {
        // Nothing in the cloud can be this object's, and deleting it must not depend on
        // credentials that may be what was wrong with it.
        ctx.forget(K::KIND, &uid);
        return Ok(Action::await_change());
    }
    // kube's `finalizer()` releases the finalizer on any `Ok` from here: every unfinished
    // path below is an `Err`.
    let ecs = match object_ecs(obj, ctx).await {
        Ok(ecs) => ecs,
        Err(Error::Credentials { reason, message }) => {
            return Err(deletion_blocked(obj, ctx, &status, reason, &message).await);
        }
        Err(Error::Ecs(e)) => return Err(cleanup_failure(obj, ctx, &status, e).await),
        Err(e) => return Err(e),
    };
    let mut pass = Pass {
        obj,
        ctx,
        ecs,
        uid,
        status,
    };
    match K::cleanup(&mut pass).await {
        Ok(Released::Done) => {
            ctx.forget(K::KIND, &pass.uid);
            Ok(Action::await_change())
        }
        Ok(Released::Waiting(what)) => Err(Error::WaitingForTask(what)),
        Err(Error::Ecs(e)) => Err(cleanup_failure(obj, ctx, &pass.status, e).await),
        Err(e) => Err(e),
    }
}

async fn object_ecs<K: CloudTask>(obj: &K, ctx: &Context) -> Result<ObjectEcs, Error> {
    credentials::for_object(
        ctx,
        &obj.namespace().unwrap_or_default(),
        obj.credentials_secret(),
    )
    .await
}

/// Transient ECS errors keep `Reconciling` and go back to the controller for backoff; terminal
/// ones stall the object with the ECS code and a long wait (no hot loop).
async fn ecs_failure<K: CloudTask>(
    obj: &K,
    ctx: &Context,
    status: &K::Status,
    error: EcsError,
) -> Result<Action, Error> {
    if matches!(error, EcsError::Fenced(_)) {
        // Not this replica's turn: no status change, look again once leadership is settled.
        return Ok(Action::requeue(ctx.timing.poll_interval));
    }
    let code = error.code().unwrap_or("Transport").to_string();
    let message = error.message_for_status();
    if error.is_transient() {
        let outcome = K::common(Common::Retrying { code, message });
        write_status(obj, ctx, status, &outcome).await?;
        return Err(Error::Ecs(error));
    }
    ctx.metrics.failed(K::KIND, &code);
    stall(obj, ctx, status, &code, &message).await?;
    Ok(Action::requeue(ctx.timing.stalled_retry))
}

async fn stall<K: CloudTask>(
    obj: &K,
    ctx: &Context,
    status: &K::Status,
    code: &str,
    message: &str,
) -> Result<(), Error> {
    warn!(kind = K::KIND, object = %obj.name_any(), code, message, "stalled");
    let outcome = K::common(Common::Stalled {
        code: code.to_string(),
        message: message.to_string(),
    });
    write_status(obj, ctx, status, &outcome).await?;
    Ok(())
}

/// An ECS error on the delete path: transient ones retry with backoff; a refusal (in use,
/// forbidden …) is shown on the object while the finalizer stays.
async fn cleanup_failure<K: CloudTask>(
    obj: &K,
    ctx: &Context,
    status: &K::Status,
    error: EcsError,
) -> Error {
    if error.is_transient() || matches!(error, EcsError::Fenced(_)) {
        return Error::Ecs(error);
    }
    let code = error
        .code()
        .unwrap_or_else(|| error.metric_label())
        .to_string();
    deletion_blocked(obj, ctx, status, &code, &error.message_for_status()).await
}

/// Shows why the finalizer cannot finish; returns the error that keeps it.
async fn deletion_blocked<K: CloudTask>(
    obj: &K,
    ctx: &Context,
    status: &K::Status,
    code: &str,
    message: &str,
) -> Error {
    let outcome = K::common(Common::DeletionBlocked {
        code: code.to_string(),
        message: message.to_string(),
    });
    if let Err(e) = write_status(obj, ctx, status, &outcome).await {
        return e;
    }
    Error::DeletionBlocked {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// Applies the next status (only when it changed) and publishes its events.
async fn write_status<K: CloudTask>(
    obj: &K,
    ctx: &Context,
    previous: &K::Status,
    outcome: &K::Outcome,
) -> Result<K::Status, Error> {
    let now = Time(Timestamp::now());
    let (next, notices) = K::next_status(previous, obj.meta().generation, outcome, &now);
    if next != *previous {
        apply_status(obj, ctx, &next).await?;
    }
    publish(obj, ctx, &notices).await;
    Ok(next)
}

/// Writes `status` as `obj`'s status by server-side apply, as the operator's field manager.
pub async fn apply_status<K>(obj: &K, ctx: &Context, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Records `notices` as Events about `obj`; an Event that cannot be recorded is logged, never
/// a failure.
pub async fn publish<K: Resource<DynamicType = ()>>(obj: &K, ctx: &Context, notices: &[Notice]) {
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
            warn!(kind = %K::kind(&()), object = %obj.name_any(), error = %e, "cannot publish event");
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

#[cfg(test)]
mod tests {
    use super::*;

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
