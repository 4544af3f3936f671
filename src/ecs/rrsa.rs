//! RRSA (RAM Roles for Service Accounts): trade the pod's projected OIDC token for temporary
//! STS credentials with `AssumeRoleWithOIDC`, and keep them until shortly before they expire.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::client::build_http_client;
use super::credentials::Credentials;
use super::error::EcsError;
use super::response::{MAX_STS_BODY_BYTES, api_error, read_body, redirect_refusal};
use super::sign;

/// Refresh this long before `Expiration`, as the official credential providers do.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(180);

const STS_API_VERSION: &str = "2015-04-01";

/// How long an STS request may take before the provider gives up (credentials-go uses a
/// 5 s connect and 10 s read timeout).
const STS_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, PartialEq, Eq)]
pub struct RrsaConfig {
    pub role_arn: String,
    pub oidc_provider_arn: String,
    /// Re-read on every refresh: the kubelet rotates the projected token.
    pub oidc_token_file: PathBuf,
    pub role_session_name: String,
    /// Base URL of STS, e.g. `https://sts.aliyuncs.com/`.
    pub sts_endpoint: Url,
    /// Lifetime asked for; STS accepts 900 s up to the role's maximum.
    pub duration_seconds: u32,
    /// PEM certificates trusted besides the public web roots (the ECS client's extra CA).
    pub extra_root_certificates_pem: Option<Vec<u8>>,
}

impl RrsaConfig {
    pub fn new(
        role_arn: String,
        oidc_provider_arn: String,
        oidc_token_file: PathBuf,
        sts_endpoint: Url,
    ) -> Self {
        RrsaConfig {
            role_arn,
            oidc_provider_arn,
            oidc_token_file,
            role_session_name: format!("ecs-image-operator-{}", Utc::now().timestamp_micros()),
            sts_endpoint,
            duration_seconds: 3600,
            extra_root_certificates_pem: None,
        }
    }
}

impl fmt::Debug for RrsaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RrsaConfig")
            .field("role_arn", &self.role_arn)
            .field("oidc_provider_arn", &self.oidc_provider_arn)
            .field("oidc_token_file", &self.oidc_token_file)
            .field("role_session_name", &self.role_session_name)
            .field("sts_endpoint", &self.sts_endpoint.as_str())
            .field(
                "extra_root_certificates",
                &self.extra_root_certificates_pem.is_some(),
            )
            .finish()
    }
}

struct Cached {
    credentials: Credentials,
    expiration: DateTime<Utc>,
}

pub(crate) struct RrsaProvider {
    config: RrsaConfig,
    http: reqwest::Client,
    /// One lock for read and refresh, so concurrent callers trigger a single STS call.
    cache: Mutex<Option<Cached>>,
}

