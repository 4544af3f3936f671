//! The real ECS client against the real emulator, both in process: every operation and error
//! path the client offers, signed with V3 and V1, with the long-term test key and with STS
//! credentials that the client's RRSA provider obtains from the emulator's AssumeRoleWithOIDC.
//! Every scenario ends by checking that the emulator's call log equals what the client
//! observed, attempt by attempt (retries included).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecs_image_operator::ecs::{
    Backoff, CallObserver, CopyImageRequest, Credentials, CredentialsProvider,
    DescribeImagesRequest, DescribeTasksRequest, DiskDeviceMapping, EcsClient, EcsClientConfig,
    EcsError, ExportImageRequest, Image, ImageStatus, ImportImageRequest, ListTagResourcesRequest,
    MAX_PAGE_SIZE, RrsaConfig, SignatureVersion, TaskAttribute, TaskFailure, TaskStatus, sign,
};
use ecs_image_operator::emulator::{self, EmulatorConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

const SOURCE_REGION: &str = "cn-hangzhou";
const DESTINATION: &str = "cn-shanghai";
/// The image the emulator seeds by default.
const SOURCE_IMAGE: &str = "m-demo0001";
/// Long enough for several polls to see a copy or task in progress, short enough for CI.
const JOB_SECONDS: f64 = 1.5;
/// Upper bound for anything the emulator should finish within a few `JOB_SECONDS`.
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(40);
/// A region id with the right shape that Alibaba Cloud does not have.
const NO_SUCH_REGION: &str = "mars-1";

/// How the client authenticates and signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    V3,
    V1,
    /// STS credentials from RRSA, V3 signature (`x-acs-security-token` header).
    StsV3,
    /// STS credentials from RRSA, V1 signature (`SecurityToken` parameter).
    StsV1,
}

impl Mode {
    fn signature(self) -> SignatureVersion {
        match self {
            Mode::V3 | Mode::StsV3 => SignatureVersion::V3,
            Mode::V1 | Mode::StsV1 => SignatureVersion::V1,
        }
    }

    fn sts(self) -> bool {
        matches!(self, Mode::StsV3 | Mode::StsV1)
    }
}

/// Each scenario runs once per [`Mode`], as `v3::name`, `v1::name`, `sts_v3::name`, ...
macro_rules! scenario_tests {
    ($mode:expr; $($scenario:ident),+) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                super::$scenario($mode).await;
            }
        )+
    };
}

macro_rules! in_every_mode {
    ($($scenario:ident),+ $(,)?) => {
        mod v3 {
            scenario_tests!(super::Mode::V3; $($scenario),+);
        }
        mod v1 {
            scenario_tests!(super::Mode::V1; $($scenario),+);
        }
        mod sts_v3 {
            scenario_tests!(super::Mode::StsV3; $($scenario),+);
        }
        mod sts_v1 {
            scenario_tests!(super::Mode::StsV1; $($scenario),+);
        }
    };
}

in_every_mode!(
    copy_lifecycle,
    copy_idempotence_and_errors,
    cancel_and_delete,
    describe_filters_and_paging,
    import_export_and_cancel_task,
    task_failures_filters_and_paging,
    regions_and_tags,
    authentication,
    faults_and_retries,
);

// --- harness -------------------------------------------------------------------------------------

/// Every HTTP attempt the client makes, as `(action, error code or "")`.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl CallObserver for Recorder {
    fn observe(&self, action: &str, _region: &str, outcome: Result<(), &str>, _elapsed: Duration) {
        let code = outcome.err().unwrap_or_default().to_string();
        self.0
            .lock()
            .expect("recorder lock")
            .push((action.to_string(), code));
    }
}

impl Recorder {
    fn calls(&self) -> Vec<(String, String)> {
        self.0.lock().expect("recorder lock").clone()
    }

    fn count(&self, action: &str) -> usize {
        self.codes(action).len()
    }

    /// The outcome of each attempt of `action`, in order.
    fn codes(&self, action: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(a, _)| a == action)
            .map(|(_, code)| code)
            .collect()
    }
}

struct Emulator {
    url: Url,
    admin: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Emulator {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the emulator");
        let address = listener.local_addr().expect("emulator address");
        let (stop, stopped) = oneshot::channel::<()>();
        let config = EmulatorConfig {
            copy_duration: Duration::from_secs_f64(JOB_SECONDS),
            task_duration: Duration::from_secs_f64(JOB_SECONDS),
            region_concurrency: 1,
            ..EmulatorConfig::default()
        };
        tokio::spawn(async move {
            emulator::serve(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("the emulator serves until the test ends");
        });
        Emulator {
            url: Url::parse(&format!("http://{address}/")).expect("emulator URL"),
            admin: reqwest::Client::new(),
            _stop: stop,
        }
    }

    fn admin_url(&self, path: &str) -> Url {
        self.url
            .join(&format!("_emulator/{path}"))
            .expect("admin URL")
    }

    async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .admin
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin API answers");
        assert!(response.status().is_success(), "GET /_emulator/{path}");
        response.json().await.expect("admin API JSON")
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .admin
            .post(self.admin_url(path))
            .json(&body)
            .send()
            .await
            .expect("the admin API answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("admin API JSON");
        assert!(
            status.is_success(),
            "POST /_emulator/{path} {body}: {status} {answer}"
        );
        answer
    }

    async fn faults(&self, patch: Value) {
        self.admin_post("faults", patch).await;
    }

    async fn seed(&self, region: &str, image_id: &str, status: &str, tags: Value) {
        self.admin_post(
            "images",
            json!({"regionId": region, "imageId": image_id, "status": status, "tags": tags}),
        )
        .await;
    }

    /// The image as the admin API sees it (`None` once deleted or cancelled).
    async fn image(&self, image_id: &str) -> Option<Value> {
        let images = self.admin_get("images").await;
        images["images"]
            .as_array()
            .expect("admin images list")
            .iter()
            .find(|image| image["imageId"] == image_id)
            .cloned()
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(1),
        throttling_base: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
    }
}

/// One emulator, one client in `mode`, and everything needed to check the call log at the end.
struct Setup {
    mode: Mode,
    emulator: Emulator,
    credentials: CredentialsProvider,
    recorder: Arc<Recorder>,
    client: EcsClient,
    /// The projected OIDC token of STS modes; kept until the test ends.
    _oidc_token: Option<tempfile::NamedTempFile>,
}

async fn setup(mode: Mode) -> Setup {
    let emulator = Emulator::start().await;
    let (credentials, oidc_token) = if mode.sts() {
        let token = tempfile::NamedTempFile::new().expect("temporary OIDC token file");
        std::fs::write(
            token.path(),
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3BzOmltYWdlcyJ9.c2ln\n",
        )
        .expect("write the OIDC token file");
        let config = RrsaConfig::new(
            "acs:ram::1234567890123456:role/image-operator".into(),
            "acs:ram::1234567890123456:oidc-provider/ack-rrsa-roundtrip".into(),
            token.path().to_path_buf(),
            emulator.url.clone(),
        );
        let provider = CredentialsProvider::rrsa(config).expect("RRSA provider");
        let sts = provider
            .credentials()
            .await
            .expect("STS credentials from the emulator's AssumeRoleWithOIDC");
        assert!(sts.access_key_id().starts_with("STS."), "{sts:?}");
        assert!(
            sts.security_token().is_some_and(|t| t.starts_with("CAIS")),
            "STS credentials carry a security token"
        );
        (provider, Some(token))
    } else {
        let key = Credentials::new("testid", "testsecret");
        (CredentialsProvider::fixed(key), None)
    };
    let recorder = Arc::new(Recorder::default());
    let client = client(&emulator, mode, &credentials, &recorder, 3);
    Setup {
        mode,
        emulator,
        credentials,
        recorder,
        client,
        _oidc_token: oidc_token,
    }
}

fn client(
    emulator: &Emulator,
    mode: Mode,
    credentials: &CredentialsProvider,
    recorder: &Arc<Recorder>,
    max_attempts: u32,
) -> EcsClient {
    let config = EcsClientConfig {
        endpoint: Some(emulator.url.clone()),
        signature: mode.signature(),
        max_attempts,
        region_qps: 1000,
        timeout: Duration::from_secs(10),
        backoff: fast_backoff(),
        ..EcsClientConfig::default()
    };
    EcsClient::new(config, credentials.clone())
        .expect("client configuration")
        .with_observer(recorder.clone())
}

impl Setup {
    /// Another client with the same credentials and observer but its own retry budget.
    fn client_with_attempts(&self, max_attempts: u32) -> EcsClient {
        client(
            &self.emulator,
            self.mode,
            &self.credentials,
            &self.recorder,
            max_attempts,
        )
    }

