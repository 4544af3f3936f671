//! RRSA credentials against a fake STS on 127.0.0.1: the AssumeRoleWithOIDC request, caching,
//! refresh near expiry, token file re-reads, and the environment chain end to end.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use ecs_image_operator::ecs::{CredentialsProvider, EcsClient, EcsClientConfig, RrsaConfig, sign};
use serde_json::json;
use support::{FakeServer, Reply};

fn sts_reply(key: &str, expires_in: Duration) -> Reply {
    let expiration = Utc::now() + chrono::Duration::from_std(expires_in).unwrap();
    Reply::json(
        200,
        json!({
            "RequestId": "sts-req",
            "AssumedRoleUser": {"Arn": "acs:ram::1:role/r/s", "AssumedRoleId": "1:s"},
            "Credentials": {
                "AccessKeyId": format!("STS.{key}"),
                "AccessKeySecret": format!("secret-{key}"),
                "SecurityToken": format!("token-{key}"),
                "Expiration": expiration.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }
        }),
    )
}

fn token_file(content: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), content).unwrap();
    file
}

fn config(sts: &FakeServer, token: &tempfile::NamedTempFile) -> RrsaConfig {
    let mut config = RrsaConfig::new(
        "acs:ram::1:role/image-operator".into(),
        "acs:ram::1:oidc-provider/ack-rrsa-c1".into(),
        token.path().to_path_buf(),
        sts.url(),
    );
    config.role_session_name = "session-1".into();
    config
}

#[tokio::test]
async fn assume_role_with_oidc_is_sent_as_the_official_providers_send_it() {
    let sts = FakeServer::start(vec![sts_reply("a", Duration::from_secs(3600))]).await;
    let token = token_file("eyJhbGciOi.token-one\n");
    let provider = CredentialsProvider::rrsa(config(&sts, &token)).unwrap();

    let first = provider.credentials().await.unwrap();
    let second = provider.clone().credentials().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.access_key_id(), "STS.a");
    assert_eq!(first.access_key_secret(), "secret-a");
    assert_eq!(first.security_token(), Some("token-a"));

    let requests = sts.requests();
    assert_eq!(
        requests.len(),
        1,
        "cached until near expiry, shared by clones"
    );
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert!(
        request.header("authorization").is_none(),
        "AssumeRoleWithOIDC is anonymous"
    );
    assert_eq!(
        request.param("Action").as_deref(),
        Some("AssumeRoleWithOIDC")
    );
    assert_eq!(request.param("Version").as_deref(), Some("2015-04-01"));
    assert_eq!(request.param("Format").as_deref(), Some("JSON"));
    assert!(request.param("Timestamp").is_some_and(|t| t.ends_with('Z')));
    let form: HashMap<String, String> = request.form().into_iter().collect();
    assert_eq!(form["RoleArn"], "acs:ram::1:role/image-operator");
    assert_eq!(
        form["OIDCProviderArn"],
        "acs:ram::1:oidc-provider/ack-rrsa-c1"
    );
    assert_eq!(form["OIDCToken"], "eyJhbGciOi.token-one");
    assert_eq!(form["RoleSessionName"], "session-1");
    assert_eq!(form["DurationSeconds"], "3600");
}

#[tokio::test]
async fn credentials_near_expiry_are_refreshed_with_the_current_token() {
    let sts = FakeServer::start(vec![
        sts_reply("a", Duration::from_secs(120)),
        sts_reply("b", Duration::from_secs(3600)),
    ])
    .await;
    let token = token_file("token-one");
    let provider = CredentialsProvider::rrsa(config(&sts, &token)).unwrap();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "STS.a"
    );
    // The kubelet rotated the projected token in the meantime.
    std::fs::write(token.path(), "token-two").unwrap();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "STS.b"
    );
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "STS.b"
    );
    let tokens: Vec<String> = sts
        .requests()
        .iter()
        .map(|r| {
            r.form()
                .into_iter()
                .find(|(k, _)| k == "OIDCToken")
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(tokens, ["token-one", "token-two"]);
}

#[tokio::test]
async fn a_failed_refresh_keeps_using_unexpired_credentials() {
    let sts = FakeServer::start(vec![
        sts_reply("a", Duration::from_secs(120)),
        Reply::ecs_error(503, "ServiceUnavailable", "try later"),
    ])
    .await;
    let token = token_file("t");
    let provider = CredentialsProvider::rrsa(config(&sts, &token)).unwrap();
    provider.credentials().await.unwrap();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "STS.a"
    );
    assert_eq!(sts.requests().len(), 2);
}

