//! ECS operations: dispatch by `Action` and the validation rules several operations share.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::faults::Faults;
use super::params::Params;
use super::regions;
use super::state::{Time, World};
use super::{images, tags, tasks};

pub const ECS_VERSION: &str = "2014-05-26";

/// A successful reply's fields; the HTTP layer adds `RequestId`.
pub type Reply = Map<String, Value>;

pub struct Ctx<'a> {
    pub world: &'a mut World,
    pub faults: &'a mut Faults,
    pub now: Time,
}

type Handler = fn(&Params, &mut Ctx<'_>) -> Result<Reply, ApiError>;

const HANDLERS: &[(&str, Handler)] = &[
    ("CopyImage", images::copy_image),
    ("CancelCopyImage", images::cancel_copy_image),
    ("DescribeImages", images::describe_images),
    ("DeleteImage", images::delete_image),
    ("ImportImage", tasks::import_image),
    ("ExportImage", tasks::export_image),
    ("DescribeTasks", tasks::describe_tasks),
    ("DescribeTaskAttribute", tasks::describe_task_attribute),
    ("CancelTask", tasks::cancel_task),
    ("DescribeRegions", describe_regions),
    ("TagResources", tags::tag_resources),
    ("ListTagResources", tags::list_tag_resources),
];

pub fn is_ecs_action(action: &str) -> bool {
    HANDLERS.iter().any(|(name, _)| *name == action)
}

pub fn dispatch(action: &str, params: &Params, ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let handler = HANDLERS
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(_, h)| *h)
        .ok_or_else(ApiError::invalid_action)?;
    ctx.world.advance(ctx.now);
    handler(params, ctx)
}

/// Turns a `json!({...})` object into a reply.
pub fn reply(value: Value) -> Reply {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn describe_regions(params: &Params, _ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let english = match params.non_empty("AcceptLanguage") {
        None | Some("zh-CN") => false,
        Some("en-US") | Some("ja") => true,
        Some(_) => return Err(ApiError::invalid_accept_language()),
    };
    Ok(reply(json!({
        "Regions": { "Region": regions::describe(english) },
    })))
}

/// `RegionId` present and a real region; `status` is the operation's documented HTTP status
/// for `InvalidRegionId.NotFound`.
pub fn region(params: &Params, status: StatusCode) -> Result<&str, ApiError> {
    let region = params.required("RegionId")?;
    if regions::is_known(region) {
        Ok(region)
    } else {
        Err(ApiError::region_not_found(status))
    }
}

/// Image name rules: 2–128 characters, starting with a letter (Chinese included), not with
/// `aliyun` or `acs:`, no `http://`/`https://`, otherwise letters, digits, `.`, `:`, `_`, `-`.
pub fn valid_image_name(name: &str) -> bool {
    let len = name.chars().count();
    (2..=128).contains(&len)
        && name.chars().next().is_some_and(char::is_alphabetic)
        && !name.starts_with("aliyun")
        && !name.starts_with("acs:")
        && !name.contains("http://")
        && !name.contains("https://")
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | ':' | '_' | '-'))
}

/// Description rules: 2–256 characters, not starting with `http://` or `https://`.
pub fn valid_description(description: &str) -> bool {
    let len = description.chars().count();
    (2..=256).contains(&len)
        && !description.starts_with("http://")
        && !description.starts_with("https://")
}

/// The optional name and description of a new image (CopyImage's `Destination*` parameters when
/// `destination`, ImportImage's `ImageName`/`Description` otherwise), checked against the rules.
pub fn image_name_and_description(
    params: &Params,
    destination: bool,
) -> Result<(Option<&str>, Option<&str>), ApiError> {
    let (name_key, description_key) = if destination {
        ("DestinationImageName", "DestinationDescription")
    } else {
        ("ImageName", "Description")
    };
    let name = params.non_empty(name_key);
    if name.is_some_and(|n| !valid_image_name(n)) {
        return Err(ApiError::image_name_malformed(destination));
    }
    let description = params.non_empty(description_key);
    if description.is_some_and(|d| !valid_description(d)) {
        return Err(ApiError::description_malformed(destination));
    }
    Ok((name, description))
}

fn reserved_tag_prefix(s: &str) -> bool {
    s.starts_with("aliyun") || s.starts_with("acs:")
}

/// Tags to set on a resource: at most 20, keys 1–128 characters without the reserved
/// prefixes, values at most 128, no key twice.
pub fn tags_to_set(params: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let tags = params.tags()?;
    if tags.len() > 20 {
        return Err(ApiError::too_many_tags());
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(tags.len());
    for (key, value) in tags {
        if key.chars().count() > 128 || reserved_tag_prefix(&key) {
            return Err(ApiError::tag_key_malformed());
        }
        let value = value.unwrap_or_default();
        if value.chars().count() > 128 {
            return Err(ApiError::tag_value_malformed());
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::duplicate_tag_key());
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `ClientToken`: at most 64 ASCII characters.
pub fn client_token(params: &Params) -> Result<Option<&str>, ApiError> {
    match params.non_empty("ClientToken") {
        Some(token) if token.len() > 64 || !token.is_ascii() => {
            Err(ApiError::invalid_client_token())
        }
        other => Ok(other),
    }
}

/// ECS times: `yyyy-MM-ddTHH:mm:ssZ`.
pub fn timestamp(at: Time) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_follow_the_documented_rules() {
        for ok in ["ab", "my-image_1.0:x", "镜像副本", "Copy1"] {
            assert!(valid_image_name(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "a",
            "1abc",
            "aliyun-x",
            "acs:x",
            "ahttp://x",
            "has space",
            "-lead",
            long.as_str(),
        ] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }

    #[test]
    fn descriptions_follow_the_documented_rules() {
        assert!(valid_description("ok"));
        assert!(!valid_description("x"));
        assert!(!valid_description("https://example.com"));
        assert!(!valid_description(&"d".repeat(257)));
    }

    #[test]
    fn tag_rules() {
        let p = |pairs: &[(&str, &str)]| {
            Params(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            tags_to_set(&p(&[("Tag.1.Key", "k")])).unwrap(),
            vec![("k".to_string(), String::new())]
        );
        let code = |pairs: &[(&str, &str)]| tags_to_set(&p(pairs)).unwrap_err().code;
        assert_eq!(code(&[("Tag.1.Key", "acs:x")]), "InvalidTagKey.Malformed");
        assert_eq!(
            code(&[("Tag.1.Key", "k"), ("Tag.2.Key", "k")]),
            "Duplicate.TagKey"
        );
        let many: Vec<(String, String)> = (1..=21)
            .map(|n| (format!("Tag.{n}.Key"), format!("k{n}")))
            .collect();
        assert_eq!(
            tags_to_set(&Params(many)).unwrap_err().code,
            "NumberExceed.Tags"
        );
    }
}