    /// `region`'s image `id` in any status a copy goes through.
    async fn describe_one(&self, region: &str, id: &str) -> Option<Image> {
        let answer = self
            .client
            .describe_images(&DescribeImagesRequest {
                region: region.into(),
                image_id: Some(id.into()),
                status: followed(),
                ..Default::default()
            })
            .await
            .expect("DescribeImages of one image");
        assert!(answer.images.len() <= 1, "{answer:?}");
        answer.images.into_iter().next()
    }

    /// Polls an image until `Available`; returns every `(status, progress)` seen.
    async fn follow_image(&self, region: &str, id: &str) -> Vec<(ImageStatus, u8)> {
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            let image = self
                .describe_one(region, id)
                .await
                .unwrap_or_else(|| panic!("image {id} vanished; seen {seen:?}"));
            let progress = image.progress_percent().expect("images report Progress");
            seen.push((image.status.clone(), progress));
            if image.status == ImageStatus::Available {
                return seen;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "image {id} not Available within {DEADLINE:?}: {seen:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn task(&self, id: &str) -> TaskAttribute {
        self.client
            .describe_task_attribute(SOURCE_REGION, id)
            .await
            .expect("DescribeTaskAttribute")
    }

    /// Polls a task until `Finished`; returns every `(status, progress)` seen.
    async fn follow_task(&self, id: &str) -> Vec<(TaskStatus, u8)> {
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            let task = self.task(id).await;
            let progress = task.progress_percent().expect("tasks report TaskProcess");
            seen.push((task.task_status.clone(), progress));
            if task.task_status == TaskStatus::Finished {
                return seen;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "task {id} not Finished within {DEADLINE:?}: {seen:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The emulator's call log must be exactly the client's attempts, in order, and its
    /// counts must agree; STS modes add the single (cached) AssumeRoleWithOIDC.
    async fn finish(self) {
        let log = self.emulator.admin_get("calls").await;
        let mut sts_calls = 0;
        let mut emulated = Vec::new();
        for call in log["calls"].as_array().expect("calls list") {
            let action = call["action"].as_str().expect("call action").to_string();
            let code = call["code"].as_str().expect("call code").to_string();
            if action == "AssumeRoleWithOIDC" {
                assert_eq!(code, "", "AssumeRoleWithOIDC succeeded");
                sts_calls += 1;
            } else {
                emulated.push((action, code));
            }
        }
        let observed = self.recorder.calls();
        assert_eq!(
            emulated, observed,
            "{:?}: the emulator's call log differs from the client's attempts",
            self.mode
        );
        assert_eq!(
            sts_calls,
            usize::from(self.mode.sts()),
            "STS credentials are fetched once and cached"
        );
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for (action, _) in &observed {
            *expected.entry(action.clone()).or_default() += 1;
        }
        if self.mode.sts() {
            expected.insert("AssumeRoleWithOIDC".into(), 1);
        }
        let counts: BTreeMap<String, u64> =
            serde_json::from_value(log["counts"].clone()).expect("counts by action");
        assert_eq!(counts, expected, "{:?}: admin call counts", self.mode);
    }
}

/// Statuses the operator follows copies through.
fn followed() -> Vec<ImageStatus> {
    vec![
        ImageStatus::Creating,
        ImageStatus::Waiting,
        ImageStatus::Available,
    ]
}

fn copy_request() -> CopyImageRequest {
    CopyImageRequest {
        source_region: SOURCE_REGION.into(),
        image_id: SOURCE_IMAGE.into(),
        destination_region: DESTINATION.into(),
        ..Default::default()
    }
}

fn named_copy(name: &str) -> CopyImageRequest {
    CopyImageRequest {
        destination_image_name: Some(name.into()),
        ..copy_request()
    }
}

fn pairs(tags: &[(&str, &str)]) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A refusal with ECS's code and HTTP status, `Code: Message (RequestId)`, not worth retrying.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, EcsError>, code: &str, status: u16) -> EcsError {
    let error = match result {
        Ok(value) => panic!("expected {code} ({status}), got {value:?}"),
        Err(error) => error,
    };
    assert_eq!(error.code(), Some(code), "{error}");
    assert_eq!(error.status(), Some(status), "{error}");
    let request_id = error.request_id().expect("ECS errors carry a RequestId");
    assert!(!request_id.is_empty(), "{error}");
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{code}: ")) && shown.ends_with(&format!("({request_id})")),
        "{shown}"
    );
    assert!(!error.is_transient(), "{code} is terminal: {error}");
    error
}

/// `(status, progress)` samples only ever move forward, `rank` ordering the statuses.
fn assert_forward<S: std::fmt::Debug>(seen: &[(S, u8)], rank: impl Fn(&S) -> u8) {
    assert!(
        seen.windows(2)
            .all(|w| rank(&w[0].0) <= rank(&w[1].0) && w[0].1 <= w[1].1),
        "status and progress only move forward: {seen:?}"
    );
}

fn image_ids(images: &[Image]) -> BTreeSet<String> {
    images.iter().map(|i| i.image_id.clone()).collect()
}

// --- scenarios -----------------------------------------------------------------------------------

/// CopyImage → Waiting (queued) → Creating with rising progress → Available, usable, 100%.
async fn copy_lifecycle(mode: Mode) {
    let s = setup(mode).await;
    let first = s
        .client
        .copy_image(&CopyImageRequest {
            destination_description: Some("copied by the round-trip test".into()),
            tags: pairs(&[("team", "images"), ("stage", "")]),
            ..named_copy("first-copy")
        })
        .await
        .expect("CopyImage starts a copy");
    assert!(
        first.image_id.starts_with("m-") && first.image_id != SOURCE_IMAGE,
        "{first:?}"
    );
    assert!(!first.request_id.is_empty());
    let second = s
        .client
        .copy_image(&copy_request())
        .await
        .expect("a second CopyImage queues behind the first");
    assert_ne!(first.image_id, second.image_id);

    let only_available = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: DESTINATION.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeImages with the default Status");
    assert_eq!(
        only_available.total_count, 0,
        "without Status, copies in flight are hidden: {only_available:?}"
    );

    let listed = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: DESTINATION.into(),
            status: followed(),
            page_size: Some(MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await
        .expect("DescribeImages with explicit statuses");
    assert_eq!(listed.total_count, 2, "{listed:?}");
    let running = listed
        .images
        .iter()
        .find(|i| i.image_id == first.image_id)
        .expect("the first copy is listed");
    assert_eq!(running.status, ImageStatus::Creating);
    assert_eq!(running.image_name, "first-copy");
    assert_eq!(running.description, "copied by the round-trip test");
    assert_eq!(running.tag("team"), Some("images"));
    assert_eq!(running.tag("stage"), Some(""));
    assert_eq!(running.is_copied, Some(true));
    assert_eq!(running.usable, Some(false));
    let queued = listed
        .images
        .iter()
        .find(|i| i.image_id == second.image_id)
        .expect("the second copy is listed");
    assert_eq!(queued.status, ImageStatus::Waiting);
    assert_eq!(queued.progress_percent(), Some(0));
    assert_eq!(
        queued.image_name, SOURCE_IMAGE,
        "without a name a copy keeps the source's"
    );

    let seen = s.follow_image(DESTINATION, &second.image_id).await;
    assert_eq!(seen[0], (ImageStatus::Waiting, 0), "{seen:?}");
    assert_forward(&seen, |status| match status {
        ImageStatus::Waiting => 0,
        ImageStatus::Creating => 1,
        ImageStatus::Available => 2,
        other => panic!("unexpected status {other} in {seen:?}"),
    });
    let creating: BTreeSet<u8> = seen
        .iter()
        .filter(|(status, _)| *status == ImageStatus::Creating)
        .map(|(_, progress)| *progress)
        .collect();
    assert!(
        creating.len() >= 2 && creating.iter().all(|p| *p < 100),
        "Creating shows progress rising below 100%: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&(ImageStatus::Available, 100)));

    let done = s
        .describe_one(DESTINATION, &second.image_id)
        .await
        .expect("the finished copy is listed");
    assert_eq!(done.progress.as_deref(), Some("100%"));
    assert_eq!(done.usable, Some(true));
    assert_eq!(done.is_copied, Some(true));

    let now_available = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: DESTINATION.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeImages with the default Status");
    assert_eq!(
        image_ids(&now_available.images),
        BTreeSet::from([first.image_id.clone(), second.image_id.clone()])
    );
    let source = s
        .describe_one(SOURCE_REGION, SOURCE_IMAGE)
        .await
        .expect("the source image is untouched");
    assert_eq!(source.status, ImageStatus::Available);
    assert_eq!(source.is_copied, Some(false));
    s.finish().await;
}

/// ClientToken idempotence and every documented CopyImage refusal the emulator simulates.
async fn copy_idempotence_and_errors(mode: Mode) {
    let s = setup(mode).await;
    let with_token = CopyImageRequest {
        client_token: Some("roundtrip-token-1".into()),
        ..named_copy("idempotent-copy")
    };
    let first = s
        .client
        .copy_image(&with_token)
        .await
        .expect("CopyImage with a ClientToken");
    let again = s
        .client
        .copy_image(&with_token)
        .await
        .expect("the same CopyImage again");
    assert_eq!(
        again.image_id, first.image_id,
        "same token, same parameters → same image"
    );
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                destination_image_name: Some("other-name".into()),
                ..with_token.clone()
            })
            .await,
        "IdempotentParameterMismatch",
        400,
    );
    let other = s
        .client
        .copy_image(&CopyImageRequest {
            client_token: Some("roundtrip-token-2".into()),
            ..named_copy("second-copy")
        })
        .await
        .expect("CopyImage with another token");
    assert_ne!(other.image_id, first.image_id);
    let copies = s.emulator.admin_get("images").await["images"]
        .as_array()
        .expect("admin images list")
        .iter()
        .filter(|image| image["sourceImageId"] == SOURCE_IMAGE)
        .count();
    assert_eq!(copies, 2, "a repeated token creates no second image");

