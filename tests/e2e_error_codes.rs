//! Every error code of the CopyImage and CancelCopyImage documents, answered by the emulator's
//! real HTTP path, leads to the documented handling — `Stalled` with that code, a retry with
//! backoff, or the cancel-specific path — with bounded call counts (no hot loop).
//!
//! Each code gets its own region (a rule of the emulator's `inject` fault matches the call's
//! `RegionId`), so one operator handles all of them at once.

mod support;

use std::time::{Duration, Instant};

use ecs_image_operator::api::ImageCopy;
use ecs_image_operator::api::image_copy::CopyPhase;
use serde_json::{Value, json};

use support::stage::*;

/// CopyImage's documented codes, and whether each is retried (`true`) or stalls.
const COPY_IMAGE_CODES: &[(&str, bool)] = &[
    ("InvalidAliUid.IsNull", false),
    ("InvalidImageName.Malformed", false),
    ("Forbbiden", false),
    ("InvalidDescription.Malformed", false),
    ("SourceRegion.NotFound", false),
    ("DestinationRegion.NotFound", false),
    ("InvalidImageId.NotFound", false),
    ("IncorrectImageStatus", false),
    ("InvalidSnapshotId.NotFound", false),
    ("InvalidImageName.Duplicated", false),
    ("QuotaExceed.Image", false),
    ("QuotaExceed.Snapshot", false),
    ("OperationDenied.ImageCopying", true),
    ("RegionNotSupportCopy", false),
    ("InvalidSnapshot.TooOld", false),
    ("OperationDenied", false),
    ("IncorrectDestinationRegion", false),
    ("SizeExceed.Image", false),
    ("OperationDeined.EncryptedSnapshot", false),
    ("InternalError", true),
    ("OperationDenied.SameRegionOnly", false),
    ("OperationDenied.NotPublished", false),
    ("InvalidParameter.KMSKeyId.CMKNotEnabled", false),
    ("InvalidParameter.KMSKeyId.NotFound", false),
    ("InvalidParameter.KMSKeyId.KMSUnauthorized", false),
    ("InvalidRegion.NotSupport", false),
    ("UserNotInTheWhiteList", false),
    ("InvalidParameter.EncryptedIllegal", false),
    // Not in the document's table, but answered by ECS when another operation holds the image.
    ("OperationDenied.ImageCopyConflict", true),
    ("InvalidOperation.Conflict", true),
];

/// Source regions, one per code in a batch; the copies all go to `DESTINATION`.
const SOURCES: &[&str] = &[
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-hangzhou",
    "cn-nanjing",
    "cn-shenzhen",
    "cn-heyuan",
    "cn-guangzhou",
    "cn-chengdu",
    "cn-hongkong",
    "ap-southeast-1",
    "ap-northeast-1",
    "us-west-1",
];
const DESTINATION: &str = "cn-shanghai";

/// The image seeded in `region` (image ids are unique across regions).
fn source_image(region: &str) -> String {
    format!("m-codes{}", region.replace('-', ""))
}

/// How long call counts are watched once every object shows its handling.
const WINDOW: Duration = Duration::from_secs(8);

fn copy_from(name: &str, source: &str, destination: &str) -> ImageCopy {
    serde_json::from_value(manifest(
        name,
        json!({
            "sourceRegionId": source,
            "sourceImageId": source_image(source),
            "destinationRegionId": destination,
        }),
    ))
    .expect("a valid ImageCopy")
}

fn seeded_sources() -> Vec<String> {
    SOURCES
        .iter()
        .flat_map(|region| {
            [
                "--image".to_string(),
                format!("{region}:{}", source_image(region)),
            ]
        })
        .collect()
}

fn calls_in(calls: &Value, action: &str, region: &str) -> usize {
    calls["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter(|c| c["action"] == action && c["regionId"] == region)
                .count()
        })
        .unwrap_or(0)
}

