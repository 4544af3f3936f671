//! Alibaba Cloud credentials and where they come from: a Secret (static AK/SK, optionally an
//! STS token) or the standard chain (environment variables, then RRSA/OIDC).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use url::Url;

use super::error::EcsError;
use super::rrsa::{RrsaConfig, RrsaProvider};

pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
pub const ENV_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";

/// An AccessKey pair, plus the security token when the pair is temporary (STS).
/// `Debug` shows only the AccessKey ID so that credentials can never leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: Option<String>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, access_key_secret: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            security_token: None,
        }
    }

    /// Adds an STS security token; an empty token means "none" (Secrets often carry empty keys).
    pub fn with_security_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.security_token = (!token.is_empty()).then_some(token);
        self
    }

    /// From the data of a Kubernetes Secret (`accessKeyId`, `accessKeySecret`, optional
    /// `securityToken`). Surrounding whitespace is dropped: `echo` adds a newline to files
    /// turned into Secrets. Errors name the missing key, never a value.
    pub fn from_secret_data(lookup: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, EcsError> {
        let field = |key: &str| -> Result<Option<String>, EcsError> {
            match lookup(key) {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes)
                    .map(|text| Some(text.trim().to_string()).filter(|t| !t.is_empty()))
                    .map_err(|_| EcsError::Credentials(format!("Secret key {key} is not UTF-8"))),
            }
        };
        let required = |key: &str| {
            field(key)?
                .ok_or_else(|| EcsError::Credentials(format!("Secret has no (or an empty) {key}")))
        };
        let credentials = Credentials::new(required("accessKeyId")?, required("accessKeySecret")?);
        Ok(match field("securityToken")? {
            Some(token) => credentials.with_security_token(token),
            None => credentials,
        })
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn access_key_secret(&self) -> &str {
        &self.access_key_secret
    }

    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where a client gets its credentials. Cheap to clone; an RRSA provider shares its cache
/// between clones so that all of them refresh once.
#[derive(Clone)]
pub struct CredentialsProvider(Arc<Source>);

enum Source {
    Static(Credentials),
    Rrsa(Box<RrsaProvider>),
}

impl fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Source::Static(credentials) => f
                .debug_tuple("CredentialsProvider::Static")
                .field(credentials)
                .finish(),
            Source::Rrsa(provider) => f
                .debug_tuple("CredentialsProvider::Rrsa")
                .field(provider.config())
                .finish(),
        }
    }
}

impl CredentialsProvider {
    /// Fixed credentials, e.g. from an object's `credentialsSecretRef`.
    pub fn fixed(credentials: Credentials) -> Self {
        CredentialsProvider(Arc::new(Source::Static(credentials)))
    }

    /// RRSA: exchange the projected OIDC token for STS credentials, cached until near expiry.
    pub fn rrsa(config: RrsaConfig) -> Result<Self, EcsError> {
        Ok(CredentialsProvider(Arc::new(Source::Rrsa(Box::new(
            RrsaProvider::new(config)?,
        )))))
    }

