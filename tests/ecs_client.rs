//! The ECS client against a scripted local HTTP server: what goes on the wire, how answers and
//! errors are decoded, retries, rate limits, and RRSA credentials from a fake STS.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecs_image_operator::ecs::{
    Backoff, CallObserver, CopyImageRequest, Credentials, CredentialsProvider,
    DescribeImagesRequest, DescribeTasksRequest, EcsClient, EcsClientConfig, EcsError,
    ExportImageRequest, ImageStatus, MAX_PAGES, SignatureVersion, TaskStatus, sign,
};
use serde_json::json;
use support::{FakeServer, Recorded, Reply};

const SECRET: &str = "testsecret";

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(1),
        throttling_base: Duration::from_millis(1),
        max_delay: Duration::from_secs(5),
    }
}

fn client_for(
    server: &FakeServer,
    signature: SignatureVersion,
    credentials: Credentials,
) -> EcsClient {
    EcsClient::new(
        EcsClientConfig {
            endpoint: Some(server.url()),
            signature,
            backoff: fast_backoff(),
            timeout: Duration::from_secs(5),
            region_qps: 1000,
            ..Default::default()
        },
        CredentialsProvider::fixed(credentials),
    )
    .unwrap()
}

fn testid() -> Credentials {
    Credentials::new("testid", SECRET)
}

/// Verifies a V3 request the way the emulator does: from the decoded query, the headers the
/// Authorization header names, and the raw body.
fn verify_v3(request: &Recorded, secret: &str) {
    let authorization = request
        .header("authorization")
        .expect("Authorization header");
    let parsed = sign::parse_v3_authorization(&authorization).expect("ACS3 Authorization");
    let headers: Vec<(String, String)> = parsed
        .signed_headers
        .iter()
        .map(|name| (name.clone(), request.header(name).unwrap_or_default()))
        .collect();
    let payload_hash = sign::sha256_hex(&request.body);
    assert_eq!(
        request.header("x-acs-content-sha256"),
        Some(payload_hash.clone())
    );
    let canonical = sign::v3_canonical_request(&sign::V3Input {
        method: request.method.as_str(),
        canonical_uri: &request.path,
        query: &request.params(),
        headers: &headers,
        signed_headers: &parsed.signed_headers,
        hashed_payload: &payload_hash,
    });
    let expected = sign::v3_signature(secret, &sign::v3_string_to_sign(&canonical));
    assert_eq!(parsed.signature, expected, "V3 signature does not verify");
}

fn verify_v1(request: &Recorded, secret: &str) {
    let mut params = request.params();
    let position = params
        .iter()
        .position(|(k, _)| k == "Signature")
        .expect("Signature");
    let (_, signature) = params.remove(position);
    let expected = sign::v1_signature(
        secret,
        &sign::v1_string_to_sign(request.method.as_str(), &params),
    );
    assert_eq!(signature, expected, "V1 signature does not verify");
}