impl RrsaProvider {
    pub(crate) fn new(config: RrsaConfig) -> Result<Self, EcsError> {
        let builder = reqwest::Client::builder()
            .timeout(STS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let http = build_http_client(builder, config.extra_root_certificates_pem.as_deref())
            .map_err(|e| EcsError::Config(format!("STS client: {e}")))?;
        Ok(RrsaProvider {
            config,
            http,
            cache: Mutex::new(None),
        })
    }

    pub(crate) fn config(&self) -> &RrsaConfig {
        &self.config
    }

    pub(crate) async fn credentials(&self) -> Result<Credentials, EcsError> {
        let mut cache = self.cache.lock().await;
        let now = Utc::now();
        if let Some(cached) = cache.as_ref()
            && !needs_refresh(cached.expiration, now)
        {
            return Ok(cached.credentials.clone());
        }
        match self.assume_role().await {
            Ok(fresh) => {
                let credentials = fresh.credentials.clone();
                *cache = Some(fresh);
                Ok(credentials)
            }
            // Still-valid credentials beat an outage: keep using them and retry next call.
            Err(err) => match cache.as_ref() {
                Some(cached) if cached.expiration > now => {
                    tracing::warn!(error = %err, "RRSA refresh failed; using credentials until they expire");
                    Ok(cached.credentials.clone())
                }
                _ => Err(err),
            },
        }
    }

    async fn assume_role(&self) -> Result<Cached, EcsError> {
        let token = tokio::fs::read_to_string(&self.config.oidc_token_file)
            .await
            .map_err(|e| {
                EcsError::Credentials(format!(
                    "cannot read the OIDC token file {}: {e}",
                    self.config.oidc_token_file.display()
                ))
            })?;
        let mut url = self.config.sts_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("Version", STS_API_VERSION)
            .append_pair("Action", "AssumeRoleWithOIDC")
            .append_pair("Format", "JSON")
            .append_pair("Timestamp", &sign::timestamp(Utc::now()));
        let form = [
            ("RoleArn", self.config.role_arn.as_str()),
            ("OIDCProviderArn", self.config.oidc_provider_arn.as_str()),
            ("OIDCToken", token.trim()),
            ("RoleSessionName", self.config.role_session_name.as_str()),
            ("DurationSeconds", &self.config.duration_seconds.to_string()),
        ];
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity")
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| sts_unreachable(&format!("no answer: {}", e.without_url())))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let refusal = redirect_refusal(response.headers());
            return Err(sts_failure(&format!("HTTP {status}: {refusal}")));
        }
        let body = read_body(response, MAX_STS_BODY_BYTES, |e| {
            sts_unreachable(&format!("cannot read the answer: {}", e.without_url()))
        })
        .await
        .map_err(|e| match e {
            EcsError::Decode {
                status,
                message,
                request_id,
            } => EcsError::Decode {
                status,
                message: format!("STS AssumeRoleWithOIDC: {message}"),
                request_id,
            },
            other => other,
        })?;
        if !(200..300).contains(&status) {
            let reason = match api_error(status, &body, None) {
                // Throttling and 5xx say nothing about the role or the token: try again.
                Some(err) if err.is_transient() => return Err(sts_unreachable(&err.to_string())),
                Some(err) => err.to_string(),
                None if status >= 500 || status == 429 => {
                    return Err(sts_unreachable(&format!("HTTP {status}")));
                }
                None => format!("HTTP {status}"),
            };
            return Err(sts_failure(&reason));
        }
        let parsed: AssumeRoleResponse = serde_json::from_slice(&body)
            .map_err(|e| sts_failure(&format!("unexpected answer: {e}")))?;
        let expiration = DateTime::parse_from_rfc3339(&parsed.credentials.expiration)
            .map_err(|e| sts_failure(&format!("bad Expiration: {e}")))?
            .with_timezone(&Utc);
        let credentials = Credentials::new(
            parsed.credentials.access_key_id,
            parsed.credentials.access_key_secret,
        )
        .with_security_token(parsed.credentials.security_token);
        tracing::debug!(%expiration, role = %self.config.role_arn, "obtained RRSA credentials");
        Ok(Cached {
            credentials,
            expiration,
        })
    }
}

fn needs_refresh(expiration: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    expiration - now <= chrono::Duration::from_std(REFRESH_BEFORE_EXPIRY).unwrap_or_default()
}

/// STS did not answer, or answered that it is overloaded: transient, unlike a refusal.
fn sts_unreachable(reason: &str) -> EcsError {
    EcsError::Transport {
        message: format!("STS AssumeRoleWithOIDC: {reason}"),
    }
}

fn sts_failure(reason: &str) -> EcsError {
    EcsError::Credentials(format!("STS AssumeRoleWithOIDC failed: {reason}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResponse {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_within_three_minutes_of_expiry() {
        let now = Utc::now();
        assert!(!needs_refresh(now + chrono::Duration::seconds(181), now));
        assert!(needs_refresh(now + chrono::Duration::seconds(180), now));
        assert!(needs_refresh(now - chrono::Duration::seconds(1), now));
    }
}
