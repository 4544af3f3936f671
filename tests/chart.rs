//! The Helm chart and the plain manifests on the real apiserver, as a user installs them: the
//! rendered manifests pass the server's strict validation, `helm install` / `upgrade` /
//! `uninstall` work for real, and the operator binary, run with the installed Deployment's args
//! and env under the installed ServiceAccount's token, copies an image and cancels another — so
//! the chart's RBAC is enough. Taking one verb away makes the operator fail visibly.
//!
//! helm comes from `scripts/tool.sh helm` (pinned, cached). No `--wait`: no kubelet runs pods here.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ecs_image_operator::api::ImageCopy;
use ecs_image_operator::api::image_copy::CopyPhase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::stage::{image_id, is_ready, manifest, phase, status_json};

const CHART: &str = "charts/ecs-image-operator";
const RELEASE: &str = "imageops";
const RELEASE_NAMESPACE: &str = "imageops-system";
/// The names the chart gives a release called `imageops`.
const FULLNAME: &str = "imageops-ecs-image-operator";
const OPERATOR_SECRET: &str = "ecs-keys";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Both tests touch the chart's cluster-scoped objects (the CRD, the ClusterRole and its
/// binding): a server-side dry run that reads "absent" and then creates races a real install
/// that creates the same object in between, so the tests take turns.
static CLUSTER_SCOPED_OBJECTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(support::repo_root().join("scripts/tool.sh"))
            .arg("helm")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/tool.sh helm");
        assert!(out.status.success(), "scripts/tool.sh helm failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Helm's own state lives in a temp dir, not in the user's home.
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm ARGS` against the test apiserver; returns stdout, panics with helm's error otherwise.
fn helm(args: &[&str]) -> String {
    let home = helm_home();
    let out = Command::new(helm_bin())
        .args(args)
        .current_dir(support::repo_root())
        .env("KUBECONFIG", &support::apiserver().kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    succeeded(&format!("helm {}", args.join(" ")), out)
}

async fn kubectl(args: &[&str], stdin: &str) -> String {
    let out = support::stage::kubectl(args, stdin).await;
    succeeded(&format!("kubectl {}", args.join(" ")), out)
}

/// Values a real installation changes, all at once.
fn non_default_values(watch_namespace: &str) -> Vec<String> {
    [
        "replicaCount=2".to_string(),
        format!("watchNamespace={watch_namespace}"),
        "image.repository=registry.example/ops/ecs-image-operator".into(),
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .into(),
        "podDisruptionBudget.enabled=true".into(),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .chain([
        "--set-string".into(),
        r"serviceAccount.annotations.pod-identity\.alibabacloud\.com/role-name=ecs-image-operator"
            .into(),
    ])
    .collect()
}

/// The settings every install of this test uses: the emulator, the operator-wide Secret, a
/// short poll interval and text logs.
fn test_values(ecs_endpoint: &str) -> Vec<String> {
    [
        format!("ecsEndpoint={ecs_endpoint}"),
        format!("credentials.existingSecret={OPERATOR_SECRET}"),
        "extraArgs={--poll-interval=1s}".into(),
        "logFormat=text".into(),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

#[tokio::test]
async fn rendered_chart_passes_strict_server_side_validation() {
    let _turn = CLUSTER_SCOPED_OBJECTS.lock().await;
    let client = support::apiserver().client().await;
    let namespace = support::fresh_namespace(&client, "dry-run").await;
    let watched = support::fresh_namespace(&client, "dry-run-watched").await;
    for (what, extra) in [
        ("default values", Vec::new()),
        ("non-default values", non_default_values(&watched)),
    ] {
        let mut args = vec!["template", RELEASE, CHART, "--namespace", &namespace];
        args.extend(extra.iter().map(String::as_str));
        let rendered = helm(&args);
        let applied = kubectl(
            &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            &rendered,
        )
        .await;
        for kind in [
            "customresourcedefinition.apiextensions.k8s.io/imagecopies.imageops.dev",
            "deployment.apps/imageops-ecs-image-operator",
            "serviceaccount/imageops-ecs-image-operator",
            "service/imageops-ecs-image-operator-metrics",
        ] {
            assert!(
                applied.contains(kind),
                "{what}: the dry run did not apply {kind}:\n{applied}"
            );
        }
    }
}

/// The installed Deployment's container args and env, turned into a command line and
/// environment for the operator binary on this machine.
struct RenderedCommand {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

async fn rendered_command(client: &Client, pod_name: &str) -> RenderedCommand {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let deployment = deployments.get(FULLNAME).await.expect("get the Deployment");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("the Deployment has a pod template");
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "operator")
        .expect("a container named operator");
    // The pod listens on 0.0.0.0:8080; here many processes share one host.
    let args = container
        .args
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                "--metrics-addr=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let mut env = BTreeMap::new();
    for var in container.env.unwrap_or_default() {
        if let Some(value) = var.value {
            env.insert(var.name, value);
            continue;
        }
        let source = var.value_from.expect("env has a value or valueFrom");
        let value = if let Some(field) = source.field_ref {
            match field.field_path.as_str() {
                "metadata.name" => Some(pod_name.to_string()),
                "metadata.namespace" => Some(RELEASE_NAMESPACE.to_string()),
                other => panic!("the chart uses field {other}, which this test does not resolve"),
            }
        } else if let Some(key) = source.secret_key_ref {
            let secret = secrets.get(&key.name).await.expect("get the env Secret");
            match secret.data.unwrap_or_default().get(&key.key) {
                Some(bytes) => Some(String::from_utf8(bytes.0.clone()).expect("utf-8 Secret")),
                None if key.optional == Some(true) => None,
                None => panic!("Secret {} has no key {}", key.name, key.key),
            }
        } else {
            panic!("{}: a valueFrom this test does not resolve", var.name)
        };
        if let Some(value) = value {
            env.insert(var.name, value);
        }
    }
    RenderedCommand { args, env }
}

/// `ecs-image-operator` run with exactly the rendered args and env (nothing of this process's
/// environment but PATH), logging to a file the test reads.
struct ChartOperator {
    child: Child,
    log: PathBuf,
}

impl ChartOperator {
    async fn start(command: &RenderedCommand, kubeconfig: &Path, log: PathBuf) -> ChartOperator {
        let file = std::fs::File::create(&log).expect("operator log");
        let mut child = Command::new(support::OPERATOR_BIN)
            .args(&command.args)
            .env_clear()
            .envs(&command.env)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file.try_clone().expect("log handle"))
            .spawn()
            .expect("start the operator");
        let stdout = child.stdout.take().expect("piped stdout");
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = file;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Some(address) = line.strip_prefix("metrics on ") {
                    let _ = address_tx.send(address.to_string());
                }
            }
        });
        let operator = ChartOperator { child, log };
        let address = tokio::task::spawn_blocking(move || address_rx.recv_timeout(TIMEOUT))
            .await
            .expect("join")
            .unwrap_or_else(|_| {
                panic!(
                    "the operator did not start with the chart's args {:?}; log:\n{}",
                    command.args,
                    operator.log_text()
                )
            });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(response) = reqwest::get(format!("{address}/readyz")).await
                && response.status().is_success()
            {
                return operator;
            }
            assert!(
                Instant::now() < deadline,
                "the operator never became ready; log:\n{}",
                operator.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("===== operator log =====\n{}", self.log_text());
        }
    }
}

async fn wait_until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_copy(api: &Api<ImageCopy>, name: &str, secret: Option<&str>) {
    let spec = match secret {
        Some(secret) => json!({"credentialsSecretRef": {"name": secret}}),
        None => json!({}),
    };
    let object: ImageCopy =
        serde_json::from_value(manifest(name, spec)).expect("a valid ImageCopy");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create ImageCopy {name}: {e}"));
}

async fn wait_ready(api: &Api<ImageCopy>, name: &str, operator: &ChartOperator) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let object = api.get(name).await.expect("get ImageCopy");
        if is_ready(&object) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not Ready within {TIMEOUT:?}; status {}; operator log:\n{}",
            status_json(&object),
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_secret(client: &Client, namespace: &str, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"accessKeyId": "testid", "accessKeySecret": "testsecret"},
    }))
    .expect("a valid Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

#[tokio::test]
async fn chart_installs_runs_the_operator_upgrades_and_uninstalls() {
    let _turn = CLUSTER_SCOPED_OBJECTS.lock().await;
    let client = support::apiserver().client().await;
    let emulator = support::Emulator::start(&["--copy-seconds", "4"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut values = test_values(emulator.endpoint());

    // The operator-wide Secret lives in the release namespace before the release does.
    kubectl(&["create", "namespace", RELEASE_NAMESPACE], "").await;
    create_secret(&client, RELEASE_NAMESPACE, OPERATOR_SECRET).await;

    let mut install = vec!["install", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE];
    install.extend(values.iter().map(String::as_str));
    let notes = helm(&install);
    assert!(
        notes.contains("kubectl get imagecopies -w"),
        "helm install prints the NOTES: {notes}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until("the chart's CRD is Established", async || {
        let crd = crds.get_opt("imagecopies.imageops.dev").await.ok()??;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    // A copy and a cancel, by the binary with the Deployment's args and env, as its ServiceAccount.
    let kubeconfig =
        support::service_account_kubeconfig(&client, RELEASE_NAMESPACE, FULLNAME, dir.path()).await;
    let command = rendered_command(&client, "imageops-pod-1").await;
    let namespace = support::fresh_namespace(&client, "chart-copies").await;
    create_secret(&client, &namespace, "ecs-credentials").await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &namespace);
    {
        let operator =
            ChartOperator::start(&command, &kubeconfig, dir.path().join("operator-1.log")).await;
        // Operator-wide credentials: the env the chart maps from the existing Secret.
        create_copy(&api, "copied", None).await;
        wait_ready(&api, "copied", &operator).await;
        // Per-object credentials: the operator may read the named Secret.
        create_copy(&api, "cancelled", Some("ecs-credentials")).await;
        let copying = wait_until("cancelled is copying", async || {
            let object = api.get("cancelled").await.ok()?;
            if phase(&object)? != CopyPhase::Copying {
                return None;
            }
            image_id(&object).map(str::to_string)
        })
        .await;
        api.delete("cancelled", &DeleteParams::default())
            .await
            .expect("delete ImageCopy");
        wait_until("cancelled is gone", async || {
            api.get_opt("cancelled").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(
            emulator.image("cn-shanghai", &copying).await.is_none(),
            "the cancelled copy {copying} still exists in ECS; operator log:\n{}",
            operator.log_text()
        );
        assert!(emulator.count("CancelCopyImage").await >= 1);
    }

    // One verb less (Secrets get) and the operator says plainly what it may not do.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles.get(FULLNAME).await.expect("the chart's ClusterRole");
    let rules = role.rules.as_mut().expect("rules");
    let before = rules.len();
    rules.retain(|r| !r.resources.iter().flatten().any(|res| res == "secrets"));
    assert_eq!(
        rules.len(),
        before - 1,
        "the ClusterRole had a Secrets rule"
    );
    role.metadata.managed_fields = None;
    roles
        .replace(FULLNAME, &PostParams::default(), &role)
        .await
        .expect("replace the ClusterRole");
    {
        let operator =
            ChartOperator::start(&command, &kubeconfig, dir.path().join("operator-2.log")).await;
        create_copy(&api, "forbidden", Some("ecs-credentials")).await;
        wait_until(
            "the operator's log names the forbidden Secrets get",
            async || {
                operator
                    .log_text()
                    .contains(r#"cannot get resource \"secrets\""#)
                    .then_some(())
            },
        )
        .await;
        let object = api.get("forbidden").await.expect("get ImageCopy");
        assert!(
            !is_ready(&object),
            "forbidden became Ready without the right to read its Secret"
        );
    }

    // Upgrade to the values of a production install: two replicas (leader election), one
    // watched namespace (a Role there instead of the ClusterRole), a digest, the RRSA annotation.
    let watched = support::fresh_namespace(&client, "chart-watched").await;
    values.extend(non_default_values(&watched));
    let mut upgrade = vec!["upgrade", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE];
    upgrade.extend(values.iter().map(String::as_str));
    helm(&upgrade);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let deployment = deployments.get(FULLNAME).await.expect("the Deployment");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image)
        .unwrap_or_default();
    assert!(image.contains("@sha256:0123"), "image by digest: {image}");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let account = accounts.get(FULLNAME).await.expect("the ServiceAccount");
    assert_eq!(
        account
            .annotations()
            .get("pod-identity.alibabacloud.com/role-name")
            .map(String::as_str),
        Some("ecs-image-operator")
    );
    assert!(
        roles.get_opt(FULLNAME).await.expect("get").is_none(),
        "with watchNamespace the ClusterRole is gone"
    );
    let watched_roles: Api<Role> = Api::namespaced(client.clone(), &watched);
    assert!(
        watched_roles
            .get_opt(FULLNAME)
            .await
            .expect("get")
            .is_some()
    );

    create_secret(&client, &watched, "ecs-credentials").await;
    let command = rendered_command(&client, "imageops-pod-2").await;
    let watched_api: Api<ImageCopy> = Api::namespaced(client.clone(), &watched);
    {
        let operator =
            ChartOperator::start(&command, &kubeconfig, dir.path().join("operator-3.log")).await;
        create_copy(&watched_api, "namespaced", Some("ecs-credentials")).await;
        wait_ready(&watched_api, "namespaced", &operator).await;
        let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
        let holder = leases
            .get("ecs-image-operator")
            .await
            .expect("two replicas elect a leader through a Lease in the release namespace")
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        assert!(
            holder.starts_with("imageops-pod-2"),
            "the Lease holder is the pod: {holder}"
        );
        watched_api
            .delete("namespaced", &DeleteParams::default())
            .await
            .expect("delete ImageCopy");
        wait_until("namespaced is gone", async || {
            watched_api
                .get_opt("namespaced")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }

    helm(&["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE]);
    assert!(
        deployments.get_opt(FULLNAME).await.expect("get").is_none(),
        "uninstall removes the Deployment"
    );
    assert!(
        crds.get_opt("imagecopies.imageops.dev")
            .await
            .expect("get")
            .is_some(),
        "crds.keep leaves the CRD (and every ImageCopy) in place"
    );

    // The plain manifests install the same operator without Helm, and apply again cleanly.
    let applied = kubectl(
        &[
            "apply",
            "-k",
            &support::path_str(&support::repo_root().join("deploy")),
        ],
        "",
    )
    .await;
    assert!(
        applied.contains("deployment.apps/ecs-image-operator created"),
        "kubectl apply -k deploy/: {applied}"
    );
    let reapplied = kubectl(
        &[
            "apply",
            "--validate=strict",
            "-f",
            &support::path_str(&support::repo_root().join("deploy/namespace.yaml")),
            "-f",
            &support::path_str(&support::repo_root().join("deploy/crds.yaml")),
            "-f",
            &support::path_str(&support::repo_root().join("deploy/rbac.yaml")),
            "-f",
            &support::path_str(&support::repo_root().join("deploy/operator.yaml")),
        ],
        "",
    )
    .await;
    assert!(
        reapplied.contains("deployment.apps/ecs-image-operator unchanged"),
        "kubectl apply -f deploy/…: {reapplied}"
    );
}