#[tokio::test]
async fn v3_requests_are_signed_exactly_as_sent() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"RequestId": "R-1", "TotalCount": 1, "PageNumber": 1, "PageSize": 100,
               "Images": {"Image": [{"ImageId": "m-1", "ImageName": "web v1", "Status": "Creating",
                 "Progress": "45%", "IsCopied": true, "Usable": false, "CreationTime": "2024-05-01T10:00:00Z",
                 "Tags": {"Tag": [{"TagKey": "imageops.dev/owner-uid", "TagValue": "uid 1"}]}}]}}),
    )])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let answer = client
        .describe_images(&DescribeImagesRequest {
            region: "cn-shanghai".into(),
            status: vec![
                ImageStatus::Creating,
                ImageStatus::Waiting,
                ImageStatus::Available,
            ],
            tags: vec![("imageops.dev/owner-uid".into(), "uid 1*~".into())],
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(answer.total_count, 1);
    let image = &answer.images[0];
    assert_eq!(image.image_id, "m-1");
    assert_eq!(image.status, ImageStatus::Creating);
    assert_eq!(image.progress_percent(), Some(45));
    assert_eq!(image.tag("imageops.dev/owner-uid"), Some("uid 1"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/");
    assert!(request.body.is_empty());
    assert_eq!(
        request.param("Status").as_deref(),
        Some("Creating,Waiting,Available")
    );
    assert_eq!(request.param("Tag.1.Value").as_deref(), Some("uid 1*~"));
    assert_eq!(request.param("RegionId").as_deref(), Some("cn-shanghai"));
    assert_eq!(
        request.header("x-acs-action").as_deref(),
        Some("DescribeImages")
    );
    assert_eq!(
        request.header("x-acs-version").as_deref(),
        Some("2014-05-26")
    );
    assert_eq!(
        request.header("accept").as_deref(),
        Some("application/json")
    );
    assert_eq!(request.header("host"), Some(server.addr.to_string()));
    assert!(
        request
            .header("x-acs-date")
            .is_some_and(|d| d.ends_with('Z'))
    );
    assert!(request.header("x-acs-security-token").is_none());
    verify_v3(request, SECRET);
}

#[tokio::test]
async fn v1_requests_with_sts_tokens_are_signed_exactly_as_sent() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"RequestId": "R", "ImageId": "m-dst"}),
    )])
    .await;
    let credentials = testid().with_security_token("sts token/+=");
    let client = client_for(&server, SignatureVersion::V1, credentials);
    let answer = client
        .copy_image(&CopyImageRequest {
            source_region: "cn-hangzhou".into(),
            image_id: "m-src".into(),
            destination_region: "cn-shanghai".into(),
            destination_image_name: Some("web-v1".into()),
            client_token: Some("uid-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(answer.image_id, "m-dst");
    let request = &server.requests()[0];
    for (key, value) in [
        ("Action", "CopyImage"),
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", "testid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SecurityToken", "sts token/+="),
        ("RegionId", "cn-hangzhou"),
        ("DestinationRegionId", "cn-shanghai"),
        ("ClientToken", "uid-1"),
    ] {
        assert_eq!(request.param(key).as_deref(), Some(value), "{key}");
    }
    verify_v1(request, SECRET);
}

#[tokio::test]
async fn v3_sends_sts_tokens_in_a_signed_header() {
    let server = FakeServer::start(vec![]).await;
    let client = client_for(
        &server,
        SignatureVersion::V3,
        testid().with_security_token("tok"),
    );
    client
        .cancel_copy_image("cn-shanghai", "m-dst")
        .await
        .unwrap();
    let request = &server.requests()[0];
    assert_eq!(
        request.header("x-acs-security-token").as_deref(),
        Some("tok")
    );
    assert!(
        request
            .header("authorization")
            .unwrap()
            .contains("x-acs-security-token")
    );
    verify_v3(request, SECRET);
}

#[tokio::test]
async fn error_bodies_keep_code_message_request_id_and_status_and_are_not_retried() {
    let server = FakeServer::start(vec![Reply::ecs_error(
        404,
        "InvalidImageId.NotFound",
        "The specified ImageId does not exist.",
    )])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let err = client
        .cancel_copy_image("cn-shanghai", "m-gone")
        .await
        .unwrap_err();
    match &err {
        EcsError::Api {
            status,
            code,
            message,
            request_id,
            details,
        } => {
            assert_eq!(*status, 404);
            assert_eq!(code, "InvalidImageId.NotFound");
            assert_eq!(message, "The specified ImageId does not exist.");
            assert_eq!(request_id, "req-InvalidImageId.NotFound");
            assert_eq!(
                details.host_id.as_deref(),
                Some("ecs.cn-hangzhou.aliyuncs.com")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "InvalidImageId.NotFound: The specified ImageId does not exist. (req-InvalidImageId.NotFound)"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "terminal errors are not retried"
    );
}

/// One observed attempt: action, region, outcome.
type Observation = (String, String, Result<(), String>);

#[derive(Default)]
struct RecordingObserver(Mutex<Vec<Observation>>);

impl CallObserver for RecordingObserver {
    fn observe(&self, action: &str, region: &str, outcome: Result<(), &str>, _elapsed: Duration) {
        self.0.lock().unwrap().push((
            action.to_string(),
            region.to_string(),
            outcome.map_err(str::to_string),
        ));
    }
}

#[tokio::test]
async fn transient_errors_are_retried_with_fresh_nonces_and_observed_per_attempt() {
    let server = FakeServer::start(vec![
        Reply::ecs_error(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
        Reply::ecs_error(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
        ),
        Reply::json(
            200,
            json!({"RequestId": "R", "TaskId": "t-1", "TaskStatus": "Processing",
                                "TaskProcess": "30%", "SupportCancel": "true"}),
        ),
    ])
    .await;
    let observer = Arc::new(RecordingObserver::default());
    let client =
        client_for(&server, SignatureVersion::V3, testid()).with_observer(observer.clone());
    let task = client
        .describe_task_attribute("cn-hangzhou", "t-1")
        .await
        .unwrap();
    assert_eq!(task.task_status, TaskStatus::Processing);
    assert_eq!(task.support_cancel, Some(true));
    assert_eq!(task.progress_percent(), Some(30));

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let nonces: HashSet<String> = requests
        .iter()
        .map(|r| r.header("x-acs-signature-nonce").unwrap())
        .collect();
    assert_eq!(nonces.len(), 3, "every attempt carries a fresh nonce");
    requests.iter().for_each(|r| verify_v3(r, SECRET));
    let seen = observer.0.lock().unwrap().clone();
    let outcomes: Vec<Result<(), String>> = seen.iter().map(|(_, _, o)| o.clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            Err("ServiceUnavailable".into()),
            Err("InternalError".into()),
            Ok(())
        ]
    );
    assert!(
        seen.iter()
            .all(|(a, r, _)| a == "DescribeTaskAttribute" && r == "cn-hangzhou")
    );
}

#[tokio::test]
async fn v1_retries_are_resigned_with_fresh_nonces() {
    let server = FakeServer::start(vec![Reply::ecs_error(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
    )])
    .await;
    let client = client_for(&server, SignatureVersion::V1, testid());
    client
        .delete_image("cn-hangzhou", "m-1", true)
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(
        requests[0].param("SignatureNonce"),
        requests[1].param("SignatureNonce")
    );
    assert_ne!(
        requests[0].param("Signature"),
        requests[1].param("Signature")
    );
    assert_eq!(requests[1].param("Force").as_deref(), Some("true"));
    requests.iter().for_each(|r| verify_v1(r, SECRET));
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let throttled =
        || Reply::ecs_error(400, "Throttling", "Request was denied due to flow control.");
    let server = FakeServer::start(vec![throttled(), throttled(), throttled(), throttled()]).await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let err = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert!(err.is_throttling(), "{err}");
    assert_eq!(server.requests().len(), 3, "default max_attempts is 3");
}

#[tokio::test]
async fn ambiguous_failures_of_non_idempotent_calls_are_not_retried() {
    let server = FakeServer::start(vec![Reply::ecs_error(500, "InternalError", "unknown")]).await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let err = client
        .export_image(&ExportImageRequest {
            region: "cn-hangzhou".into(),
            image_id: "m-1".into(),
            oss_bucket: "bucket".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InternalError"));
    assert_eq!(
        server.requests().len(),
        1,
        "ExportImage has no ClientToken: a retry could export twice"
    );
}

#[tokio::test]
async fn throttling_waits_for_retry_after_or_the_throttling_backoff() {
    let server = FakeServer::start(vec![
        Reply::ecs_error(
            429,
            "Throttling.Api",
            "Request was denied due to api flow control.",
        )
        .with_header("x-acs-retry-after", "300"),
    ])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let started = Instant::now();
    client.describe_regions("cn-hangzhou").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    let server = FakeServer::start(vec![Reply::ecs_error(400, "Throttling", "flow control")]).await;
    let client = EcsClient::new(
        EcsClientConfig {
            endpoint: Some(server.url()),
            backoff: Backoff {
                base: Duration::from_millis(1),
                throttling_base: Duration::from_millis(400),
                max_delay: Duration::from_secs(5),
            },
            ..Default::default()
        },
        CredentialsProvider::fixed(testid()),
    )
    .unwrap();
    let started = Instant::now();
    client.describe_regions("cn-hangzhou").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient_and_leak_no_secret() {
    let server = FakeServer::start(vec![
        Reply::json(200, json!({"RequestId": "late"})).after(Duration::from_secs(2)),
    ])
    .await;
    let client = EcsClient::new(
        EcsClientConfig {
            endpoint: Some(server.url()),
            timeout: Duration::from_millis(200),
            max_attempts: 1,
            ..Default::default()
        },
        CredentialsProvider::fixed(testid()),
    )
    .unwrap();
    let err = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert!(matches!(err, EcsError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());

    // A port nobody listens on: bind, note it, release it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let client = EcsClient::new(
        EcsClientConfig {
            endpoint: Some(url::Url::parse(&format!("http://{closed}")).unwrap()),
            signature: SignatureVersion::V1,
            max_attempts: 1,
            ..Default::default()
        },
        CredentialsProvider::fixed(
            Credentials::new("testid", "very-secret").with_security_token("sts-secret-token"),
        ),
    )
    .unwrap();
    let err = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert!(matches!(err, EcsError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    let shown = format!("{err} {err:?}");
    for leak in [
        "very-secret",
        "sts-secret-token",
        "Signature",
        "SecurityToken",
    ] {
        assert!(!shown.contains(leak), "{leak} in {shown}");
    }
}

#[tokio::test]
async fn describe_all_images_walks_every_page() {
    let image = |id: &str| json!({"ImageId": id, "Status": "Available"});
    let server = FakeServer::start(vec![
        Reply::json(
            200,
            json!({"RequestId": "R1", "TotalCount": 3, "PageNumber": 1, "PageSize": 2,
                                "Images": {"Image": [image("m-1"), image("m-2")]}}),
        ),
        Reply::json(
            200,
            json!({"RequestId": "R2", "TotalCount": 3, "PageNumber": 2, "PageSize": 2,
                                "Images": {"Image": [image("m-3")]}}),
        ),
    ])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let images = client
        .describe_all_images(&DescribeImagesRequest {
            region: "cn-hangzhou".into(),
            page_size: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = images.iter().map(|i| i.image_id.as_str()).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3"]);
    let pages: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.param("PageNumber"))
        .collect();
    assert_eq!(pages, [Some("1".into()), Some("2".into())]);
}

#[tokio::test]
async fn describe_all_tasks_sends_every_filter_and_walks_every_page() {
    let task = |id: &str, status: &str, finished: &str| {
        json!({"TaskId": id, "TaskAction": "ImportImage", "TaskStatus": status,
               "SupportCancel": (status == "Processing").to_string(), "ResourceId": format!("m-{id}"),
               "CreationTime": "2026-01-01T10:00Z", "FinishedTime": finished})
    };
    let server = FakeServer::start(vec![
        Reply::json(
            200,
            json!({"RequestId": "R1", "TotalCount": "3", "PageNumber": 1, "PageSize": 2,
                   "TaskSet": {"Task": [task("t-1", "Processing", ""), task("t-2", "Failed", "2026-01-01T10:05Z")]}}),
        ),
        Reply::json(
            200,
            json!({"RequestId": "R2", "TotalCount": 3, "PageNumber": 2, "PageSize": 2,
                   "TaskSet": {"Task": [task("t-3", "Finished", "2026-01-01T10:09Z")]}}),
        ),
    ])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let tasks = client
        .describe_all_tasks(&DescribeTasksRequest {
            region: "cn-hangzhou".into(),
            task_ids: vec!["t-1".into(), "t-2".into(), "t-3".into()],
            resource_ids: vec!["m-t-1".into(), "m-t-3".into()],
            task_action: Some("ImportImage".into()),
            task_status: Some("Processing".into()),
            page_size: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    /// `(TaskId, TaskStatus, SupportCancel, ResourceId, FinishedTime)`.
    type Seen<'a> = (
        &'a str,
        TaskStatus,
        Option<bool>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let seen: Vec<Seen<'_>> = tasks
        .iter()
        .map(|t| {
            (
                t.task_id.as_str(),
                t.task_status.clone(),
                t.support_cancel,
                t.resource_id.as_deref(),
                t.finished_time.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "t-1",
                TaskStatus::Processing,
                Some(true),
                Some("m-t-1"),
                Some("")
            ),
            (
                "t-2",
                TaskStatus::Failed,
                Some(false),
                Some("m-t-2"),
                Some("2026-01-01T10:05Z")
            ),
            (
                "t-3",
                TaskStatus::Finished,
                Some(false),
                Some("m-t-3"),
                Some("2026-01-01T10:09Z")
            ),
        ]
    );
    assert_eq!(tasks[0].creation_time.as_deref(), Some("2026-01-01T10:00Z"));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for (request, page) in requests.iter().zip(["1", "2"]) {
        assert_eq!(request.param("PageNumber").as_deref(), Some(page));
        assert_eq!(request.param("PageSize").as_deref(), Some("2"));
        assert_eq!(request.param("TaskIds").as_deref(), Some("t-1,t-2,t-3"));
        assert_eq!(request.param("ResourceIds.1").as_deref(), Some("m-t-1"));
        assert_eq!(request.param("ResourceIds.2").as_deref(), Some("m-t-3"));
        assert_eq!(request.param("TaskAction").as_deref(), Some("ImportImage"));
        assert_eq!(request.param("TaskStatus").as_deref(), Some("Processing"));
    }
}

#[tokio::test]
async fn describe_all_tasks_stops_at_an_empty_page_and_gives_up_on_endless_promises() {
    let promising = |id: &str| {
        Reply::json(
            200,
            json!({"RequestId": "R", "TotalCount": 1_000_000,
                   "TaskSet": {"Task": [{"TaskId": id, "TaskStatus": "Processing"}]}}),
        )
    };
    // TotalCount shrank under the walk: the empty page ends it with what was listed.
    let server = FakeServer::start(vec![
        promising("t-1"),
        Reply::json(
            200,
            json!({"RequestId": "R", "TotalCount": 1_000_000, "TaskSet": {"Task": []}}),
        ),
    ])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let request = DescribeTasksRequest {
        region: "cn-hangzhou".into(),
        ..Default::default()
    };
    let listed = client.describe_all_tasks(&request).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        server.requests()[0].param("PageSize").as_deref(),
        Some("100")
    );

    let endless = FakeServer::start(
        (0..MAX_PAGES + 5)
            .map(|n| promising(&format!("t-{n}")))
            .collect(),
    )
    .await;
    let client = client_for(&endless, SignatureVersion::V3, testid());
    let error = client.describe_all_tasks(&request).await.unwrap_err();
    assert!(
        matches!(&error, EcsError::Decode { message, .. } if message.contains("DescribeTasks")),
        "{error:?}"
    );
    assert_eq!(endless.requests().len(), MAX_PAGES as usize);
}

#[tokio::test]
async fn import_and_export_accept_old_task_id_names() {
    let server = FakeServer::start(vec![
        Reply::json(200, json!({"RequestId": "R", "RegionId": "cn-hangzhou", "ImageId": "m-imp", "ImportTaskId": "t-imp"})),
        Reply::json(200, json!({"RequestId": "R", "RegionId": "cn-hangzhou", "TaskId": "t-exp"})),
    ])
    .await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let imported = client
        .import_image(&ecs_image_operator::ecs::ImportImageRequest {
            region: "cn-hangzhou".into(),
            disk_device_mappings: vec![ecs_image_operator::ecs::DiskDeviceMapping {
                oss_bucket: "b".into(),
                oss_object: "disk.raw".into(),
                ..Default::default()
            }],
            client_token: Some("uid".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (imported.image_id.as_str(), imported.task_id.as_str()),
        ("m-imp", "t-imp")
    );
    let exported = client
        .export_image(&ExportImageRequest {
            region: "cn-hangzhou".into(),
            image_id: "m-1".into(),
            oss_bucket: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(exported.task_id, "t-exp");
}

#[tokio::test]
async fn calls_are_rate_limited_per_region() {
    let server = FakeServer::start(vec![]).await;
    let client = EcsClient::new(
        EcsClientConfig {
            endpoint: Some(server.url()),
            region_qps: 5,
            ..Default::default()
        },
        CredentialsProvider::fixed(testid()),
    )
    .unwrap();
    // Another region's quota is separate: these five pass at once.
    let started = Instant::now();
    for _ in 0..5 {
        client.cancel_task("cn-beijing", "t").await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    // Five per second with a burst of five: the 7th call waits about 400 ms.
    let started = Instant::now();
    let shared = client.with_credentials(CredentialsProvider::fixed(testid()));
    for _ in 0..7 {
        shared.cancel_task("cn-hangzhou", "t").await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_credentials_signs_with_the_other_key() {
    let server = FakeServer::start(vec![]).await;
    let client = client_for(&server, SignatureVersion::V3, testid());
    let other = client.with_credentials(CredentialsProvider::fixed(Credentials::new(
        "otherid",
        "othersecret",
    )));
    other.cancel_task("cn-hangzhou", "t-1").await.unwrap();
    let request = &server.requests()[0];
    assert!(
        request
            .header("authorization")
            .unwrap()
            .contains("Credential=otherid,")
    );
    verify_v3(request, "othersecret");
}
