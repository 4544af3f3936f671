//! ImportImage, ExportImage, DescribeTasks, DescribeTaskAttribute and CancelTask
//! (the ECS API reference of each; CancelTask's documented error codes for the cancel path).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::actions::{
    Ctx, Reply, client_token, image_name_and_description, region, reply, tags_to_set,
};
use super::errors::ApiError;
use super::params::{Params, page};
use super::state::{ImageStatus, ImportSpec, Recall, Task, TaskAction, Time};

/// DescribeTasks' `TaskIds` and `ResourceIds` take at most 100 ids each.
const MAX_IDS: usize = 100;

/// Task times in the documented minute precision, `yyyy-MM-ddTHH:mmZ`.
fn task_time(at: Option<Time>) -> String {
    at.map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
        .unwrap_or_default()
}

/// One of `allowed` (case-insensitive), `default` when absent.
fn choice<'a>(
    params: &Params,
    key: &str,
    allowed: &[&'a str],
    default: &'a str,
) -> Result<&'a str, ApiError> {
    match params.non_empty(key) {
        None => Ok(default),
        Some(v) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(v))
            .copied()
            .ok_or_else(|| ApiError::invalid_parameter(key)),
    }
}

pub fn import_image(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let bucket = params.required("DiskDeviceMapping.1.OSSBucket")?;
    let object = params.required("DiskDeviceMapping.1.OSSObject")?;
    let format = choice(
        params,
        "DiskDeviceMapping.1.Format",
        &["RAW", "VHD", "QCOW2", "VMDK"],
        "RAW",
    )?;
    let size_gib = match params.non_empty("DiskDeviceMapping.1.DiskImageSize") {
        None => 40,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| (5..=2048).contains(s))
            .ok_or_else(|| ApiError::invalid_parameter("DiskDeviceMapping.1.DiskImageSize"))?,
    };
    let (name, description) = image_name_and_description(params, false)?;
    let architecture = choice(
        params,
        "Architecture",
        &["x86_64", "arm64", "i386"],
        "x86_64",
    )?;
    let os_type = choice(params, "OSType", &["linux", "windows"], "linux")?;
    let platform = params.non_empty("Platform").unwrap_or("Others Linux");
    let tags = tags_to_set(params)?;
    let token = client_token(params)?.filter(|_| !ctx.faults.ignore_client_token);
    let fingerprint = params.fingerprint();
    if let Some(token) = token {
        match ctx.world.recall("ImportImage", region, token, &fingerprint) {
            Some(Recall::Same(task_id)) => {
                let image_id = ctx
                    .world
                    .task(region, &task_id)
                    .map(|t| t.image_id.clone())
                    .unwrap_or_default();
                return Ok(import_reply(region, &image_id, &task_id));
            }
            Some(Recall::Mismatch) => return Err(ApiError::idempotent_mismatch()),
            None => {}
        }
    }
    if name.is_some_and(|name| ctx.world.name_taken(region, name)) {
        return Err(ApiError::image_name_duplicated());
    }
    if params.bool("DryRun")? {
        return Err(ApiError::dry_run_passed());
    }
    let failure = ctx.faults.task_failure("ImportImage", region);
    let (image_id, task_id) = ctx.world.start_import(
        ImportSpec {
            region: region.to_string(),
            name: name.unwrap_or("imported-image").to_string(),
            description: description.unwrap_or_default().to_string(),
            os_type: os_type.to_string(),
            platform: platform.to_string(),
            architecture: architecture.to_string(),
            size_gib,
            tags,
            related: vec![
                ("OSSBucket".to_string(), bucket.to_string()),
                ("OSSObject".to_string(), object.to_string()),
                ("ImageFormat".to_string(), format.to_string()),
            ],
        },
        failure,
        ctx.now,
    );
    if let Some(token) = token {
        ctx.world
            .remember("ImportImage", region, token, fingerprint, task_id.clone());
    }
    Ok(import_reply(region, &image_id, &task_id))
}

fn import_reply(region: &str, image_id: &str, task_id: &str) -> Reply {
    reply(json!({ "RegionId": region, "ImageId": image_id, "TaskId": task_id }))
}

pub fn export_image(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let image_id = params.required("ImageId")?;
    let bucket = params.required("OSSBucket")?;
    let prefix = params.non_empty("OSSPrefix").unwrap_or_default();
    if prefix.len() > 30 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid_parameter("OSSPrefix"));
    }
    let format = choice(
        params,
        "ImageFormat",
        &["raw", "vhd", "qcow2", "vmdk", "vdi"],
        "raw",
    )?;
    let image = ctx
        .world
        .image(region, image_id)
        .ok_or_else(ApiError::image_not_found)?;
    if image.status != ImageStatus::Available {
        return Err(ApiError::image_not_available());
    }
    if ctx.world.exporting(image_id) {
        return Err(ApiError::image_exporting());
    }
    if params.bool("DryRun")? {
        return Err(ApiError::dry_run_passed());
    }
    let failure = ctx.faults.task_failure("ExportImage", region);
    let task_id = ctx.world.start_export(region, image_id, failure, ctx.now);
    if let Some(task) = ctx.world.task_mut(&task_id) {
        // The object name embeds the task id, as in the documented example.
        task.related = vec![
            ("OSSBucket".to_string(), bucket.to_string()),
            (
                "OSSObject".to_string(),
                format!("{prefix}_{image_id}_{task_id}.{format}"),
            ),
            ("ImageFormat".to_string(), format.to_string()),
        ];
    }
    Ok(reply(json!({ "RegionId": region, "TaskId": task_id })))
}

