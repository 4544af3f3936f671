//! Turning an HTTP answer from ECS (or STS) into JSON or an [`EcsError`].

use std::time::Duration;

use serde_json::Value;

use super::error::{ApiErrorDetails, EcsError};

/// Header the gateway sets on throttled answers: milliseconds to wait before retrying.
pub const RETRY_AFTER_HEADER: &str = "x-acs-retry-after";

/// How much of an undecodable body to quote in an error: enough to recognise a proxy page.
const BODY_EXCERPT_CHARS: usize = 200;

/// Largest ECS answer read. A full DescribeImages page (100 images with their disk mappings
/// and tags) is well under 1 MiB; anything far bigger is not ECS and must not fill memory.
pub const MAX_ECS_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest STS answer read: one set of credentials is a few KiB.
pub const MAX_STS_BODY_BYTES: usize = 1024 * 1024;

/// Reads the body chunk by chunk and gives up as soon as it exceeds `limit` bytes (or the
/// announced length does), so a huge or endless answer never sits in memory whole.
/// `read_error` turns a failure to read into the caller's error (ECS and STS differ).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    read_error: impl FnOnce(reqwest::Error) -> EcsError,
) -> Result<Vec<u8>, EcsError> {
    let status = response.status().as_u16();
    let too_large = |response: &reqwest::Response| EcsError::Decode {
        status,
        message: format!(
            "answer larger than the {} limit; not read",
            describe_size(limit)
        ),
        request_id: header_text(response.headers(), "x-acs-request-id"),
    };
    if response
        .content_length()
        .is_some_and(|announced| announced > limit as u64)
    {
        return Err(too_large(&response));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large(&response));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(read_error(error)),
        }
    }
}

/// A 3xx answer. ECS and STS never redirect, and following one would send the signed request
/// (security token included) to whatever host the answer names: refuse, say where it pointed.
pub fn redirect_error(status: u16, headers: &reqwest::header::HeaderMap) -> EcsError {
    EcsError::Decode {
        status,
        message: redirect_refusal(headers),
        request_id: header_text(headers, "x-acs-request-id"),
    }
}

/// What [`redirect_error`] says: where the redirect pointed and that it was not followed.
pub fn redirect_refusal(headers: &reqwest::header::HeaderMap) -> String {
    let target = header_text(headers, reqwest::header::LOCATION.as_str())
        .map(|location| without_query(&location))
        .unwrap_or_else(|| "no Location".to_string());
    format!(
        "redirect to {target} not followed: the endpoint must answer itself (check the endpoint URL)"
    )
}

/// `1 MiB`, `16 MiB`, or bytes when not a whole number of MiB.
fn describe_size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The target of a redirect without its query: enough to see the host, nothing echoed back.
fn without_query(location: &str) -> String {
    let end = location.find(['?', '#']).unwrap_or(location.len());
    location[..end].chars().take(BODY_EXCERPT_CHARS).collect()
}

fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_string)
        .filter(|value| !value.is_empty())
}

pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// A 2xx answer must be a JSON object; anything else is an error carrying what ECS said.
pub fn decode(status: u16, body: &[u8], retry_after: Option<Duration>) -> Result<Value, EcsError> {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => Err(decode_error(status, body, "not a JSON object")),
            Err(e) => Err(decode_error(status, body, &e.to_string())),
        };
    }
    Err(api_error(status, body, retry_after)
        .unwrap_or_else(|| decode_error(status, body, "no error code in the answer")))
}

/// The ECS error body `{"RequestId","HostId","Code","Message","Recommend"}`; official SDKs
/// also accept the lowercase spellings some gateways use.
pub fn api_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> Option<EcsError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| value.get(*name).and_then(Value::as_str))
            .map(str::to_string)
    };
    let code = field(&["Code", "code"]).filter(|code| !code.is_empty())?;
    Some(EcsError::Api {
        status,
        code,
        message: field(&["Message", "message"]).unwrap_or_default(),
        request_id: field(&["RequestId", "requestId"]).unwrap_or_default(),
        details: Box::new(ApiErrorDetails {
            host_id: field(&["HostId", "hostId"]),
            recommend: field(&["Recommend", "recommend"]),
            retry_after,
        }),
    })
}

fn decode_error(status: u16, body: &[u8], reason: &str) -> EcsError {
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    let request_id = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("RequestId")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    EcsError::Decode {
        status,
        message: format!("{reason}: {excerpt:?}"),
        request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_keep_every_field() {
        let body = br#"{"RequestId":"6BE56E05-X","HostId":"ecs.ap-southeast-3.aliyuncs.com",
            "Code":"InvalidImageId.NotFound","Message":"The specified ImageId does not exist.",
            "Recommend":"https://api.alibabacloud.com/troubleshoot?q=InvalidImageId.NotFound"}"#;
        let err = decode(404, body, None).unwrap_err();
        assert_eq!(
            err,
            EcsError::Api {
                status: 404,
                code: "InvalidImageId.NotFound".into(),
                message: "The specified ImageId does not exist.".into(),
                request_id: "6BE56E05-X".into(),
                details: Box::new(ApiErrorDetails {
                    host_id: Some("ecs.ap-southeast-3.aliyuncs.com".into()),
                    recommend: Some(
                        "https://api.alibabacloud.com/troubleshoot?q=InvalidImageId.NotFound"
                            .into()
                    ),
                    retry_after: None,
                }),
            }
        );
    }

    #[test]
    fn non_json_answers_are_decode_errors_with_the_status() {
        let err = decode(502, b"<html>Bad Gateway</html>", None).unwrap_err();
        assert!(matches!(err, EcsError::Decode { status: 502, .. }), "{err}");
        assert!(err.is_transient());
        let err = decode(200, b"[]", None).unwrap_err();
        assert!(matches!(err, EcsError::Decode { status: 200, .. }), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn redirects_name_their_target_without_the_query() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LOCATION,
            "https://elsewhere.example/path?SecurityToken=abc"
                .parse()
                .unwrap(),
        );
        let err = redirect_error(302, &headers);
        assert!(!err.is_transient());
        let shown = err.to_string();
        assert!(
            shown.contains("redirect to https://elsewhere.example/path not followed"),
            "{shown}"
        );
        assert!(!shown.contains("abc"), "{shown}");
        let bare = redirect_error(301, &reqwest::header::HeaderMap::new()).to_string();
        assert!(bare.contains("no Location"), "{bare}");
    }

    #[test]
    fn sizes_are_named_in_mebibytes() {
        assert_eq!(describe_size(MAX_ECS_BODY_BYTES), "16 MiB");
        assert_eq!(describe_size(MAX_STS_BODY_BYTES), "1 MiB");
        assert_eq!(describe_size(1000), "1000 bytes");
    }

    #[test]
    fn retry_after_is_milliseconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(RETRY_AFTER_HEADER, "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(RETRY_AFTER_HEADER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
