//! The unsigned admin API under `/_emulator/` (`docs/emulator.md`) for tests, benchmarks and the demo:
//! call counts, the images and tasks as the emulator sees them, seeding (images and tasks of any
//! documented action) and out-of-band deletion, fault injection and short-lived STS credentials.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::actions::timestamp;
use super::faults::{FaultsPatch, default_task_failure};
use super::http::App;
use super::regions;
use super::state::{
    Image, ImageStatus, Origin, SeedImage, SeedTask, SeedTaskStatus, Task, TaskAction, TaskFailure,
    Time,
};
use super::sts;

pub fn router() -> Router<App> {
    Router::new()
        .route("/calls", get(calls))
        .route("/reset-calls", post(reset_calls))
        .route("/images", get(images).post(seed_image))
        .route("/images/{region_id}/{image_id}", delete(delete_image))
        .route("/tasks", get(tasks).post(seed_task))
        .route("/faults", get(faults).post(set_faults))
        .route("/sts-credentials", post(sts_credentials))
}

fn admin_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn calls(State(app): State<App>) -> Json<Value> {
    let shared = app.lock();
    Json(json!({ "counts": shared.calls.counts, "calls": shared.calls.calls }))
}

async fn reset_calls(State(app): State<App>) -> StatusCode {
    app.lock().calls = Default::default();
    StatusCode::NO_CONTENT
}

fn image_json(image: &Image) -> Value {
    let tags: BTreeMap<&str, &str> = image
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (source_region, source_image) = match &image.origin {
        Origin::Copy {
            source_region,
            source_image,
            ..
        } => (source_region.as_str(), source_image.as_str()),
        _ => ("", ""),
    };
    json!({
        "regionId": image.region,
        "imageId": image.id,
        "imageName": image.name,
        "status": image.status.as_str(),
        "progress": format!("{}%", image.progress),
        "tags": tags,
        "isCopied": image.is_copy(),
        "sourceRegionId": source_region,
        "sourceImageId": source_image,
        "creationTime": timestamp(image.created),
        "availableAt": image
            .available_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    })
}