pub fn describe_tasks(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let (page_number, page_size) = params.paging()?;
    let ids = params.comma_list("TaskIds");
    if ids.len() > MAX_IDS {
        return Err(ApiError::invalid_parameter("TaskIds"));
    }
    // The official SDKs send the list as `ResourceIds.N`; a comma-separated `ResourceIds` is
    // accepted too.
    let mut resource_ids = params.indexed("ResourceIds");
    resource_ids.extend(params.comma_list("ResourceIds"));
    if resource_ids.len() > MAX_IDS {
        return Err(ApiError::invalid_parameter("ResourceIds"));
    }
    let action = match params.non_empty("TaskAction") {
        None => None,
        Some(a) => {
            Some(TaskAction::parse(a).ok_or_else(|| ApiError::invalid_parameter("TaskAction"))?)
        }
    };
    // "Only tasks in the Finished, Processing, or Failed state can be queried. Other values do
    // not take effect."
    let status = params
        .non_empty("TaskStatus")
        .filter(|s| ["Finished", "Processing", "Failed"].contains(s));
    let mut matched: Vec<&Task> = ctx
        .world
        .tasks()
        .filter(|t| t.region == region)
        .filter(|t| ids.is_empty() || ids.contains(&t.id))
        .filter(|t| resource_ids.is_empty() || resource_ids.contains(&t.image_id))
        .filter(|t| action.is_none_or(|a| t.action == a))
        .filter(|t| status.is_none_or(|s| t.status() == s))
        .collect();
    matched.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let total = matched.len();
    let tasks: Vec<Value> = page(matched, page_number, page_size)
        .into_iter()
        .map(|t| {
            json!({
                "TaskId": t.id,
                "TaskAction": t.action.as_str(),
                "TaskStatus": t.status(),
                "SupportCancel": support_cancel(t),
                "CreationTime": task_time(Some(t.created)),
                "FinishedTime": task_time(t.finished_time()),
                "ResourceId": t.image_id,
            })
        })
        .collect();
    Ok(reply(json!({
        "RegionId": region,
        "TotalCount": total,
        "PageNumber": page_number,
        "PageSize": page_size,
        "TaskSet": { "Task": tasks },
    })))
}

/// Whether CancelTask would cancel the task, as the string ECS sends.
fn support_cancel(task: &Task) -> String {
    (task.action.cancellable() && task.job.in_flight()).to_string()
}

pub fn describe_task_attribute(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let id = params.required("TaskId")?;
    let task = ctx
        .world
        .task(region, id)
        .ok_or_else(ApiError::task_not_found)?;
    let status = task.status();
    let operation_status = match status {
        "Finished" => "Success",
        "Deleted" => "Cancelled",
        other => other,
    };
    let failure = task.reported_failure();
    let related: Vec<Value> = task
        .related
        .iter()
        .map(|(name, value)| json!({ "Name": name, "Value": value }))
        .collect();
    Ok(reply(json!({
        "RegionId": region,
        "TaskId": task.id,
        "TaskAction": task.action.as_str(),
        "TaskStatus": status,
        "TaskProcess": format!("{}%", task.percent(ctx.now)),
        "SupportCancel": support_cancel(task),
        "CreationTime": task_time(Some(task.created)),
        "FinishedTime": task_time(task.finished_time()),
        "TotalCount": 1,
        "SuccessCount": u32::from(status == "Finished"),
        "FailedCount": u32::from(status == "Failed"),
        "OperationProgressSet": { "OperationProgress": [{
            "OperationStatus": operation_status,
            "ErrorCode": failure.map(|f| f.code.as_str()).unwrap_or_default(),
            "ErrorMsg": failure.map(|f| f.message.as_str()).unwrap_or_default(),
            "RelatedItemSet": { "RelatedItem": related },
        }]},
    })))
}

pub fn cancel_task(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    // The CancelTask documentation lists InvalidRegionId.NotFound as 400.
    let region = region(params, StatusCode::BAD_REQUEST)?;
    let id = params.required("TaskId")?;
    let task = ctx
        .world
        .task(region, id)
        .ok_or_else(ApiError::task_not_found)?;
    if !task.action.cancellable() {
        return Err(ApiError::task_action_not_supported());
    }
    if !task.job.in_flight() {
        return Err(ApiError::task_status_incorrect());
    }
    if ctx.faults.cancel_task_failed {
        return Err(ApiError::cancel_task_failed());
    }
    ctx.world.cancel_task(id, ctx.now);
    Ok(Reply::new())
}
