//! End-to-end tests of the `ImageCopy` controller: the operator binary runs as its own process
//! (`ecs-image-operator run`) against the real kube-apiserver and the ECS emulator process, and
//! each test checks what a user would notice — status, conditions, events, `kubectl` output —
//! and what happened in "the cloud" (the emulator's images and call counts).
//!
//! Every test has its own namespace, emulator and operator (watching only that namespace), so
//! the tests run in parallel without seeing each other.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ecs_image_operator::api::image_copy::{CopyPhase, DeletionPolicy};
use kube::api::ListParams;
use serde_json::Value;

use support::Emulator;
use support::stage::*;
use support::swallower::ReplySwallower;

#[tokio::test]
async fn copy_shows_rising_progress_then_ready_with_an_owner_tagged_image() {
    let stage = Stage::start("e2e-ready", &["--copy-seconds", "4"], &[]).await;
    let created = stage.create(&image_copy("web")).await;

    // Watch it as a user refreshing `kubectl get` would: Copying with progress rising, then Ready.
    let mut progress_seen: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let object = stage.get("web").await;
        if is_ready(&object) {
            break object;
        }
        if phase(&object) == Some(CopyPhase::Copying)
            && let Some(percent) = progress_percent(&object)
            && progress_seen.last() != Some(&percent)
        {
            progress_seen.push(percent);
        }
        assert!(
            Instant::now() < deadline,
            "web not Ready within 60s; last status: {}",
            status_json(&object)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        progress_seen.windows(2).all(|pair| pair[0] < pair[1]),
        "progress only rises while Copying: {progress_seen:?}"
    );
    assert!(
        progress_seen.len() >= 3,
        "several distinct progress values while Copying, saw {progress_seen:?}"
    );

    assert_eq!(phase(&ready), Some(CopyPhase::Available));
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.progress.as_deref()),
        Some("100%")
    );
    let destination = image_id(&ready).expect("status.imageId of a Ready copy");
    let owned = stage.emulator.images_owned_by(&uid(&created)).await;
    assert_eq!(owned.len(), 1, "exactly one image owned by web: {owned:?}");
    let image = &owned[0];
    assert_eq!(image["imageId"], destination, "status.imageId is the copy");
    assert_eq!(image["regionId"], DESTINATION_REGION);
    assert_eq!(image["status"], "Available");
    assert_eq!(image["sourceImageId"], SOURCE_IMAGE);
    assert_eq!(
        image["tags"]["imageops.dev/owner"],
        format!("{}/web", stage.namespace)
    );

    let wait = kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "imagecopy/web",
            "-n",
            &stage.namespace,
            "--timeout=60s",
        ],
        "",
    )
    .await;
    assert!(
        wait.status.success(),
        "kubectl wait --for=condition=Ready failed: {}",
        String::from_utf8_lossy(&wait.stderr)
    );

    let get = kubectl(&["get", "imgcp", "-n", &stage.namespace], "").await;
    assert!(
        get.status.success(),
        "kubectl get imgcp failed: {}",
        String::from_utf8_lossy(&get.stderr)
    );
    let table = String::from_utf8_lossy(&get.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("kubectl get prints a header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SOURCE",
            "DESTINATION",
            "IMAGE",
            "PHASE",
            "PROGRESS",
            "READY",
            "AGE"
        ],
        "printer columns:\n{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .expect("kubectl get prints web's row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..7],
        [
            "web",
            SOURCE_REGION,
            DESTINATION_REGION,
            destination,
            "Available",
            "100%",
            "True"
        ],
        "web's row:\n{table}"
    );
}

#[tokio::test]
async fn copies_beyond_the_region_concurrency_are_queued_then_all_finish() {
    let stage = Stage::start(
        "e2e-queue",
        &["--copy-seconds", "3", "--region-concurrency", "1"],
        &[],
    )
    .await;
    let names = ["queue-a", "queue-b", "queue-c"];
    for name in names {
        stage.create(&image_copy(name)).await;
    }

    let mut queued_seen: BTreeSet<&str> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut all_ready = true;
        for name in names {
            let object = stage.get(name).await;
            if phase(&object) == Some(CopyPhase::Queued) && condition_true(&object, "Queued") {
                queued_seen.insert(name);
            }
            all_ready &= is_ready(&object);
        }
        if all_ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {names:?} Ready within 90s (queued so far: {queued_seen:?})"
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        queued_seen.len() >= 2,
        "with one copy at a time, at least two of three copies are seen Queued; saw {queued_seen:?}"
    );
    for name in names {
        let object = stage.get(name).await;
        assert_eq!(phase(&object), Some(CopyPhase::Available), "{name}");
        assert!(
            !condition_true(&object, "Queued"),
            "{name} no longer Queued"
        );
    }
    let copies = stage
        .emulator
        .images()
        .await
        .into_iter()
        .filter(|i| i["regionId"] == DESTINATION_REGION && i["status"] == "Available")
        .count();
    assert_eq!(copies, 3, "three Available copies in {DESTINATION_REGION}");
}