async fn images(State(app): State<App>) -> Json<Value> {
    let mut shared = app.lock();
    shared.world.advance(Utc::now());
    let images: Vec<Value> = shared.world.images().map(image_json).collect();
    Json(json!({ "images": images }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedRequest {
    region_id: String,
    image_id: Option<String>,
    image_name: Option<String>,
    status: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

async fn seed_image(State(app): State<App>, Json(req): Json<SeedRequest>) -> Response {
    if !regions::is_known(&req.region_id) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("unknown region {}", req.region_id),
        );
    }
    let status = match req.status.as_deref() {
        None => ImageStatus::Available,
        Some(s) => match ImageStatus::parse(s) {
            Some(status) => status,
            None => return admin_error(StatusCode::BAD_REQUEST, format!("unknown status {s}")),
        },
    };
    let now = Utc::now();
    let mut shared = app.lock();
    shared.world.advance(now);
    let id = req.image_id.unwrap_or_else(|| shared.world.new_image_id());
    let seed = SeedImage {
        region: req.region_id,
        name: req.image_name.unwrap_or_else(|| id.clone()),
        id: id.clone(),
        status,
        tags: req.tags.into_iter().collect(),
    };
    if let Err(error) = shared.world.seed_image(seed, now) {
        return admin_error(StatusCode::CONFLICT, error);
    }
    match shared.world.images().find(|i| i.id == id) {
        Some(image) => (StatusCode::CREATED, Json(image_json(image))).into_response(),
        None => admin_error(StatusCode::INTERNAL_SERVER_ERROR, "seeded image vanished"),
    }
}

async fn delete_image(
    State(app): State<App>,
    Path((region_id, image_id)): Path<(String, String)>,
) -> Response {
    let now = Utc::now();
    let mut shared = app.lock();
    shared.world.advance(now);
    if shared.world.image(&region_id, &image_id).is_none() {
        return admin_error(
            StatusCode::NOT_FOUND,
            format!("no image {image_id} in {region_id}"),
        );
    }
    shared.world.remove_image(&image_id, now);
    StatusCode::NO_CONTENT.into_response()
}

fn task_json(task: &Task, now: Time) -> Value {
    let failure = task.reported_failure();
    json!({
        "regionId": task.region,
        "taskId": task.id,
        "taskAction": task.action.as_str(),
        "taskStatus": task.status(),
        "resourceId": task.image_id,
        "progress": format!("{}%", task.percent(now)),
        "errorCode": failure.map(|f| f.code.as_str()),
        "errorMsg": failure.map(|f| f.message.as_str()),
    })
}

async fn tasks(State(app): State<App>) -> Json<Value> {
    let now = Utc::now();
    let mut shared = app.lock();
    shared.world.advance(now);
    let tasks: Vec<Value> = shared.world.tasks().map(|t| task_json(t, now)).collect();
    Json(json!({ "tasks": tasks }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedTaskRequest {
    region_id: String,
    task_action: String,
    task_status: Option<String>,
    #[serde(default)]
    resource_id: String,
    /// Whole percent, 0..=100.
    progress: Option<u32>,
    error_code: Option<String>,
    error_msg: Option<String>,
}

async fn seed_task(
    State(app): State<App>,
    req: Result<Json<SeedTaskRequest>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(req)) => req,
        Err(rejection) => return admin_error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if !regions::is_known(&req.region_id) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("unknown region {}", req.region_id),
        );
    }
    let Some(action) = TaskAction::parse(&req.task_action) else {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("unknown task action {}", req.task_action),
        );
    };
    let status = match req.task_status.as_deref() {
        None => SeedTaskStatus::Processing,
        Some(s) => match SeedTaskStatus::parse(s) {
            Some(status) => status,
            None => {
                return admin_error(StatusCode::BAD_REQUEST, format!("unknown task status {s}"));
            }
        },
    };
    let progress = match req.progress {
        Some(p) if p > 100 => {
            return admin_error(StatusCode::BAD_REQUEST, "progress must be 0..=100");
        }
        Some(p) => p,
        None if status == SeedTaskStatus::Finished => 100,
        None => 0,
    };
    let default = default_task_failure(action.as_str());
    let seed = SeedTask {
        region: req.region_id,
        action,
        status,
        resource_id: req.resource_id,
        progress,
        failure: TaskFailure {
            code: req.error_code.unwrap_or(default.code),
            message: req.error_msg.unwrap_or(default.message),
        },
    };
    let now = Utc::now();
    let mut shared = app.lock();
    shared.world.advance(now);
    let id = shared.world.seed_task(seed, now);
    match shared.world.tasks().find(|t| t.id == id) {
        Some(task) => (StatusCode::CREATED, Json(task_json(task, now))).into_response(),
        None => admin_error(StatusCode::INTERNAL_SERVER_ERROR, "seeded task vanished"),
    }
}

async fn faults(State(app): State<App>) -> Json<Value> {
    Json(json!(app.lock().faults))
}

/// A malformed patch (an unknown field, a wrong type) is a 400 naming the problem, like a
/// refused value, so a typo in a test fails loudly.
async fn set_faults(
    State(app): State<App>,
    patch: Result<Json<FaultsPatch>, JsonRejection>,
) -> Response {
    let patch = match patch {
        Ok(Json(patch)) => patch,
        Err(rejection) => return admin_error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let mut shared = app.lock();
    match shared.faults.apply(patch) {
        Ok(()) => Json(json!(shared.faults)).into_response(),
        Err(error) => admin_error(StatusCode::BAD_REQUEST, error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StsRequest {
    /// Any positive lifetime, unlike AssumeRoleWithOIDC's 900 s minimum, so tests can watch
    /// credentials expire.
    duration_seconds: u32,
}

async fn sts_credentials(State(app): State<App>, Json(req): Json<StsRequest>) -> Response {
    if req.duration_seconds == 0 {
        return admin_error(StatusCode::BAD_REQUEST, "durationSeconds must be positive");
    }
    let credential = app
        .lock()
        .keys
        .issue(TimeDelta::seconds(req.duration_seconds.into()), Utc::now());
    Json(Value::Object(sts::credentials_reply(
        &credential,
        "acs:ram::1234567890123456:role/emulator-test",
        "emulator-test",
    )))
    .into_response()
}
