//! End-to-end tests of the `ImageImport` and `ImageExport` controllers: the operator binary runs
//! as its own process against the real kube-apiserver and the ECS emulator process, and each
//! test checks what a user would notice — status, conditions, events — and what happened in
//! "the cloud" (the emulator's images, tasks and call log).
//!
//! Every test has its own namespace, emulator and operator (watching only that namespace), so
//! the tests run in parallel without seeing each other. Tasks take a few seconds
//! (`--task-seconds`), or ten minutes where a test needs one still running.

mod support;

use std::time::{Duration, Instant};

use ecs_image_operator::api::common::DeletionPolicy;
use ecs_image_operator::api::image_export::ExportPhase;
use ecs_image_operator::api::image_import::ImportPhase;
use ecs_image_operator::api::{ImageExport, ImageImport};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use support::Emulator;
use support::stage::*;
use support::swallower::ReplySwallower;

/// Where the tests import and export (the seeded image's region).
const REGION: &str = SOURCE_REGION;
/// Long enough that a task is still running whenever a test looks.
const FOREVER: &str = "600";

fn import_attempts(object: &ImageImport) -> Option<i32> {
    object.status.as_ref()?.import_attempts
}

fn export_attempts(object: &ImageExport) -> Option<i32> {
    object.status.as_ref()?.export_attempts
}

/// The `taskStatus` the emulator reports for `task_id`.
async fn task_status(emulator: &Emulator, task_id: &str) -> String {
    let task = emulator
        .task(task_id)
        .await
        .unwrap_or_else(|| panic!("the emulator knows task {task_id}"));
    task["taskStatus"]
        .as_str()
        .unwrap_or_else(|| panic!("task {task_id} has a taskStatus: {task}"))
        .to_string()
}

/// The CancelTask calls answered with `code` (`""`: accepted).
async fn cancels_answered(emulator: &Emulator, code: &str) -> Vec<Value> {
    emulator
        .calls_of("CancelTask")
        .await
        .into_iter()
        .filter(|c| c["code"] == code)
        .collect()
}