fn condition_reason(object: &ImageCopy, type_: &str) -> Option<String> {
    condition(object, type_)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.to_string())
}

#[tokio::test]
async fn every_copy_image_code_stalls_or_retries_as_documented_without_a_hot_loop() {
    let mut emulator_args = seeded_sources();
    emulator_args.extend(["--copy-seconds".into(), "1".into()]);
    let emulator_args: Vec<&str> = emulator_args.iter().map(String::as_str).collect();
    let stage = Stage::start("copy-codes", &emulator_args, &[]).await;

    for (batch, codes) in COPY_IMAGE_CODES.chunks(SOURCES.len()).enumerate() {
        let cases: Vec<(String, &str, &str, bool)> = codes
            .iter()
            .zip(SOURCES)
            .enumerate()
            .map(|(i, ((code, retried), source))| {
                (format!("b{batch}-{i}"), *source, *code, *retried)
            })
            .collect();
        let rules: Vec<Value> = cases
            .iter()
            .map(|(_, source, code, _)| json!({"action": "CopyImage", "code": code, "regionId": source}))
            .collect();
        stage.emulator.set_faults(&json!({"inject": rules})).await;
        for (name, source, _, _) in &cases {
            stage.create(&copy_from(name, source, DESTINATION)).await;
        }
        for (name, _, code, retried) in &cases {
            let (what, condition_type) = if *retried {
                (format!("retrying after {code}"), "Reconciling")
            } else {
                (format!("Stalled with {code}"), "Stalled")
            };
            let object = stage
                .wait_for(name, &what, Duration::from_secs(60), |o| {
                    condition_reason(o, condition_type).as_deref() == Some(*code)
                })
                .await;
            assert!(!is_ready(&object), "{name}: {code}");
            if *retried {
                assert_eq!(condition_reason(&object, "Stalled"), None, "{name}: {code}");
            } else {
                assert_eq!(phase(&object), Some(CopyPhase::Failed), "{name}: {code}");
            }
        }
        let before = stage.emulator.calls().await;
        tokio::time::sleep(WINDOW).await;
        let after = stage.emulator.calls().await;
        for (name, source, code, retried) in &cases {
            let made =
                calls_in(&after, "CopyImage", source) - calls_in(&before, "CopyImage", source);
            // Stalled: nothing until --stalled-retry (5 minutes). Retried: exponential backoff
            // from the 1 s poll, each reconcile trying at most 3 times.
            let bound = if *retried { 15 } else { 1 };
            assert!(
                made <= bound,
                "{name} ({code}): {made} CopyImage calls in {WINDOW:?}, at most {bound} expected"
            );
        }
        stage.emulator.set_faults(&json!({"inject": []})).await;
        for (name, _, _, _) in &cases {
            stage.delete(name).await;
        }
        for (name, _, _, _) in &cases {
            stage.wait_gone(name, Duration::from_secs(60)).await;
        }
    }
    assert!(stage.emulator.images_owned_by_anyone().await.is_empty());
}

/// What deleting a copy in flight does when CancelCopyImage answers with `code`.
#[derive(Clone, Copy, Debug)]
enum CancelHandling {
    /// Nothing left to cancel: the finalizer goes at once.
    Released,
    /// The copy cannot be cancelled: wait for it, then apply deletionPolicy.
    WaitsForTheCopy,
    /// Shown on the object (phase Deleting, Stalled with the code) until resolved.
    Blocked,
    /// Retried with backoff.
    Retried,
}

const CANCEL_CODES: &[(&str, &str, CancelHandling)] = &[
    (
        "InvalidRegionId.NotFound",
        "cn-qingdao",
        CancelHandling::Blocked,
    ),
    (
        "InvalidImageId.NotFound",
        "cn-beijing",
        CancelHandling::Released,
    ),
    (
        "IncorrectImageStatus",
        "cn-zhangjiakou",
        CancelHandling::Blocked,
    ),
    (
        "InvalidDescription.Malformed",
        "cn-huhehaote",
        CancelHandling::Blocked,
    ),
    (
        "CancelNotSupported",
        "cn-wulanchabu",
        CancelHandling::WaitsForTheCopy,
    ),
    (
        "ImageCreatedNotFromCopy",
        "cn-nanjing",
        CancelHandling::Blocked,
    ),
    ("InternalError", "cn-shenzhen", CancelHandling::Retried),
];