#[tokio::test]
async fn deleting_a_copy_in_flight_cancels_it_whether_creating_or_waiting() {
    // One copy at a time and copies that take ten minutes: the first is Creating, the second
    // Waiting, for as long as the test needs.
    let stage = Stage::start(
        "e2e-cancel",
        &["--copy-seconds", "600", "--region-concurrency", "1"],
        &[],
    )
    .await;
    stage.create(&image_copy("creating")).await;
    let creating = stage
        .wait_for(
            "creating",
            "Copying with an image id",
            Duration::from_secs(30),
            |o| phase(o) == Some(CopyPhase::Copying) && image_id(o).is_some(),
        )
        .await;
    stage.create(&image_copy("waiting")).await;
    let waiting = stage
        .wait_for("waiting", "Queued", Duration::from_secs(30), |o| {
            phase(o) == Some(CopyPhase::Queued) && condition_true(o, "Queued")
        })
        .await;

    let in_flight = [
        ("creating", creating, "Creating"),
        ("waiting", waiting, "Waiting"),
    ];
    for (name, object, ecs_status) in &in_flight {
        let id = image_id(object).expect("status.imageId");
        let image = stage
            .emulator
            .image(DESTINATION_REGION, id)
            .await
            .unwrap_or_else(|| panic!("{name}'s image {id} exists before delete"));
        assert_eq!(image["status"], *ecs_status, "{name}'s image {id}");
    }

    for (name, ..) in &in_flight {
        stage.delete(name).await;
    }
    for (name, ..) in &in_flight {
        stage.wait_gone(name, Duration::from_secs(30)).await;
    }

    let calls = stage.emulator.calls().await;
    let cancels_ok = calls["calls"]
        .as_array()
        .expect("calls array")
        .iter()
        .filter(|c| c["action"] == "CancelCopyImage" && c["code"] == "")
        .count();
    assert_eq!(
        cancels_ok, 2,
        "one successful CancelCopyImage per copy in flight; calls: {}",
        calls["counts"]
    );
    assert_eq!(calls["counts"]["DeleteImage"].as_u64().unwrap_or(0), 0);
    for (name, object, _) in &in_flight {
        let id = image_id(object).expect("status.imageId");
        assert!(
            stage.emulator.image(DESTINATION_REGION, id).await.is_none(),
            "{name}'s cancelled image {id} is gone"
        );
        stage
            .wait_event(name, "Normal", "Cancelled", Duration::from_secs(5))
            .await;
    }
}