#[tokio::test]
async fn import_shows_rising_progress_then_ready_with_an_owner_tagged_image() {
    let stage = Stage::start("imp-ready", &["--task-seconds", "5"], &[]).await;
    let imports = stage.objects::<ImageImport>();
    let created = imports
        .create(&image_import_with(
            "golden",
            json!({"tags": {"team": "platform"}}),
        ))
        .await;

    // Watch it as a user refreshing `kubectl get` would: Importing with progress rising, then
    // Ready.
    let mut progress_seen: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let object = imports.get("golden").await;
        if is_ready(&object) {
            break object;
        }
        if phase(&object) == Some(ImportPhase::Importing)
            && let Some(percent) = progress_percent(&object)
            && progress_seen.last() != Some(&percent)
        {
            progress_seen.push(percent);
        }
        assert!(
            Instant::now() < deadline,
            "golden not Ready within 60s; last status: {}",
            status_json(&object)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        progress_seen.windows(2).all(|pair| pair[0] < pair[1]),
        "progress only rises while Importing: {progress_seen:?}"
    );
    assert!(
        progress_seen.iter().any(|p| (1..100).contains(p)),
        "a reading strictly between 0% and 100% before Ready, saw {progress_seen:?}"
    );

    assert_eq!(phase(&ready), Some(ImportPhase::Available));
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.progress.as_deref()),
        Some("100%")
    );
    let image_id = image_id(&ready).expect("status.imageId of a Ready import");
    let task_id = task_id(&ready).expect("status.taskId of a Ready import");
    let owned = stage.emulator.images_owned_by(&uid(&created)).await;
    assert_eq!(
        owned.len(),
        1,
        "exactly one image owned by golden: {owned:?}"
    );
    let image = &owned[0];
    assert_eq!(image["imageId"], image_id, "status.imageId is the import");
    assert_eq!(image["regionId"], REGION);
    assert_eq!(image["status"], "Available");
    assert_eq!(
        image["tags"]["imageops.dev/owner"],
        format!("{}/golden", stage.namespace)
    );
    assert_eq!(image["tags"]["team"], "platform", "spec.tags on the image");

    let task = stage
        .emulator
        .task(task_id)
        .await
        .unwrap_or_else(|| panic!("status.taskId {task_id} is an emulator task"));
    assert_eq!(task["taskAction"], "ImportImage");
    assert_eq!(task["taskStatus"], "Finished");
    assert_eq!(task["resourceId"], image_id, "the task made status.imageId");
    assert_eq!(stage.emulator.count("ImportImage").await, 1);
    imports
        .wait_event("golden", "Normal", "Available", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn export_runs_to_exported_and_names_the_file_it_wrote() {
    let stage = Stage::start("exp-ready", &["--task-seconds", "4"], &[]).await;
    let exports = stage.objects::<ImageExport>();
    exports.create(&image_export("golden")).await;

    let ready = exports.wait_ready("golden", Duration::from_secs(60)).await;

    assert_eq!(phase(&ready), Some(ExportPhase::Exported));
    let status = ready.status.as_ref().expect("status");
    assert_eq!(status.progress.as_deref(), Some("100%"));
    let task_id = status.task_id.as_deref().expect("status.taskId");
    let file = status.oss_object.as_deref().expect("status.ossObject");
    assert!(
        file.starts_with("golden") && file.contains(task_id) && file.ends_with(".qcow2"),
        "status.ossObject {file:?} is the file of task {task_id} with spec.ossPrefix and format"
    );
    let tasks = stage.emulator.tasks_of("ExportImage").await;
    assert_eq!(tasks.len(), 1, "one export task: {tasks:?}");
    assert_eq!(tasks[0]["taskId"], task_id);
    assert_eq!(tasks[0]["taskStatus"], "Finished");
    assert_eq!(tasks[0]["resourceId"], SOURCE_IMAGE);
    let event = exports
        .wait_event("golden", "Normal", "Exported", Duration::from_secs(5))
        .await;
    assert!(
        event.note.as_deref().is_some_and(|n| n.contains(file)),
        "the Exported event names the file: {:?}",
        event.note
    );
}

#[tokio::test]
async fn deleting_a_running_import_or_export_cancels_its_task() {
    let stage = Stage::start("cancel-tasks", &["--task-seconds", FOREVER], &[]).await;
    let imports = stage.objects::<ImageImport>();
    let exports = stage.objects::<ImageExport>();
    let created = imports.create(&image_import("importing")).await;
    exports.create(&image_export("exporting")).await;
    let importing = imports
        .wait_for(
            "importing",
            "Importing with its task",
            Duration::from_secs(30),
            |o| phase(o) == Some(ImportPhase::Importing) && task_id(o).is_some(),
        )
        .await;
    let exporting = exports
        .wait_for(
            "exporting",
            "Exporting with its task",
            Duration::from_secs(30),
            |o| phase(o) == Some(ExportPhase::Exporting) && task_id(o).is_some(),
        )
        .await;
    let import_task = task_id(&importing).expect("import task").to_string();
    let export_task = task_id(&exporting).expect("export task").to_string();
    let image = image_id(&importing).expect("imported image").to_string();
    assert_eq!(
        stage.emulator.image(REGION, &image).await.expect("image")["status"],
        "Creating"
    );

    imports.delete("importing").await;
    exports.delete("exporting").await;
    imports
        .wait_gone("importing", Duration::from_secs(30))
        .await;
    exports
        .wait_gone("exporting", Duration::from_secs(30))
        .await;

    let accepted = cancels_answered(&stage.emulator, "").await;
    assert_eq!(
        accepted.len(),
        2,
        "one accepted CancelTask per running task: {accepted:?}"
    );
    assert_eq!(task_status(&stage.emulator, &import_task).await, "Deleted");
    assert_eq!(task_status(&stage.emulator, &export_task).await, "Deleted");
    assert!(
        stage.emulator.image(REGION, &image).await.is_none(),
        "the half-imported image {image} is gone"
    );
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty()
    );
    assert!(
        stage.emulator.image(REGION, SOURCE_IMAGE).await.is_some(),
        "cancelling an export leaves the exported image alone"
    );
    imports
        .wait_event("importing", "Normal", "Cancelled", Duration::from_secs(5))
        .await;
    exports
        .wait_event("exporting", "Normal", "Cancelled", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn operator_killed_right_after_import_image_imports_once() {
    let emulator = Emulator::start(&["--task-seconds", "6"]).await;
    let swallower = ReplySwallower::start(emulator.endpoint(), "ImportImage").await;
    let mut stage = Stage::start_with("imp-crash", emulator, &swallower.endpoint, &[]).await;
    let imports = stage.objects::<ImageImport>();
    let created = imports.create(&image_import("crash")).await;

    tokio::time::timeout(Duration::from_secs(30), swallower.swallowed.notified())
        .await
        .expect("the operator called ImportImage and ECS answered");
    assert_eq!(stage.emulator.count("ImportImage").await, 1);
    stage.operator.kill_9();

    let before_restart = imports.get("crash").await;
    assert_eq!(
        image_id(&before_restart),
        None,
        "killed before it could record the image"
    );
    assert_eq!(
        import_attempts(&before_restart),
        Some(1),
        "the attempt was recorded before ImportImage was sent"
    );
    let orphan = stage.emulator.images_owned_by(&uid(&created)).await;
    assert_eq!(orphan.len(), 1, "ECS started the import: {orphan:?}");
    let orphan_id = orphan[0]["imageId"].clone();

    stage.operator.restart().await;
    let ready = imports.wait_ready("crash", Duration::from_secs(60)).await;

    assert_eq!(
        image_id(&ready).map(Value::from),
        Some(orphan_id.clone()),
        "the new operator adopted the import the killed one started"
    );
    let tasks = stage.emulator.tasks_of("ImportImage").await;
    assert_eq!(tasks.len(), 1, "exactly one import task: {tasks:?}");
    assert_eq!(tasks[0]["resourceId"], orphan_id);
    assert_eq!(
        task_id(&ready).map(Value::from),
        Some(tasks[0]["taskId"].clone())
    );
    assert_eq!(
        stage.emulator.images_owned_by(&uid(&created)).await.len(),
        1,
        "exactly one image for the object"
    );
}

#[tokio::test]
async fn import_deleted_while_the_operator_was_down_after_import_image_leaves_nothing_behind() {
    let emulator = Emulator::start(&["--task-seconds", FOREVER]).await;
    let swallower = ReplySwallower::start(emulator.endpoint(), "ImportImage").await;
    let mut stage = Stage::start_with("imp-crash-del", emulator, &swallower.endpoint, &[]).await;
    let imports = stage.objects::<ImageImport>();
    let created = imports.create(&image_import("gone")).await;

    tokio::time::timeout(Duration::from_secs(30), swallower.swallowed.notified())
        .await
        .expect("the operator called ImportImage and ECS answered");
    stage.operator.kill_9();
    let started = stage.emulator.tasks_of("ImportImage").await;
    assert_eq!(started.len(), 1, "ECS started the import: {started:?}");
    let task = started[0]["taskId"].as_str().expect("taskId").to_string();

    imports.delete("gone").await;
    stage.operator.restart().await;
    imports.wait_gone("gone", Duration::from_secs(30)).await;

    assert_eq!(
        task_status(&stage.emulator, &task).await,
        "Deleted",
        "the import nobody recorded was found and cancelled"
    );
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn operator_killed_right_after_export_image_adopts_the_running_export() {
    // Long enough that the export still runs when the new operator looks.
    let emulator = Emulator::start(&["--task-seconds", "15"]).await;
    let swallower = ReplySwallower::start(emulator.endpoint(), "ExportImage").await;
    let mut stage = Stage::start_with("exp-crash", emulator, &swallower.endpoint, &[]).await;
    let exports = stage.objects::<ImageExport>();
    exports.create(&image_export("crash")).await;

    tokio::time::timeout(Duration::from_secs(30), swallower.swallowed.notified())
        .await
        .expect("the operator called ExportImage and ECS answered");
    stage.operator.kill_9();

    let before_restart = exports.get("crash").await;
    assert_eq!(
        task_id(&before_restart),
        None,
        "killed before it could record the task"
    );
    assert_eq!(export_attempts(&before_restart), Some(1));
    let started = stage.emulator.tasks_of("ExportImage").await;
    assert_eq!(started.len(), 1, "ECS started the export: {started:?}");
    assert_eq!(started[0]["taskStatus"], "Processing");

    stage.operator.restart().await;
    let ready = exports.wait_ready("crash", Duration::from_secs(60)).await;

    assert_eq!(
        task_id(&ready).map(Value::from),
        Some(started[0]["taskId"].clone()),
        "the new operator adopted the export the killed one started"
    );
    assert_eq!(
        stage.emulator.count("ExportImage").await,
        1,
        "no second ExportImage"
    );
    assert_eq!(stage.emulator.tasks_of("ExportImage").await.len(), 1);
}

/// `InvalidTaskId.NotFound` and `InvalidTaskId.IncorrectTaskStatus` say no task of ours is left
/// to cancel: the finalizer then goes by what is left of the image. Each import has its own
/// region, so each gets its own injected answer.
#[tokio::test]
async fn cancel_task_saying_nothing_runs_releases_the_object_per_its_deletion_policy() {
    let stage = Stage::start("cancel-ended", &["--task-seconds", "12"], &[]).await;
    stage
        .emulator
        .set_faults(&json!({"inject": [
            {"action": "CancelTask", "code": "InvalidTaskId.NotFound", "count": 1, "regionId": "cn-hangzhou"},
            {"action": "CancelTask", "code": "InvalidTaskId.IncorrectTaskStatus", "regionId": "cn-shanghai"},
        ]}))
        .await;
    let imports = stage.objects::<ImageImport>();
    let not_found = imports.create(&image_import("not-found")).await;
    imports
        .create(&image_import_with(
            "ended",
            json!({"regionId": "cn-shanghai", "deletionPolicy": "Retain"}),
        ))
        .await;
    let running =
        |o: &ImageImport| phase(o) == Some(ImportPhase::Importing) && task_id(o).is_some();
    let ended_importing = imports
        .wait_for("ended", "Importing", Duration::from_secs(30), running)
        .await;
    imports
        .wait_for("not-found", "Importing", Duration::from_secs(30), running)
        .await;
    let ended_task = task_id(&ended_importing).expect("task").to_string();
    let ended_image = image_id(&ended_importing).expect("image").to_string();

    imports.delete("not-found").await;
    imports.delete("ended").await;

    // NotFound: nothing to cancel, but the image is still being made, so the finalizer looks
    // again and the import is cancelled with it.
    imports
        .wait_gone("not-found", Duration::from_secs(30))
        .await;
    assert_eq!(
        cancels_answered(&stage.emulator, "InvalidTaskId.NotFound")
            .await
            .len(),
        1
    );
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&not_found))
            .await
            .is_empty(),
        "deletionPolicy Delete: nothing of not-found is left"
    );

    // IncorrectTaskStatus while the import still runs: the object stays until it has ended.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cancels_answered(&stage.emulator, "InvalidTaskId.IncorrectTaskStatus")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no CancelTask for ended");
        tokio::time::sleep(POLL).await;
    }
    if task_status(&stage.emulator, &ended_task).await == "Processing" {
        let held = imports.api.get_opt("ended").await.expect("get ended");
        assert!(
            held.is_some_and(|o| o.metadata.deletion_timestamp.is_some()),
            "the finalizer stays while the import may still run"
        );
    }
    imports.wait_gone("ended", Duration::from_secs(40)).await;
    assert_eq!(task_status(&stage.emulator, &ended_task).await, "Finished");
    let kept = stage
        .emulator
        .image("cn-shanghai", &ended_image)
        .await
        .unwrap_or_else(|| panic!("deletionPolicy Retain kept {ended_image}"));
    assert_eq!(kept["status"], "Available");
    assert_eq!(stage.emulator.count("DeleteImage").await, 0);
    imports
        .wait_event("ended", "Normal", "Retained", Duration::from_secs(5))
        .await;
}

