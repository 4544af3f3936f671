//! `ecs-image-operator ecs ...` as users run it, against a scripted local ECS.

mod support;

use std::process::Output;

use serde_json::json;
use support::{FakeServer, Reply};

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-image-operator"))
        .arg("ecs")
        .args(args)
        // Only what the test sets: the developer's own credentials must not leak in.
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

const TEST_KEY: [(&str, &str); 2] = [
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid"),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret"),
];

#[tokio::test]
async fn prints_the_json_answer_of_one_signed_call() {
    let server = FakeServer::start(vec![Reply::json(
        200,
        json!({"RequestId": "R", "Regions": {"Region": [{"RegionId": "cn-hangzhou"}]}}),
    )])
    .await;
    let endpoint = server.url().to_string();
    let mut env = TEST_KEY.to_vec();
    env.push(("ECS_ENDPOINT", &endpoint));
    let output = run(
        &[
            "DescribeRegions",
            "--region",
            "cn-hangzhou",
            "AcceptLanguage=en-US",
        ],
        &env,
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["Regions"]["Region"][0]["RegionId"], "cn-hangzhou");
    let request = &server.requests()[0];
    assert_eq!(request.param("AcceptLanguage").as_deref(), Some("en-US"));
    assert_eq!(request.param("RegionId").as_deref(), Some("cn-hangzhou"));
    assert_eq!(
        request.header("x-acs-action").as_deref(),
        Some("DescribeRegions")
    );
}

#[tokio::test]
async fn errors_print_code_message_request_id_and_exit_1() {
    let server = FakeServer::start(vec![Reply::ecs_error(
        404,
        "InvalidImageId.NotFound",
        "The specified ImageId does not exist.",
    )])
    .await;
    let endpoint = server.url().to_string();
    let output = run(
        &[
            "CancelCopyImage",
            "--region",
            "cn-shanghai",
            "--endpoint",
            &endpoint,
            "--signature",
            "v1",
            "ImageId=m-gone",
        ],
        &TEST_KEY,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "InvalidImageId.NotFound: The specified ImageId does not exist. (req-InvalidImageId.NotFound)"
    );
    assert!(
        server.requests()[0].param("Signature").is_some(),
        "sent with V1"
    );
}

#[tokio::test]
async fn bad_usage_exits_2_and_missing_credentials_are_named() {
    let output = run(
        &["DescribeRegions", "--region", "cn-hangzhou", "novalue"],
        &TEST_KEY,
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["DescribeRegions"], &TEST_KEY).await;
    assert_eq!(output.status.code(), Some(2), "--region is required");

    let output = run(&["DescribeRegions", "--region", "cn-hangzhou"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"), "{stderr}");
}
