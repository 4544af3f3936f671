//! Security properties a user relies on: TLS is verified (and a private CA can be added),
//! redirects are never followed, answers and listings are bounded, credentials never leave the
//! process, and a Secret reference resolves only in the object's own namespace.
//!
//! The client tests use local servers only; the last two run the operator binary against the
//! real kube-apiserver and the ECS emulator, like the e2e tests.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use base64::Engine;
use ecs_image_operator::api::ImageCopy;
use ecs_image_operator::ecs::{
    Backoff, Credentials, CredentialsProvider, DescribeImagesRequest, EcsClient, EcsClientConfig,
    EcsError, MAX_PAGES, SignatureVersion, sign,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

use support::stage::{image_copy, image_copy_with, true_reason, wait_for, wait_gone, wait_ready};
use support::{Emulator, FakeServer, Operator, Reply};

const REGION: &str = "cn-hangzhou";
/// The ECS client's body limit, as documented in docs/security.md.
const ECS_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Fast retries (so that a wrongly retried error would show as extra requests) and room for
/// hundreds of calls per second.
fn config(endpoint: url::Url) -> EcsClientConfig {
    EcsClientConfig {
        endpoint: Some(endpoint),
        timeout: Duration::from_secs(20),
        region_qps: 1000,
        backoff: Backoff {
            base: Duration::from_millis(1),
            throttling_base: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
        ..Default::default()
    }
}

/// A client with temporary credentials, the kind whose token must never leave.
fn client(config: EcsClientConfig) -> EcsClient {
    EcsClient::new(config, CredentialsProvider::fixed(sts_key()))
        .expect("valid client configuration")
}

fn sts_key() -> Credentials {
    Credentials::new("STS.test-id", "test-secret").with_security_token("CAIS+test/token=")
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A private CA and a server certificate for 127.0.0.1 signed by it.
struct PrivateCa {
    ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn private_ca() -> PrivateCa {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ecs-image-operator test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("self-signed CA");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server parameters")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    PrivateCa {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone(), ca.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    }
}

/// An https endpoint on 127.0.0.1 with the CA's server certificate: every request that gets
/// through the handshake is answered with a small ECS success and counted.
async fn https_endpoint(ca: &PrivateCa) -> (url::Url, Arc<AtomicUsize>) {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(ca.server_chain.clone(), ca.server_key.clone_key())
        .expect("server TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"RequestId":"tls-ok","Regions":{"Region":[]}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let url = url::Url::parse(&format!("https://{addr}/")).expect("https URL");
    (url, answered)
}

#[tokio::test]
async fn https_to_an_unknown_ca_fails_and_succeeds_once_the_ca_is_configured() {
    let ca = private_ca();
    let (endpoint, answered) = https_endpoint(&ca).await;

    let untrusting = client(config(endpoint.clone()));
    let err = untrusting
        .call(REGION, "DescribeRegions", &[])
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    assert!(
        matches!(err, EcsError::Transport { .. }) && err.to_string().contains("certificate"),
        "expected a TLS certificate error, got: {err}"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 0, "no request got through");

    let trusting = client(EcsClientConfig {
        extra_root_certificates_pem: Some(ca.ca_pem.clone().into_bytes()),
        ..config(endpoint)
    });
    let answer = trusting
        .call(REGION, "DescribeRegions", &[])
        .await
        .expect("the configured CA is trusted");
    assert_eq!(answer["RequestId"], "tls-ok");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

async fn ecs_command(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(support::OPERATOR_BIN)
        .arg("ecs")
        .args(args)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .env_remove("ECS_ENDPOINT")
        .env_remove("ECS_CA_FILE")
        .output()
        .await
        .expect("run ecs-image-operator ecs")
}

#[tokio::test]
async fn the_ecs_command_takes_a_ca_file_and_refuses_a_bad_one() {
    let ca = private_ca();
    let (endpoint, _answered) = https_endpoint(&ca).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("write CA file");
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write file");
    let base = [
        "DescribeRegions",
        "--region",
        REGION,
        "--endpoint",
        endpoint.as_str(),
    ];

    let refused = ecs_command(&base).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");

    let ca_path = ca_file.display().to_string();
    let trusted = ecs_command(&[&base[..], &["--ca-file", &ca_path]].concat()).await;
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.contains("tls-ok"), "{stdout}");

    let bad_path = not_pem.display().to_string();
    let bad = ecs_command(&[&base[..], &["--ca-file", &bad_path]].concat()).await;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no PEM CERTIFICATE block"), "{stderr}");
}

#[tokio::test]
async fn run_refuses_a_bad_ca_file_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write file");
    let missing = dir.path().join("missing.pem");
    for (file, expected) in [
        (&not_pem, "no PEM CERTIFICATE block"),
        (&missing, "cannot read --ecs-ca-file"),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(support::OPERATOR_BIN)
                .args(["run", "--metrics-addr", "127.0.0.1:0", "--ecs-ca-file"])
                .arg(file)
                // Start-up must stop at the CA file, before Kubernetes is even looked for.
                .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
                .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
                .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
                .env_remove("ECS_ENDPOINT")
                .env_remove("ECS_CA_FILE")
                .output(),
        )
        .await
        .expect("run stops at once")
        .expect("run ecs-image-operator run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("Kubernetes"), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Redirects

#[tokio::test]
async fn ecs_redirects_are_not_followed_and_the_other_host_gets_nothing() {
    for signature in [SignatureVersion::V3, SignatureVersion::V1] {
        let elsewhere = FakeServer::start(vec![]).await;
        let target = format!("{}collect?from=ecs", elsewhere.url());
        let redirecting = FakeServer::start(vec![
            Reply::json(302, json!({})).with_header("location", &target),
        ])
        .await;
        let ecs = client(EcsClientConfig {
            signature,
            ..config(redirecting.url())
        });
        let err = ecs
            .call(REGION, "DescribeRegions", &[])
            .await
            .expect_err("a redirect is an error");
        assert!(
            matches!(err, EcsError::Decode { status: 302, .. }),
            "{signature:?}: {err}"
        );
        assert!(!err.is_transient(), "a redirect is not retried: {err}");
        let shown = err.to_string();
        assert!(
            shown.contains("not followed") && shown.contains(&elsewhere.addr.to_string()),
            "the error names the refused target: {shown}"
        );
        assert_eq!(
            redirecting.requests().len(),
            1,
            "{signature:?}: one attempt"
        );
        assert!(
            elsewhere.requests().is_empty(),
            "{signature:?}: the redirect target received {:?}",
            elsewhere.requests()
        );
    }
}

#[tokio::test]
async fn sts_redirects_are_not_followed_and_the_oidc_token_stays_home() {
    let elsewhere = FakeServer::start(vec![]).await;
    let target = format!("{}collect?from=sts", elsewhere.url());
    let redirecting = FakeServer::start(vec![
        Reply::json(307, json!({})).with_header("location", &target),
    ])
    .await;
    let token_file = tempfile::NamedTempFile::new().expect("token file");
    let provider = rrsa_provider(&token_file, redirecting.url().as_ref());
    let err = provider
        .credentials()
        .await
        .expect_err("a redirecting STS gives no credentials");
    assert!(
        matches!(err, EcsError::Credentials(_)) && err.to_string().contains("not followed"),
        "{err}"
    );
    assert_eq!(redirecting.requests().len(), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect target received {:?}",
        elsewhere.requests()
    );
}

// ---------------------------------------------------------------------------------------------
// Size and paging limits

/// An endpoint answering 200 with a body that never ends (optionally announcing a huge
/// Content-Length); counts the bytes it managed to send.
async fn endless_body_endpoint(announce_length: bool) -> (url::Url, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let stream = futures::stream::repeat(chunk).map(move |chunk| {
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<_, Infallible>(chunk)
            });
            let mut response = axum::response::Response::new(Body::from_stream(stream));
            if announce_length {
                response.headers_mut().insert(
                    "content-length",
                    axum::http::HeaderValue::from_static("1073741824"),
                );
            }
            response
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = url::Url::parse(&format!("http://{addr}/")).expect("URL");
    (url, sent)
}

#[tokio::test]
async fn an_endless_ecs_answer_is_cut_off_at_the_limit() {
    let (endpoint, sent) = endless_body_endpoint(false).await;
    let started = Instant::now();
    let err = client(config(endpoint))
        .call(REGION, "DescribeRegions", &[])
        .await
        .expect_err("an endless body cannot be an answer");
    assert!(
        matches!(err, EcsError::Decode { status: 200, .. }) && err.to_string().contains("16 MiB"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "stopped early");
    // Once the client gave up, the server can only push what fits in socket buffers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_stop = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        after_stop,
        "the connection was closed"
    );
    assert!(
        after_stop < 3 * ECS_BODY_LIMIT,
        "the client read about the limit, not more: {after_stop} bytes sent"
    );
}

#[tokio::test]
async fn an_announced_oversized_answer_is_refused_before_reading() {
    let (endpoint, _sent) = endless_body_endpoint(true).await;
    let err = client(config(endpoint))
        .call(REGION, "DescribeRegions", &[])
        .await
        .expect_err("a 1 GiB answer is refused");
    assert!(
        matches!(err, EcsError::Decode { status: 200, .. }) && err.to_string().contains("16 MiB"),
        "{err}"
    );
}

#[tokio::test]
async fn an_endless_sts_answer_is_cut_off_at_its_smaller_limit() {
    let (endpoint, _sent) = endless_body_endpoint(false).await;
    let token_file = tempfile::NamedTempFile::new().expect("token file");
    let provider = rrsa_provider(&token_file, endpoint.as_ref());
    let err = provider
        .credentials()
        .await
        .expect_err("an endless STS answer gives no credentials");
    let shown = err.to_string();
    assert!(
        matches!(err, EcsError::Decode { .. }) && shown.contains("STS") && shown.contains("1 MiB"),
        "{shown}"
    );
}

fn images_page(image_ids: &[&str], total_count: u64) -> Reply {
    let images: Vec<Value> = image_ids
        .iter()
        .map(|id| json!({"ImageId": id, "Status": "Available"}))
        .collect();
    Reply::json(
        200,
        json!({"RequestId": "R", "TotalCount": total_count, "PageSize": 1,
               "Images": {"Image": images}}),
    )
}

#[tokio::test]
async fn a_server_that_always_promises_more_pages_is_given_up_on() {
    let replies = (0..MAX_PAGES + 10)
        .map(|n| images_page(&[&format!("m-{n}")], 1_000_000))
        .collect();
    let server = FakeServer::start(replies).await;
    let err = client(config(server.url()))
        .describe_all_images(&DescribeImagesRequest {
            region: REGION.into(),
            page_size: Some(1),
            ..Default::default()
        })
        .await
        .expect_err("an endless listing is an error");
    assert!(
        err.to_string().contains(&format!("{MAX_PAGES} pages")),
        "{err}"
    );
    assert_eq!(server.requests().len(), MAX_PAGES as usize);
}

#[tokio::test]
async fn an_empty_page_ends_a_listing_that_promised_more() {
    let server = FakeServer::start(vec![images_page(&["m-1"], 5), images_page(&[], 5)]).await;
    let images = client(config(server.url()))
        .describe_all_images(&DescribeImagesRequest {
            region: REGION.into(),
            page_size: Some(1),
            ..Default::default()
        })
        .await
        .expect("the images seen so far");
    assert_eq!(images.len(), 1);
    assert_eq!(server.requests().len(), 2, "no page after the empty one");
}

// ---------------------------------------------------------------------------------------------
// The operator: credentials never leak, Secret references stay in their namespace

/// Temporary credentials from the emulator's admin API.
struct StsKey {
    id: String,
    secret: String,
    token: String,
}

async fn sts_credentials(emulator: &Emulator) -> StsKey {
    let url = format!("{}/_emulator/sts-credentials", emulator.endpoint());
    let answer: Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({"durationSeconds": 3600}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let field = |name: &str| {
        answer["Credentials"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no Credentials.{name} in {answer}"))
            .to_string()
    };
    StsKey {
        id: field("AccessKeyId"),
        secret: field("AccessKeySecret"),
        token: field("SecurityToken"),
    }
}

async fn create_secret(client: &kube::Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {namespace}/{name}: {e}"));
}

async fn wait_stalled(api: &Api<ImageCopy>, name: &str, reason: &str) {
    wait_for(api, name, &format!("Stalled {reason}"), WAIT, |o| {
        true_reason(o, "Stalled").as_deref() == Some(reason)
    })
    .await;
}

/// How long the waits of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

/// Every form in which a secret value could show up: as is, percent-encoded once (V1 query,
/// V3 canonical query) and twice (V1 string to sign), and base64 (Secret data).
fn leak_forms(value: &str) -> Vec<String> {
    let once = sign::percent_encode(value);
    let twice = sign::percent_encode(&once);
    let base64 = base64::engine::general_purpose::STANDARD.encode(value);
    vec![value.to_string(), once, twice, base64]
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_logs_events_status_or_metrics() {
    const WRONG_SECRET: &str = "wrong-secret-Zq7+v/9=";
    let apiserver = support::apiserver();
    let kube = apiserver.client().await;
    support::install_crds(&kube).await;
    let namespace = support::fresh_namespace(&kube, "leaks").await;
    let emulator = Emulator::start(&["--copy-seconds", "1"]).await;
    let object_key = sts_credentials(&emulator).await;
    let operator_key = sts_credentials(&emulator).await;
    let operator = Operator::start_with_env(
        &apiserver.kubeconfig,
        emulator.endpoint(),
        &namespace,
        &["--stalled-retry", "2s"],
        &[
            ("RUST_LOG", "debug"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", &operator_key.id),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", &operator_key.secret),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", &operator_key.token),
        ],
    )
    .await;
    create_secret(
        &kube,
        &namespace,
        "sts",
        &[
            ("accessKeyId", &object_key.id),
            ("accessKeySecret", &object_key.secret),
            ("securityToken", &object_key.token),
        ],
    )
    .await;
    create_secret(
        &kube,
        &namespace,
        "wrong",
        &[
            ("accessKeyId", &object_key.id),
            ("accessKeySecret", WRONG_SECRET),
            ("securityToken", &object_key.token),
        ],
    )
    .await;
    let api: Api<ImageCopy> = Api::namespaced(kube.clone(), &namespace);
    for object in [
        image_copy_with(
            "with-secret",
            json!({"credentialsSecretRef": {"name": "sts"}}),
        ),
        image_copy("operator-wide"),
        image_copy_with(
            "wrong-secret",
            json!({"credentialsSecretRef": {"name": "wrong"}}),
        ),
    ] {
        api.create(&PostParams::default(), &object)
            .await
            .expect("create ImageCopy");
    }
    wait_ready(&api, "with-secret", WAIT).await;
    wait_ready(&api, "operator-wide", WAIT).await;
    wait_stalled(&api, "wrong-secret", "SignatureDoesNotMatch").await;
    let statuses = serde_json::to_string(
        &api.list(&ListParams::default())
            .await
            .expect("list ImageCopy")
            .items
            .iter()
            .map(|o| (o.metadata.name.clone(), o.status.clone()))
            .collect::<Vec<_>>(),
    )
    .expect("statuses as JSON");
    for name in ["with-secret", "operator-wide"] {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete ImageCopy");
        wait_gone(&api, name, WAIT).await;
    }
    assert!(
        emulator.count("DeleteImage").await >= 2,
        "the deletes reached ECS"
    );

    let events = serde_json::to_string(&(
        Api::<Event>::namespaced(kube.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items,
        Api::<CoreEvent>::namespaced(kube.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .expect("list core events")
            .items,
    ))
    .expect("events as JSON");
    let metrics = operator.metrics_text().await;
    let log = operator.log_text();

    // The haystacks hold what they should, so finding nothing in them means something.
    assert!(
        log.contains("DEBUG") && log.contains("ECS call succeeded"),
        "{log}"
    );
    assert!(events.contains("SignatureDoesNotMatch"), "{events}");
    assert!(statuses.contains("SignatureDoesNotMatch"), "{statuses}");
    assert!(metrics.contains("CopyImage"), "{metrics}");

    let secrets = [
        ("the Secret's accessKeySecret", object_key.secret.as_str()),
        ("the Secret's securityToken", object_key.token.as_str()),
        ("the wrong accessKeySecret", WRONG_SECRET),
        (
            "the operator's AccessKey secret",
            operator_key.secret.as_str(),
        ),
        ("the operator's security token", operator_key.token.as_str()),
    ];
    let haystacks = [
        ("operator log", log.as_str()),
        ("events", events.as_str()),
        ("status", statuses.as_str()),
        ("metrics", metrics.as_str()),
    ];
    let mut leaks = Vec::new();
    for (what, value) in secrets {
        for form in leak_forms(value) {
            for (place, text) in haystacks {
                if text.contains(&form) {
                    leaks.push(format!("{what} ({form}) in the {place}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "credentials leaked: {leaks:#?}");
}

#[tokio::test]
async fn a_secret_reference_resolves_only_in_the_objects_namespace() {
    let apiserver = support::apiserver();
    let kube = apiserver.client().await;
    support::install_crds(&kube).await;
    let namespace = support::fresh_namespace(&kube, "secret-scope").await;
    let elsewhere = support::fresh_namespace(&kube, "secret-elsewhere").await;
    let emulator = Emulator::start(&["--copy-seconds", "1"]).await;
    let _operator = Operator::start(
        &apiserver.kubeconfig,
        emulator.endpoint(),
        &namespace,
        &["--stalled-retry", "1s"],
    )
    .await;
    let valid = [("accessKeyId", "testid"), ("accessKeySecret", "testsecret")];
    create_secret(&kube, &elsewhere, "creds", &valid).await;
    let api: Api<ImageCopy> = Api::namespaced(kube.clone(), &namespace);
    api.create(
        &PostParams::default(),
        &image_copy_with("scoped", json!({"credentialsSecretRef": {"name": "creds"}})),
    )
    .await
    .expect("create ImageCopy");
    wait_stalled(&api, "scoped", "SecretNotFound").await;
    // Several retries later it is still not found, and nothing was copied with any key.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let object = api.get("scoped").await.expect("get ImageCopy");
    assert_eq!(
        true_reason(&object, "Stalled").as_deref(),
        Some("SecretNotFound"),
        "{:?}",
        object.status
    );
    assert_eq!(emulator.count("CopyImage").await, 0);

    // The same Secret in the object's own namespace is used at the next retry.
    create_secret(&kube, &namespace, "creds", &valid).await;
    wait_ready(&api, "scoped", WAIT).await;
}

/// An RRSA credentials provider (as the environment would configure it) whose STS is
/// `sts_endpoint` and whose OIDC token is written into `token_file`.
fn rrsa_provider(token_file: &tempfile::NamedTempFile, sts_endpoint: &str) -> CredentialsProvider {
    std::fs::write(token_file.path(), "oidc-token-value").expect("write token");
    let env: BTreeMap<&str, String> = [
        ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r".to_string()),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1:oidc-provider/p".to_string(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.path().display().to_string(),
        ),
        ("ALIBABA_CLOUD_STS_ENDPOINT", sts_endpoint.to_string()),
    ]
    .into();
    CredentialsProvider::from_env_map(|name| env.get(name).cloned()).expect("RRSA configuration")
}
