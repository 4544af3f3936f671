//! The acceptance check with the built binary only: `ecs-image-operator emulator` as a
//! child process, then `ecs-image-operator ecs ...` calls against it as a user would type them.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_ecs-image-operator");
const STARTUP: Duration = Duration::from_secs(20);
/// A 3 s copy plus generous slack for a loaded machine.
const COPY_DEADLINE: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(150);

/// The emulator child; killed when the test ends, however it ends.
struct EmulatorProcess {
    endpoint: String,
    _child: Child,
}

impl EmulatorProcess {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BINARY)
            .arg("emulator")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ecs-image-operator emulator");
        let stdout = child.stdout.take().expect("emulator stdout is piped");
        let line = tokio::time::timeout(STARTUP, BufReader::new(stdout).lines().next_line())
            .await
            .expect("the emulator prints its address in time")
            .expect("read the emulator's stdout")
            .expect("the emulator prints a line before exiting");
        let endpoint = line
            .strip_prefix("ecs-emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(
            endpoint.starts_with("http://127.0.0.1:") && !endpoint.ends_with(":0"),
            "{endpoint}"
        );
        EmulatorProcess {
            endpoint,
            _child: child,
        }
    }

    async fn admin(&self, path: &str) -> Value {
        reqwest::get(format!("{}/_emulator/{path}", self.endpoint))
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("admin API JSON")
    }
}

/// `ecs-image-operator ecs ARGS...` with only the test's credentials in the environment.
async fn ecs(secret: &str, args: &[&str]) -> Output {
    let call = Command::new(BINARY)
        .arg("ecs")
        .args(args)
        .env_clear()
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("`ecs {args:?}` did not finish within {CALL_TIMEOUT:?}"))
        .expect("run ecs-image-operator ecs")
}

/// The JSON a successful call prints.
fn answer(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the ecs subcommand prints JSON")
}

#[tokio::test]
async fn copy_image_with_the_cli_runs_to_available_and_bad_secrets_are_refused() {
    let emulator =
        EmulatorProcess::start(&["--listen", "127.0.0.1:0", "--copy-seconds", "3"]).await;
    let endpoint = emulator.endpoint.as_str();

    let copied = answer(
        &ecs(
            "testsecret",
            &[
                "CopyImage",
                "--endpoint",
                endpoint,
                "--region",
                "cn-hangzhou",
                "ImageId=m-demo0001",
                "DestinationRegionId=cn-shanghai",
            ],
        )
        .await,
    );
    let image_id = copied["ImageId"]
        .as_str()
        .expect("CopyImage prints the new ImageId");
    assert!(
        image_id.starts_with("m-") && image_id != "m-demo0001",
        "{copied}"
    );
    assert!(copied["RequestId"].is_string(), "{copied}");

    let image_param = format!("ImageId={image_id}");
    let started = Instant::now();
    let mut seen: Vec<(String, u32)> = Vec::new();
    let mut describes = 0;
    loop {
        let listed = answer(
            &ecs(
                "testsecret",
                &[
                    "DescribeImages",
                    "--endpoint",
                    endpoint,
                    "--region",
                    "cn-shanghai",
                    &image_param,
                    "Status=Creating,Waiting,Available",
                ],
            )
            .await,
        );
        describes += 1;
        let image = &listed["Images"]["Image"][0];
        assert_eq!(image["ImageId"], image_id, "{listed}");
        let status = image["Status"].as_str().expect("Status").to_string();
        let progress: u32 = image["Progress"]
            .as_str()
            .and_then(|p| p.strip_suffix('%'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("Progress like \"45%\": {image}"));
        seen.push((status.clone(), progress));
        if status == "Available" {
            break;
        }
        assert_eq!(status, "Creating", "{seen:?}");
        assert!(
            started.elapsed() < COPY_DEADLINE,
            "not Available within {COPY_DEADLINE:?}: {seen:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "progress never goes back: {seen:?}"
    );
    let intermediate = seen.iter().filter(|(_, p)| (1..100).contains(p)).count();
    assert!(intermediate >= 2, "progress is seen rising: {seen:?}");
    assert_eq!(seen.last(), Some(&("Available".to_string(), 100)));

    const WRONG: &str = "not-the-testsecret";
    let refused = ecs(
        WRONG,
        &[
            "DescribeImages",
            "--endpoint",
            endpoint,
            "--region",
            "cn-shanghai",
            &image_param,
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "a refused call exits 1");
    assert!(refused.stdout.is_empty(), "nothing on stdout for a refusal");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let stderr = stderr.trim_end();
    assert!(
        stderr.starts_with("SignatureDoesNotMatch: Specified signature is not matched"),
        "{stderr}"
    );
    let request_id = stderr
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once(" ("))
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("`Code: Message (RequestId)`: {stderr}"));
    assert!(
        uuid::Uuid::parse_str(request_id).is_ok(),
        "RequestId {request_id:?}"
    );
    assert!(!stderr.contains(WRONG), "the secret is never printed");

    let counts = &emulator.admin("calls").await["counts"];
    assert_eq!(counts["CopyImage"], 1, "{counts}");
    assert_eq!(counts["DescribeImages"], describes + 1, "{counts}");
}
