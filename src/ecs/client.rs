//! The ECS client: endpoint choice, per-region rate limiting, signing, retries, observation.
//! Typed operations live in `ops.rs` on top of [`EcsClient::call`].

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use url::Url;

use super::credentials::{Credentials, CredentialsProvider};
use super::error::EcsError;
use super::fence::{self, Fence};
use super::request::{self, Freshness, SignatureVersion};
use super::response::{self, MAX_ECS_BODY_BYTES};
use super::retry::{Backoff, retry_is_safe};

/// Told about every HTTP attempt (the controller turns this into Prometheus metrics).
/// `outcome` is `Err` with the ECS error code, or `"Transport"` when there was no answer.
pub trait CallObserver: Send + Sync {
    fn observe(&self, action: &str, region: &str, outcome: Result<(), &str>, elapsed: Duration);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsClientConfig {
    /// One endpoint for every region (emulator, proxy). The only place `http://` is allowed.
    pub endpoint: Option<Url>,
    /// Use the VPC endpoints `ecs-vpc.<region>.aliyuncs.com` (from inside Alibaba Cloud).
    pub vpc: bool,
    pub signature: SignatureVersion,
    /// Attempts per call, the first included; only transient errors are retried.
    pub max_attempts: u32,
    /// Calls per second per region, shared by every clone of the client.
    pub region_qps: u32,
    /// Per HTTP attempt.
    pub timeout: Duration,
    pub backoff: Backoff,
    /// PEM certificates trusted besides the public web roots, for a private endpoint or a
    /// TLS-inspecting proxy. Verification itself is never turned off.
    pub extra_root_certificates_pem: Option<Vec<u8>>,
}

impl Default for EcsClientConfig {
    fn default() -> Self {
        EcsClientConfig {
            endpoint: None,
            vpc: false,
            signature: SignatureVersion::V3,
            max_attempts: 3,
            region_qps: 10,
            timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            extra_root_certificates_pem: None,
        }
    }
}

/// Async client for ECS API 2014-05-26. Clones share the connection pool and rate limiters.
#[derive(Clone)]
pub struct EcsClient {
    shared: Arc<Shared>,
    credentials: CredentialsProvider,
    observer: Option<Arc<dyn CallObserver>>,
    fence: Option<Fence>,
}

struct Shared {
    config: EcsClientConfig,
    http: reqwest::Client,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsClient")
            .field("config", &self.shared.config)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl EcsClient {
    pub fn new(
        config: EcsClientConfig,
        credentials: CredentialsProvider,
    ) -> Result<Self, EcsError> {
        if let Some(endpoint) = &config.endpoint
            && !matches!(endpoint.scheme(), "http" | "https")
        {
            return Err(EcsError::Config(format!(
                "ECS endpoint must be http:// or https://, not {endpoint}"
            )));
        }
        let qps = NonZeroU32::new(config.region_qps)
            .ok_or_else(|| EcsError::Config("region_qps must be at least 1".into()))?;
        if config.max_attempts == 0 {
            return Err(EcsError::Config("max_attempts must be at least 1".into()));
        }
        // HTTP/1.1 like the official SDKs: the signed `host` header is then sent verbatim.
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ecs-image-operator/", env!("CARGO_PKG_VERSION")));
        let http = build_http_client(builder, config.extra_root_certificates_pem.as_deref())?;
        Ok(EcsClient {
            shared: Arc::new(Shared {
                config,
                http,
                limiter: RateLimiter::keyed(Quota::per_second(qps)),
            }),
            credentials,
            observer: None,
            fence: None,
        })
    }

    /// Calls per second allowed to each region.
    pub fn region_qps(&self) -> u32 {
        self.shared.config.region_qps
    }

    /// The same client (connections, rate limits, observer) acting with other credentials.
    pub fn with_credentials(&self, credentials: CredentialsProvider) -> EcsClient {
        EcsClient {
            credentials,
            ..self.clone()
        }
    }

    pub fn with_observer(&self, observer: Arc<dyn CallObserver>) -> EcsClient {
        EcsClient {
            observer: Some(observer),
            ..self.clone()
        }
    }

    /// The same client, refusing mutating calls while `fence` is closed.
    pub fn with_fence(&self, fence: Fence) -> EcsClient {
        EcsClient {
            fence: Some(fence),
            ..self.clone()
        }
    }

    pub fn config(&self) -> &EcsClientConfig {
        &self.shared.config
    }

    /// Where calls for `region` go.
    pub fn endpoint(&self, region: &str) -> Result<Url, EcsError> {
        // The region becomes part of a host name: refuse anything that could redirect the call.
        let valid = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(EcsError::Config(format!("invalid region id {region:?}")));
        }
        if let Some(endpoint) = &self.shared.config.endpoint {
            return Ok(endpoint.clone());
        }
        let network = if self.shared.config.vpc { "-vpc" } else { "" };
        Url::parse(&format!("https://ecs{network}.{region}.aliyuncs.com/"))
            .map_err(|e| EcsError::Config(format!("invalid region id {region:?}: {e}")))
    }