    // The second copy waits behind the first, so it is not Available: it cannot be copied.
    let error = refused(
        s.client
            .copy_image(&CopyImageRequest {
                source_region: DESTINATION.into(),
                image_id: other.image_id.clone(),
                destination_region: SOURCE_REGION.into(),
                ..Default::default()
            })
            .await,
        "IncorrectImageStatus",
        400,
    );
    assert!(
        error.to_string().contains("The image not available."),
        "{error}"
    );
    s.emulator
        .seed(SOURCE_REGION, "m-unavailable01", "UnAvailable", json!({}))
        .await;
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                image_id: "m-unavailable01".into(),
                ..copy_request()
            })
            .await,
        "IncorrectImageStatus",
        400,
    );
    let error = refused(
        s.client
            .copy_image(&CopyImageRequest {
                image_id: "m-doesnotexist".into(),
                ..copy_request()
            })
            .await,
        "InvalidImageId.NotFound",
        404,
    );
    assert!(
        error
            .to_string()
            .contains("The specified ImageId does not exist."),
        "{error}"
    );
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                destination_region: SOURCE_REGION.into(),
                ..copy_request()
            })
            .await,
        "IncorrectDestinationRegion",
        403,
    );
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                destination_region: NO_SUCH_REGION.into(),
                ..copy_request()
            })
            .await,
        "DestinationRegion.NotFound",
        400,
    );
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                source_region: NO_SUCH_REGION.into(),
                ..copy_request()
            })
            .await,
        "SourceRegion.NotFound",
        400,
    );
    refused(
        s.client.copy_image(&named_copy("idempotent-copy")).await,
        "InvalidImageName.Duplicated",
        400,
    );
    refused(
        s.client
            .copy_image(&named_copy("1-starts-with-a-digit"))
            .await,
        "InvalidImageName.Malformed",
        400,
    );
    refused(
        s.client
            .copy_image(&CopyImageRequest {
                kms_key_id: Some("0e478b7a-4262-4802-b8cb-00d3fb40826f".into()),
                ..copy_request()
            })
            .await,
        "InvalidParameter.EncryptedIllegal",
        400,
    );
    s.finish().await;
}

