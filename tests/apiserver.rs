//! The test grounds are real: a kube-apiserver built from k8s.io/kubernetes serves our CRD,
//! enforces its schema, and honours the status subresource and finalizers.

mod support;

use std::time::Duration;

use ecs_image_operator::api::{ImageCopy, ImageCopyStatus, image_copy::CopyPhase};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

fn image_copy(name: &str) -> ImageCopy {
    serde_json::from_value(json!({
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "ImageCopy",
        "metadata": {"name": name},
        "spec": {
            "sourceRegionId": "cn-hangzhou",
            "sourceImageId": "m-demo0001",
            "destinationRegionId": "cn-shanghai"
        }
    }))
    .expect("valid ImageCopy")
}

#[tokio::test]
async fn apiserver_is_the_real_kubernetes_release() {
    let client = support::apiserver().client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.git_version, "v1.34.3");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
}

#[tokio::test]
async fn crd_schema_defaults_status_and_finalizer_work_against_the_real_apiserver() {
    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "foundation").await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);

    // A watch started before the object exists sees it appear and its status change.
    let watch = watcher::watcher(api.clone(), watcher::Config::default()).try_filter_map(
        |event| async move {
            Ok(match event {
                Event::Apply(obj) | Event::InitApply(obj) => Some(obj),
                _ => None,
            })
        },
    );
    let mut watch = Box::pin(watch);

    let mut obj = image_copy("first");
    obj.metadata.finalizers = Some(vec!["imageops.dev/cleanup".into()]);
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    assert_eq!(
        serde_json::to_value(created.spec.deletion_policy).unwrap(),
        json!("Delete"),
        "the schema default fills deletionPolicy"
    );

    let status = ImageCopyStatus {
        phase: Some(CopyPhase::Copying),
        progress: Some("45%".into()),
        image_id: Some("m-abc".into()),
        ..Default::default()
    };
    api.patch_status(
        "first",
        &PatchParams::apply("foundation-test").force(),
        &Patch::Apply(json!({
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "ImageCopy",
            "status": status,
        })),
    )
    .await
    .expect("patch /status");

    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(obj) = watch.next().await {
            let obj = obj.expect("watch event");
            if obj.status.as_ref().and_then(|s| s.progress.as_deref()) == Some("45%") {
                return obj;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("watch saw the status change");
    assert_eq!(seen.status.unwrap().image_id.as_deref(), Some("m-abc"));

    // The finalizer holds the object after delete until it is removed.
    api.delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = api.get("first").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    tokio::time::timeout(Duration::from_secs(10), async {
        while api.get_opt("first").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("object gone once the finalizer is removed");
}

#[tokio::test]
async fn invalid_object_is_rejected_by_the_crd_schema_with_422() {
    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "foundation").await;
    let api: Api<ImageCopy> = Api::namespaced(client, &ns);
    let mut obj = image_copy("same-region");
    obj.spec.destination_region_id = "cn-hangzhou".into();
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("spec.destinationRegionId"),
                "message names the field: {}",
                status.message
            );
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[test]
fn crds_directory_matches_generated_crds() {
    let generated = ecs_image_operator::api::crds_yaml().expect("render CRDs");
    let committed = std::fs::read_to_string(support::repo_root().join("crds/imageops.dev.yaml"))
        .expect("crds/imageops.dev.yaml");
    assert!(
        generated == committed,
        "crds/ is stale: run `make crds` and commit the result"
    );
}

#[tokio::test]
async fn a_repeated_event_is_one_event_with_a_series_the_real_apiserver_accepts() {
    use ecs_image_operator::controller::events::Recorder;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::Resource;
    use kube::runtime::events::{Event as Notice, EventType, Reporter};

    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "events").await;
    let copies: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    let copy = copies
        .create(&PostParams::default(), &image_copy("repeated"))
        .await
        .expect("create");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ecs-image-operator".into(),
            instance: Some("test".into()),
        },
    );
    let notice = |note: &str| Notice {
        type_: EventType::Warning,
        reason: "Failed".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let regarding = copy.object_ref(&());
    for note in ["denied", "denied", "denied", "another"] {
        recorder
            .publish(&notice(note), &regarding)
            .await
            .expect("publish");
    }
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let mut listed: Vec<(String, Option<i32>)> = events
        .list(&Default::default())
        .await
        .expect("list events")
        .into_iter()
        .map(|e| {
            (
                e.note.unwrap_or_default(),
                e.series.map(|series| series.count),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("another".into(), None), ("denied".into(), Some(3))],
        "three of the same are one Event counted three times; another note is its own"
    );
}
