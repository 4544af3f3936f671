//! The emulator and the operator as child processes of the benchmark, run from the binary the
//! configuration names (`make bench`: the release build), with their logs kept in
//! `target/bench/logs/` for a look after the run.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::config::BenchConfig;
use super::support::emulator_admin;

/// How long a child may take to print its address line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Access keys the emulator accepts; each side of the benchmark signs with its own, so the
/// call log tells their calls apart.
pub const OPERATOR_KEY: (&str, &str) = ("bench-operator", "bench-operator-secret");
pub const BASELINE_KEY: (&str, &str) = ("bench-baseline", "bench-baseline-secret");

/// A child process, SIGKILLed and reaped when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `command` with stdout and stderr in `log`, and waits for the stdout line starting
    /// with `ready_prefix`; returns the process and the rest of that line.
    async fn spawn(mut command: Command, log: &Path, ready_prefix: &'static str) -> (Self, String) {
        let stderr = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (found_tx, found_rx) = tokio::sync::oneshot::channel::<String>();
        let log = log.to_path_buf();
        std::thread::spawn(move || {
            let mut found_tx = Some(found_tx);
            let mut out = std::fs::OpenOptions::new().append(true).open(&log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(out) = out.as_mut() {
                    let _ = writeln!(out, "{line}");
                }
                if let Some(rest) = line.strip_prefix(ready_prefix)
                    && let Some(tx) = found_tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let process = Process { child };
        match tokio::time::timeout(STARTUP_TIMEOUT, found_rx).await {
            Ok(Ok(rest)) => (process, rest),
            _ => panic!("{ready_prefix:?} not printed in {STARTUP_TIMEOUT:?}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn log_dir() -> PathBuf {
    let dir = super::support::repo_root().join("target/bench/logs");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The emulator with both access keys, the configured copy time, and a per-region concurrency
/// of one copy slot per object, so that no copy ever waits in its region's queue.
pub struct Emulator {
    _process: Process,
    pub endpoint: String,
    http: reqwest::Client,
}

/// One entry of `/_emulator/calls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub action: String,
    pub region_id: String,
    pub code: String,
    pub at: DateTime<Utc>,
    pub access_key_id: String,
}

#[derive(Debug, Deserialize)]
struct CallLog {
    counts: std::collections::BTreeMap<String, u64>,
    calls: Vec<Call>,
}

/// One entry of `/_emulator/images`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatedImage {
    pub region_id: String,
    pub image_id: String,
    pub available_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct ImageList {
    images: Vec<EmulatedImage>,
}

impl Emulator {
    pub async fn start(config: &BenchConfig) -> Emulator {
        let mut command = Command::new(&config.operator_bin);
        command
            .args(["emulator", "--listen", "127.0.0.1:0"])
            .args(["--copy-seconds", &config.copy_seconds.to_string()])
            .args(["--region-concurrency", &config.objects.to_string()]);
        for (id, secret) in [OPERATOR_KEY, BASELINE_KEY] {
            command.args(["--access-key", &format!("{id}:{secret}")]);
        }
        let (process, endpoint) = Process::spawn(
            command,
            &log_dir().join("emulator.log"),
            "ecs-emulator listening on ",
        )
        .await;
        Emulator {
            _process: process,
            endpoint,
            http: reqwest::Client::new(),
        }
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> serde_json::Value {
        emulator_admin(&self.http, &self.endpoint, method, path, None).await
    }

    /// Every call since the last reset. Panics if the log dropped some (it keeps the newest
    /// 100 000): the benchmark resets it between phases so that this does not happen.
    pub async fn calls(&self) -> Vec<Call> {
        let log: CallLog = serde_json::from_value(self.admin(reqwest::Method::GET, "calls").await)
            .unwrap_or_else(|e| panic!("/_emulator/calls is not a call log ({e})"));
        let counted: u64 = log.counts.values().sum();
        assert_eq!(
            counted,
            log.calls.len() as u64,
            "the emulator's call log dropped calls; run fewer objects per phase"
        );
        log.calls
    }

    pub async fn reset_calls(&self) {
        self.admin(reqwest::Method::POST, "reset-calls").await;
    }

    pub async fn images(&self) -> Vec<EmulatedImage> {
        let list: ImageList =
            serde_json::from_value(self.admin(reqwest::Method::GET, "images").await)
                .unwrap_or_else(|e| panic!("/_emulator/images is not an image list ({e})"));
        list.images
    }

    /// Deletes an image without an ECS call, so the call log is untouched.
    pub async fn delete_image(&self, region: &str, image_id: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("images/{region}/{image_id}"),
        )
        .await;
    }
}

/// `ecs-image-operator run` against the benchmark's namespace, with the flags the configuration
/// sets and the defaults for everything else (leader election included).
pub struct Operator {
    process: Process,
    pub metrics_url: String,
}

impl Operator {
    pub async fn start(
        config: &BenchConfig,
        kubeconfig: &Path,
        endpoint: &str,
        namespace: &str,
    ) -> Operator {
        let mut command = Command::new(&config.operator_bin);
        command
            .arg("run")
            .args(["--ecs-endpoint", endpoint])
            .args(["--namespace", namespace])
            .args(["--leader-election-namespace", namespace])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--poll-interval", &duration_flag(config.poll_interval)])
            .args(["--resync-interval", &duration_flag(config.resync_interval)])
            .args(["--region-qps", &config.region_qps.to_string()])
            .args(["--concurrency", &config.concurrency.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", "bench-operator")
            .env_remove("POD_NAMESPACE")
            .env_remove("RUST_LOG")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY.0)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPERATOR_KEY.1)
            .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
            .env_remove("ALIBABA_CLOUD_ROLE_ARN")
            .env("NO_COLOR", "1");
        let (process, metrics_url) =
            Process::spawn(command, &log_dir().join("operator.log"), "metrics on ").await;
        let operator = Operator {
            process,
            metrics_url,
        };
        operator.wait_ready().await;
        operator
    }

    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.metrics_url);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the operator never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.metrics_url);
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

/// A duration as whole milliseconds, which every `ecs-image-operator` duration flag accepts.
fn duration_flag(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}