/// CancelCopyImage while Waiting and while Creating, and each refusal; DeleteImage.
async fn cancel_and_delete(mode: Mode) {
    let s = setup(mode).await;
    let running = s
        .client
        .copy_image(&named_copy("cancel-running"))
        .await
        .expect("CopyImage")
        .image_id;
    let waiting = s
        .client
        .copy_image(&named_copy("cancel-waiting"))
        .await
        .expect("CopyImage")
        .image_id;
    let queued = s
        .describe_one(DESTINATION, &waiting)
        .await
        .expect("the queued copy is listed");
    assert_eq!(queued.status, ImageStatus::Waiting);
    s.client
        .cancel_copy_image(DESTINATION, &waiting)
        .await
        .expect("CancelCopyImage of a Waiting copy");
    assert!(s.describe_one(DESTINATION, &waiting).await.is_none());
    assert!(s.emulator.image(&waiting).await.is_none());

    let creating = s
        .describe_one(DESTINATION, &running)
        .await
        .expect("the running copy is listed");
    assert_eq!(creating.status, ImageStatus::Creating);
    let copying = s.client.delete_image(DESTINATION, &running, false).await;
    let copying = copying.expect_err("an image being copied cannot be deleted");
    assert_eq!(copying.code(), Some("OperationDenied.ImageCopying"));
    assert_eq!(copying.status(), Some(403));
    assert!(
        copying.is_transient(),
        "ECS says to try again later: {copying}"
    );
    s.emulator.faults(json!({"cancelNotSupported": true})).await;
    refused(
        s.client.cancel_copy_image(DESTINATION, &running).await,
        "CancelNotSupported",
        400,
    );
    assert!(
        s.describe_one(DESTINATION, &running).await.is_some(),
        "a refused cancel leaves the copy running"
    );
    s.emulator
        .faults(json!({"cancelNotSupported": false}))
        .await;
    s.client
        .cancel_copy_image(DESTINATION, &running)
        .await
        .expect("CancelCopyImage of a Creating copy");
    assert!(s.describe_one(DESTINATION, &running).await.is_none());
    assert!(s.emulator.image(&running).await.is_none());
    refused(
        s.client.cancel_copy_image(DESTINATION, &running).await,
        "InvalidImageId.NotFound",
        404,
    );
    refused(
        s.client
            .cancel_copy_image(DESTINATION, "m-neverexisted")
            .await,
        "InvalidImageId.NotFound",
        404,
    );
    refused(
        s.client
            .cancel_copy_image(SOURCE_REGION, SOURCE_IMAGE)
            .await,
        "ImageCreatedNotFromCopy",
        400,
    );
    refused(
        s.client
            .cancel_copy_image(NO_SUCH_REGION, SOURCE_IMAGE)
            .await,
        "InvalidRegionId.NotFound",
        404,
    );

    let finished = s
        .client
        .copy_image(&named_copy("finished-copy"))
        .await
        .expect("CopyImage")
        .image_id;
    s.follow_image(DESTINATION, &finished).await;
    let error = refused(
        s.client.cancel_copy_image(DESTINATION, &finished).await,
        "IncorrectImageStatus",
        400,
    );
    assert!(error.to_string().contains("copied finished"), "{error}");
    s.client
        .delete_image(DESTINATION, &finished, false)
        .await
        .expect("DeleteImage of a finished copy");
    assert!(s.emulator.image(&finished).await.is_none());
    s.client
        .delete_image(DESTINATION, &finished, true)
        .await
        .expect("DeleteImage of an image that is gone is ignored");
    refused(
        s.client
            .delete_image(NO_SUCH_REGION, &finished, false)
            .await,
        "InvalidRegionId.NotFound",
        404,
    );
    assert!(
        s.emulator.image(SOURCE_IMAGE).await.is_some(),
        "cancelling and deleting copies leaves the source alone"
    );
    s.finish().await;
}

