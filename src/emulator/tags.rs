//! TagResources and ListTagResources for `ResourceType=image`.
//! Other resource types are valid in ECS but the emulated account owns none of them.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::actions::{Ctx, Reply, region, reply, tags_to_set};
use super::errors::ApiError;
use super::params::Params;

const RESOURCE_TYPES: &[&str] = &[
    "instance",
    "disk",
    "snapshot",
    "image",
    "securitygroup",
    "volume",
    "eni",
    "ddh",
    "keypair",
    "launchtemplate",
    "reservedinstance",
    "snapshotpolicy",
];

/// ListTagResources page size.
const PAGE: usize = 50;

fn resource_type(params: &Params) -> Result<&str, ApiError> {
    let kind = params.required("ResourceType")?;
    if RESOURCE_TYPES.contains(&kind.to_ascii_lowercase().as_str()) {
        Ok(kind)
    } else {
        Err(ApiError::resource_type_not_found())
    }
}

pub fn tag_resources(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let kind = resource_type(params)?;
    let ids = params.indexed("ResourceId");
    if ids.is_empty() {
        return Err(ApiError::missing_parameter("ResourceId.1"));
    }
    if ids.len() > 50 {
        return Err(ApiError::too_many_resources());
    }
    let tags = tags_to_set(params)?;
    if tags.is_empty() {
        return Err(ApiError::missing_parameter("Tag.1.Key"));
    }
    // All or nothing: check every resource before changing any.
    for id in &ids {
        let image = ctx
            .world
            .image(region, id)
            .filter(|_| kind.eq_ignore_ascii_case("image"))
            .ok_or_else(ApiError::resource_not_found)?;
        let new_keys = tags.iter().filter(|(k, _)| image.tag(k).is_none()).count();
        if image.tags.len() + new_keys > 20 {
            return Err(ApiError::tag_quota_exceeded());
        }
    }
    for id in &ids {
        if let Some(image) = ctx.world.image_mut(region, id) {
            image.set_tags(&tags, ctx.now);
        }
    }
    Ok(Reply::new())
}

pub fn list_tag_resources(params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let region = region(params, StatusCode::NOT_FOUND)?;
    let kind = resource_type(params)?;
    let ids = params.indexed("ResourceId");
    if ids.len() > 50 {
        return Err(ApiError::too_many_resources());
    }
    let filters = params.tags()?;
    if filters.len() > 20 {
        return Err(ApiError::too_many_tags());
    }
    let start = match params.non_empty("NextToken") {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_parameter("NextToken"))?,
    };
    let mut entries: Vec<Value> = Vec::new();
    let lag = ctx.faults.tag_index_lag();
    if kind.eq_ignore_ascii_case("image") {
        // The tag service answers from its index, so an image it has not indexed yet is absent.
        for image in ctx
            .world
            .images()
            .filter(|i| i.region == region && i.tag_indexed(ctx.now, lag))
        {
            if !ids.is_empty() && !ids.contains(&image.id) {
                continue;
            }
            let matches = filters.iter().all(|(key, value)| match image.tag(key) {
                Some(have) => value.as_deref().is_none_or(|want| have == want),
                None => false,
            });
            if !matches {
                continue;
            }
            entries.extend(image.tags.iter().map(|(k, v)| {
                json!({
                    "ResourceId": image.id,
                    "ResourceType": "image",
                    "TagKey": k,
                    "TagValue": v,
                })
            }));
        }
    }
    let more = entries.len() > start + PAGE;
    let page: Vec<Value> = entries.into_iter().skip(start).take(PAGE).collect();
    let mut out = reply(json!({ "TagResources": { "TagResource": page } }));
    if more {
        // The token is opaque to clients; here it is simply the next offset.
        out.insert("NextToken".into(), json!((start + PAGE).to_string()));
    }
    Ok(out)
}
