//! The operator's promises under a cloud that behaves like a real one: a tag index that lags,
//! listing items that do not decode, images owned twice, deletions ECS refuses, credentials
//! that disappear. Each test names the failure mode it closes; each failed before its fix.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ecs_image_operator::api::ImageCopy;
use ecs_image_operator::api::image_copy::CopyPhase;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

use support::stage::*;
use support::swallower::ReplySwallower;

fn with_secret(name: &str, secret: &str) -> ImageCopy {
    serde_json::from_value(manifest(
        name,
        json!({"credentialsSecretRef": {"name": secret}}),
    ))
    .expect("a valid ImageCopy")
}

async fn create_secret(stage: &Stage, name: &str, id: &str, key: &str) {
    let secrets: Api<Secret> = Api::namespaced(stage.client.clone(), &stage.namespace);
    let data = BTreeMap::from([
        (
            "accessKeyId".to_string(),
            ByteString(id.as_bytes().to_vec()),
        ),
        (
            "accessKeySecret".to_string(),
            ByteString(key.as_bytes().to_vec()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}

async fn delete_secret(stage: &Stage, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(stage.client.clone(), &stage.namespace);
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete Secret {name}: {e}"));
}

fn stalled_reason(object: &ImageCopy) -> Option<String> {
    condition(object, "Stalled")
        .filter(|c| c.status == "True")
        .map(|c| c.reason.to_string())
}

/// Defect: an object that never created anything could not be deleted without credentials.
#[tokio::test]
async fn objects_that_never_copied_are_deleted_without_credentials() {
    let stage = Stage::start("no-creds", &[], &["--stalled-retry", "2s"]).await;
    stage
        .create(&with_secret("missing", "no-such-secret"))
        .await;
    create_secret(&stage, "wrong", "testid", "not-the-secret").await;
    stage.create(&with_secret("wrong", "wrong")).await;
    stage
        .wait_for(
            "missing",
            "Stalled SecretNotFound",
            Duration::from_secs(30),
            |o| stalled_reason(o).as_deref() == Some("SecretNotFound"),
        )
        .await;
    stage
        .wait_for(
            "wrong",
            "Stalled on the signature",
            Duration::from_secs(30),
            |o| stalled_reason(o).as_deref() == Some("SignatureDoesNotMatch"),
        )
        .await;
    // The wrong Secret goes first, as when a namespace is deleted.
    delete_secret(&stage, "wrong").await;
    stage.delete("missing").await;
    stage.delete("wrong").await;
    stage.wait_gone("missing", Duration::from_secs(15)).await;
    stage.wait_gone("wrong", Duration::from_secs(15)).await;
    assert!(stage.emulator.images_owned_by_anyone().await.is_empty());
}

/// Defect: when cleanup needs the cloud and cannot get credentials it retried forever with no
/// word on the object.
#[tokio::test]
async fn a_deletion_without_credentials_says_why_and_finishes_once_they_are_back() {
    let stage = Stage::start(
        "creds-gone",
        &["--copy-seconds", "120"],
        &["--stalled-retry", "2s"],
    )
    .await;
    create_secret(&stage, "ecs", "testid", "testsecret").await;
    let created = stage.create(&with_secret("web", "ecs")).await;
    let copying = stage
        .wait_for("web", "Copying", Duration::from_secs(30), |o| {
            phase(o) == Some(CopyPhase::Copying)
        })
        .await;
    let image = image_id(&copying).expect("image recorded").to_string();
    delete_secret(&stage, "ecs").await;
    stage.delete("web").await;
    let blocked = stage
        .wait_for(
            "web",
            "blocked on its Secret",
            Duration::from_secs(30),
            |o| {
                phase(o) == Some(CopyPhase::Deleting)
                    && stalled_reason(o).as_deref() == Some("SecretNotFound")
            },
        )
        .await;
    assert!(blocked.metadata.deletion_timestamp.is_some());
    let event = stage
        .wait_event("web", "Warning", "DeletionBlocked", Duration::from_secs(10))
        .await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("SecretNotFound"),
        "{event:?}"
    );
    let described = kubectl(&["-n", &stage.namespace, "describe", "imgcp", "web"], "").await;
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.contains("SecretNotFound") && described.contains("DeletionBlocked"),
        "kubectl describe shows why deletion waits:\n{described}"
    );
    assert!(
        stage.emulator.image("cn-shanghai", &image).await.is_some(),
        "nothing was cancelled without credentials"
    );

    create_secret(&stage, "ecs", "testid", "testsecret").await;
    stage.wait_gone("web", Duration::from_secs(60)).await;
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty()
    );
}

/// Defect: with the tag index 40 s behind, three objects made 57 copies in three minutes.
#[tokio::test]
async fn a_lagging_tag_index_never_makes_a_second_copy() {
    let stage = Stage::start("tag-lag", &["--copy-seconds", "4"], &[]).await;
    stage
        .emulator
        .set_faults(&json!({"tagIndexLagSeconds": 40.0}))
        .await;
    let mut uids = Vec::new();
    for (name, region) in [
        ("a", "cn-shanghai"),
        ("b", "cn-beijing"),
        ("c", "cn-shenzhen"),
    ] {
        let object: ImageCopy =
            serde_json::from_value(manifest(name, json!({"destinationRegionId": region})))
                .expect("a valid ImageCopy");
        uids.push(uid(&stage.create(&object).await));
    }
    for name in ["a", "b", "c"] {
        stage.wait_ready(name, Duration::from_secs(60)).await;
    }
    // Well inside the lag: every poll's listing still misses the images.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(stage.emulator.count("CopyImage").await, 3);
    for uid in &uids {
        assert_eq!(stage.emulator.images_owned_by(uid).await.len(), 1);
    }
    for name in ["a", "b", "c"] {
        assert!(is_ready(&stage.get(name).await), "{name} stays Ready");
    }
}

/// Defect: deleting an object whose CopyImage was sent but never recorded looked for owned
/// images through the tag index only; while it lagged, the finalizer went and the copy stayed.
#[tokio::test]
async fn an_unrecorded_copy_is_found_and_cancelled_even_while_the_tag_index_lags() {
    let emulator = support::Emulator::start(&["--copy-seconds", "60"]).await;
    emulator
        .set_faults(&json!({"tagIndexLagSeconds": 120.0}))
        .await;
    let swallower = ReplySwallower::start(emulator.endpoint(), "CopyImage").await;
    let mut stage = Stage::start_with("unrecorded", emulator, &swallower.endpoint, &[]).await;
    let created = stage.create(&image_copy("web")).await;
    tokio::time::timeout(Duration::from_secs(30), swallower.swallowed.notified())
        .await
        .expect("the operator called CopyImage and ECS answered");
    stage.operator.kill_9();
    assert_eq!(
        image_id(&stage.get("web").await),
        None,
        "killed before recording"
    );
    assert_eq!(
        stage.emulator.images_owned_by(&uid(&created)).await.len(),
        1
    );

    stage.delete("web").await;
    stage.operator.restart().await;
    stage.wait_gone("web", Duration::from_secs(30)).await;
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty(),
        "the copy the killed operator started was cancelled"
    );
}