    /// One signed call: `region` picks the endpoint and the rate limiter; `params` are the
    /// operation's parameters (RegionId included when the operation takes it). Transient
    /// failures are retried with fresh nonce, timestamp and signature.
    pub async fn call(
        &self,
        region: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, EcsError> {
        if action.is_empty() || !action.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(EcsError::Config(format!("invalid action {action:?}")));
        }
        let endpoint = self.endpoint(region)?;
        let config = &self.shared.config;
        let region_key = region.to_string();
        let mut attempt = 1;
        loop {
            self.shared.limiter.until_key_ready(&region_key).await;
            // Checked before every attempt: a retry must not outlive the lease either.
            if fence::is_mutation(action)
                && let Some(fence) = &self.fence
                && !fence.is_open()
            {
                return Err(EcsError::Fenced(action.to_string()));
            }
            let credentials = self.credentials.credentials().await?;
            let error = match self
                .attempt(&endpoint, region, action, params, &credentials)
                .await
            {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if attempt >= config.max_attempts || !retry_is_safe(action, params, &error) {
                return Err(error);
            }
            let delay = config.backoff.delay(attempt, &error);
            tracing::debug!(action, region, attempt, ?delay, error = %error, "retrying ECS call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        endpoint: &Url,
        region: &str,
        action: &str,
        params: &[(String, String)],
        credentials: &Credentials,
    ) -> Result<Value, EcsError> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = request::sign_request(
            endpoint,
            action,
            params,
            credentials,
            self.shared.config.signature,
            Freshness {
                now: chrono::Utc::now(),
                nonce: &nonce,
            },
        );
        let mut builder = self.shared.http.post(signed.url);
        for (name, value) in &signed.headers {
            builder = builder.header(name, value);
        }
        let started = Instant::now();
        let result = self
            .exchange(builder.body(Vec::new()))
            .await
            .map_err(|error| error.without_token_of(credentials));
        let elapsed = started.elapsed();
        if let Some(observer) = &self.observer {
            let outcome = match &result {
                Ok(_) => Ok(()),
                Err(error) => Err(error.metric_label()),
            };
            observer.observe(action, region, outcome, elapsed);
        }
        match &result {
            Ok(_) => tracing::debug!(action, region, ?elapsed, "ECS call succeeded"),
            Err(error) => {
                tracing::debug!(action, region, ?elapsed, error = %error, "ECS call failed")
            }
        }
        result
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Value, EcsError> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(response::redirect_error(status, response.headers()));
        }
        let retry_after = response::retry_after(response.headers());
        let body =
            response::read_body(response, MAX_ECS_BODY_BYTES, |e| self.transport_error(e)).await?;
        response::decode(status, &body, retry_after)
    }

    /// reqwest errors quote the URL, whose query holds the V1 signature and STS token: drop it.
    fn transport_error(&self, error: reqwest::Error) -> EcsError {
        if error.is_timeout() {
            return EcsError::Timeout(self.shared.config.timeout);
        }
        EcsError::Transport {
            message: error_chain(&error.without_url()),
        }
    }
}

/// Finishes an HTTP client (ECS or STS), trusting `extra_roots_pem` besides the public roots.
/// A file without any certificate, or with one rustls cannot parse, is refused here so that a
/// wrong `--ecs-ca-file` fails at start-up rather than on the first call.
pub(crate) fn build_http_client(
    builder: reqwest::ClientBuilder,
    extra_roots_pem: Option<&[u8]>,
) -> Result<reqwest::Client, EcsError> {
    let mut builder = builder;
    if let Some(pem) = extra_roots_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| EcsError::Config(format!("extra CA certificates: {}", error_chain(&e))))?;
        if certificates.is_empty() {
            return Err(EcsError::Config(
                "extra CA certificates: no PEM CERTIFICATE block found".into(),
            ));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| EcsError::Config(format!("cannot build the HTTP client: {}", error_chain(&e))))
}

/// An error and its causes on one line: reqwest's own message alone rarely says what failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::Credentials;

    fn client(config: EcsClientConfig) -> EcsClient {
        EcsClient::new(
            config,
            CredentialsProvider::fixed(Credentials::new("id", "secret")),
        )
        .unwrap()
    }

    #[test]
    fn endpoints_follow_the_region_or_the_override() {
        let public = client(EcsClientConfig::default());
        assert_eq!(
            public.endpoint("cn-hangzhou").unwrap().as_str(),
            "https://ecs.cn-hangzhou.aliyuncs.com/"
        );
        let vpc = client(EcsClientConfig {
            vpc: true,
            ..Default::default()
        });
        assert_eq!(
            vpc.endpoint("cn-shanghai").unwrap().as_str(),
            "https://ecs-vpc.cn-shanghai.aliyuncs.com/"
        );
        let emulator = client(EcsClientConfig {
            endpoint: Some(Url::parse("http://127.0.0.1:9100").unwrap()),
            ..Default::default()
        });
        assert_eq!(
            emulator.endpoint("us-west-1").unwrap().as_str(),
            "http://127.0.0.1:9100/"
        );
        assert!(public.endpoint("evil.com/").is_err());
        assert!(public.endpoint("").is_err());
    }

    #[test]
    fn bad_configurations_are_refused() {
        let credentials = CredentialsProvider::fixed(Credentials::new("id", "secret"));
        for config in [
            EcsClientConfig {
                region_qps: 0,
                ..Default::default()
            },
            EcsClientConfig {
                max_attempts: 0,
                ..Default::default()
            },
            EcsClientConfig {
                endpoint: Some(Url::parse("ftp://x").unwrap()),
                ..Default::default()
            },
        ] {
            assert!(EcsClient::new(config, credentials.clone()).is_err());
        }
    }

    #[test]
    fn extra_roots_must_hold_a_parsable_certificate() {
        let with_roots = |pem: &[u8]| {
            EcsClient::new(
                EcsClientConfig {
                    extra_root_certificates_pem: Some(pem.to_vec()),
                    ..Default::default()
                },
                CredentialsProvider::fixed(Credentials::new("id", "secret")),
            )
        };
        let no_block = with_roots(b"just text, not PEM").unwrap_err();
        assert!(
            no_block.to_string().contains("no PEM CERTIFICATE block"),
            "{no_block}"
        );
        let garbage =
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        let not_der = with_roots(garbage).unwrap_err();
        assert!(matches!(not_der, EcsError::Config(_)), "{not_der}");
    }
}