#[tokio::test]
async fn deleting_a_finished_copy_applies_the_deletion_policy() {
    let stage = Stage::start("e2e-policy", &["--copy-seconds", "2"], &[]).await;
    let deleted = image_copy("deleted");
    let mut retained = image_copy("retained");
    retained.spec.deletion_policy = DeletionPolicy::Retain;
    stage.create(&deleted).await;
    stage.create(&retained).await;
    let deleted = stage.wait_ready("deleted", Duration::from_secs(60)).await;
    let retained = stage.wait_ready("retained", Duration::from_secs(60)).await;
    let deleted_image = image_id(&deleted).expect("status.imageId").to_string();
    let retained_image = image_id(&retained).expect("status.imageId").to_string();

    stage.delete("deleted").await;
    stage.delete("retained").await;
    stage.wait_gone("deleted", Duration::from_secs(30)).await;
    stage.wait_gone("retained", Duration::from_secs(30)).await;

    assert_eq!(
        stage.emulator.count("DeleteImage").await,
        1,
        "DeleteImage for the Delete policy only"
    );
    assert!(
        stage
            .emulator
            .image(DESTINATION_REGION, &deleted_image)
            .await
            .is_none(),
        "deletionPolicy Delete (the default) deleted {deleted_image}"
    );
    let kept = stage
        .emulator
        .image(DESTINATION_REGION, &retained_image)
        .await
        .unwrap_or_else(|| panic!("deletionPolicy Retain kept {retained_image}"));
    assert_eq!(kept["status"], "Available");
    stage
        .wait_event("deleted", "Normal", "Deleted", Duration::from_secs(5))
        .await;
    stage
        .wait_event("retained", "Normal", "Retained", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn operator_killed_right_after_copy_image_does_not_copy_twice() {
    let emulator = Emulator::start(&["--copy-seconds", "3"]).await;
    let swallower = ReplySwallower::start(emulator.endpoint(), "CopyImage").await;
    let mut stage = Stage::start_with("e2e-crash", emulator, &swallower.endpoint, &[]).await;
    let created = stage.create(&image_copy("crash")).await;

    tokio::time::timeout(Duration::from_secs(30), swallower.swallowed.notified())
        .await
        .expect("the operator called CopyImage and ECS answered");
    assert_eq!(stage.emulator.count("CopyImage").await, 1);
    stage.operator.kill_9();

    let before_restart = stage.get("crash").await;
    assert_eq!(
        image_id(&before_restart),
        None,
        "killed before it could record the image"
    );
    let orphan = stage.emulator.images_owned_by(&uid(&created)).await;
    assert_eq!(orphan.len(), 1, "ECS made the copy: {orphan:?}");
    let orphan_id = orphan[0]["imageId"].clone();

    stage.operator.restart().await;
    let ready = stage.wait_ready("crash", Duration::from_secs(60)).await;

    assert_eq!(
        image_id(&ready).map(Value::from),
        Some(orphan_id),
        "the new operator adopted the copy the killed one started"
    );
    assert_eq!(
        stage.emulator.count("CopyImage").await,
        1,
        "the owner-tag lookup found the copy, so no second CopyImage"
    );
    let copies: Vec<Value> = stage
        .emulator
        .images()
        .await
        .into_iter()
        .filter(|i| i["regionId"] == DESTINATION_REGION)
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "no second copy in {DESTINATION_REGION}: {copies:?}"
    );
}

#[tokio::test]
async fn unknown_source_image_stalls_with_the_ecs_code_without_hot_looping() {
    let stage = Stage::start("e2e-stalled", &[], &[]).await;
    let mut object = image_copy("missing-source");
    object.spec.source_image_id = "m-doesnotexist".into();
    stage.create(&object).await;

    let stalled = stage
        .wait_for("missing-source", "Stalled", Duration::from_secs(30), |o| {
            condition_true(o, "Stalled")
        })
        .await;
    let condition = condition(&stalled, "Stalled").expect("Stalled condition");
    assert_eq!(condition.reason, "InvalidImageId.NotFound");
    assert_eq!(phase(&stalled), Some(CopyPhase::Failed));
    assert!(!is_ready(&stalled));
    let warning = stage
        .wait_event(
            "missing-source",
            "Warning",
            "Failed",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains("InvalidImageId.NotFound")),
        "the Warning names the ECS code: {:?}",
        warning.note
    );

    // No hot loop: over 20 s the operator tries CopyImage at most a few times.
    let watch_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < watch_until {
        let copy_calls = stage.emulator.count("CopyImage").await;
        assert!(
            copy_calls <= 3,
            "a stalled object must back off, but CopyImage was called {copy_calls} times"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&stalled))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn destination_deleted_out_of_band_is_copied_again() {
    let stage = Stage::start(
        "e2e-recopy",
        &["--copy-seconds", "2"],
        &["--resync-interval", "2s"],
    )
    .await;
    let created = stage.create(&image_copy("recopy")).await;
    let first = stage.wait_ready("recopy", Duration::from_secs(60)).await;
    let lost_image = image_id(&first).expect("status.imageId").to_string();

    stage
        .emulator
        .delete_image(DESTINATION_REGION, &lost_image)
        .await;

    // Noticed by the drift check (one listing per 2 s resync interval), the copy having no
    // timer of its own: within a few intervals, with room for a loaded machine.
    let missing = stage
        .wait_event(
            "recopy",
            "Warning",
            "DestinationImageMissing",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        missing
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&lost_image)),
        "the Warning names the lost image: {:?}",
        missing.note
    );
    let again = stage
        .wait_for(
            "recopy",
            "Ready with a new image",
            Duration::from_secs(60),
            |o| is_ready(o) && image_id(o).is_some_and(|id| id != lost_image),
        )
        .await;
    let new_image = image_id(&again).expect("status.imageId");
    let owned = stage.emulator.images_owned_by(&uid(&created)).await;
    assert_eq!(owned.len(), 1, "only the new copy exists: {owned:?}");
    assert_eq!(owned[0]["imageId"], new_image);
    assert_eq!(owned[0]["status"], "Available");
}

