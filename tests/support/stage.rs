//! One end-to-end test's world — its namespace on the shared apiserver, its emulator and its
//! operator — with the waits, manifests and status readers the tests of every kind share.
//!
//! The waits and status readers are generic over [`Kind`] (ImageCopy, ImageImport,
//! ImageExport). [`Stage::objects`] gives one kind's create/get/delete/waits/events;
//! `Stage`'s own `get`, `delete`, `wait_*` and `events` are those of ImageCopy.

use std::fmt::Debug;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ecs_image_operator::api::image_copy::CopyPhase;
use ecs_image_operator::api::image_export::ExportPhase;
use ecs_image_operator::api::image_import::ImportPhase;
use ecs_image_operator::api::{Condition, ImageCopy, ImageExport, ImageImport, ImageReplication};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{Emulator, Operator};

pub const SOURCE_REGION: &str = "cn-hangzhou";
/// Seeded Available in the emulator by default.
pub const SOURCE_IMAGE: &str = "m-demo0001";
pub const DESTINATION_REGION: &str = "cn-shanghai";
/// How often the test looks at the objects and the emulator.
pub const POLL: Duration = Duration::from_millis(200);

/// A kind the operator serves, as the tests read it: the status fields every kind shares.
pub trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    type Phase: Copy + PartialEq + Debug;

    fn conditions(&self) -> &[Condition];
    fn phase(&self) -> Option<Self::Phase>;
    /// `status.progress`, e.g. `45%`.
    fn progress(&self) -> Option<&str>;
    /// `status.imageId`, the image the object made (an export makes none).
    fn image_id(&self) -> Option<&str>;
    /// `status.taskId`, the ECS task it follows (a copy has none).
    fn task_id(&self) -> Option<&str>;
}

impl Kind for ImageCopy {
    type Phase = CopyPhase;

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn phase(&self) -> Option<CopyPhase> {
        self.status.as_ref()?.phase
    }
    fn progress(&self) -> Option<&str> {
        self.status.as_ref()?.progress.as_deref()
    }
    fn image_id(&self) -> Option<&str> {
        self.status.as_ref()?.image_id.as_deref()
    }
    fn task_id(&self) -> Option<&str> {
        None
    }
}

impl Kind for ImageImport {
    type Phase = ImportPhase;

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn phase(&self) -> Option<ImportPhase> {
        self.status.as_ref()?.phase
    }
    fn progress(&self) -> Option<&str> {
        self.status.as_ref()?.progress.as_deref()
    }
    fn image_id(&self) -> Option<&str> {
        self.status.as_ref()?.image_id.as_deref()
    }
    fn task_id(&self) -> Option<&str> {
        self.status.as_ref()?.task_id.as_deref()
    }
}

impl Kind for ImageExport {
    type Phase = ExportPhase;

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn phase(&self) -> Option<ExportPhase> {
        self.status.as_ref()?.phase
    }
    fn progress(&self) -> Option<&str> {
        self.status.as_ref()?.progress.as_deref()
    }
    fn image_id(&self) -> Option<&str> {
        None
    }
    fn task_id(&self) -> Option<&str> {
        self.status.as_ref()?.task_id.as_deref()
    }
}

/// A replication has no phase of its own: its rows carry their copies' phases.
impl Kind for ImageReplication {
    type Phase = ();

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn phase(&self) -> Option<()> {
        None
    }
    fn progress(&self) -> Option<&str> {
        self.status.as_ref()?.progress.as_deref()
    }
    fn image_id(&self) -> Option<&str> {
        None
    }
    fn task_id(&self) -> Option<&str> {
        None
    }
}

/// One test's world: its namespace on the shared apiserver, its emulator and its operator.
pub struct Stage {
    pub client: Client,
    pub namespace: String,
    /// The ImageCopy objects of the namespace.
    pub api: Api<ImageCopy>,
    pub emulator: Emulator,
    pub operator: Operator,
}

impl Stage {
    pub async fn start(prefix: &str, emulator_args: &[&str], operator_args: &[&str]) -> Stage {
        let emulator = Emulator::start(emulator_args).await;
        let endpoint = emulator.endpoint().to_string();
        Stage::start_with(prefix, emulator, &endpoint, operator_args).await
    }

    /// A stage whose operator sends its ECS calls to `ecs_endpoint` (the emulator, or something
    /// in front of it).
    pub async fn start_with(
        prefix: &str,
        emulator: Emulator,
        ecs_endpoint: &str,
        operator_args: &[&str],
    ) -> Stage {
        let apiserver = super::apiserver();
        let client = apiserver.client().await;
        super::install_crds(&client).await;
        let namespace = super::fresh_namespace(&client, prefix).await;
        let operator = Operator::start(
            &apiserver.kubeconfig,
            ecs_endpoint,
            &namespace,
            operator_args,
        )
        .await;
        Stage {
            api: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            emulator,
            operator,
        }
    }

