//! Errors of the ECS client. Every variant is safe to log, put in an event or a status
//! condition: none of them ever carries an AccessKey secret or a security token.

use std::time::Duration;

use super::credentials::Credentials;
use super::sign;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    /// ECS answered with its JSON error body (`Code`, `Message`, `RequestId`, `HostId`).
    #[error("{code}: {message} ({request_id})")]
    Api {
        /// HTTP status of the answer (ECS uses 4xx and 5xx).
        status: u16,
        code: String,
        message: String,
        request_id: String,
        /// Rarely needed parts, boxed to keep `Result<_, EcsError>` small.
        details: Box<ApiErrorDetails>,
    },
    /// No answer: connection refused or reset, TLS failure, or the body could not be read.
    #[error("Transport: {message}")]
    Transport { message: String },
    /// No answer within the configured timeout.
    #[error("Timeout: no answer within {0:?}")]
    Timeout(Duration),
    /// An answer that is not the JSON ECS sends (for example an HTML page from a proxy).
    #[error("Decode: HTTP {status}: {message}")]
    Decode {
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    /// Credentials could not be found or obtained (missing variables, STS refused the token...).
    #[error("Credentials: {0}")]
    Credentials(String),
    /// The client or the request is misconfigured (bad endpoint, region, parameter...).
    #[error("Config: {0}")]
    Config(String),
    /// A mutating call refused before it was sent: this replica may no longer lead.
    #[error("Fenced: {0} not sent; this replica is not sure it holds the leader lease")]
    Fenced(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrorDetails {
    /// The endpoint that answered, e.g. `ecs.cn-hangzhou.aliyuncs.com`.
    pub host_id: Option<String>,
    /// The gateway's diagnosis link, when present.
    pub recommend: Option<String>,
    /// `x-acs-retry-after` (milliseconds on the wire): how long the gateway wants us to wait.
    pub retry_after: Option<Duration>,
}

/// Codes ECS answers when it refuses a call because of load or a concurrent operation on the
/// same resource; retrying later succeeds. `OperationDenied.ImageCopyConflict` (another copy of
/// the same image is being set up), `OperationDenied.ImageCopying` ("try again later") and
/// `InvalidOperation.Conflict` pass once the other operation finishes.
const TRANSIENT_CODES: &[&str] = &[
    "OperationDenied.ImageCopying",
    "InternalError",
    "UnknownError",
    "OperationConflict",
    "OperationDenied.ImageCopyConflict",
    "InvalidOperation.Conflict",
];

impl EcsError {
    /// What went wrong without the code, for a status condition next to the code: ECS's
    /// `Message (RequestId)`, or the whole description for errors that have no code.
    pub fn message_for_status(&self) -> String {
        match self {
            EcsError::Api {
                message,
                request_id,
                ..
            } => format!("{message} (RequestId {request_id})"),
            other => other.to_string(),
        }
    }

    /// The ECS error code, for API errors only.
    pub fn code(&self) -> Option<&str> {
        match self {
            EcsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            EcsError::Api { request_id, .. } => Some(request_id),
            EcsError::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            EcsError::Api { status, .. } | EcsError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The gateway refused the call because of a rate limit (`Throttling`, `Throttling.User`,
    /// `Throttling.Api`, or a bare HTTP 429).
    pub fn is_throttling(&self) -> bool {
        match self {
            EcsError::Api { code, status, .. } => code.starts_with("Throttling") || *status == 429,
            EcsError::Decode { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// Worth retrying later with the same request: throttling, service unavailable, internal
    /// errors, any 5xx, and calls that got no answer at all.
    pub fn is_transient(&self) -> bool {
        match self {
            EcsError::Api { code, status, .. } => {
                self.is_throttling()
                    || code.starts_with("ServiceUnavailable")
                    || TRANSIENT_CODES.contains(&code.as_str())
                    || *status >= 500
            }
            EcsError::Decode { status, .. } => *status >= 500 || *status == 429,
            EcsError::Transport { .. } | EcsError::Timeout(_) => true,
            EcsError::Credentials(_) | EcsError::Config(_) => false,
            // Retried by the controller once leadership is settled, never by the client.
            EcsError::Fenced(_) => false,
        }
    }

    /// The gateway's own hint of how long to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EcsError::Api { details, .. } => details.retry_after,
            _ => None,
        }
    }

    /// Removes the security token from what the server sent back. Gateways quote what they
    /// signed in `SignatureDoesNotMatch` messages (the Go SDK relies on it): the token is raw in
    /// a V3 canonical request and percent-encoded twice in a V1 string to sign.
    pub(crate) fn without_token_of(mut self, credentials: &Credentials) -> Self {
        let Some(token) = credentials.security_token() else {
            return self;
        };
        let once = sign::percent_encode(token);
        let twice = sign::percent_encode(&once);
        if let EcsError::Api { message, .. } | EcsError::Decode { message, .. } = &mut self {
            for form in [twice.as_str(), once.as_str(), token] {
                if message.contains(form) {
                    *message = message.replace(form, "<redacted>");
                }
            }
        }
        self
    }

    /// A short, bounded label for metrics: the ECS code, or the kind of failure.
    pub fn metric_label(&self) -> &str {
        match self {
            EcsError::Api { code, .. } => code,
            EcsError::Transport { .. } | EcsError::Timeout(_) => "Transport",
            EcsError::Decode { .. } => "Decode",
            EcsError::Credentials(_) => "Credentials",
            EcsError::Fenced(_) => "Fenced",
            EcsError::Config(_) => "Config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> EcsError {
        EcsError::Api {
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "R-1".into(),
            details: Box::default(),
        }
    }

    #[test]
    fn display_is_code_message_request_id() {
        let err = EcsError::Api {
            status: 404,
            code: "InvalidImageId.NotFound".into(),
            message: "The specified ImageId does not exist.".into(),
            request_id: "6BE56E05".into(),
            details: Box::new(ApiErrorDetails {
                host_id: Some("ecs.cn-hangzhou.aliyuncs.com".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            err.to_string(),
            "InvalidImageId.NotFound: The specified ImageId does not exist. (6BE56E05)"
        );
        assert_eq!(err.code(), Some("InvalidImageId.NotFound"));
        assert_eq!(err.status(), Some(404));
    }

    #[test]
    fn echoed_security_tokens_are_redacted() {
        let token = "CAIS+a/b=";
        let credentials = Credentials::new("STS.id", "secret").with_security_token(token);
        let echoed = EcsError::Api {
            status: 400,
            code: "SignatureDoesNotMatch".into(),
            message: format!(
                "x-acs-security-token:{token} SecurityToken%3DCAIS%252Ba%252Fb%253D%26 {}",
                sign::percent_encode(token)
            ),
            request_id: "R".into(),
            details: Box::default(),
        };
        let shown = echoed.without_token_of(&credentials).to_string();
        assert_eq!(
            shown,
            "SignatureDoesNotMatch: x-acs-security-token:<redacted> \
             SecurityToken%3D<redacted>%26 <redacted> (R)"
        );
        let untouched = api(400, "Throttling");
        assert_eq!(untouched.clone().without_token_of(&credentials), untouched);
    }

    #[test]
    fn classification_follows_the_ecs_retry_guidance() {
        for transient in [
            api(400, "Throttling"),
            api(400, "Throttling.User"),
            api(503, "ServiceUnavailable"),
            api(503, "ServiceUnavailable.RegionMaintaining"),
            api(500, "InternalError"),
            api(403, "OperationDenied.ImageCopyConflict"),
            api(400, "InvalidOperation.Conflict"),
            api(400, "UnknownError"),
            api(409, "OperationConflict"),
            api(502, "SomethingNew"),
            EcsError::Timeout(Duration::from_secs(1)),
            EcsError::Transport {
                message: "reset".into(),
            },
        ] {
            assert!(transient.is_transient(), "{transient}");
        }
        for terminal in [
            api(404, "InvalidImageId.NotFound"),
            api(400, "IncorrectImageStatus"),
            api(403, "QuotaExceed.Image"),
            EcsError::Credentials("none".into()),
        ] {
            assert!(!terminal.is_transient(), "{terminal}");
        }
        assert!(api(400, "Throttling.Api").is_throttling());
        assert!(!api(500, "InternalError").is_throttling());
        assert_eq!(
            EcsError::Timeout(Duration::from_secs(1)).metric_label(),
            "Transport"
        );
    }
}