#[tokio::test]
async fn fifty_copies_to_one_region_share_the_region_listing() {
    const COPIES: usize = 50;
    let poll_interval = Duration::from_secs(1);
    let stage = Stage::start(
        "e2e-scale",
        &["--copy-seconds", "3", "--region-concurrency", "50"],
        &["--poll-interval", "1s"],
    )
    .await;
    let started = Instant::now();
    for index in 0..COPIES {
        stage
            .create(&image_copy(&format!("scale-{index:02}")))
            .await;
    }

    let deadline = started + Duration::from_secs(150);
    loop {
        let objects = stage
            .api
            .list(&ListParams::default())
            .await
            .expect("list ImageCopy objects");
        let ready = objects.items.iter().filter(|o| is_ready(*o)).count();
        if ready == COPIES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready} of {COPIES} copies Ready within {:?}",
            deadline - started
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let describes = stage.emulator.count("DescribeImages").await;
    let copy_calls = stage.emulator.count("CopyImage").await;

    let ticks = elapsed.as_secs_f64() / poll_interval.as_secs_f64();
    let regions = 1.0;
    let shared_listing_bound = ticks.ceil() * regions * 3.0 + COPIES as f64;
    let per_object_polling = COPIES as f64 * ticks;
    println!(
        "{COPIES} copies Ready in {elapsed:.1?}: DescribeImages {describes}, CopyImage {copy_calls}; \
         per-object polling would make ~{per_object_polling:.0}: ratio {:.3}",
        describes as f64 / per_object_polling
    );
    assert!(
        (describes as f64) <= shared_listing_bound,
        "DescribeImages {describes} exceeds {shared_listing_bound:.0} (3 per region per tick \
         over {ticks:.1} ticks + one owner-tag lookup per object)"
    );
    assert!((describes as f64) < per_object_polling);
    let destination_images = stage
        .emulator
        .images()
        .await
        .into_iter()
        .filter(|i| i["regionId"] == DESTINATION_REGION)
        .count();
    assert_eq!(destination_images, COPIES, "one copy per object");
}

/// A copy's end is looked for when its progress says it is due, not at the next poll tick:
/// with a 12 s copy and a 5 s poll interval, fixed ticks (5, 10, 15 s) would notice it 3 s late.
/// Seen about 0.1 s after the end on a quiet machine; the limit leaves room for one look that
/// finds it not yet ended under load and the next, 1.5 s later (seen once at 1.55 s in a full
/// `make test`), and still fails a fixed tick.
#[tokio::test]
async fn a_finished_copy_is_noticed_when_its_progress_says_it_ends() {
    let stage = Stage::start(
        "e2e-due",
        &["--copy-seconds", "12"],
        &["--poll-interval", "5s"],
    )
    .await;
    stage.create(&image_copy("due")).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    let seen_ready = loop {
        let object = stage.api.get("due").await.expect("get");
        if is_ready(&object) {
            break chrono::Utc::now();
        }
        assert!(Instant::now() < deadline, "not Ready: {:?}", object.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let image = stage
        .emulator
        .images()
        .await
        .into_iter()
        .find(|i| i["regionId"] == DESTINATION_REGION)
        .expect("the copy");
    let available: chrono::DateTime<chrono::Utc> = image["availableAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("availableAt");
    let lag = (seen_ready - available).as_seconds_f64();
    println!("Ready {lag:.3} s after the image became Available");
    assert!(
        lag < 2.5,
        "Ready {lag:.3} s after the image became Available"
    );
}

/// Finished copies are checked for drift against one listing per region per resync interval,
/// however many there are, not one per poll interval; and, nothing having drifted, none of them is
/// reconciled (no timer per object).
#[tokio::test]
async fn finished_copies_cost_one_listing_per_region_per_resync_interval() {
    const COPIES: usize = 16;
    let stage = Stage::start(
        "e2e-rest",
        &["--copy-seconds", "1", "--region-concurrency", "20"],
        &["--poll-interval", "1s", "--resync-interval", "4s"],
    )
    .await;
    // Created over 8 s, so that their resyncs are spread over every interval.
    for index in 0..COPIES {
        stage.create(&image_copy(&format!("rest-{index:02}"))).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let objects = stage.api.list(&ListParams::default()).await.expect("list");
        if objects.items.iter().filter(|o| is_ready(*o)).count() == COPIES {
            break;
        }
        assert!(Instant::now() < deadline, "not all Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stage.emulator.count("DescribeImages").await;
    let reconciles_before = stage.operator.reconciles().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let listings = stage.emulator.count("DescribeImages").await - before;
    let reconciled = stage.operator.reconciles().await - reconciles_before;
    println!(
        "{listings} DescribeImages and {reconciled} reconciles in 12 s at rest (resync interval 4 s)"
    );
    assert!(
        listings <= 4,
        "{listings} DescribeImages in 12 s at rest; one listing per 4 s resync interval expected"
    );
    assert_eq!(
        reconciled, 0,
        "finished copies whose image did not drift are not reconciled at rest"
    );
}
