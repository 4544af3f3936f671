//! Test grounds shared by the integration tests: a real kube-apiserver (tests/apiserver, built
//! and cached by scripts/build-harness.sh) started once per test binary on 127.0.0.1.
//!
//! The harness runs with `--exit-on-stdin-eof` and its stdin is a pipe owned by this process, so
//! it goes away with the test binary however that ends (pass, panic, or kill).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub const OPERATOR_BIN: &str = env!("CARGO_BIN_EXE_ecs-image-operator");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directory with `kube-harness` and `kubectl`: `KUBE_HARNESS_DIR` if set (make test sets it),
/// else whatever scripts/build-harness.sh prints (it builds on first use).
pub fn harness_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KUBE_HARNESS_DIR") {
        return PathBuf::from(dir);
    }
    let out = Command::new(repo_root().join("scripts/build-harness.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-harness.sh");
    assert!(out.status.success(), "scripts/build-harness.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn kubectl_bin() -> PathBuf {
    harness_dir().join("kubectl")
}

/// A running kube-apiserver + etcd.
pub struct Apiserver {
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
    _stdin: ChildStdin,
}

static APISERVER: OnceLock<Apiserver> = OnceLock::new();
static START_LOCK: Mutex<()> = Mutex::new(());

/// The apiserver shared by every test of this binary, started on first use.
pub fn apiserver() -> &'static Apiserver {
    let _guard = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    APISERVER.get_or_init(Apiserver::start)
}

impl Apiserver {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(harness_dir().join("kube-harness"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("apiserver.log")).expect("log file"),
            ))
            .spawn()
            .expect("start kube-harness");
        let stdin = child.stdin.take().expect("harness stdin");
        let stdout = child.stdout.take().expect("harness stdout");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.trim() == "ready" => {}
            other => {
                let log =
                    std::fs::read_to_string(dir.path().join("apiserver.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                panic!(
                    "kube-harness did not become ready ({other:?}); log tail (reversed):\n{tail}"
                );
            }
        }
        Apiserver {
            kubeconfig,
            _dir: dir,
            _child: child,
            _stdin: stdin,
        }
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }
}

/// `ecs-image-operator crd`, server-side applied and waited for until Established.
pub async fn install_crds(client: &Client) {
    let out = Command::new(OPERATOR_BIN)
        .arg("crd")
        .output()
        .expect("run ecs-image-operator crd");
    assert!(out.status.success(), "ecs-image-operator crd failed");
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd: CustomResourceDefinition =
            serde::Deserialize::deserialize(doc).expect("CRD document");
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(
            &name,
            &PatchParams::apply("ecs-image-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("watch CRD");
    }
}

/// A fresh namespace (namespaces are never deleted: no namespace controller runs).
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.generate_name = Some(format!("{prefix}-"));
    let created = api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    created.metadata.name.expect("namespace name")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A kubeconfig for the test apiserver that authenticates as ServiceAccount `namespace/name`
/// with a fresh token (TokenRequest), written into `dir`: so a process runs with exactly the
/// RBAC that account has.
pub async fn service_account_kubeconfig(
    client: &Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let token = accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("token status")
        .token;
    let mut config = Kubeconfig::read_from(&apiserver().kubeconfig).expect("admin kubeconfig");
    for named in &mut config.auth_infos {
        named.auth_info = Some(AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    let path = dir.join(format!("{name}-kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("kubeconfig"))
        .expect("write kubeconfig");
    path
}
