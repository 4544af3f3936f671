//! CopyImage, CancelCopyImage, DescribeImages and DeleteImage with the documented validation
//! order and error codes of the ECS API reference (CopyImage, CancelCopyImage, DescribeImages,
//! DeleteImage).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::actions::{
    Ctx, Reply, client_token, image_name_and_description, region, reply, tags_to_set, timestamp,
};
use super::errors::ApiError;
use super::faults::Malformation;
use super::params::{Params, page};
use super::regions;
use super::state::{CopySpec, Image, ImageStatus, Recall};

/// The account every emulated image belongs to.
pub const ACCOUNT_ID: u64 = 1_234_567_890_123_456;

pub fn copy_image(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let source_region = params.required("RegionId")?;
    if !regions::is_known(source_region) {
        return Err(ApiError::source_region_not_found());
    }
    let source_image = params.required("ImageId")?;
    let destination = params.required("DestinationRegionId")?;
    if !regions::is_known(destination) {
        return Err(ApiError::destination_region_not_found());
    }
    if destination == source_region {
        return Err(ApiError::incorrect_destination_region());
    }
    let (name, description) = image_name_and_description(params, true)?;
    let encrypted = params.bool("Encrypted")?;
    if params.non_empty("KMSKeyId").is_some() && !encrypted {
        return Err(ApiError::encrypted_illegal());
    }
    let tags = tags_to_set(params)?;
    let token = client_token(params)?.filter(|_| !ctx.faults.ignore_client_token);
    let fingerprint = params.fingerprint();
    if let Some(token) = token {
        // A retried request gets the first answer, even if the world changed since.
        match ctx
            .world
            .recall("CopyImage", source_region, token, &fingerprint)
        {
            Some(Recall::Same(id)) => return Ok(reply(json!({ "ImageId": id }))),
            Some(Recall::Mismatch) => return Err(ApiError::idempotent_mismatch()),
            None => {}
        }
    }
    let source = ctx
        .world
        .image(source_region, source_image)
        .ok_or_else(ApiError::image_not_found)?;
    if source.status != ImageStatus::Available {
        return Err(ApiError::image_not_available());
    }
    let source_name = source.name.clone();
    // Only a name the caller chose can clash; without one the copy keeps the source's name.
    if name.is_some_and(|name| ctx.world.name_taken(destination, name)) {
        return Err(ApiError::image_name_duplicated());
    }
    if params.bool("DryRun")? {
        return Err(ApiError::dry_run_passed());
    }
    let id = ctx.world.start_copy(
        CopySpec {
            source_region: source_region.to_string(),
            source_image: source_image.to_string(),
            destination_region: destination.to_string(),
            name: name.map_or(source_name, str::to_string),
            description: description.unwrap_or_default().to_string(),
            encrypted,
            resource_group_id: params
                .non_empty("ResourceGroupId")
                .unwrap_or_default()
                .to_string(),
            tags,
        },
        ctx.now,
    );
    if let Some(token) = token {
        ctx.world
            .remember("CopyImage", source_region, token, fingerprint, id.clone());
    }
    Ok(reply(json!({ "ImageId": id })))
}

pub fn cancel_copy_image(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let id = params.required("ImageId")?;
    let image = ctx
        .world
        .image(region, id)
        .ok_or_else(ApiError::image_not_found)?;
    if !image.is_copy() {
        return Err(ApiError::not_from_copy());
    }
    if !image.copy_in_flight() {
        return Err(ApiError::copy_finished());
    }
    if ctx.faults.cancel_not_supported {
        return Err(ApiError::cancel_not_supported());
    }
    ctx.world.remove_image(id, ctx.now);
    Ok(Reply::new())
}

pub fn delete_image(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let id = params.required("ImageId")?;
    params.bool("Force")?;
    // "If the specified custom image does not exist, the request will be ignored."
    let Some(image) = ctx.world.image(region, id) else {
        return Ok(Reply::new());
    };
    if image.copy_in_flight() {
        return Err(ApiError::image_copying());
    }
    if ctx.world.importing(id) {
        return Err(ApiError::image_importing());
    }
    if ctx.world.exporting(id) {
        return Err(ApiError::image_exporting());
    }
    if params.bool("DryRun")? {
        return Err(ApiError::dry_run_passed());
    }
    ctx.world.remove_image(id, ctx.now);
    Ok(Reply::new())
}

