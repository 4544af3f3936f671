//! The project's own binaries as separate processes for end-to-end tests: the ECS emulator
//! (`ecs-image-operator emulator`) and the controller (`ecs-image-operator run`).
//!
//! Each child writes stdout and stderr to a temp log file whose tail is printed when the test
//! owning it fails, and is killed (SIGKILL) and reaped when dropped. These binaries do not watch
//! their stdin, so a child outlives the test binary only if that binary itself is killed; keep
//! every child scoped to the one test that started it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempPath;

use super::cluster::OPERATOR_BIN;

/// How long a child may take to print its address line (a debug build on a busy machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines shown when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// A running child process with its log file.
struct LoggedChild {
    /// `emulator` or `operator`, for messages.
    role: &'static str,
    child: Option<Child>,
    /// Kept (not deleted) when the owning test fails, so the whole log can be read.
    log: Option<TempPath>,
}

impl LoggedChild {
    fn new(role: &'static str) -> Self {
        let log = tempfile::Builder::new()
            .prefix(&format!("e2e-{role}-"))
            .suffix(".log")
            .tempfile()
            .expect("create a log file")
            .into_temp_path();
        LoggedChild {
            role,
            child: None,
            log: Some(log),
        }
    }

    fn log_path(&self) -> &Path {
        self.log.as_deref().expect("log path is kept until drop")
    }

