//! End-to-end tests of the `ImageReplication` controller: the operator binary against the real
//! kube-apiserver and the ECS emulator process. Each test checks what a user would notice —
//! the replication's status, its child ImageCopy objects, the published ConfigMap — and what
//! happened in "the cloud" (the emulator's images and call log).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ecs_image_operator::api::image_copy::CopyPhase;
use ecs_image_operator::api::{ImageCopy, ImageReplication};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use support::stage::*;

const REGIONS: [&str; 4] = ["cn-shanghai", "cn-beijing", "cn-shenzhen", "cn-qingdao"];

/// The ImageCopy objects `replication` owns.
async fn children(stage: &Stage, replication: &ImageReplication) -> Vec<ImageCopy> {
    let uid = uid(replication);
    stage
        .api
        .list(&ListParams::default())
        .await
        .expect("list ImageCopy")
        .items
        .into_iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
        .collect()
}

fn rows(replication: &ImageReplication) -> BTreeMap<String, (Option<String>, Option<CopyPhase>)> {
    replication
        .status
        .as_ref()
        .map(|s| {
            s.regions
                .iter()
                .map(|r| (r.region_id.clone(), (r.image_id.clone(), r.phase)))
                .collect()
        })
        .unwrap_or_default()
}

async fn config_map(stage: &Stage, name: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(stage.client.clone(), &stage.namespace);
    api.get_opt(name).await.expect("get ConfigMap")
}

