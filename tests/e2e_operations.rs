//! Operating the operator: it works with exactly the RBAC of deploy/rbac.yaml under a
//! ServiceAccount token, and two replicas with `--leader-elect` reconcile one at a time and fail
//! over when the leader dies.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ecs_image_operator::api::{ImageCopy, ImageReplication};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::stage::{
    image_copy_with, image_replication_with, true_reason, wait_for, wait_gone, wait_ready,
};

fn kubectl(kubeconfig: &Path, args: &[&str]) {
    let out = Command::new(support::kubectl_bin())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn operator_works_with_only_the_rbac_of_deploy_rbac_yaml() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;

    // deploy/rbac.yaml lives in the operator's namespace; create it once for this binary.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt("ecs-image-operator")
        .await
        .expect("get")
        .is_none()
    {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "ecs-image-operator"}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }
    kubectl(
        &apiserver.kubeconfig,
        &[
            "apply",
            "-f",
            &support::repo_root()
                .join("deploy/rbac.yaml")
                .display()
                .to_string(),
        ],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = support::service_account_kubeconfig(
        &client,
        "ecs-image-operator",
        "ecs-image-operator",
        dir.path(),
    )
    .await;

    let ns = support::fresh_namespace(&client, "rbac").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "2"]).await;
    let operator = support::Operator::start(
        &kubeconfig,
        emulator.endpoint(),
        &ns,
        &[
            "--leader-elect",
            "--leader-election-namespace",
            "ecs-image-operator",
        ],
    )
    .await;

    // The object names a Secret: the operator must be allowed to read it.
    kubectl(
        &apiserver.kubeconfig,
        &[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "ecs-credentials",
            "--from-literal=accessKeyId=testid",
            "--from-literal=accessKeySecret=testsecret",
        ],
    );
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &image_copy_with("least-privilege", json!({"destinationRegionId": "cn-shanghai", "credentialsSecretRef": {"name": "ecs-credentials"}})),
    )
    .await
    .expect("create ImageCopy");
    wait_ready(&api, "least-privilege", Duration::from_secs(60)).await;

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "Available"),
        "the operator could publish events: {reasons:?}"
    );

    let metrics = operator.metrics_text().await;
    for line in [
        r#"ecs_image_operator_ecs_calls_total{action="CopyImage",result="ok"} 1"#,
        r#"ecs_image_operator_tasks_in_flight{kind="ImageCopy",region="cn-shanghai"} 0"#,
        r#"ecs_image_operator_copy_duration_seconds_count{source_region="cn-hangzhou",destination_region="cn-shanghai"} 1"#,
    ] {
        assert!(
            metrics.contains(line),
            "/metrics lacks `{line}`:\n{metrics}"
        );
    }
    assert!(metrics.contains("ecs_image_operator_reconciles_total{kind=\"ImageCopy\"}"));
    let health = reqwest::get(format!("{}/healthz", operator.metrics_url()))
        .await
        .expect("GET /healthz");
    assert!(health.status().is_success());

    api.delete("least-privilege", &Default::default())
        .await
        .expect("delete");
    wait_gone(&api, "least-privilege", Duration::from_secs(30)).await;

    // An ImageReplication: the operator creates and deletes its ImageCopy children, names the
    // replication as their owner, and writes the ConfigMap it publishes to.
    let replications: Api<ImageReplication> = Api::namespaced(client.clone(), &ns);
    replications
        .create(
            &PostParams::default(),
            &image_replication_with(
                "least-privilege",
                &["cn-beijing"],
                json!({"publishTo": "golden-images", "credentialsSecretRef": {"name": "ecs-credentials"}}),
            ),
        )
        .await
        .expect("create ImageReplication");
    wait_ready(&replications, "least-privilege", Duration::from_secs(60)).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let published = config_maps
        .get("golden-images")
        .await
        .expect("the published ConfigMap");
    assert!(
        published
            .data
            .unwrap_or_default()
            .contains_key("cn-beijing"),
        "the map lists the region"
    );
    replications
        .delete("least-privilege", &Default::default())
        .await
        .expect("delete");
    wait_gone(&replications, "least-privilege", Duration::from_secs(30)).await;
    assert!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "the replication's copy went with it"
    );
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "leader").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "2"]).await;
    let flags = [
        "--leader-elect",
        "--leader-election-namespace",
        &ns,
        "--leader-election-lease-duration",
        "3s",
        "--leader-election-renew-deadline",
        "2s",
        "--leader-election-retry-period",
        "500ms",
    ];
    let mut first =
        support::Operator::start(&apiserver.kubeconfig, emulator.endpoint(), &ns, &flags).await;
    let mut second =
        support::Operator::start(&apiserver.kubeconfig, emulator.endpoint(), &ns, &flags).await;

    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &image_copy_with(
            "before-failover",
            json!({"destinationRegionId": "cn-shanghai"}),
        ),
    )
    .await
    .expect("create");
    wait_ready(&api, "before-failover", Duration::from_secs(60)).await;

    let (a, b) = (first.reconciles().await, second.reconciles().await);
    assert!(
        (a > 0) != (b > 0),
        "exactly one replica reconciles (first: {a}, second: {b})"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = |lease: Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let first_holder = holder(leases.get("ecs-image-operator").await.expect("lease"));
    assert!(!first_holder.is_empty(), "the lease names its holder");

    let (leader, standby) = if a > 0 {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    leader.kill_9();
    api.create(
        &PostParams::default(),
        &image_copy_with(
            "after-failover",
            json!({"destinationRegionId": "cn-beijing"}),
        ),
    )
    .await
    .expect("create");
    wait_ready(&api, "after-failover", Duration::from_secs(60)).await;
    assert!(standby.reconciles().await > 0, "the standby took over");
    let new_holder = holder(leases.get("ecs-image-operator").await.expect("lease"));
    assert_ne!(new_holder, first_holder, "the lease changed hands");
    assert_eq!(
        emulator.count("CopyImage").await,
        2,
        "one CopyImage per object"
    );
}

#[tokio::test]
async fn persistent_transient_errors_back_off_instead_of_hot_looping() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "backoff").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "2"]).await;
    // Every call fails with ServiceUnavailable or InternalError, chosen at random: the status
    // keeps changing, which must not wake the controller before its backoff.
    emulator.set_faults(&json!({"errorRate": 1.0})).await;
    let _operator =
        support::Operator::start(&apiserver.kubeconfig, emulator.endpoint(), &ns, &[]).await;

    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &image_copy_with("flaky", json!({"destinationRegionId": "cn-shanghai"})),
    )
    .await
    .expect("create");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = emulator.count("DescribeImages").await + emulator.count("CopyImage").await;
    // Backoff from the 1s poll interval doubles: ~4 reconciliations of 3 attempts in 10s.
    assert!(
        calls <= 20,
        "{calls} ECS calls in 10s while every call fails"
    );
    let status = api.get("flaky").await.expect("get").status.expect("status");
    let reconciling = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .expect("Reconciling condition");
    assert_eq!(
        reconciling.status, "True",
        "transient errors keep Reconciling True"
    );

    // Once ECS recovers, the copy completes.
    emulator.set_faults(&json!({"errorRate": 0.0})).await;
    wait_ready(&api, "flaky", Duration::from_secs(60)).await;
}