    /// The objects of kind `K` in this stage's namespace.
    pub fn objects<K: Kind>(&self) -> Objects<K> {
        Objects {
            api: Api::namespaced(self.client.clone(), &self.namespace),
            client: self.client.clone(),
            namespace: self.namespace.clone(),
        }
    }

    fn copies(&self) -> Objects<ImageCopy> {
        self.objects()
    }

    pub async fn create<K: Kind>(&self, object: &K) -> K {
        self.objects().create(object).await
    }

    pub async fn delete(&self, name: &str) {
        self.copies().delete(name).await
    }

    pub async fn get(&self, name: &str) -> ImageCopy {
        self.copies().get(name).await
    }

    /// Polls `name` until `done` holds; on timeout the panic shows the last status seen.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&ImageCopy) -> bool,
    ) -> ImageCopy {
        self.copies().wait_for(name, what, timeout, done).await
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> ImageCopy {
        self.copies().wait_ready(name, timeout).await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        self.copies().wait_gone(name, timeout).await
    }

    /// The events about ImageCopy `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        self.copies().events(name).await
    }

    /// Waits for an event `reason` of `type_` (`Normal`/`Warning`) about ImageCopy `name`.
    pub async fn wait_event(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> Event {
        self.copies().wait_event(name, type_, reason, timeout).await
    }
}

/// The objects of one kind in a stage's namespace, with the waits the tests share.
pub struct Objects<K: Kind> {
    pub api: Api<K>,
    client: Client,
    namespace: String,
}

impl<K: Kind> Objects<K> {
    pub async fn create(&self, object: &K) -> K {
        self.api
            .create(&PostParams::default(), object)
            .await
            .unwrap_or_else(|e| panic!("create {} {}: {e}", kind::<K>(), object.name_any()))
    }