/// A task CancelTask cannot cancel (here a RedeployInstance task the object's status was
/// pointed at while the operator was down): a Warning, and the finalizer waits for the import.
#[tokio::test]
async fn cancel_task_not_supported_keeps_the_finalizer_while_the_task_runs() {
    let mut stage = Stage::start("cancel-unsupported", &["--task-seconds", "20"], &[]).await;
    let imports = stage.objects::<ImageImport>();
    let created = imports.create(&image_import("redeploy")).await;
    let importing = imports
        .wait_for(
            "redeploy",
            "Importing with its task",
            Duration::from_secs(30),
            |o| phase(o) == Some(ImportPhase::Importing) && task_id(o).is_some(),
        )
        .await;
    let import_task = task_id(&importing).expect("import task").to_string();
    let seeded = stage
        .emulator
        .seed_task(&json!({
            "regionId": REGION,
            "taskAction": "RedeployInstance",
            "taskStatus": "Processing",
            "resourceId": "i-web1",
            "progress": 40,
        }))
        .await;
    let redeploy_task = seeded["taskId"]
        .as_str()
        .expect("seeded taskId")
        .to_string();

    // With the operator down nothing overwrites the patched status before the delete.
    stage.operator.kill_9();
    imports
        .api
        .patch_status(
            "redeploy",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"taskId": redeploy_task}})),
        )
        .await
        .expect("patch status.taskId");
    imports.delete("redeploy").await;
    stage.operator.restart().await;

    let warning = imports
        .wait_event(
            "redeploy",
            "Warning",
            "TaskActionNotSupport",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&redeploy_task)),
        "the Warning names the task: {:?}",
        warning.note
    );
    let waiting = imports
        .wait_for(
            "redeploy",
            "Cancelling, waiting for the task",
            Duration::from_secs(10),
            |o| {
                phase(o) == Some(ImportPhase::Cancelling)
                    && true_reason(o, "Reconciling").as_deref() == Some("TaskActionNotSupport")
            },
        )
        .await;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        cancels_answered(&stage.emulator, "InvalidTaskId.TaskActionNotSupport")
            .await
            .len(),
        1,
        "CancelTask is not sent again once ECS said it cannot cancel"
    );
    // Still held a while later, as long as the import runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if task_status(&stage.emulator, &import_task).await == "Processing" {
        assert!(
            imports
                .api
                .get_opt("redeploy")
                .await
                .expect("get")
                .is_some(),
            "the finalizer stays while the import runs"
        );
    }

    imports.wait_gone("redeploy", Duration::from_secs(60)).await;
    assert_eq!(task_status(&stage.emulator, &import_task).await, "Finished");
    assert_eq!(
        task_status(&stage.emulator, &redeploy_task).await,
        "Processing",
        "the task ECS cannot cancel was left alone"
    );
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty(),
        "once the import ended, deletionPolicy Delete deleted its image"
    );
}