/// DescribeImages filters (tags exact and key-only, id, name) and paging past 100 images.
async fn describe_filters_and_paging(mode: Mode) {
    const REGION: &str = "cn-beijing";
    const SEEDED: usize = 230;
    let s = setup(mode).await;
    for n in 0..SEEDED {
        let team = if n % 3 == 0 { "red" } else { "blue" };
        s.emulator
            .seed(
                REGION,
                &format!("m-page{n:04}"),
                "Available",
                json!({"batch": "paging", "team": team}),
            )
            .await;
    }
    for n in 0..5 {
        s.emulator
            .seed(REGION, &format!("m-untagged{n}"), "Available", json!({}))
            .await;
    }
    let seeded: BTreeSet<String> = (0..SEEDED).map(|n| format!("m-page{n:04}")).collect();
    let by_tags = |tags: &[(&str, &str)]| DescribeImagesRequest {
        region: REGION.into(),
        tags: pairs(tags),
        ..Default::default()
    };

    let before = s.recorder.count("DescribeImages");
    let all = s
        .client
        .describe_all_images(&by_tags(&[("batch", "paging")]))
        .await
        .expect("every page of the batch");
    assert_eq!(all.len(), SEEDED);
    assert_eq!(image_ids(&all), seeded, "each image exactly once");
    assert_eq!(
        s.recorder.count("DescribeImages") - before,
        3,
        "230 images in pages of 100"
    );
    let before = s.recorder.count("DescribeImages");
    let small_pages = s
        .client
        .describe_all_images(&DescribeImagesRequest {
            page_size: Some(40),
            ..by_tags(&[("batch", "paging")])
        })
        .await
        .expect("every page of 40");
    assert_eq!(image_ids(&small_pages), seeded);
    assert_eq!(s.recorder.count("DescribeImages") - before, 6);

    let third_page = s
        .client
        .describe_images(&DescribeImagesRequest {
            page_number: Some(3),
            page_size: Some(MAX_PAGE_SIZE),
            ..by_tags(&[("batch", "paging")])
        })
        .await
        .expect("the third page");
    assert_eq!(
        (
            third_page.total_count,
            third_page.page_number,
            third_page.page_size
        ),
        (SEEDED as u64, 3, 100)
    );
    assert_eq!(third_page.images.len(), SEEDED - 200);

    let red = s
        .client
        .describe_all_images(&by_tags(&[("team", "red")]))
        .await
        .expect("exact tag filter");
    assert_eq!(red.len(), SEEDED.div_ceil(3));
    assert!(red.iter().all(|i| i.tag("team") == Some("red")), "{red:?}");
    let any_team = s
        .client
        .describe_all_images(&by_tags(&[("team", "")]))
        .await
        .expect("key-only tag filter");
    assert_eq!(image_ids(&any_team), seeded, "key-only matches every value");
    let both = s
        .client
        .describe_all_images(&by_tags(&[("batch", "paging"), ("team", "red")]))
        .await
        .expect("two tag filters");
    assert_eq!(
        image_ids(&both),
        image_ids(&red),
        "tag filters combine with AND"
    );
    let none = s
        .client
        .describe_images(&by_tags(&[("team", "green")]))
        .await
        .expect("a tag value nobody has");
    assert_eq!((none.total_count, none.images.len()), (0, 0));
    let everything = s
        .client
        .describe_all_images(&by_tags(&[]))
        .await
        .expect("the whole region");
    assert_eq!(everything.len(), SEEDED + 5);

    let one = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: REGION.into(),
            image_id: Some("m-page0007".into()),
            ..Default::default()
        })
        .await
        .expect("DescribeImages by id");
    assert_eq!(
        image_ids(&one.images),
        BTreeSet::from(["m-page0007".into()])
    );
    assert_eq!(one.images[0].tag("batch"), Some("paging"));
    let named = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: REGION.into(),
            image_name: Some("m-page000".into()),
            page_size: Some(MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await
        .expect("DescribeImages by name (fuzzy)");
    assert_eq!(named.total_count, 10, "m-page0000 … m-page0009");
    s.finish().await;
}