/// Defect: a listing item that failed to decode was skipped silently, so its image looked
/// deleted and was copied again.
#[tokio::test]
async fn an_undecodable_listing_item_is_not_taken_for_a_deleted_image() {
    let stage = Stage::start("malformed", &["--copy-seconds", "8"], &[]).await;
    let created = stage.create(&image_copy("web")).await;
    stage
        .wait_for("web", "Copying", Duration::from_secs(30), |o| {
            phase(o) == Some(CopyPhase::Copying)
        })
        .await;
    stage
        .emulator
        .set_faults(&json!({"malformedItemRate": 1.0}))
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stage.emulator.count("CopyImage").await, 1, "no second copy");
    let metrics = stage.operator.metrics_text().await;
    let undecodable = metric_value(&metrics, "ecs_image_operator_ecs_undecodable_items_total");
    assert!(undecodable >= 1.0, "counted:\n{metrics}");
    stage
        .emulator
        .set_faults(&json!({"malformedItemRate": 0.0}))
        .await;
    stage.wait_ready("web", Duration::from_secs(30)).await;
    assert_eq!(
        stage.emulator.images_owned_by(&uid(&created)).await.len(),
        1
    );
}

/// Defect: only `status.imageId` was cleaned up; other images carrying the owner tag stayed.
#[tokio::test]
async fn every_image_an_object_owns_is_removed() {
    let mut stage = Stage::start(
        "owned",
        &["--copy-seconds", "2"],
        &["--resync-interval", "2s"],
    )
    .await;
    let created = stage.create(&image_copy("web")).await;
    let owner = uid(&created);
    let ready = stage.wait_ready("web", Duration::from_secs(30)).await;
    let kept = image_id(&ready).expect("image recorded").to_string();

    // A second owned image while the object lives: removed, the recorded one kept.
    seed_owned(&stage, "m-extra0001", &owner).await;
    stage
        .wait_event(
            "web",
            "Warning",
            "DuplicateRemoved",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        ids(&stage.emulator.images_owned_by(&owner).await),
        vec![kept.clone()]
    );

    // One appearing while the operator is down, then the object deleted: both go.
    stage.operator.kill_9();
    seed_owned(&stage, "m-extra0002", &owner).await;
    stage.delete("web").await;
    stage.operator.restart().await;
    stage.wait_gone("web", Duration::from_secs(30)).await;
    assert!(stage.emulator.images_owned_by(&owner).await.is_empty());
}