#[tokio::test]
async fn cancel_task_failed_blocks_deletion_until_ecs_can_cancel() {
    let stage = Stage::start("cancel-failed", &["--task-seconds", FOREVER], &[]).await;
    let imports = stage.objects::<ImageImport>();
    let exports = stage.objects::<ImageExport>();
    let created = imports.create(&image_import("blocked")).await;
    exports.create(&image_export("blocked")).await;
    let importing = imports
        .wait_for("blocked", "Importing", Duration::from_secs(30), |o| {
            phase(o) == Some(ImportPhase::Importing) && task_id(o).is_some()
        })
        .await;
    let exporting = exports
        .wait_for("blocked", "Exporting", Duration::from_secs(30), |o| {
            phase(o) == Some(ExportPhase::Exporting) && task_id(o).is_some()
        })
        .await;
    let import_task = task_id(&importing).expect("import task").to_string();
    let export_task = task_id(&exporting).expect("export task").to_string();

    stage
        .emulator
        .set_faults(&json!({"cancelTaskFailed": true}))
        .await;
    imports.delete("blocked").await;
    exports.delete("blocked").await;

    let import_blocked = imports
        .wait_for(
            "blocked",
            "blocked on CancelTaskFailed",
            Duration::from_secs(30),
            |o| {
                phase(o) == Some(ImportPhase::Deleting)
                    && true_reason(o, "Stalled").as_deref() == Some("CancelTaskFailed")
            },
        )
        .await;
    let export_blocked = exports
        .wait_for(
            "blocked",
            "blocked on CancelTaskFailed",
            Duration::from_secs(30),
            |o| {
                phase(o) == Some(ExportPhase::Cancelling)
                    && true_reason(o, "Stalled").as_deref() == Some("CancelTaskFailed")
            },
        )
        .await;
    assert!(import_blocked.metadata.deletion_timestamp.is_some());
    assert!(export_blocked.metadata.deletion_timestamp.is_some());
    for event in [
        imports
            .wait_event(
                "blocked",
                "Warning",
                "DeletionBlocked",
                Duration::from_secs(10),
            )
            .await,
        exports
            .wait_event(
                "blocked",
                "Warning",
                "DeletionBlocked",
                Duration::from_secs(10),
            )
            .await,
    ] {
        assert!(
            event
                .note
                .as_deref()
                .is_some_and(|n| n.contains("CancelTaskFailed")),
            "the Warning names the code: {:?}",
            event.note
        );
    }
    assert_eq!(
        task_status(&stage.emulator, &import_task).await,
        "Processing"
    );
    assert_eq!(
        task_status(&stage.emulator, &export_task).await,
        "Processing"
    );

    stage
        .emulator
        .set_faults(&json!({"cancelTaskFailed": false}))
        .await;
    imports.wait_gone("blocked", Duration::from_secs(60)).await;
    exports.wait_gone("blocked", Duration::from_secs(60)).await;
    assert_eq!(task_status(&stage.emulator, &import_task).await, "Deleted");
    assert_eq!(task_status(&stage.emulator, &export_task).await, "Deleted");
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_failing_import_stalls_with_the_task_error_and_is_not_imported_again() {
    let stage = Stage::start("imp-failed", &["--task-seconds", "4"], &[]).await;
    stage
        .emulator
        .set_faults(&json!({"failTasks": [{"action": "ImportImage"}]}))
        .await;
    let imports = stage.objects::<ImageImport>();
    let created = imports.create(&image_import("broken")).await;

    let stalled = imports
        .wait_for("broken", "Stalled", Duration::from_secs(30), |o| {
            condition_true(o, "Stalled")
        })
        .await;
    assert_eq!(
        true_reason(&stalled, "Stalled").as_deref(),
        Some("ImportImage.OssObjectNotFound")
    );
    assert_eq!(phase(&stalled), Some(ImportPhase::Failed));
    assert!(!is_ready(&stalled));
    let warning = imports
        .wait_event("broken", "Warning", "Failed", Duration::from_secs(10))
        .await;
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains("ImportImage.OssObjectNotFound")),
        "the Warning names the task's error: {:?}",
        warning.note
    );

    // Not imported again on its own.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stage.emulator.count("ImportImage").await, 1);
    assert_eq!(stage.emulator.tasks_of("ImportImage").await.len(), 1);
    assert!(condition_true(&imports.get("broken").await, "Stalled"));

    // The failed image ECS leaves behind goes with the object.
    imports.delete("broken").await;
    imports.wait_gone("broken", Duration::from_secs(30)).await;
    assert!(
        stage
            .emulator
            .images_owned_by(&uid(&created))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_a_finished_import_applies_the_deletion_policy() {
    let stage = Stage::start("imp-policy", &["--task-seconds", "2"], &[]).await;
    let imports = stage.objects::<ImageImport>();
    let mut retained = image_import("retained");
    retained.spec.deletion_policy = DeletionPolicy::Retain;
    imports.create(&image_import("deleted")).await;
    imports.create(&retained).await;
    let deleted = imports.wait_ready("deleted", Duration::from_secs(60)).await;
    let retained = imports
        .wait_ready("retained", Duration::from_secs(60))
        .await;
    let deleted_image = image_id(&deleted).expect("status.imageId").to_string();
    let retained_image = image_id(&retained).expect("status.imageId").to_string();

    imports.delete("deleted").await;
    imports.delete("retained").await;
    imports.wait_gone("deleted", Duration::from_secs(30)).await;
    imports.wait_gone("retained", Duration::from_secs(30)).await;

    assert_eq!(
        stage.emulator.count("DeleteImage").await,
        1,
        "DeleteImage for the Delete policy only"
    );
    assert!(stage.emulator.image(REGION, &deleted_image).await.is_none());
    let kept = stage
        .emulator
        .image(REGION, &retained_image)
        .await
        .unwrap_or_else(|| panic!("deletionPolicy Retain kept {retained_image}"));
    assert_eq!(kept["status"], "Available");
    assert_eq!(
        stage.emulator.count("CancelTask").await,
        0,
        "nothing ran to cancel"
    );
    imports
        .wait_event("deleted", "Normal", "Deleted", Duration::from_secs(5))
        .await;
    imports
        .wait_event("retained", "Normal", "Retained", Duration::from_secs(5))
        .await;
}