    /// The standard chain over the process environment: access key variables, else RRSA.
    pub fn from_env() -> Result<Self, EcsError> {
        Self::from_env_map(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`], with STS (RRSA) also trusting these PEM certificates besides the
    /// public roots: the same extra CA as the ECS client's, for a private endpoint or proxy.
    pub fn from_env_trusting(extra_roots_pem: Option<&[u8]>) -> Result<Self, EcsError> {
        Self::chain(|name| std::env::var(name).ok(), extra_roots_pem)
    }

    /// The standard chain over any variable lookup, so tests need not touch the process
    /// environment: AccessKey variables first, then RRSA. Empty values count as unset.
    pub fn from_env_map(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EcsError> {
        Self::chain(lookup, None)
    }

    fn chain(
        lookup: impl Fn(&str) -> Option<String>,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<Self, EcsError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        match (get(ENV_ACCESS_KEY_ID), get(ENV_ACCESS_KEY_SECRET)) {
            (Some(id), Some(secret)) => {
                let mut credentials = Credentials::new(id, secret);
                if let Some(token) = get(ENV_SECURITY_TOKEN) {
                    credentials = credentials.with_security_token(token);
                }
                return Ok(Self::fixed(credentials));
            }
            (Some(_), None) => return Err(missing(&[ENV_ACCESS_KEY_SECRET], ENV_ACCESS_KEY_ID)),
            (None, Some(_)) => return Err(missing(&[ENV_ACCESS_KEY_ID], ENV_ACCESS_KEY_SECRET)),
            (None, None) => {}
        }

        let (role_arn, oidc_provider_arn, token_file) = match (
            get(ENV_ROLE_ARN),
            get(ENV_OIDC_PROVIDER_ARN),
            get(ENV_OIDC_TOKEN_FILE),
        ) {
            (Some(role), Some(provider), Some(file)) => (role, provider, file),
            (None, None, None) => {
                return Err(EcsError::Credentials(format!(
                    "no Alibaba Cloud credentials found: set {ENV_ACCESS_KEY_ID} and \
                     {ENV_ACCESS_KEY_SECRET} (and {ENV_SECURITY_TOKEN} for STS), or \
                     {ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN} and {ENV_OIDC_TOKEN_FILE} for RRSA"
                )));
            }
            (role, provider, file) => {
                let absent: Vec<&str> = [
                    (ENV_ROLE_ARN, role.is_none()),
                    (ENV_OIDC_PROVIDER_ARN, provider.is_none()),
                    (ENV_OIDC_TOKEN_FILE, file.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, is_absent)| is_absent.then_some(name))
                .collect();
                return Err(missing(&absent, "the other RRSA variables"));
            }
        };

        let sts_endpoint = match get(ENV_STS_ENDPOINT) {
            Some(endpoint) => parse_sts_endpoint(&endpoint)?,
            None => default_sts_endpoint(
                get(ENV_STS_REGION).as_deref(),
                get(ENV_VPC_ENDPOINT_ENABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")),
            )?,
        };
        let mut config = RrsaConfig::new(
            role_arn,
            oidc_provider_arn,
            PathBuf::from(token_file),
            sts_endpoint,
        );
        if let Some(name) = get(ENV_ROLE_SESSION_NAME) {
            config.role_session_name = name;
        }
        config.extra_root_certificates_pem = extra_roots_pem.map(<[u8]>::to_vec);
        Self::rrsa(config)
    }

    /// Credentials valid for at least the next few minutes.
    pub async fn credentials(&self) -> Result<Credentials, EcsError> {
        match &*self.0 {
            Source::Static(credentials) => Ok(credentials.clone()),
            Source::Rrsa(provider) => provider.credentials().await,
        }
    }
}

fn missing(names: &[&str], because: &str) -> EcsError {
    EcsError::Credentials(format!(
        "incomplete Alibaba Cloud credentials: {} must be set together with {because}",
        names.join(", ")
    ))
}

/// `ALIBABA_CLOUD_STS_ENDPOINT` may be a bare host (as the ACK webhook injects it) or a full
/// URL. The OIDC token and the credentials STS returns travel on this connection, so plain
/// `http://` is accepted only for a loopback address (a local test STS).
fn parse_sts_endpoint(endpoint: &str) -> Result<Url, EcsError> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| EcsError::Config(format!("{ENV_STS_ENDPOINT} {endpoint:?}: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(EcsError::Config(format!(
            "{ENV_STS_ENDPOINT} must be https:// (plain http:// only for a loopback address), not {endpoint:?}"
        ))),
        other => Err(EcsError::Config(format!(
            "{ENV_STS_ENDPOINT} must be https, not {other}"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn default_sts_endpoint(region: Option<&str>, vpc: bool) -> Result<Url, EcsError> {
    let host = match region {
        Some(region) if vpc => format!("sts-vpc.{region}.aliyuncs.com"),
        Some(region) => format!("sts.{region}.aliyuncs.com"),
        None => "sts.aliyuncs.com".to_string(),
    };
    parse_sts_endpoint(&host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn debug_never_shows_the_secret_or_the_token() {
        let credentials =
            Credentials::new("LTAIid", "s3cr3t-value").with_security_token("sts-t0ken-value");
        let shown = format!(
            "{credentials:?} {:?}",
            CredentialsProvider::fixed(credentials.clone())
        );
        assert!(shown.contains("LTAIid"));
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("sts-t0ken-value"), "{shown}");
    }

    #[test]
    fn secret_data_is_trimmed_and_missing_keys_are_named() {
        let data = |pairs: &'static [(&'static str, &'static [u8])]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_vec())
            }
        };
        let credentials = Credentials::from_secret_data(data(&[
            ("accessKeyId", b"id\n"),
            ("accessKeySecret", b" secret "),
            ("securityToken", b""),
        ]))
        .unwrap();
        assert_eq!(credentials, Credentials::new("id", "secret"));
        let err = Credentials::from_secret_data(data(&[("accessKeyId", b"id")])).unwrap_err();
        assert!(err.to_string().contains("accessKeySecret"), "{err}");
        let err = Credentials::from_secret_data(data(&[
            ("accessKeyId", b"id"),
            ("accessKeySecret", b"\xff-secret"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("not UTF-8") && !err.to_string().contains("-secret"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn access_key_variables_come_first() {
        let provider = CredentialsProvider::from_env_map(env(&[
            (ENV_ACCESS_KEY_ID, "id"),
            (ENV_ACCESS_KEY_SECRET, "secret"),
            (ENV_SECURITY_TOKEN, "token"),
            (ENV_ROLE_ARN, "acs:ram::1:role/r"),
            (ENV_OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
            (ENV_OIDC_TOKEN_FILE, "/nonexistent"),
        ]))
        .unwrap();
        let credentials = provider.credentials().await.unwrap();
        assert_eq!(credentials.access_key_id(), "id");
        assert_eq!(credentials.access_key_secret(), "secret");
        assert_eq!(credentials.security_token(), Some("token"));
    }

    #[test]
    fn rrsa_is_used_when_no_access_key_is_set() {
        let provider = CredentialsProvider::from_env_map(env(&[
            (ENV_ACCESS_KEY_ID, ""),
            (ENV_ROLE_ARN, "acs:ram::1:role/r"),
            (ENV_OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
            (ENV_OIDC_TOKEN_FILE, "/var/run/token"),
            (ENV_STS_REGION, "cn-hangzhou"),
        ]))
        .unwrap();
        let shown = format!("{provider:?}");
        assert!(shown.contains("Rrsa"), "{shown}");
        assert!(
            shown.contains("https://sts.cn-hangzhou.aliyuncs.com/"),
            "{shown}"
        );
    }

    #[test]
    fn sts_endpoint_override_accepts_hosts_and_urls() {
        assert_eq!(
            parse_sts_endpoint("sts-vpc.cn-beijing.aliyuncs.com")
                .unwrap()
                .as_str(),
            "https://sts-vpc.cn-beijing.aliyuncs.com/"
        );
        assert_eq!(
            parse_sts_endpoint("http://127.0.0.1:9100")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9100/"
        );
        assert!(parse_sts_endpoint("ftp://x").is_err());
        for loopback in [
            "http://localhost:8080",
            "http://[::1]:9100",
            "http://127.8.0.1",
        ] {
            assert!(parse_sts_endpoint(loopback).is_ok(), "{loopback}");
        }
        for exposed in [
            "http://sts.aliyuncs.com",
            "http://10.0.0.5:9100",
            "http://localhost.evil.example",
        ] {
            let err = parse_sts_endpoint(exposed).unwrap_err();
            assert!(
                err.to_string().contains("must be https://"),
                "{exposed}: {err}"
            );
        }
        assert_eq!(
            default_sts_endpoint(Some("cn-shanghai"), true)
                .unwrap()
                .as_str(),
            "https://sts-vpc.cn-shanghai.aliyuncs.com/"
        );
        assert_eq!(
            default_sts_endpoint(None, false).unwrap().as_str(),
            "https://sts.aliyuncs.com/"
        );
    }

    #[test]
    fn nothing_configured_names_the_variables() {
        let err = CredentialsProvider::from_env_map(env(&[])).unwrap_err();
        let text = err.to_string();
        for name in [
            ENV_ACCESS_KEY_ID,
            ENV_ACCESS_KEY_SECRET,
            ENV_ROLE_ARN,
            ENV_OIDC_PROVIDER_ARN,
            ENV_OIDC_TOKEN_FILE,
        ] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn half_configured_chains_are_errors_not_silent_fallbacks() {
        let err = CredentialsProvider::from_env_map(env(&[(ENV_ACCESS_KEY_ID, "id")])).unwrap_err();
        assert!(err.to_string().contains(ENV_ACCESS_KEY_SECRET), "{err}");
        let err = CredentialsProvider::from_env_map(env(&[(ENV_ROLE_ARN, "arn")])).unwrap_err();
        assert!(err.to_string().contains(ENV_OIDC_TOKEN_FILE), "{err}");
    }
}