/// Waits until the ConfigMap `name` has `data` exactly.
async fn wait_published(stage: &Stage, name: &str, data: &BTreeMap<String, String>) -> ConfigMap {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let map = config_map(stage, name).await;
        if let Some(map) = &map
            && map.data.as_ref() == Some(data)
        {
            return map.clone();
        }
        assert!(
            Instant::now() < deadline,
            "ConfigMap {name} never held {data:?}; last: {:?}",
            map.and_then(|m| m.data)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The region → image map `replication`'s rows show, with the source keys, as published.
fn expected_map(replication: &ImageReplication, source: &str) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = rows(replication)
        .into_iter()
        .map(|(region, (image, _))| (region, image.expect("a Ready region has an image")))
        .collect();
    data.insert("sourceRegionId".into(), SOURCE_REGION.into());
    data.insert("sourceImageId".into(), source.into());
    data
}

/// The regions where the emulator accepted `action`, sorted.
async fn accepted_in(stage: &Stage, action: &str) -> Vec<String> {
    let mut regions: Vec<String> = stage
        .emulator
        .calls_of(action)
        .await
        .iter()
        .filter(|c| c["code"] == "")
        .map(|c| c["regionId"].as_str().unwrap_or_default().to_string())
        .collect();
    regions.sort();
    regions
}

/// Creates the replication `name` of the seeded image to `regions` and waits until it is Ready.
async fn create_ready(
    stage: &Stage,
    name: &str,
    regions: &[&str],
    spec_overrides: serde_json::Value,
) -> ImageReplication {
    let replications = stage.objects::<ImageReplication>();
    replications
        .create(&image_replication_with(name, regions, spec_overrides))
        .await;
    replications.wait_ready(name, Duration::from_secs(90)).await
}

async fn patch_spec(stage: &Stage, name: &str, spec: serde_json::Value) {
    stage
        .objects::<ImageReplication>()
        .api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .expect("patch ImageReplication");
}

#[tokio::test]
async fn four_regions_become_ready_published_and_a_fifth_adds_one_copy_only() {
    let stage = Stage::start("rep-ready", &["--copy-seconds", "4"], &[]).await;
    let replications = stage.objects::<ImageReplication>();
    let ready = create_ready(
        &stage,
        "golden",
        &REGIONS,
        json!({"publishTo": "golden-images", "tags": {"team": "platform"}}),
    )
    .await;
    let status = ready.status.clone().expect("status");
    assert_eq!((status.ready_regions, status.total_regions), (4, 4));
    assert_eq!(status.regions_ready.as_deref(), Some("4/4"));
    assert_eq!(status.progress.as_deref(), Some("100%"));
    let rows = rows(&ready);
    assert_eq!(rows.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = REGIONS.to_vec();
        sorted.sort();
        sorted
    });
    assert!(
        rows.values()
            .all(|(image, phase)| image.is_some() && *phase == Some(CopyPhase::Available))
    );

    // One owned ImageCopy per region, each Ready with its image, shown by `kubectl get imgcp`.
    let copies = children(&stage, &ready).await;
    assert_eq!(copies.len(), 4);
    for copy in &copies {
        assert!(is_ready(copy), "{} not Ready", copy.name_any());
        let region = &copy.spec.destination_region_id;
        assert_eq!(image_id(copy), rows[region].0.as_deref());
        assert_eq!(copy.owner_references()[0].controller, Some(true));
    }
    let get = kubectl(&["get", "imgcp", "-n", &stage.namespace, "-o", "name"], "").await;
    assert_eq!(String::from_utf8_lossy(&get.stdout).lines().count(), 4);

    // The printer columns.
    let table = kubectl(&["get", "imgrep", "golden", "-n", &stage.namespace], "").await;
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SOURCE", "REGIONS", "PROGRESS", "READY", "AGE"]
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["golden", SOURCE_IMAGE, "4/4", "100%", "True"],
        "{table}"
    );

    // The published map: one key per region, the source, owned by the replication.
    let map = wait_published(&stage, "golden-images", &expected_map(&ready, SOURCE_IMAGE)).await;
    assert_eq!(map.owner_references()[0].uid, uid(&ready));
    // Every copy in the cloud carries its own owner tag and the replication's tags.
    let owned = stage.emulator.images_owned_by_anyone().await;
    assert_eq!(owned.len(), 4);
    assert!(owned.iter().all(|i| i["tags"]["team"] == "platform"));
    assert_eq!(stage.emulator.count("CopyImage").await, 4);

    // A fifth region: one more copy, nothing else copied again.
    let mut five = REGIONS.to_vec();
    five.push("cn-zhangjiakou");
    patch_spec(&stage, "golden", json!({"destinationRegionIds": five})).await;
    let five_ready = replications
        .wait_for(
            "golden",
            "Ready in 5 regions",
            Duration::from_secs(60),
            |r| {
                is_ready(r)
                    && r.status.as_ref().is_some_and(|s| {
                        s.ready_regions == 5 && s.observed_generation == r.metadata.generation
                    })
            },
        )
        .await;
    assert_eq!(
        stage.emulator.count("CopyImage").await,
        5,
        "only the new region is copied"
    );
    assert_eq!(children(&stage, &five_ready).await.len(), 5);
    let data = expected_map(&five_ready, SOURCE_IMAGE);
    assert!(data.contains_key("cn-zhangjiakou"));
    wait_published(&stage, "golden-images", &data).await;
    let events = replications.events("golden").await;
    let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
    for reason in ["CopyCreated", "RegionReady", "Ready", "Published"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn removing_a_region_mid_copy_cancels_that_copy_only() {
    let stage = Stage::start("rep-remove", &["--copy-seconds", "600"], &[]).await;
    let replications = stage.objects::<ImageReplication>();
    replications
        .create(&image_replication_with(
            "golden",
            &["cn-shanghai", "cn-beijing"],
            json!({}),
        ))
        .await;
    let copying = replications
        .wait_for(
            "golden",
            "copying in both regions",
            Duration::from_secs(60),
            |r| {
                rows(r)
                    .values()
                    .filter(|(image, _)| image.is_some())
                    .count()
                    == 2
            },
        )
        .await;
    let beijing = rows(&copying)["cn-beijing"]
        .0
        .clone()
        .expect("an image in cn-beijing");
    let shanghai = rows(&copying)["cn-shanghai"]
        .0
        .clone()
        .expect("an image in cn-shanghai");

    patch_spec(
        &stage,
        "golden",
        json!({"destinationRegionIds": ["cn-shanghai"]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stage.emulator.image("cn-beijing", &beijing).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the cn-beijing copy was never cancelled"
        );
        tokio::time::sleep(POLL).await;
    }
    let cancels = stage.emulator.calls_of("CancelCopyImage").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["regionId"], "cn-beijing");
    let one = replications
        .wait_for(
            "golden",
            "down to one region",
            Duration::from_secs(30),
            |r| r.status.as_ref().is_some_and(|s| s.total_regions == 1),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while children(&stage, &one).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the removed region's ImageCopy is still there"
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        stage
            .emulator
            .image("cn-shanghai", &shanghai)
            .await
            .is_some(),
        "the other region's copy goes on"
    );
}

#[tokio::test]
async fn deleting_the_replication_cancels_copies_in_flight_and_deletes_finished_ones() {
    let stage = Stage::start("rep-delete", &["--copy-seconds", "6"], &[]).await;
    let replications = stage.objects::<ImageReplication>();
    create_ready(
        &stage,
        "golden",
        &["cn-shanghai", "cn-beijing"],
        json!({"publishTo": "golden-images"}),
    )
    .await;
    // Two more regions, deleted while their copies run.
    patch_spec(&stage, "golden", json!({"destinationRegionIds": REGIONS})).await;
    let mixed = replications
        .wait_for(
            "golden",
            "copying in the new regions",
            Duration::from_secs(30),
            |r| {
                let rows = rows(r);
                ["cn-shenzhen", "cn-qingdao"]
                    .iter()
                    .all(|region| rows.get(*region).is_some_and(|(image, _)| image.is_some()))
            },
        )
        .await;
    assert_eq!(mixed.status.as_ref().map(|s| s.ready_regions), Some(2));
    replications.delete("golden").await;

    replications
        .wait_gone("golden", Duration::from_secs(60))
        .await;
    assert!(
        children(&stage, &mixed).await.is_empty(),
        "no ImageCopy left behind"
    );
    assert_eq!(
        accepted_in(&stage, "CancelCopyImage").await,
        ["cn-qingdao", "cn-shenzhen"],
        "copies in flight are cancelled"
    );
    assert_eq!(
        accepted_in(&stage, "DeleteImage").await,
        ["cn-beijing", "cn-shanghai"],
        "finished copies follow deletionPolicy Delete"
    );
    assert!(
        stage.emulator.images_owned_by_anyone().await.is_empty(),
        "no owned image is left in the cloud"
    );
}

#[tokio::test]
async fn a_retained_replication_keeps_its_finished_images_when_deleted() {
    let stage = Stage::start("rep-retain", &["--copy-seconds", "2"], &[]).await;
    let replications = stage.objects::<ImageReplication>();
    let ready = create_ready(
        &stage,
        "golden",
        &["cn-shanghai", "cn-beijing"],
        json!({"deletionPolicy": "Retain"}),
    )
    .await;
    replications.delete("golden").await;
    replications
        .wait_gone("golden", Duration::from_secs(60))
        .await;
    assert!(children(&stage, &ready).await.is_empty());
    assert_eq!(stage.emulator.count("DeleteImage").await, 0);
    for (region, (image, _)) in rows(&ready) {
        let image = image.expect("an image");
        assert!(
            stage.emulator.image(&region, &image).await.is_some(),
            "{region}: retained image {image} is gone"
        );
    }
}

#[tokio::test]
async fn a_new_source_replaces_the_copies_only_once_the_new_ones_are_ready() {
    let stage = Stage::start(
        "rep-source",
        &[
            "--copy-seconds",
            "5",
            "--image",
            "cn-hangzhou:m-demo0001",
            "--image",
            "cn-hangzhou:m-demo0002",
        ],
        &[],
    )
    .await;
    let replications = stage.objects::<ImageReplication>();
    let first = create_ready(
        &stage,
        "golden",
        &["cn-shanghai", "cn-beijing"],
        json!({"publishTo": "golden-images"}),
    )
    .await;
    let first_map = expected_map(&first, SOURCE_IMAGE);
    wait_published(&stage, "golden-images", &first_map).await;
    let old_children = children(&stage, &first).await;

    patch_spec(&stage, "golden", json!({"sourceImageId": "m-demo0002"})).await;
    // While the new copies run, the old ones stay and stay published.
    let rolling = replications
        .wait_for("golden", "rolling out", Duration::from_secs(30), |r| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == r.metadata.generation && s.ready_regions < 2
            })
        })
        .await;
    let during = children(&stage, &rolling).await;
    assert_eq!(during.len(), 4, "old and new generation side by side");
    assert_eq!(
        config_map(&stage, "golden-images")
            .await
            .and_then(|m| m.data),
        Some(first_map.clone()),
        "consumers keep the previous images while the new ones copy"
    );
    for row in &rolling.status.as_ref().expect("status").regions {
        assert!(row.previous_image_id.is_some(), "{row:?}");
    }

    let second = replications
        .wait_for(
            "golden",
            "Ready on the new source",
            Duration::from_secs(60),
            |r| {
                is_ready(r)
                    && r.status
                        .as_ref()
                        .is_some_and(|s| s.observed_generation == r.metadata.generation)
            },
        )
        .await;
    wait_published(
        &stage,
        "golden-images",
        &expected_map(&second, "m-demo0002"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = children(&stage, &second).await;
        if now.len() == 2 {
            assert!(now.iter().all(|c| c.spec.source_image_id == "m-demo0002"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the previous generation is still there"
        );
        tokio::time::sleep(POLL).await;
    }
    for old in &old_children {
        let image = image_id(old).expect("old image");
        let deadline = Instant::now() + Duration::from_secs(30);
        while stage
            .emulator
            .image(&old.spec.destination_region_id, image)
            .await
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "previous image {image} was not deleted"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    assert_eq!(stage.emulator.count("CancelCopyImage").await, 0);
}

#[tokio::test]
async fn queued_regions_show_in_the_status() {
    let stage = Stage::start(
        "rep-queued",
        &["--copy-seconds", "600", "--region-concurrency", "1"],
        &[],
    )
    .await;
    let replications = stage.objects::<ImageReplication>();
    // The first takes each region's one running slot; the second waits behind it.
    replications
        .create(&image_replication_with(
            "first",
            &["cn-shanghai", "cn-beijing"],
            json!({}),
        ))
        .await;
    replications
        .wait_for("first", "copying", Duration::from_secs(60), |r| {
            let rows = rows(r);
            rows.len() == 2
                && rows
                    .values()
                    .all(|(image, phase)| image.is_some() && *phase == Some(CopyPhase::Copying))
        })
        .await;
    replications
        .create(&image_replication_with(
            "second",
            &["cn-shanghai", "cn-beijing"],
            json!({}),
        ))
        .await;
    let queued = replications
        .wait_for(
            "second",
            "queued in both regions",
            Duration::from_secs(60),
            // A copy shows Copying from its CopyImage until the next listing says Waiting.
            |r| {
                condition_true(r, "Queued")
                    && rows(r)
                        .values()
                        .all(|(_, phase)| *phase == Some(CopyPhase::Queued))
            },
        )
        .await;
    let message = &condition(&queued, "Queued").expect("Queued").message;
    assert!(
        message.contains("cn-shanghai") && message.contains("cn-beijing"),
        "{message}"
    );
    assert!(!is_ready(&queued));
}

#[tokio::test]
async fn a_stalled_region_stalls_the_replication_with_its_region_and_code() {
    let stage = Stage::start("rep-stalled", &[], &[]).await;
    let replications = stage.objects::<ImageReplication>();
    replications
        .create(&image_replication_with(
            "golden",
            &["cn-shanghai"],
            json!({"sourceImageId": "m-doesnotexist"}),
        ))
        .await;
    let stalled = replications
        .wait_for("golden", "Stalled", Duration::from_secs(60), |r| {
            condition_true(r, "Stalled")
        })
        .await;
    let condition = condition(&stalled, "Stalled").expect("Stalled");
    assert_eq!(condition.reason, "cn-shanghai:InvalidImageId.NotFound");
    assert!(
        condition
            .message
            .starts_with("cn-shanghai: InvalidImageId.NotFound"),
        "{}",
        condition.message
    );
    replications
        .wait_event("golden", "Warning", "Stalled", Duration::from_secs(10))
        .await;
}

/// examples/imagereplication-golden.yaml becomes Ready, and both consumers in
/// examples/consumers/ read its published map: the Job's `valueFrom` is valid, and the
/// Kustomize replacement fills in the Chengdu image.
#[tokio::test]
async fn the_example_replication_publishes_what_the_example_consumers_read() {
    let stage = Stage::start("rep-example", &["--copy-seconds", "2"], &[]).await;
    let examples = support::repo_root().join("examples");
    let example = examples.join("imagereplication-golden.yaml");
    let apply = kubectl(
        &[
            "apply",
            "-n",
            &stage.namespace,
            "-f",
            &support::path_str(&example),
        ],
        "",
    )
    .await;
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let ready = stage
        .objects::<ImageReplication>()
        .wait_ready("golden-everywhere", Duration::from_secs(60))
        .await;
    let chengdu = rows(&ready)["cn-chengdu"]
        .0
        .clone()
        .expect("a Chengdu image");
    wait_published(&stage, "golden-images", &expected_map(&ready, SOURCE_IMAGE)).await;

    let job = examples.join("consumers/job-reads-published-image.yaml");
    let dry_run = kubectl(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &stage.namespace,
            "-f",
            &support::path_str(&job),
        ],
        "",
    )
    .await;
    assert!(
        dry_run.status.success(),
        "{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["kustomization.yaml", "node-pool-job.yaml"] {
        std::fs::copy(
            examples.join("consumers/kustomize").join(file),
            dir.path().join(file),
        )
        .expect("copy the Kustomize example");
    }
    let export = kubectl(
        &[
            "get",
            "configmap",
            "golden-images",
            "-n",
            &stage.namespace,
            "-o",
            "yaml",
        ],
        "",
    )
    .await;
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    std::fs::write(dir.path().join("golden-images.yaml"), &export.stdout).expect("write the map");
    let built = kubectl(&["kustomize", &support::path_str(dir.path())], "").await;
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let rendered = String::from_utf8_lossy(&built.stdout);
    assert!(
        rendered.contains(&format!("value: {chengdu}")),
        "the Job does not carry the Chengdu image {chengdu}:\n{rendered}"
    );
    assert!(
        !rendered.contains("kind: ConfigMap"),
        "the exported map is not rendered:\n{rendered}"
    );
}