/// Which statuses a DescribeImages call wants: `Available` unless `Status` says otherwise;
/// `ALL` means every status.
fn wanted_statuses(params: &Params) -> Vec<ImageStatus> {
    let listed = params.comma_list("Status");
    if listed.is_empty() {
        return vec![ImageStatus::Available];
    }
    if listed.iter().any(|s| s.eq_ignore_ascii_case("ALL")) {
        return ImageStatus::ALL.to_vec();
    }
    listed
        .iter()
        .filter_map(|s| ImageStatus::parse(s))
        .collect()
}

pub fn describe_images(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let (page_number, page_size) = params.paging()?;
    let own_images = match params.non_empty("ImageOwnerAlias") {
        None | Some("self") => true,
        Some("system") | Some("others") | Some("marketplace") => false,
        Some(_) => return Err(ApiError::invalid_owner_alias()),
    };
    let ids = params.comma_list("ImageId");
    if ids.len() > 100 {
        return Err(ApiError::invalid_parameter("ImageId"));
    }
    let statuses = wanted_statuses(params);
    let name = params.non_empty("ImageName");
    let os_type = params.non_empty("OSType");
    let architecture = params.non_empty("Architecture");
    let tag_filters = params.tags()?;
    let lag = ctx.faults.tag_index_lag();

    let mut matched: Vec<&Image> = ctx
        .world
        .images()
        .filter(|i| own_images && i.region == region)
        .filter(|i| ids.is_empty() || ids.contains(&i.id))
        .filter(|i| statuses.contains(&i.status))
        .filter(|i| name.is_none_or(|n| i.name.contains(n)))
        .filter(|i| os_type.is_none_or(|o| i.os_type.eq_ignore_ascii_case(o)))
        .filter(|i| architecture.is_none_or(|a| i.architecture == a))
        .filter(|i| {
            tag_filters.iter().all(|(key, value)| match i.tag(key) {
                Some(have) => value.as_deref().is_none_or(|want| have == want),
                None => false,
            })
        })
        // A tag filter is answered from the tag index, which may not have this image yet.
        .filter(|i| tag_filters.is_empty() || i.tag_indexed(ctx.now, lag))
        .collect();
    // Newest first, like the real listing; the id keeps equal timestamps in a stable order.
    matched.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let total = matched.len();
    let usable_delay = ctx.faults.usable_delay();
    // Dropped and malformed items model a listing that misses or garbles an entry; TotalCount
    // still counts what the listing should have held.
    let images: Vec<Value> = page(matched, page_number, page_size)
        .into_iter()
        .filter(|_| !ctx.faults.drop_item())
        .map(|image| {
            let mut item = image_json(image, image.usable(ctx.now, usable_delay));
            if let Some(malformation) = ctx.faults.malform_item() {
                malform(&mut item, malformation);
            }
            item
        })
        .collect();
    Ok(reply(json!({
        "RegionId": region,
        "TotalCount": total,
        "PageNumber": page_number,
        "PageSize": page_size,
        "Images": { "Image": images },
    })))
}

fn malform(item: &mut Value, malformation: Malformation) {
    let (field, bad) = match malformation {
        Malformation::ImageIdObject => ("ImageId", json!({ "bad": true })),
        Malformation::StatusNumber => ("Status", json!(42)),
    };
    if let Some(fields) = item.as_object_mut() {
        fields.insert(field.to_string(), bad);
    }
}

fn image_json(image: &Image, usable: bool) -> Value {
    let progress = format!("{}%", image.progress);
    let tags: Vec<Value> = image
        .tags
        .iter()
        .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
        .collect();
    json!({
        "ImageId": image.id,
        "ImageName": image.name,
        "Description": image.description,
        "Status": image.status.as_str(),
        "Progress": progress,
        "IsCopied": image.is_copy(),
        "Usable": usable,
        "CreationTime": timestamp(image.created),
        "ImageOwnerAlias": "self",
        "ImageOwnerId": ACCOUNT_ID,
        "OSType": image.os_type,
        "OSName": image.platform,
        "OSNameEn": image.platform,
        "Platform": image.platform,
        "Architecture": image.architecture,
        "Size": image.size_gib,
        "BootMode": "BIOS",
        "Usage": "none",
        "IsSelfShared": "",
        "IsSubscribed": false,
        "IsPublic": false,
        "IsSupportCloudinit": true,
        "IsSupportIoOptimized": true,
        "ResourceGroupId": image.resource_group_id,
        "DiskDeviceMappings": { "DiskDeviceMapping": [{
            "Device": "/dev/xvda",
            "Type": "system",
            "Size": image.size_gib.to_string(),
            "Progress": progress,
            "Encrypted": image.encrypted,
        }]},
        "Tags": { "Tag": tags },
    })
}