async fn wait_stalled(api: &Api<ImageCopy>, name: &str, reason: &str) {
    wait_for(
        api,
        name,
        &format!("Stalled {reason}"),
        Duration::from_secs(30),
        |o| true_reason(o, "Stalled").as_deref() == Some(reason),
    )
    .await;
}

#[tokio::test]
async fn credentials_secret_problems_stall_with_a_clear_reason_until_fixed() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "secrets").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "1"]).await;
    let _operator = support::Operator::start(
        &apiserver.kubeconfig,
        emulator.endpoint(),
        &ns,
        &["--stalled-retry", "2s"],
    )
    .await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    let secret = |name: &str, id: &str, key: Option<&str>| {
        let mut args = vec![
            "-n".to_string(),
            ns.clone(),
            "create".into(),
            "secret".into(),
            "generic".into(),
            name.to_string(),
            format!("--from-literal=accessKeyId={id}"),
        ];
        if let Some(key) = key {
            args.push(format!("--from-literal=accessKeySecret={key}"));
        }
        kubectl(
            &apiserver.kubeconfig,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    };

    // Missing Secret: stalled, and ECS is never called with anything.
    api.create(
        &PostParams::default(),
        &image_copy_with("missing", json!({"destinationRegionId": "cn-shanghai", "credentialsSecretRef": {"name": "not-yet"}})),
    )
    .await
    .expect("create");
    wait_stalled(&api, "missing", "SecretNotFound").await;
    // A Secret with that name in another namespace does not count.
    let other = support::fresh_namespace(&client, "elsewhere").await;
    kubectl(
        &apiserver.kubeconfig,
        &[
            "-n",
            &other,
            "create",
            "secret",
            "generic",
            "not-yet",
            "--from-literal=accessKeyId=testid",
            "--from-literal=accessKeySecret=testsecret",
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        true_reason(&api.get("missing").await.expect("get"), "Stalled").as_deref(),
        Some("SecretNotFound"),
        "only the object's own namespace is searched"
    );
    assert_eq!(emulator.count("CopyImage").await, 0);

    // Incomplete Secret, and one whose key ECS rejects.
    secret("incomplete", "testid", None);
    api.create(
        &PostParams::default(),
        &image_copy_with("incomplete", json!({"destinationRegionId": "cn-shanghai", "credentialsSecretRef": {"name": "incomplete"}})),
    )
    .await
    .expect("create");
    wait_stalled(&api, "incomplete", "InvalidCredentialsSecret").await;
    secret("wrong", "testid", Some("not-the-secret"));
    api.create(
        &PostParams::default(),
        &image_copy_with("wrong", json!({"destinationRegionId": "cn-shanghai", "credentialsSecretRef": {"name": "wrong"}})),
    )
    .await
    .expect("create");
    wait_stalled(&api, "wrong", "SignatureDoesNotMatch").await;
    let message = api
        .get("wrong")
        .await
        .expect("get")
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled")
        .message;
    assert!(
        !message.contains("not-the-secret"),
        "no secret in status: {message}"
    );

    // Creating the Secret un-stalls the object at the next retry.
    secret("not-yet", "testid", Some("testsecret"));
    wait_ready(&api, "missing", Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_copy_ecs_cannot_cancel_is_waited_for_then_deleted() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "nocancel").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "6"]).await;
    emulator
        .set_faults(&json!({"cancelNotSupported": true}))
        .await;
    let _operator =
        support::Operator::start(&apiserver.kubeconfig, emulator.endpoint(), &ns, &[]).await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &image_copy_with("stubborn", json!({"destinationRegionId": "cn-shanghai"})),
    )
    .await
    .expect("create");
    let deadline = Instant::now() + Duration::from_secs(20);
    let image_id = loop {
        let obj = api.get("stubborn").await.expect("get");
        if let Some(id) = obj.status.and_then(|s| s.image_id) {
            break id;
        }
        assert!(Instant::now() < deadline, "no image id recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    api.delete("stubborn", &Default::default())
        .await
        .expect("delete");

    // The object stays, Cancelling, with a condition and an event saying why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let obj = api
            .get("stubborn")
            .await
            .expect("still there while the copy runs");
        let status = obj.status.unwrap_or_default();
        let waiting = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.reason == "CancelNotSupported");
        if waiting {
            assert_eq!(
                status.phase.map(|p| format!("{p:?}")).as_deref(),
                Some("Cancelling")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CancelNotSupported condition: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "CancelNotSupported"),
        "{reasons:?}"
    );

    // When the copy finishes, deletionPolicy Delete removes the image and the object goes.
    wait_gone(&api, "stubborn", Duration::from_secs(30)).await;
    assert_eq!(emulator.count("DeleteImage").await, 1);
    assert!(
        emulator.image("cn-shanghai", &image_id).await.is_none(),
        "image deleted"
    );
}

