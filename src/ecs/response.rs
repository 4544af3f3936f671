//! Turning an HTTP answer from ECS (or STS) into JSON or an [`EcsError`].

use std::time::Duration;

use serde_json::Value;

use super::error::{ApiErrorDetails, EcsError};

/// Header the gateway sets on throttled answers: milliseconds to wait before retrying.
pub const RETRY_AFTER_HEADER: &str = "x-acs-retry-after";

/// How much of an undecodable body to quote in an error: enough to recognise a proxy page.
const BODY_EXCERPT_CHARS: usize = 200;

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
    fn retry_after_is_milliseconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(RETRY_AFTER_HEADER, "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(RETRY_AFTER_HEADER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