    /// Spawns `command` logging to this child's log file, and waits for the first stdout line
    /// starting with `ready_prefix`; returns the rest of that line.
    async fn spawn(&mut self, mut command: Command, ready_prefix: &'static str) -> String {
        let log_path = self.log_path().to_path_buf();
        let stderr_log = append_to(&log_path);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {}: {e}", self.role));
        let stdout = child.stdout.take().expect("child stdout is piped");
        self.child = Some(child);

        // A thread copies stdout into the log and hands over the first line with the prefix.
        let (found_tx, found_rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut found_tx = Some(found_tx);
            let mut log = append_to(&log_path);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.strip_prefix(ready_prefix)
                    && let Some(tx) = found_tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match tokio::time::timeout(STARTUP_TIMEOUT, found_rx).await {
            Ok(Ok(rest)) => rest,
            other => {
                let reason = match other {
                    Ok(Err(_)) => "it closed stdout".to_string(),
                    _ => format!("nothing within {STARTUP_TIMEOUT:?}"),
                };
                // Dropping `self` while panicking prints the log.
                panic!(
                    "the {} did not print {ready_prefix:?} ({reason})",
                    self.role
                );
            }
        }
    }

    /// SIGKILL and reap; a no-op when not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn append_marker(&self, marker: &str) {
        let _ = writeln!(append_to(self.log_path()), "----- {marker} -----");
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status once the child has exited; `None` while it runs (or was never started).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking()
            && let Some(log) = self.log.take()
        {
            let tail = tail(&log);
            match log.keep() {
                Ok(path) => eprintln!(
                    "===== {} log (last {LOG_TAIL_LINES} lines; full log {}) =====\n{tail}",
                    self.role,
                    path.display()
                ),
                Err(e) => eprintln!("===== {} log ({e}) =====\n{tail}", self.role),
            }
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn append_to(path: &Path) -> File {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// One call to the admin API (`/_emulator/PATH`) of the emulator at `endpoint`: its JSON
/// answer, `null` when it has no body; panics on a failure, as a test would.
pub async fn emulator_admin(
    http: &reqwest::Client,
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let url = format!("{endpoint}/_emulator/{path}");
    let mut request = http.request(method.clone(), &url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
    assert!(status.is_success(), "{method} {url}: {status}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"))
    }
}

/// `ecs-image-operator emulator --listen 127.0.0.1:0 ARGS`, with its admin API.
pub struct Emulator {
    _process: LoggedChild,
    endpoint: String,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts an emulator on a free port; `args` are further emulator flags.
    pub async fn start(args: &[&str]) -> Emulator {
        let mut process = LoggedChild::new("emulator");
        let mut command = Command::new(OPERATOR_BIN);
        command
            .args(["emulator", "--listen", "127.0.0.1:0"])
            .args(args);
        let endpoint = process.spawn(command, "ecs-emulator listening on ").await;
        Emulator {
            _process: process,
            endpoint,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--ecs-endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        emulator_admin(&self.http, &self.endpoint, method, path, body).await
    }

    /// `POST /_emulator/images`: seeds an image (`regionId`, `imageId`, `status`, `tags`, …).
    pub async fn seed_image(&self, image: &Value) -> Value {
        self.admin(reqwest::Method::POST, "images", Some(image))
            .await
    }

    /// `GET /_emulator/calls`: `{"counts":{ACTION:N,…},"calls":[…]}`.
    pub async fn calls(&self) -> Value {
        self.admin(reqwest::Method::GET, "calls", None).await
    }

    /// How many `action` calls the emulator has answered (successfully or not).
    pub async fn count(&self, action: &str) -> u64 {
        self.calls().await["counts"][action].as_u64().unwrap_or(0)
    }

    /// `GET /_emulator/images`: every image that exists (deleted ones are absent).
    pub async fn images(&self) -> Vec<Value> {
        let body = self.admin(reqwest::Method::GET, "images", None).await;
        body["images"]
            .as_array()
            .unwrap_or_else(|| panic!("/_emulator/images has no images array: {body}"))
            .clone()
    }

    /// The image `image_id` in `region`, if it exists.
    pub async fn image(&self, region: &str, image_id: &str) -> Option<Value> {
        self.images()
            .await
            .into_iter()
            .find(|i| i["regionId"] == region && i["imageId"] == image_id)
    }

    /// The images carrying the owner tag of the object with this UID.
    pub async fn images_owned_by(&self, uid: &str) -> Vec<Value> {
        self.images()
            .await
            .into_iter()
            .filter(|i| i["tags"]["imageops.dev/owner-uid"] == uid)
            .collect()
    }

    /// The images carrying any object's owner tag.
    pub async fn images_owned_by_anyone(&self) -> Vec<Value> {
        self.images()
            .await
            .into_iter()
            .filter(|i| !i["tags"]["imageops.dev/owner-uid"].is_null())
            .collect()
    }

    /// Deletes an image out of band, as a user of the console would.
    pub async fn delete_image(&self, region: &str, image_id: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("images/{region}/{image_id}"),
            None,
        )
        .await;
    }

    /// `GET /_emulator/tasks`: every ImportImage/ExportImage task and every seeded one, as
    /// DescribeTasks reports it (`taskId`, `taskAction`, `taskStatus`, `resourceId`, …).
    pub async fn tasks(&self) -> Vec<Value> {
        let body = self.admin(reqwest::Method::GET, "tasks", None).await;
        body["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("/_emulator/tasks has no tasks array: {body}"))
            .clone()
    }

    /// The task `task_id`, if the emulator knows it.
    pub async fn task(&self, task_id: &str) -> Option<Value> {
        self.tasks()
            .await
            .into_iter()
            .find(|t| t["taskId"] == task_id)
    }

    /// The tasks of `action` (`ImportImage`, `ExportImage`, …).
    pub async fn tasks_of(&self, action: &str) -> Vec<Value> {
        self.tasks()
            .await
            .into_iter()
            .filter(|t| t["taskAction"] == action)
            .collect()
    }

    /// `POST /_emulator/tasks`: seeds a task that keeps its state until cancelled, e.g.
    /// `{"regionId", "taskAction": "RedeployInstance", "taskStatus": "Processing"}`.
    pub async fn seed_task(&self, task: &Value) -> Value {
        self.admin(reqwest::Method::POST, "tasks", Some(task)).await
    }

    /// The calls of `action` the emulator answered, oldest first.
    pub async fn calls_of(&self, action: &str) -> Vec<Value> {
        let calls = self.calls().await;
        calls["calls"]
            .as_array()
            .unwrap_or_else(|| panic!("/_emulator/calls has no calls array: {calls}"))
            .iter()
            .filter(|c| c["action"] == action)
            .cloned()
            .collect()
    }

    /// `POST /_emulator/faults`, e.g. `{"cancelNotSupported": true}`.
    pub async fn set_faults(&self, faults: &Value) {
        self.admin(reqwest::Method::POST, "faults", Some(faults))
            .await;
    }
}

/// Flags the tests' operator gets unless `extra_args` give them (clap refuses a flag twice).
const DEFAULT_OPERATOR_FLAGS: [(&str, &str); 1] = [("--poll-interval", "1s")];

/// `ecs-image-operator run` against one namespace of the test apiserver and one emulator.
pub struct Operator {
    process: LoggedChild,
    command: OperatorCommand,
    metrics_url: String,
}

struct OperatorCommand {
    kubeconfig: PathBuf,
    endpoint: String,
    namespace: String,
    extra_args: Vec<String>,
    /// `$POD_NAME`, the leader-election identity: kept across restarts, like a pod's name
    /// across container restarts, so a restarted operator takes its own lease back at once.
    pod_name: String,
    /// ECS access key id and secret.
    access_key: (String, String),
    /// Set after the defaults, so they may replace the default access key.
    extra_env: Vec<(String, String)>,
}

impl OperatorCommand {
    fn command(&self) -> Command {
        let mut command = Command::new(OPERATOR_BIN);
        command
            .arg("run")
            .args(["--ecs-endpoint", &self.endpoint])
            .args(["--namespace", &self.namespace])
            .args(["--metrics-addr", "127.0.0.1:0"]);
        for (flag, value) in DEFAULT_OPERATOR_FLAGS {
            let overridden = self
                .extra_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if !overridden {
                command.args([flag, value]);
            }
        }
        // Leader election is on by default; each test's Lease lives in the test's namespace so
        // that tests running at once do not compete for one Lease.
        let lease_namespace_given = self
            .extra_args
            .iter()
            .any(|a| a.starts_with("--leader-election-namespace"));
        if !lease_namespace_given {
            command.args(["--leader-election-namespace", &self.namespace]);
        }
        command
            .args(&self.extra_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", &self.pod_name)
            .env_remove("POD_NAMESPACE")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", &self.access_key.0)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", &self.access_key.1)
            .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
            .env_remove("ALIBABA_CLOUD_ROLE_ARN")
            .env("NO_COLOR", "1")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        command
    }
}

impl Operator {
    /// Starts the controller watching `namespace`, sending ECS calls to `endpoint`, and waits
    /// until `/readyz` answers 200 (the CRD is served and listing works). `extra_args` are
    /// further flags; they may override the defaults (`--poll-interval 1s`).
    pub async fn start(
        kubeconfig: &Path,
        endpoint: &str,
        namespace: &str,
        extra_args: &[&str],
    ) -> Operator {
        Operator::start_with_env(kubeconfig, endpoint, namespace, extra_args, &[]).await
    }

    /// [`Operator::start`] with further environment variables (`RUST_LOG`, credentials...).
    pub async fn start_with_env(
        kubeconfig: &Path,
        endpoint: &str,
        namespace: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Operator {
        Operator::launch(
            kubeconfig,
            endpoint,
            namespace,
            extra_args,
            ("testid", "testsecret"),
            extra_env,
        )
        .await
    }

    /// Like [`Operator::start`], with its own ECS access key (`ID`, `SECRET`): the emulator's
    /// call log then tells this replica's calls apart.
    pub async fn start_with_access_key(
        kubeconfig: &Path,
        endpoint: &str,
        namespace: &str,
        extra_args: &[&str],
        access_key: (&str, &str),
    ) -> Operator {
        Operator::launch(kubeconfig, endpoint, namespace, extra_args, access_key, &[]).await
    }

    async fn launch(
        kubeconfig: &Path,
        endpoint: &str,
        namespace: &str,
        extra_args: &[&str],
        access_key: (&str, &str),
        extra_env: &[(&str, &str)],
    ) -> Operator {
        let mut operator = Operator {
            process: LoggedChild::new("operator"),
            command: OperatorCommand {
                kubeconfig: kubeconfig.to_path_buf(),
                endpoint: endpoint.to_string(),
                namespace: namespace.to_string(),
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                pod_name: format!("operator-{}", uuid::Uuid::new_v4().simple()),
                access_key: (access_key.0.to_string(), access_key.1.to_string()),
                extra_env: extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            metrics_url: String::new(),
        };
        operator.spawn().await;
        operator
    }

    async fn spawn(&mut self) {
        let address = self
            .process
            .spawn(self.command.command(), "metrics on ")
            .await;
        self.metrics_url = address;
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.metrics_url);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator never became ready at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT` of `/metrics`, `/healthz` and `/readyz`.
    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// The operator's `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// `ecs_image_operator_reconciles_total`, over every kind.
    pub async fn reconciles(&self) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with("ecs_image_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Everything the operator printed so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// `kill -9`: the controller dies wherever it is, without any cleanup.
    pub fn kill_9(&mut self) {
        self.process.kill();
        self.process.append_marker("killed with SIGKILL");
    }

    /// Its leader-election identity (`$POD_NAME`), the holder named in a Lease it holds.
    pub fn pod_name(&self) -> &str {
        &self.command.pod_name
    }

    /// The ECS access key id it signs with.
    pub fn access_key_id(&self) -> &str {
        &self.command.access_key.0
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.process.pid().expect("the operator runs");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        self.process.append_marker(&format!("sent SIG{signal}"));
    }

    /// Waits until the process exits; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// Starts the controller again with the same flags (killing it first if it still runs);
    /// the new process logs to the same file.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.process.append_marker("restarted");
        self.spawn().await;
    }
}
