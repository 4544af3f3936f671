//! The shipped container image, run for real: runc runs the bundle `scripts/image.sh test`
//! unpacked from the OCI image (umoci), as the image's user 65532 on a read-only root filesystem,
//! against the real apiserver and the emulator on loopback, through one copy to Ready.
//!
//! `make image-test` runs it (it needs the bundle, in `ECS_IMAGE_OPERATOR_BUNDLE`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::PostParams;
use serde_json::{Value, json};
use support::stage::{image_copy, is_ready, status_json};

const IMAGE_USER: &str = "65532";
const TIMEOUT: Duration = Duration::from_secs(60);
/// Where the container finds the apiserver's kubeconfig (bind-mounted read-only).
const KUBECONFIG_IN_CONTAINER: &str = "/etc/ecs-image-operator/kubeconfig";

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A runc container, killed and deleted when dropped.
struct Container {
    id: String,
    child: Child,
    log: PathBuf,
}

impl Container {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The uid the container's first process runs as, from /proc.
    fn uid(&self) -> String {
        let out = Command::new("runc")
            .args(["state", &self.id])
            .output()
            .expect("runc state");
        let state: Value = serde_json::from_slice(&out.stdout).expect("runc state is JSON");
        let pid = state["pid"].as_u64().expect("runc state has a pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .expect("a Uid line")
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .output();
        let _ = self.child.wait();
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
        if std::thread::panicking() {
            eprintln!("===== container log =====\n{}", self.log_text());
        }
    }
}

#[tokio::test]
#[ignore = "needs the image bundle: make image-test"]
async fn image_runs_a_copy_to_ready() {
    let bundle = PathBuf::from(
        std::env::var("ECS_IMAGE_OPERATOR_BUNDLE")
            .expect("ECS_IMAGE_OPERATOR_BUNDLE: the bundle `scripts/image.sh test` unpacked"),
    );
    let mut config = read_json(&bundle.join("config.json"));
    let rootfs = bundle.join(config["root"]["path"].as_str().unwrap_or("rootfs"));

    // What the image is: the user it declares, no shell, the CA bundle.
    assert_eq!(
        config["process"]["user"]["uid"].to_string(),
        IMAGE_USER,
        "the image runs as uid {IMAGE_USER}"
    );
    assert!(!rootfs.join("bin/sh").exists(), "the image has no shell");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());

    let stage_emulator = support::Emulator::start(&["--copy-seconds", "2"]).await;
    // By name, resolved inside the image as in a pod (whose /etc/hosts the kubelet mounts): the
    // static binary resolves names without any shared library.
    let endpoint = stage_emulator.endpoint().replace("127.0.0.1", "localhost");
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let namespace = support::fresh_namespace(&client, "image").await;

    // Run it as shipped, with a read-only root, on the host's loopback (no network namespace).
    // The image's user reads the kubeconfig: a copy it owns.
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(&apiserver.kubeconfig, &kubeconfig).expect("copy kubeconfig");
    let image_user: u32 = IMAGE_USER.parse().expect("a uid");
    std::os::unix::fs::chown(&kubeconfig, Some(image_user), Some(image_user))
        .expect("chown the kubeconfig copy");
    config["root"]["readonly"] = json!(true);
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!([
        "/ecs-image-operator",
        "run",
        "--ecs-endpoint",
        endpoint,
        "--namespace",
        namespace,
        "--metrics-addr",
        "127.0.0.1:0",
        "--poll-interval",
        "1s",
    ]);
    let env = config["process"]["env"]
        .as_array_mut()
        .expect("process.env is a list");
    env.extend([
        json!(format!("KUBECONFIG={KUBECONFIG_IN_CONTAINER}")),
        json!("ALIBABA_CLOUD_ACCESS_KEY_ID=testid"),
        json!("ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret"),
        json!("NO_COLOR=1"),
    ]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("linux.namespaces is a list")
        .retain(|n| n["type"] != "network");
    config["mounts"]
        .as_array_mut()
        .expect("mounts is a list")
        .push(json!({
            "destination": KUBECONFIG_IN_CONTAINER,
            "type": "bind",
            "source": kubeconfig,
            "options": ["bind", "ro"],
        }));
    config["mounts"]
        .as_array_mut()
        .expect("mounts is a list")
        .push(json!({
            "destination": "/etc/hosts",
            "type": "bind",
            "source": "/etc/hosts",
            "options": ["bind", "ro"],
        }));
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("config JSON"),
    )
    .expect("write config.json");

    let log = dir.path().join("container.log");
    let log_file = std::fs::File::create(&log).expect("container log");
    let id = format!("ecs-image-operator-test-{}", std::process::id());
    let mut child = Command::new("runc")
        .args(["run", "--bundle", &support::path_str(&bundle), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone().expect("log handle"))
        .spawn()
        .expect("start runc");
    let stdout = child.stdout.take().expect("piped stdout");
    let container = Container { id, child, log };
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut log_file = log_file;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(log_file, "{line}");
            if let Some(address) = line.strip_prefix("metrics on ") {
                let _ = address_tx.send(address.to_string());
            }
        }
    });
    let address = tokio::task::spawn_blocking(move || address_rx.recv_timeout(TIMEOUT))
        .await
        .expect("join");
    let address = match address {
        Ok(address) => address,
        Err(_) => panic!(
            "the container did not start the operator; log:\n{}",
            container.log_text()
        ),
    };
    assert_eq!(
        container.uid(),
        IMAGE_USER,
        "the operator runs as uid {IMAGE_USER}"
    );

    let api = kube::Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &image_copy("from-the-image"))
        .await
        .expect("create ImageCopy");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let object = api.get("from-the-image").await.expect("get ImageCopy");
        if is_ready(&object) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready within {TIMEOUT:?}; status {}; container log:\n{}",
            status_json(&object),
            container.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("{address}/metrics"))
        .await
        .expect("GET /metrics from the container")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(r#"ecs_image_operator_ecs_calls_total{action="CopyImage",result="ok"} 1"#),
        "the containerised operator made the copy:\n{metrics}"
    );
}