#[tokio::test]
async fn sigterm_shuts_the_operator_down_cleanly() {
    use std::io::{BufRead, BufReader};
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "shutdown").await;
    let mut child = Command::new(support::OPERATOR_BIN)
        .args([
            "run",
            "--namespace",
            &ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-elect",
        ])
        .args(["--leader-election-namespace", &ns])
        .args(["--ecs-endpoint", "http://127.0.0.1:9"])
        .env("KUBECONFIG", &apiserver.kubeconfig)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start operator");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().next();
    assert!(
        matches!(&first, Some(Ok(line)) if line.starts_with("metrics on ")),
        "operator did not start: {first:?}"
    );
    // Let it take the lease, so that shutdown also hands the lease back.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    while leases
        .get_opt("ecs-image-operator")
        .await
        .expect("get lease")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the operator never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the operator did not exit within 15s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let lease = leases.get("ecs-image-operator").await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "a graceful shutdown releases the lease"
    );
}

#[tokio::test]
async fn an_owned_deprecated_image_is_adopted_not_copied_again() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "deprecated").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "1"]).await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    // The object exists before the operator runs, and ECS already has a copy it owns that
    // someone deprecated: it must be found (ECS hides it unless asked) and not duplicated.
    let created = api
        .create(
            &PostParams::default(),
            &image_copy_with("old-copy", json!({"destinationRegionId": "cn-shanghai"})),
        )
        .await
        .expect("create");
    let uid = created.metadata.uid.expect("uid");
    emulator
        .seed_image(&json!({
            "regionId": "cn-shanghai",
            "imageId": "m-deprecatedcopy01",
            "status": "Deprecated",
            "tags": {"imageops.dev/owner-uid": uid},
        }))
        .await;
    let _operator =
        support::Operator::start(&apiserver.kubeconfig, emulator.endpoint(), &ns, &[]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let obj = api.get("old-copy").await.expect("get");
        if true_reason(&obj, "Stalled").as_deref() == Some("DestinationImageDeprecated") {
            assert_eq!(
                obj.status.and_then(|s| s.image_id).as_deref(),
                Some("m-deprecatedcopy01"),
                "the owned image is adopted"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not adopted: {:?}", obj.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(emulator.count("CopyImage").await, 0, "no second copy");
}