/// ImportImage and ExportImage tasks: DescribeTasks / DescribeTaskAttribute progress, and
/// CancelTask with each of its documented refusals.
async fn import_export_and_cancel_task(mode: Mode) {
    let s = setup(mode).await;
    let import = |name: &str| ImportImageRequest {
        region: SOURCE_REGION.into(),
        image_name: Some(name.into()),
        os_type: Some("linux".into()),
        architecture: Some("x86_64".into()),
        disk_device_mappings: vec![DiskDeviceMapping {
            oss_bucket: "images-bucket".into(),
            oss_object: format!("disks/{name}.qcow2"),
            format: Some("QCOW2".into()),
            disk_image_size: Some(20),
        }],
        tags: pairs(&[("origin", "import")]),
        ..Default::default()
    };
    let first = s
        .client
        .import_image(&import("imported-one"))
        .await
        .expect("ImportImage");
    assert!(first.task_id.starts_with("t-"), "{first:?}");
    assert!(first.image_id.starts_with("m-"), "{first:?}");
    let second = s
        .client
        .import_image(&import("imported-two"))
        .await
        .expect("a second ImportImage queues");

    let listed = s
        .client
        .describe_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            task_ids: vec![first.task_id.clone(), second.task_id.clone()],
            ..Default::default()
        })
        .await
        .expect("DescribeTasks by id");
    assert_eq!(listed.total_count, 2, "{listed:?}");
    let status_of = |id: &str| {
        listed.tasks.iter().find(|t| t.task_id == id).map(|t| {
            (
                t.task_status.clone(),
                t.task_action.clone(),
                t.support_cancel,
            )
        })
    };
    assert_eq!(
        status_of(&first.task_id),
        Some((TaskStatus::Processing, "ImportImage".into(), Some(true)))
    );
    assert_eq!(
        status_of(&second.task_id),
        Some((TaskStatus::Waiting, "ImportImage".into(), Some(true)))
    );
    let processing = s
        .client
        .describe_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            task_action: Some("ImportImage".into()),
            task_status: Some("Processing".into()),
            ..Default::default()
        })
        .await
        .expect("DescribeTasks by action and status");
    assert_eq!(
        processing
            .tasks
            .iter()
            .map(|t| t.task_id.clone())
            .collect::<Vec<_>>(),
        vec![first.task_id.clone()]
    );
    let importing = s
        .describe_one(SOURCE_REGION, &first.image_id)
        .await
        .expect("the image being imported is listed");
    assert_eq!(importing.status, ImageStatus::Creating);
    refused(
        s.client
            .delete_image(SOURCE_REGION, &second.image_id, false)
            .await,
        "ImageIsImporting",
        403,
    );

    let seen = s.follow_task(&first.task_id).await;
    assert_forward(&seen, |status| match status {
        TaskStatus::Waiting => 0,
        TaskStatus::Processing => 1,
        TaskStatus::Finished => 2,
        other => panic!("unexpected task status {other} in {seen:?}"),
    });
    let processing: BTreeSet<u8> = seen
        .iter()
        .filter(|(status, _)| *status == TaskStatus::Processing)
        .map(|(_, progress)| *progress)
        .collect();
    assert!(
        processing.len() >= 2 && processing.iter().all(|p| *p < 100),
        "Processing shows progress rising below 100%: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&(TaskStatus::Finished, 100)));
    let finished = s.task(&first.task_id).await;
    assert_eq!(finished.task_action, "ImportImage");
    assert_eq!(finished.support_cancel, Some(false));
    assert!(finished.finished_time.is_some_and(|t| !t.is_empty()));
    let imported = s
        .describe_one(SOURCE_REGION, &first.image_id)
        .await
        .expect("the imported image is listed");
    assert_eq!(imported.status, ImageStatus::Available);
    assert_eq!(imported.image_name, "imported-one");
    assert_eq!(imported.tag("origin"), Some("import"));
    refused(
        s.client.cancel_task(SOURCE_REGION, &first.task_id).await,
        "InvalidTaskId.IncorrectTaskStatus",
        403,
    );

    // The second import runs now; cancelling it removes the image it was creating.
    s.client
        .cancel_task(SOURCE_REGION, &second.task_id)
        .await
        .expect("CancelTask of a running import");
    assert_eq!(
        s.task(&second.task_id).await.task_status,
        TaskStatus::Deleted
    );
    assert!(
        s.describe_one(SOURCE_REGION, &second.image_id)
            .await
            .is_none()
    );
    refused(
        s.client.cancel_task(SOURCE_REGION, &second.task_id).await,
        "InvalidTaskId.IncorrectTaskStatus",
        403,
    );

    let export = ExportImageRequest {
        region: SOURCE_REGION.into(),
        image_id: SOURCE_IMAGE.into(),
        oss_bucket: "exports".into(),
        oss_prefix: Some("rt".into()),
        image_format: Some("qcow2".into()),
        ..Default::default()
    };
    let exported = s
        .client
        .export_image(&export)
        .await
        .expect("ExportImage")
        .task_id;
    let task = s.task(&exported).await;
    assert_eq!(task.task_action, "ExportImage");
    assert_eq!(task.task_status, TaskStatus::Processing);
    let related: BTreeMap<String, String> = task
        .operation_progress
        .iter()
        .flat_map(|op| &op.related_items)
        .map(|item| (item.name.clone(), item.value.clone()))
        .collect();
    assert_eq!(related["OSSBucket"], "exports");
    assert_eq!(related["ImageFormat"], "qcow2");
    assert!(
        related["OSSObject"].starts_with("rt_m-demo0001_"),
        "{related:?}"
    );
    refused(
        s.client.export_image(&export).await,
        "ImageIsExporting",
        403,
    );
    refused(
        s.client
            .delete_image(SOURCE_REGION, SOURCE_IMAGE, false)
            .await,
        "ImageIsExporting",
        403,
    );
    s.emulator.faults(json!({"cancelTaskFailed": true})).await;
    refused(
        s.client.cancel_task(SOURCE_REGION, &exported).await,
        "CancelTaskFailed",
        403,
    );
    s.emulator.faults(json!({"cancelTaskFailed": false})).await;
    s.client
        .cancel_task(SOURCE_REGION, &exported)
        .await
        .expect("CancelTask of a running export");
    assert_eq!(s.task(&exported).await.task_status, TaskStatus::Deleted);

    refused(
        s.client.cancel_task(SOURCE_REGION, "t-doesnotexist").await,
        "InvalidTaskId.NotFound",
        400,
    );
    refused(
        s.client
            .describe_task_attribute(SOURCE_REGION, "t-doesnotexist")
            .await,
        "InvalidTaskId.NotFound",
        400,
    );
    // CancelTask documents InvalidRegionId.NotFound as 400, the other operations as 404.
    refused(
        s.client.cancel_task(NO_SUCH_REGION, &exported).await,
        "InvalidRegionId.NotFound",
        400,
    );
    refused(
        s.client
            .describe_tasks(&DescribeTasksRequest {
                region: NO_SUCH_REGION.into(),
                ..Default::default()
            })
            .await,
        "InvalidRegionId.NotFound",
        404,
    );
    refused(
        s.client
            .export_image(&ExportImageRequest {
                image_id: "m-doesnotexist".into(),
                ..export.clone()
            })
            .await,
        "InvalidImageId.NotFound",
        404,
    );
    refused(
        s.client
            .import_image(&ImportImageRequest {
                disk_device_mappings: Vec::new(),
                ..import("no-disks")
            })
            .await,
        "MissingParameter",
        400,
    );
    let everything = s
        .client
        .describe_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            page_size: Some(MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await
        .expect("DescribeTasks of the region");
    assert_eq!(everything.total_count, 3);
    s.finish().await;
}

/// A failing import as the client sees it (status, progress, the reason, its CreateFailed
/// image), DescribeTasks filters and paging through `describe_all_tasks`, and CancelTask of a
/// task kind it does not cancel.
async fn task_failures_filters_and_paging(mode: Mode) {
    let s = setup(mode).await;
    s.emulator
        .faults(json!({"failTasks": [{"action": "ImportImage", "count": 1}]}))
        .await;
    let import = ImportImageRequest {
        region: SOURCE_REGION.into(),
        disk_device_mappings: vec![DiskDeviceMapping {
            oss_bucket: "images-bucket".into(),
            oss_object: "disks/missing.raw".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let failing = s.client.import_image(&import).await.expect("ImportImage");
    let healthy = s.client.import_image(&import).await.expect("ImportImage");
    let by_resource = s
        .client
        .describe_all_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            resource_ids: vec![failing.image_id.clone()],
            ..Default::default()
        })
        .await
        .expect("DescribeTasks by resource");
    assert_eq!(by_resource.len(), 1, "{by_resource:?}");
    assert_eq!(by_resource[0].task_id, failing.task_id);
    assert_eq!(
        by_resource[0].resource_id.as_deref(),
        Some(failing.image_id.as_str())
    );

    let started = Instant::now();
    let failed = loop {
        let task = s.task(&failing.task_id).await;
        if task.task_status.is_final() {
            break task;
        }
        assert_eq!(task.failure(), None, "no reason before it fails");
        assert!(started.elapsed() < DEADLINE, "{task:?}");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(failed.task_status, TaskStatus::Failed);
    assert_eq!(failed.progress_percent(), Some(50));
    assert_eq!(failed.failed_count, 1);
    assert_eq!(failed.support_cancel, Some(false));
    let failure = failed.failure().expect("a failed task says why");
    assert_eq!(failure.code, "ImportImage.OssObjectNotFound");
    assert!(!failure.message.is_empty(), "{failure:?}");
    let left = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: SOURCE_REGION.into(),
            image_id: Some(failing.image_id.clone()),
            status: vec![ImageStatus::CreateFailed],
            ..Default::default()
        })
        .await
        .expect("DescribeImages of the failed import's image");
    assert_eq!(
        left.images
            .iter()
            .map(|i| (i.image_id.as_str(), &i.status))
            .collect::<Vec<_>>(),
        [(failing.image_id.as_str(), &ImageStatus::CreateFailed)],
        "a failed import leaves its image CreateFailed"
    );
    s.client
        .delete_image(SOURCE_REGION, &failing.image_id, false)
        .await
        .expect("DeleteImage of a failed import's image");
    let failed_tasks = s
        .client
        .describe_all_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            task_status: Some("Failed".into()),
            ..Default::default()
        })
        .await
        .expect("DescribeTasks by status");
    assert_eq!(
        failed_tasks
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>(),
        [failing.task_id.as_str()]
    );

    let redeploy = s
        .emulator
        .admin_post(
            "tasks",
            json!({"regionId": SOURCE_REGION, "taskAction": "RedeployInstance"}),
        )
        .await;
    let redeploy = redeploy["taskId"].as_str().expect("seeded task id");
    refused(
        s.client.cancel_task(SOURCE_REGION, redeploy).await,
        "InvalidTaskId.TaskActionNotSupport",
        403,
    );
    // One task per page: describe_all_tasks walks all three pages.
    let all = s
        .client
        .describe_all_tasks(&DescribeTasksRequest {
            region: SOURCE_REGION.into(),
            page_size: Some(1),
            ..Default::default()
        })
        .await
        .expect("every task, page by page");
    let ids: BTreeSet<&str> = all.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([failing.task_id.as_str(), healthy.task_id.as_str(), redeploy])
    );
    assert_eq!(s.recorder.count("DescribeTasks"), 5, "1 + 1 + 3 pages");

    s.follow_task(&healthy.task_id).await;
    assert_eq!(
        s.task(&healthy.task_id).await.failure(),
        None::<TaskFailure>
    );
    s.finish().await;
}

