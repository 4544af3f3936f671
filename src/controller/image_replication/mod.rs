//! The `ImageReplication` controller: one child `ImageCopy` per destination region, kept as
//! [`decide::plan`] says; the region → image map published to a ConfigMap; on delete, every
//! child deleted (each cancels or applies its deletion policy through its own finalizer) before
//! the replication's finalizer goes. It makes no ECS call of its own.

pub mod decide;

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::conditions::{self, Wanted};
use super::task::{FIELD_MANAGER, apply_status, finalizer_error, publish};
use super::{Context, Error};
use crate::api::{FINALIZER, ImageCopy, ImageReplication, ImageReplicationStatus};
use crate::controller::task::decide::Notice;
use decide::{Plan, owned_by};

pub const KIND: &str = "ImageReplication";
/// Condition about the published ConfigMap.
pub const PUBLISHED: &str = "Published";

/// What the replication controller works with: the shared context and the cache of the
/// `ImageCopy` objects replications own.
pub struct Replications {
    pub shared: Arc<Context>,
    pub children: Store<ImageCopy>,
}

impl Replications {
    /// The children of the replication with `uid` in `namespace`, as the cache has them.
    fn children_of(&self, namespace: &str, uid: &str) -> Vec<ImageCopy> {
        self.children
            .state()
            .into_iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace) && owned_by(c.as_ref(), uid))
            .map(|c| c.as_ref().clone())
            .collect()
    }
}

pub async fn reconcile(
    obj: Arc<ImageReplication>,
    ctx: Arc<Replications>,
) -> Result<Action, Error> {
    ctx.shared.metrics.reconciled(KIND);
    // Before the cache of children has its first listing, a replication would look childless:
    // it would publish an empty map and count nothing Ready.
    if ctx.children.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(ctx.shared.timing.poll_interval));
    }
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let api: Api<ImageReplication> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(&obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(finalizer_error)
}

pub fn error_policy(obj: Arc<ImageReplication>, error: &Error, ctx: Arc<Replications>) -> Action {
    if let Error::WaitingForChildren(_) = error {
        return Action::requeue(ctx.shared.timing.poll_interval);
    }
    ctx.shared.metrics.failed(KIND, &error.metric_code());
    let delay = ctx
        .shared
        .backoff_after_failure(&obj.uid().unwrap_or_default());
    warn!(kind = KIND, object = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(obj: &ImageReplication, ctx: &Replications) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let namespace = obj.namespace().unwrap_or_default();
    let children = ctx.children_of(&namespace, &uid);
    let now = Time(Timestamp::now());
    let mut plan = decide::plan(obj, &uid, &children, &now);
    let copies: Api<ImageCopy> = Api::namespaced(ctx.shared.client.clone(), &namespace);

    for child in &plan.create {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match copies.create(&params, child).await {
            // The cache had not seen it yet.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            result => {
                result?;
                info!(object = %obj.name_any(), %namespace, copy = %child.name_any(), "created ImageCopy");
            }
        }
    }
    for fields in &plan.update {
        let patch = json!({"spec": {
            "deletionPolicy": fields.deletion_policy,
            "credentialsSecretRef": fields.credentials_secret_ref,
        }});
        copies
            .patch(&fields.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // The map is published before a previous generation is deleted, so that consumers have
    // moved to the new images by the time the old ones go.
    publish_map(obj, ctx, &uid, &mut plan, &now).await?;
    for name in &plan.delete {
        delete_if_present(&copies, name).await?;
    }
    write_status(obj, ctx, &plan.status).await?;
    publish(obj, &ctx.shared, &plan.notices).await;
    ctx.shared.reset_failures(&uid);
    // Children's changes wake the replication through the watch; this is a safety net.
    Ok(Action::requeue(ctx.shared.timing.resync_interval))
}

/// Publishes `plan.published` to `spec.publishTo` (and removes the ConfigMap it published to
/// before, if the name changed), recording the outcome in `plan.status`.
async fn publish_map(
    obj: &ImageReplication,
    ctx: &Replications,
    uid: &str,
    plan: &mut Plan,
    now: &Time,
) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    let previous = obj.status.as_ref().and_then(|s| s.published_to.clone());
    let target = obj.spec.publish_to.clone();
    if let Some(old) = previous
        .as_deref()
        .filter(|old| Some(*old) != target.as_deref())
        && let Some(map) = config_maps.get_opt(old).await?
        && owned_by(&map, uid)
    {
        delete_if_present(&config_maps, old).await?;
    }
    let Some(name) = target else {
        plan.status.published_to = None;
        plan.status.conditions.retain(|c| c.type_ != PUBLISHED);
        return Ok(());
    };
    let existing = config_maps.get_opt(&name).await?;
    let wanted = match existing {
        Some(map) if !owned_by(&map, uid) => Wanted::new(
            PUBLISHED,
            false,
            "ConfigMapNotOwned",
            format!(
                "ConfigMap {name} exists and is not this ImageReplication's; it is left as it is"
            ),
        ),
        existing => {
            let current = existing.and_then(|m| m.data).unwrap_or_default();
            if current != plan.published {
                let map = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": {crate::api::REPLICATION_UID_LABEL: uid},
                        "ownerReferences": obj.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
                    },
                    "data": plan.published,
                });
                config_maps
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&map),
                    )
                    .await?;
                let regions = plan.published.len().saturating_sub(2);
                plan.notices.push(
                    Notice::normal(
                        "Published",
                        format!("ConfigMap {name} lists the images of {regions} region(s)"),
                    )
                    .with_action(format!("Publish{regions}")),
                );
            }
            plan.status.published_to = Some(name.clone());
            Wanted::new(
                PUBLISHED,
                true,
                "Published",
                format!("ConfigMap {name} holds the region → image map"),
            )
        }
    };
    plan.status.conditions = conditions::merge(
        &plan.status.conditions,
        &[wanted],
        obj.metadata.generation,
        now,
    );
    Ok(())
}

async fn cleanup(obj: &ImageReplication, ctx: &Replications) -> Result<Action, Error> {
    let uid = obj.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let namespace = obj.namespace().unwrap_or_default();
    let children = ctx.children_of(&namespace, &uid);
    let teardown = decide::teardown(obj, &children, &Time(Timestamp::now()));
    let copies: Api<ImageCopy> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    for name in &teardown.delete {
        delete_if_present(&copies, name).await?;
    }
    write_status(obj, ctx, &teardown.status).await?;
    // kube's `finalizer()` releases the finalizer on any `Ok` from here.
    if teardown.remaining > 0 {
        return Err(Error::WaitingForChildren(teardown.remaining));
    }
    ctx.shared.forget(KIND, &uid);
    Ok(Action::await_change())
}

/// Deletes `name` (in the background: the object's own finalizers run); already gone is fine.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        result => result.map(drop).map_err(Error::from),
    }
}

/// Applies `next` as the status, only when it differs from what is there.
async fn write_status(
    obj: &ImageReplication,
    ctx: &Replications,
    next: &ImageReplicationStatus,
) -> Result<(), Error> {
    if obj.status.as_ref() == Some(next) {
        return Ok(());
    }
    apply_status(obj, &ctx.shared, next).await
}