    pub async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {} {name}: {e}", kind::<K>()));
    }

    pub async fn get(&self, name: &str) -> K {
        self.api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {name}: {e}", kind::<K>()))
    }

    /// Polls `name` until `done` holds; on timeout the panic shows the last status seen.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&K) -> bool,
    ) -> K {
        wait_for(&self.api, name, what, timeout, done).await
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> K {
        wait_ready(&self.api, name, timeout).await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        wait_gone(&self.api, name, timeout).await
    }

    /// The events about `name` of this kind, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let kind = kind::<K>();
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind.as_str()) && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
    }

    /// Waits for an event `reason` of `type_` (`Normal`/`Warning`) about `name`.
    pub async fn wait_event(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events(name).await;
            if let Some(event) = events
                .iter()
                .find(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
            {
                return event.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no {type_} event {reason} within {timeout:?}; events: {:?}",
                summarize(&events)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `ImageCopy`, `ImageImport` or `ImageExport`, for messages and event filters.
fn kind<K: Kind>() -> String {
    K::kind(&()).into_owned()
}

/// Polls `name` through `api` until `done` holds; on timeout the panic shows the last status.
pub async fn wait_for<K: Kind>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&K) -> bool,
) -> K {
    let deadline = Instant::now() + timeout;
    loop {
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {name}: {e}", kind::<K>()));
        if done(&object) {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {what} within {timeout:?}; last status: {}",
            status_json(&object)
        );
        tokio::time::sleep(POLL).await;
    }
}

pub async fn wait_ready<K: Kind>(api: &Api<K>, name: &str, timeout: Duration) -> K {
    wait_for(api, name, "Ready", timeout, is_ready).await
}

/// Waits until `name` no longer exists (its finalizer is done).
pub async fn wait_gone<K: Kind>(api: &Api<K>, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(object) = api
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {name}: {e}", kind::<K>()))
        else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "{name}: still there {timeout:?} after delete; finalizers {:?}, last status: {}",
            object.meta().finalizers,
            status_json(&object)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `kubectl --kubeconfig=<the test apiserver> ARGS` with `stdin` as its input.
pub async fn kubectl(args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(super::kubectl_bin())
        .arg(format!(
            "--kubeconfig={}",
            super::apiserver().kubeconfig.display()
        ))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut input = child.stdin.take().expect("kubectl stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write kubectl stdin");
    drop(input);
    child.wait_with_output().await.expect("run kubectl")
}

/// An ImageCopy of the seeded source image to the destination region.
pub fn image_copy(name: &str) -> ImageCopy {
    image_copy_with(name, json!({}))
}

/// An ImageReplication of the seeded source image to `regions`, with `spec_overrides` merged in
/// as [`manifest`] does.
pub fn image_replication_with(
    name: &str,
    regions: &[&str],
    spec_overrides: Value,
) -> ImageReplication {
    let spec = json!({
        "sourceRegionId": SOURCE_REGION,
        "sourceImageId": SOURCE_IMAGE,
        "destinationRegionIds": regions,
    });
    serde_json::from_value(object_manifest(
        "ImageReplication",
        name,
        spec,
        spec_overrides,
    ))
    .expect("the test manifest is a valid ImageReplication")
}

/// The default ImageCopy with `spec_overrides` merged in, as [`manifest`] does.
pub fn image_copy_with(name: &str, spec_overrides: Value) -> ImageCopy {
    serde_json::from_value(manifest(name, spec_overrides))
        .expect("the test manifest is a valid ImageCopy")
}

/// An ImageCopy manifest whose spec is the default one with `spec_overrides` merged in (a
/// `null` override removes the field).
pub fn manifest(name: &str, spec_overrides: Value) -> Value {
    let spec = json!({
        "sourceRegionId": SOURCE_REGION,
        "sourceImageId": SOURCE_IMAGE,
        "destinationRegionId": DESTINATION_REGION,
    });
    object_manifest("ImageCopy", name, spec, spec_overrides)
}

/// An ImageImport of one QCOW2 file in OSS into [`SOURCE_REGION`], with `spec_overrides`
/// merged in as [`manifest`] does.
pub fn image_import_with(name: &str, spec_overrides: Value) -> ImageImport {
    let spec = json!({
        "regionId": SOURCE_REGION,
        "diskDeviceMappings": [{
            "ossBucket": "images-hangzhou",
            "ossObject": format!("golden/{name}.qcow2"),
            "format": "QCOW2",
            "diskImageSize": 40,
        }],
    });
    serde_json::from_value(object_manifest("ImageImport", name, spec, spec_overrides))
        .expect("the test manifest is a valid ImageImport")
}

pub fn image_import(name: &str) -> ImageImport {
    image_import_with(name, json!({}))
}

/// An ImageExport of the seeded image to an OSS bucket, with `spec_overrides` merged in as
/// [`manifest`] does.
pub fn image_export_with(name: &str, spec_overrides: Value) -> ImageExport {
    let spec = json!({
        "regionId": SOURCE_REGION,
        "imageId": SOURCE_IMAGE,
        "ossBucket": "exports-hangzhou",
        "ossPrefix": "golden",
        "imageFormat": "qcow2",
    });
    serde_json::from_value(object_manifest("ImageExport", name, spec, spec_overrides))
        .expect("the test manifest is a valid ImageExport")
}

pub fn image_export(name: &str) -> ImageExport {
    image_export_with(name, json!({}))
}

/// A manifest of `kind` whose spec is `spec` with `spec_overrides` merged in (a `null` override
/// removes the field).
fn object_manifest(kind: &str, name: &str, mut spec: Value, spec_overrides: Value) -> Value {
    let fields = spec.as_object_mut().expect("spec is an object");
    for (key, value) in spec_overrides
        .as_object()
        .expect("spec overrides are an object")
    {
        if value.is_null() {
            fields.remove(key);
        } else {
            fields.insert(key.clone(), value.clone());
        }
    }
    json!({
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The reason of condition `type_` when it is True.
pub fn true_reason<K: Kind>(object: &K, type_: &str) -> Option<String> {
    condition(object, type_)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.to_string())
}

pub fn condition<'a, K: Kind>(object: &'a K, type_: &str) -> Option<&'a Condition> {
    object.conditions().iter().find(|c| c.type_ == type_)
}

pub fn condition_true<K: Kind>(object: &K, type_: &str) -> bool {
    condition(object, type_).is_some_and(|c| c.status == "True")
}

pub fn is_ready<K: Kind>(object: &K) -> bool {
    condition_true(object, "Ready")
}

pub fn phase<K: Kind>(object: &K) -> Option<K::Phase> {
    object.phase()
}

pub fn image_id<K: Kind>(object: &K) -> Option<&str> {
    object.image_id()
}

pub fn task_id<K: Kind>(object: &K) -> Option<&str> {
    object.task_id()
}

pub fn progress_percent<K: Kind>(object: &K) -> Option<u32> {
    object.progress()?.trim_end_matches('%').parse().ok()
}

/// `status` as JSON, for messages.
pub fn status_json<K: Kind>(object: &K) -> String {
    let status = serde_json::to_value(object)
        .map(|o| o["status"].clone())
        .unwrap_or_else(|e| Value::String(format!("<{e}>")));
    status.to_string()
}

pub fn uid<K: Kind>(object: &K) -> String {
    object.uid().expect("a created object has a UID")
}

pub fn summarize(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.as_deref().unwrap_or("?"),
                e.reason.as_deref().unwrap_or("?"),
                e.note.as_deref().unwrap_or("")
            )
        })
        .collect()
}
