//! One end-to-end test's world — its namespace on the shared apiserver, its emulator and its
//! operator — with the waits, manifests and status readers the ImageCopy tests share.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ecs_image_operator::api::ImageCopy;
use ecs_image_operator::api::image_copy::CopyPhase;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{Emulator, Operator};

pub const SOURCE_REGION: &str = "cn-hangzhou";
/// Seeded Available in the emulator by default.
pub const SOURCE_IMAGE: &str = "m-demo0001";
pub const DESTINATION_REGION: &str = "cn-shanghai";
/// How often the test looks at the objects and the emulator.
pub const POLL: Duration = Duration::from_millis(200);

/// One test's world: its namespace on the shared apiserver, its emulator and its operator.
pub struct Stage {
    pub client: Client,
    pub namespace: String,
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

    pub async fn create(&self, object: &ImageCopy) -> ImageCopy {
        self.api
            .create(&PostParams::default(), object)
            .await
            .unwrap_or_else(|e| panic!("create ImageCopy {}: {e}", object.name_any()))
    }

    pub async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete ImageCopy {name}: {e}"));
    }

    pub async fn get(&self, name: &str) -> ImageCopy {
        self.api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get ImageCopy {name}: {e}"))
    }

    /// Polls `name` until `done` holds; on timeout the panic shows the last status seen.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&ImageCopy) -> bool,
    ) -> ImageCopy {
        wait_for(&self.api, name, what, timeout, done).await
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> ImageCopy {
        wait_ready(&self.api, name, timeout).await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        wait_gone(&self.api, name, timeout).await
    }

    /// The events about ImageCopy `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("ImageCopy") && r.name.as_deref() == Some(name)
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

/// Polls `name` through `api` until `done` holds; on timeout the panic shows the last status.
pub async fn wait_for(
    api: &Api<ImageCopy>,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&ImageCopy) -> bool,
) -> ImageCopy {
    let deadline = Instant::now() + timeout;
    loop {
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get ImageCopy {name}: {e}"));
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

pub async fn wait_ready(api: &Api<ImageCopy>, name: &str, timeout: Duration) -> ImageCopy {
    wait_for(api, name, "Ready", timeout, is_ready).await
}

/// Waits until `name` no longer exists (its finalizer is done).
pub async fn wait_gone(api: &Api<ImageCopy>, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(object) = api
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get ImageCopy {name}: {e}"))
        else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "{name}: still there {timeout:?} after delete; finalizers {:?}, last status: {}",
            object.metadata.finalizers,
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

/// The default ImageCopy with `spec_overrides` merged in, as [`manifest`] does.
pub fn image_copy_with(name: &str, spec_overrides: Value) -> ImageCopy {
    serde_json::from_value(manifest(name, spec_overrides))
        .expect("the test manifest is a valid ImageCopy")
}

/// The reason of condition `type_` when it is True.
pub fn true_reason(object: &ImageCopy, type_: &str) -> Option<String> {
    condition(object, type_)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
}

/// An ImageCopy manifest whose spec is the default one with `spec_overrides` merged in (a
/// `null` override removes the field).
pub fn manifest(name: &str, spec_overrides: Value) -> Value {
    let mut spec = json!({
        "sourceRegionId": SOURCE_REGION,
        "sourceImageId": SOURCE_IMAGE,
        "destinationRegionId": DESTINATION_REGION,
    });
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
        "kind": "ImageCopy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

pub fn condition<'a>(object: &'a ImageCopy, type_: &str) -> Option<&'a Condition> {
    object
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn condition_true(object: &ImageCopy, type_: &str) -> bool {
    condition(object, type_).is_some_and(|c| c.status == "True")
}

pub fn is_ready(object: &ImageCopy) -> bool {
    condition_true(object, "Ready")
}

pub fn phase(object: &ImageCopy) -> Option<CopyPhase> {
    object.status.as_ref()?.phase
}

pub fn image_id(object: &ImageCopy) -> Option<&str> {
    object.status.as_ref()?.image_id.as_deref()
}

pub fn progress_percent(object: &ImageCopy) -> Option<u32> {
    object
        .status
        .as_ref()?
        .progress
        .as_deref()?
        .trim_end_matches('%')
        .parse()
        .ok()
}

pub fn status_json(object: &ImageCopy) -> String {
    serde_json::to_string(&object.status).unwrap_or_else(|e| format!("<{e}>"))
}

pub fn uid(object: &ImageCopy) -> String {
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