async fn seed_owned(stage: &Stage, image_id: &str, owner: &str) {
    stage
        .emulator
        .seed_image(&json!({
            "regionId": "cn-shanghai",
            "imageId": image_id,
            "status": "Available",
            "tags": {"imageops.dev/owner-uid": owner, "imageops.dev/owner": "x/web"},
        }))
        .await;
}

fn ids(images: &[serde_json::Value]) -> Vec<String> {
    images
        .iter()
        .map(|i| i["imageId"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Defect: DeleteImage refusals left a finalizer with no condition and no event.
#[tokio::test]
async fn delete_refusals_show_on_the_object_until_resolved() {
    let stage = Stage::start("refusals", &["--copy-seconds", "1"], &[]).await;
    let cases = [
        ("in-use", "cn-shanghai", "ImageUsingByInstance"),
        ("shared", "cn-beijing", "ImageUseShared"),
        ("forbidden", "cn-shenzhen", "Forbidden"),
    ];
    for (name, region, _) in cases {
        let object: ImageCopy =
            serde_json::from_value(manifest(name, json!({"destinationRegionId": region})))
                .expect("a valid ImageCopy");
        stage.create(&object).await;
    }
    for (name, _, _) in cases {
        stage.wait_ready(name, Duration::from_secs(30)).await;
    }
    let rules: Vec<_> = cases
        .iter()
        .map(|(_, region, code)| json!({"action": "DeleteImage", "code": code, "regionId": region}))
        .collect();
    stage.emulator.set_faults(&json!({"inject": rules})).await;
    for (name, _, _) in cases {
        stage.delete(name).await;
    }
    for (name, _, code) in cases {
        stage
            .wait_for(
                name,
                &format!("blocked by {code}"),
                Duration::from_secs(30),
                |o| {
                    phase(o) == Some(CopyPhase::Deleting)
                        && stalled_reason(o).as_deref() == Some(code)
                },
            )
            .await;
        let event = stage
            .wait_event(name, "Warning", "DeletionBlocked", Duration::from_secs(10))
            .await;
        assert!(event.note.as_deref().unwrap_or_default().contains(code));
    }
    // Backoff, not a hot loop: a handful of attempts per object in 10 s.
    let before = stage.emulator.count("DeleteImage").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = stage.emulator.count("DeleteImage").await - before;
    assert!(during <= 3 * 5, "{during} DeleteImage calls in 10 s");

    stage.emulator.set_faults(&json!({"inject": []})).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, _, _) in cases {
        stage
            .wait_gone(name, deadline.saturating_duration_since(Instant::now()))
            .await;
    }
    assert!(stage.emulator.images_owned_by_anyone().await.is_empty());
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