/// DescribeRegions, an unknown region, TagResources and ListTagResources with paging.
async fn regions_and_tags(mode: Mode) {
    const REGION: &str = "cn-shenzhen";
    let s = setup(mode).await;
    let regions = s
        .client
        .describe_regions(SOURCE_REGION)
        .await
        .expect("DescribeRegions");
    let ids: BTreeSet<&str> = regions.iter().map(|r| r.region_id.as_str()).collect();
    for real in [
        SOURCE_REGION,
        DESTINATION,
        "cn-beijing",
        "ap-southeast-1",
        "eu-central-1",
    ] {
        assert!(ids.contains(real), "{real} missing from {ids:?}");
    }
    assert!(!ids.contains(NO_SUCH_REGION));
    let hangzhou = regions
        .iter()
        .find(|r| r.region_id == SOURCE_REGION)
        .expect("cn-hangzhou is listed");
    assert_eq!(
        hangzhou.region_endpoint.as_deref(),
        Some("ecs.cn-hangzhou.aliyuncs.com")
    );
    assert_eq!(hangzhou.local_name.as_deref(), Some("China (Hangzhou)"));
    assert_eq!(hangzhou.status.as_deref(), Some("available"));
    refused(
        s.client
            .describe_images(&DescribeImagesRequest {
                region: NO_SUCH_REGION.into(),
                ..Default::default()
            })
            .await,
        "InvalidRegionId.NotFound",
        404,
    );

    for id in ["m-tag1", "m-tag2", "m-tag3"] {
        s.emulator.seed(REGION, id, "Available", json!({})).await;
    }
    s.client
        .tag_resources(
            REGION,
            "image",
            &strings(&["m-tag1", "m-tag2"]),
            &pairs(&[("env", "prod"), ("owner", "")]),
        )
        .await
        .expect("TagResources");
    s.client
        .tag_resources(
            REGION,
            "image",
            &strings(&["m-tag2"]),
            &pairs(&[("env", "staging")]),
        )
        .await
        .expect("TagResources overwrites a value");
    let listed = s
        .client
        .list_tag_resources(&ListTagResourcesRequest {
            region: REGION.into(),
            resource_type: "image".into(),
            resource_ids: strings(&["m-tag1", "m-tag2", "m-tag3"]),
            ..Default::default()
        })
        .await
        .expect("ListTagResources by resource");
    let entries: BTreeSet<(String, String, String)> = listed
        .tag_resources
        .iter()
        .map(|t| {
            (
                t.resource_id.clone(),
                t.tag_key.clone(),
                t.tag_value.clone(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("m-tag1", "env", "prod"),
        ("m-tag1", "owner", ""),
        ("m-tag2", "env", "staging"),
        ("m-tag2", "owner", ""),
    ]
    .iter()
    .map(|(r, k, v)| (r.to_string(), k.to_string(), v.to_string()))
    .collect();
    assert_eq!(entries, expected);
    assert!(
        listed
            .tag_resources
            .iter()
            .all(|t| t.resource_type == "image")
    );
    assert_eq!(listed.next_token, None);
    let prod = s
        .client
        .list_tag_resources(&ListTagResourcesRequest {
            region: REGION.into(),
            resource_type: "image".into(),
            tags: pairs(&[("env", "prod")]),
            ..Default::default()
        })
        .await
        .expect("ListTagResources by tag");
    assert!(
        !prod.tag_resources.is_empty()
            && prod.tag_resources.iter().all(|t| t.resource_id == "m-tag1"),
        "{prod:?}"
    );
    let staging = s
        .client
        .describe_images(&DescribeImagesRequest {
            region: REGION.into(),
            tags: pairs(&[("env", "staging")]),
            ..Default::default()
        })
        .await
        .expect("DescribeImages by a tag set with TagResources");
    assert_eq!(
        image_ids(&staging.images),
        BTreeSet::from(["m-tag2".into()])
    );

    let tag_one = |ids: Vec<String>, tags: Vec<(String, String)>, kind: &'static str| {
        let client = s.client.clone();
        async move { client.tag_resources(REGION, kind, &ids, &tags).await }
    };
    let env_prod = pairs(&[("env", "prod")]);
    refused(
        tag_one(strings(&["m-nothere"]), env_prod.clone(), "image").await,
        "InvalidResourceId.NotFound",
        404,
    );
    refused(
        tag_one(strings(&["m-tag3"]), env_prod.clone(), "bucket").await,
        "InvalidResourceType.NotFound",
        404,
    );
    refused(
        tag_one(
            strings(&["m-tag3"]),
            pairs(&[("aliyun-reserved", "x")]),
            "image",
        )
        .await,
        "InvalidTagKey.Malformed",
        400,
    );
    let too_many_tags: Vec<(String, String)> = (0..21)
        .map(|n| (format!("k{n}"), "v".to_string()))
        .collect();
    refused(
        tag_one(strings(&["m-tag3"]), too_many_tags, "image").await,
        "NumberExceed.Tags",
        400,
    );
    let too_many_ids: Vec<String> = (0..51).map(|n| format!("m-x{n}")).collect();
    refused(
        tag_one(too_many_ids, env_prod.clone(), "image").await,
        "NumberExceed.ResourceIds",
        400,
    );
    refused(
        tag_one(strings(&["m-tag3"]), Vec::new(), "image").await,
        "MissingParameter",
        400,
    );

    // 30 images × 2 tags = 60 entries: two pages of ListTagResources.
    let many: Vec<String> = (0..30).map(|n| format!("m-many{n:02}")).collect();
    for id in &many {
        s.emulator.seed(REGION, id, "Available", json!({})).await;
    }
    s.client
        .tag_resources(
            REGION,
            "image",
            &many,
            &pairs(&[("group", "many"), ("n", "x")]),
        )
        .await
        .expect("TagResources on 30 images at once");
    let mut collected = Vec::new();
    let mut next_token = None;
    let mut pages = 0;
    loop {
        let page = s
            .client
            .list_tag_resources(&ListTagResourcesRequest {
                region: REGION.into(),
                resource_type: "image".into(),
                tags: pairs(&[("group", "many")]),
                next_token: next_token.clone(),
                ..Default::default()
            })
            .await
            .expect("a ListTagResources page");
        pages += 1;
        collected.extend(page.tag_resources);
        next_token = page.next_token;
        if next_token.is_none() {
            break;
        }
        assert!(pages < 10, "ListTagResources paging ends");
    }
    assert_eq!((pages, collected.len()), (2, 60));
    let tagged: BTreeSet<String> = collected.iter().map(|t| t.resource_id.clone()).collect();
    assert_eq!(tagged, many.iter().cloned().collect());
    s.finish().await;
}

/// Bad credentials are refused with the gateway's codes and never echo the secret.
async fn authentication(mode: Mode) {
    const WRONG_SECRET: &str = "not-the-secret-5eb1c0";
    let s = setup(mode).await;
    let good = s
        .credentials
        .credentials()
        .await
        .expect("the mode's credentials");
    let with = |credentials: Credentials| {
        s.client
            .with_credentials(CredentialsProvider::fixed(credentials))
    };
    let wrong_secret = Credentials::new(good.access_key_id(), WRONG_SECRET)
        .with_security_token(good.security_token().unwrap_or_default());
    let error = refused(
        with(wrong_secret).describe_regions(SOURCE_REGION).await,
        "SignatureDoesNotMatch",
        400,
    );
    assert!(!error.to_string().contains(WRONG_SECRET), "{error}");
    if let Some(token) = good.security_token() {
        // The gateway quotes what it signed; the client must not pass the token on.
        let once = sign::percent_encode(token);
        let twice = sign::percent_encode(&once);
        for form in [token, once.as_str(), twice.as_str()] {
            assert!(
                !error.to_string().contains(form),
                "the security token leaks into the error as {form}: {error}"
            );
        }
    }
    refused(
        with(Credentials::new("LTAI5tNoSuchKey00000000", "whatever"))
            .describe_images(&DescribeImagesRequest {
                region: DESTINATION.into(),
                ..Default::default()
            })
            .await,
        "InvalidAccessKeyId.NotFound",
        404,
    );
    if let Some(token) = good.security_token() {
        let without_token = Credentials::new(good.access_key_id(), good.access_key_secret());
        refused(
            with(without_token).describe_regions(SOURCE_REGION).await,
            "MissingSecurityToken",
            400,
        );
        let long_term_with_token =
            Credentials::new("testid", "testsecret").with_security_token(token);
        refused(
            with(long_term_with_token)
                .describe_regions(SOURCE_REGION)
                .await,
            "InvalidSecurityToken.MismatchWithAccessKey",
            400,
        );
    }
    s.client
        .describe_regions(SOURCE_REGION)
        .await
        .expect("the right credentials still work");
    s.finish().await;
}

/// Injected throttling and server errors: what the client retries, how often, and what it
/// finally reports.
async fn faults_and_retries(mode: Mode) {
    const ATTEMPTS: u32 = 4;
    let s = setup(mode).await;
    let client = s.client_with_attempts(ATTEMPTS);
    let describe = DescribeImagesRequest {
        region: DESTINATION.into(),
        status: followed(),
        ..Default::default()
    };

    s.emulator.faults(json!({"throttleRate": 1.0})).await;
    let error = client
        .describe_images(&describe)
        .await
        .expect_err("every attempt is throttled");
    assert_eq!(error.code(), Some("Throttling.User"), "{error}");
    assert_eq!(error.status(), Some(400), "{error}");
    assert!(error.is_throttling() && error.is_transient(), "{error}");
    assert_eq!(s.recorder.count("DescribeImages"), ATTEMPTS as usize);
    // A throttled call provably did nothing, so even ExportImage (no ClientToken) is retried.
    let error = client
        .export_image(&ExportImageRequest {
            region: SOURCE_REGION.into(),
            image_id: SOURCE_IMAGE.into(),
            oss_bucket: "exports".into(),
            ..Default::default()
        })
        .await
        .expect_err("every attempt is throttled");
    assert_eq!(error.code(), Some("Throttling.User"), "{error}");
    assert_eq!(s.recorder.count("ExportImage"), ATTEMPTS as usize);

    s.emulator.faults(json!({"throttleRate": 0.5})).await;
    let patient = s.client_with_attempts(40);
    let before = s.recorder.count("DescribeImages");
    for _ in 0..5 {
        patient
            .describe_images(&describe)
            .await
            .expect("with half the calls throttled, a retried DescribeImages succeeds");
    }
    assert!(s.recorder.count("DescribeImages") - before >= 5);

    // The emulator answers 503 ServiceUnavailable or 500 InternalError at random. A 503 is an
    // explicit refusal, retried even for CopyImage without a ClientToken; a 500 is ambiguous
    // (ECS may have acted), so such a CopyImage stops at the first one.
    s.emulator
        .faults(json!({"throttleRate": 0.0, "errorRate": 1.0}))
        .await;
    let error = client
        .copy_image(&copy_request())
        .await
        .expect_err("the server fails");
    assert!(error.is_transient(), "{error}");
    let codes = s.recorder.codes("CopyImage");
    let (last, earlier) = codes.split_last().expect("CopyImage was attempted");
    assert_eq!(Some(last.as_str()), error.code(), "{codes:?}");
    assert!(
        earlier.iter().all(|code| code == "ServiceUnavailable")
            && (last == "InternalError" || codes.len() == ATTEMPTS as usize),
        "without a token only 503s are retried: {codes:?}"
    );
    let before = codes.len();
    let with_token = CopyImageRequest {
        client_token: Some("retry-token".into()),
        ..copy_request()
    };
    client
        .copy_image(&with_token)
        .await
        .expect_err("the server keeps failing");
    assert_eq!(
        s.recorder.count("CopyImage") - before,
        ATTEMPTS as usize,
        "with a ClientToken every server error is retried"
    );
    s.emulator.faults(json!({"errorRate": 0.0})).await;
    let copied = client
        .copy_image(&with_token)
        .await
        .expect("CopyImage once the server recovers");
    assert_eq!(
        client
            .copy_image(&with_token)
            .await
            .expect("the same CopyImage again")
            .image_id,
        copied.image_id
    );
    s.finish().await;
}