#[tokio::test]
async fn sts_refusals_are_credential_errors_without_the_token() {
    let sts = FakeServer::start(vec![Reply::ecs_error(
        400,
        "AuthenticationFail.OIDCToken.Invalid",
        "The oidc token is invalid.",
    )])
    .await;
    let token = token_file("secret-oidc-token");
    let provider = CredentialsProvider::rrsa(config(&sts, &token)).unwrap();
    let err = provider.credentials().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("AuthenticationFail.OIDCToken.Invalid"),
        "{shown}"
    );
    assert!(!shown.contains("secret-oidc-token"), "{shown}");

    let missing = RrsaConfig::new(
        "arn".into(),
        "arn".into(),
        "/nonexistent/token".into(),
        sts.url(),
    );
    let err = CredentialsProvider::rrsa(missing)
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/token"), "{err}");
}

/// An STS outage says nothing about the role or the token: it must be retried, not stall every
/// object for the stalled-retry interval as a credentials problem.
#[tokio::test]
async fn sts_outages_are_transient_and_refusals_are_not() {
    let token = token_file("oidc-token");
    for outage in [
        Reply::ecs_error(503, "ServiceUnavailable", "The service is unavailable."),
        Reply::ecs_error(500, "InternalError", "The request processing has failed."),
        Reply::ecs_error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        Reply::json(502, json!({"unexpected": "gateway page"})),
    ] {
        let sts = FakeServer::start(vec![outage]).await;
        let err = CredentialsProvider::rrsa(config(&sts, &token))
            .unwrap()
            .credentials()
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let mut nobody = config(&FakeServer::start(vec![]).await, &token);
    nobody.sts_endpoint = unreachable;
    let err = CredentialsProvider::rrsa(nobody)
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert!(err.is_transient(), "no answer at all: {err}");

    let sts = FakeServer::start(vec![Reply::ecs_error(
        400,
        "AuthenticationFail.OIDCToken.Invalid",
        "The oidc token is invalid.",
    )])
    .await;
    let err = CredentialsProvider::rrsa(config(&sts, &token))
        .unwrap()
        .credentials()
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "a refusal is a verdict: {err}");
}

#[tokio::test]
async fn the_environment_chain_reaches_ecs_with_sts_credentials() {
    let sts = FakeServer::start(vec![sts_reply("env", Duration::from_secs(3600))]).await;
    let ecs = FakeServer::start(vec![]).await;
    let token = token_file("projected");
    let env: HashMap<&str, String> = HashMap::from([
        ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r".to_string()),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1:oidc-provider/p".to_string(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token.path().display().to_string(),
        ),
        ("ALIBABA_CLOUD_STS_ENDPOINT", sts.url().to_string()),
        ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "from-env".to_string()),
    ]);
    let provider = CredentialsProvider::from_env_map(|name| env.get(name).cloned()).unwrap();
    let client = EcsClient::new(
        EcsClientConfig {
            endpoint: Some(ecs.url()),
            ..Default::default()
        },
        provider,
    )
    .unwrap();
    client.cancel_task("cn-hangzhou", "t-1").await.unwrap();

    let sts_form: HashMap<String, String> = sts.requests()[0].form().into_iter().collect();
    assert_eq!(sts_form["RoleSessionName"], "from-env");
    let request = &ecs.requests()[0];
    assert_eq!(
        request.header("x-acs-security-token").as_deref(),
        Some("token-env")
    );
    let authorization =
        sign::parse_v3_authorization(&request.header("authorization").unwrap()).unwrap();
    assert_eq!(authorization.access_key_id, "STS.env");
}