#[tokio::test]
async fn every_cancel_copy_image_code_is_handled_as_documented() {
    let stage = Stage::start("cancel-codes", &["--copy-seconds", "25"], &[]).await;
    for (i, (_, destination, _)) in CANCEL_CODES.iter().enumerate() {
        let object: ImageCopy = serde_json::from_value(manifest(
            &format!("c{i}"),
            json!({"destinationRegionId": destination}),
        ))
        .expect("a valid ImageCopy");
        stage.create(&object).await;
    }
    for i in 0..CANCEL_CODES.len() {
        stage
            .wait_for(&format!("c{i}"), "Copying", Duration::from_secs(30), |o| {
                phase(o) == Some(CopyPhase::Copying)
            })
            .await;
    }
    let rules: Vec<Value> = CANCEL_CODES
        .iter()
        .map(|(code, region, _)| json!({"action": "CancelCopyImage", "code": code, "regionId": region}))
        .collect();
    stage.emulator.set_faults(&json!({"inject": rules})).await;
    for i in 0..CANCEL_CODES.len() {
        stage.delete(&format!("c{i}")).await;
    }
    for (i, (code, _, handling)) in CANCEL_CODES.iter().enumerate() {
        let name = format!("c{i}");
        let timeout = Duration::from_secs(20);
        match handling {
            CancelHandling::Released => stage.wait_gone(&name, timeout).await,
            CancelHandling::WaitsForTheCopy => {
                stage
                    .wait_for(&name, "waiting for the copy", timeout, |o| {
                        phase(o) == Some(CopyPhase::Cancelling)
                            && condition_reason(o, "Reconciling").as_deref() == Some(*code)
                    })
                    .await;
            }
            CancelHandling::Blocked => {
                stage
                    .wait_for(&name, &format!("blocked by {code}"), timeout, |o| {
                        phase(o) == Some(CopyPhase::Deleting)
                            && condition_reason(o, "Stalled").as_deref() == Some(*code)
                    })
                    .await;
                stage
                    .wait_event(&name, "Warning", "DeletionBlocked", timeout)
                    .await;
            }
            CancelHandling::Retried => {
                stage
                    .wait_for(&name, "retrying the cancel", timeout, |o| {
                        o.metadata.deletion_timestamp.is_some()
                    })
                    .await;
            }
        }
    }
    let before = stage.emulator.calls().await;
    tokio::time::sleep(WINDOW).await;
    let after = stage.emulator.calls().await;
    for (code, region, handling) in CANCEL_CODES {
        let made = calls_in(&after, "CancelCopyImage", region)
            - calls_in(&before, "CancelCopyImage", region);
        let bound = match handling {
            CancelHandling::Retried => 15,
            _ => 5,
        };
        assert!(
            made <= bound,
            "{code}: {made} CancelCopyImage calls in {WINDOW:?}, at most {bound} expected"
        );
    }

    // Resolved: every object goes, and — where the cancel was refused — its image with it.
    stage.emulator.set_faults(&json!({"inject": []})).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    for i in 0..CANCEL_CODES.len() {
        stage
            .wait_gone(
                &format!("c{i}"),
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
    }
    let left: Vec<Value> = stage.emulator.images_owned_by_anyone().await;
    let left_regions: Vec<&str> = left.iter().filter_map(|i| i["regionId"].as_str()).collect();
    assert_eq!(
        left_regions,
        vec!["cn-beijing"],
        "only the copy whose cancel was answered NotFound (a lie the fault told) is left"
    );
}
