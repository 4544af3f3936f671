//! Leader election with fencing, on the real apiserver with the emulator and two operator
//! processes. Each replica signs with its own emulator access key, so the emulator's call log
//! (`accessKeyId`, `at`) shows which replica changed what, and when.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ecs_image_operator::api::ImageCopy;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::stage::{image_copy_with, wait_gone, wait_ready};

const LEASE: Duration = Duration::from_secs(4);
/// Lease settings short enough for a test; the order retry < renew deadline < lease holds.
const ELECTION: [&str; 6] = [
    "--leader-election-lease-duration",
    "4s",
    "--leader-election-renew-deadline",
    "3s",
    "--leader-election-retry-period",
    "500ms",
];
/// How long after the leader stops a standby may take to make its first ECS call: a full lease
/// on its own clock after it last saw a renewal (seen within a retry period), then its first
/// listing and reconciliation on a busy machine.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(3);
const LEASE_NAME: &str = "ecs-image-operator";
const ACCESS_KEYS: [(&str, &str); 2] = [("replica-a", "secret-a"), ("replica-b", "secret-b")];

/// One call from the emulator's call log.
#[derive(Debug)]
struct Call {
    action: String,
    access_key_id: String,
    at: DateTime<Utc>,
}

impl Call {
    /// Anything but a read (`Describe*`, `List*`) changes the cloud.
    fn mutates(&self) -> bool {
        !(self.action.starts_with("Describe") || self.action.starts_with("List"))
    }
}

async fn calls(emulator: &support::Emulator) -> Vec<Call> {
    let log = emulator.calls().await;
    log["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no calls array in {log}"))
        .iter()
        .map(|call| Call {
            action: call["action"].as_str().unwrap_or_default().to_string(),
            access_key_id: call["accessKeyId"].as_str().unwrap_or_default().to_string(),
            at: call["at"]
                .as_str()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .unwrap_or_else(|| panic!("call without a time: {call}"))
                .with_timezone(&Utc),
        })
        .collect()
}

/// The apiserver namespace, the emulator and two replicas with their own access keys.
struct Replicas {
    api: Api<ImageCopy>,
    leases: Api<Lease>,
    emulator: support::Emulator,
    replicas: Vec<support::Operator>,
}

impl Replicas {
    async fn start(prefix: &str, emulator_args: &[&str], operator_args: &[&str]) -> Replicas {
        let apiserver = support::apiserver();
        let client = apiserver.client().await;
        support::install_crds(&client).await;
        let ns = support::fresh_namespace(&client, prefix).await;
        let mut args = vec![];
        for (id, secret) in ACCESS_KEYS {
            args.push("--access-key".to_string());
            args.push(format!("{id}:{secret}"));
        }
        args.extend(emulator_args.iter().map(|a| a.to_string()));
        let emulator =
            support::Emulator::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        // No `--leader-elect`: leader election is on by default.
        let flags: Vec<&str> = ELECTION.iter().chain(operator_args).copied().collect();
        let mut replicas = Vec::new();
        for key in ACCESS_KEYS {
            replicas.push(
                support::Operator::start_with_access_key(
                    &apiserver.kubeconfig,
                    emulator.endpoint(),
                    &ns,
                    &flags,
                    key,
                )
                .await,
            );
        }
        Replicas {
            api: Api::namespaced(client.clone(), &ns),
            leases: Api::namespaced(client, &ns),
            emulator,
            replicas,
        }
    }

    async fn holder(&self) -> Option<String> {
        self.leases
            .get_opt(LEASE_NAME)
            .await
            .expect("get Lease")?
            .spec?
            .holder_identity
    }

    /// Index of the replica that holds the Lease, once one does.
    async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let holder = self.holder().await;
            if let Some(index) = self
                .replicas
                .iter()
                .position(|r| Some(r.pod_name()) == holder.as_deref())
            {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took the lease (holder {holder:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create(&self, name: &str, destination: &str) -> ImageCopy {
        self.api
            .create(
                &PostParams::default(),
                &image_copy_with(name, json!({"destinationRegionId": destination})),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// The first call signed with `access_key_id`, waiting up to `timeout` for one.
    async fn first_call_by(&self, access_key_id: &str, timeout: Duration) -> DateTime<Utc> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(call) = calls(&self.emulator)
                .await
                .into_iter()
                .find(|c| c.access_key_id == access_key_id)
            {
                return call.at;
            }
            assert!(
                Instant::now() < deadline,
                "no ECS call by {access_key_id} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count_by(&self, access_key_id: &str, action: &str) -> usize {
        calls(&self.emulator)
            .await
            .iter()
            .filter(|c| c.access_key_id == access_key_id && c.action == action)
            .count()
    }

    async fn wait_ready(&self, name: &str, timeout: Duration) {
        wait_ready(&self.api, name, timeout).await;
    }

    async fn wait_gone(&self, name: &str, timeout: Duration) {
        wait_gone(&self.api, name, timeout).await;
    }

    /// Every object's copy exists exactly once in ECS.
    async fn assert_one_copy_each(&self, objects: &[ImageCopy]) {
        for object in objects {
            let uid = object.uid().expect("uid");
            let owned = self.emulator.images_owned_by(&uid).await;
            assert_eq!(
                owned.len(),
                1,
                "{}: one destination image: {owned:?}",
                object.name_any()
            );
        }
    }
}

fn elapsed_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_and_the_copies_finish() {
    let mut world = Replicas::start("leader-kill", &["--copy-seconds", "4"], &[]).await;
    let leader = world.wait_leader().await;
    let standby = 1 - leader;
    let leader_key = world.replicas[leader].access_key_id().to_string();
    let standby_key = world.replicas[standby].access_key_id().to_string();

    let mut objects = Vec::new();
    for (name, destination) in [
        ("to-shanghai", "cn-shanghai"),
        ("to-beijing", "cn-beijing"),
        ("to-qingdao", "cn-qingdao"),
    ] {
        objects.push(world.create(name, destination).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.count_by(&leader_key, "CopyImage").await < objects.len() {
        assert!(
            Instant::now() < deadline,
            "the leader did not start the copies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let killed_at = Utc::now();
    world.replicas[leader].kill_9();
    assert!(
        calls(&world.emulator)
            .await
            .iter()
            .all(|c| c.access_key_id != standby_key),
        "the standby called ECS while the other replica led"
    );
    let first = world
        .first_call_by(
            &standby_key,
            LEASE + TAKEOVER_MARGIN + Duration::from_secs(5),
        )
        .await;
    let takeover = elapsed_between(killed_at, first);
    assert!(
        takeover <= LEASE + TAKEOVER_MARGIN,
        "the standby's first ECS call came {takeover:?} after the kill"
    );
    for object in &objects {
        world
            .wait_ready(&object.name_any(), Duration::from_secs(60))
            .await;
    }
    assert_eq!(
        world.holder().await.as_deref(),
        Some(world.replicas[standby].pod_name()),
        "the standby holds the lease"
    );
    world.assert_one_copy_each(&objects).await;
}

#[tokio::test]
async fn a_frozen_leader_that_resumes_after_losing_the_lease_changes_nothing_in_ecs_and_exits() {
    // One ECS call per second per region: when the leader is frozen, copies and cancellations
    // are queued in it, ready to go out the moment it resumes.
    let mut world = Replicas::start(
        "leader-freeze",
        &["--copy-seconds", "6"],
        &["--region-qps", "1"],
    )
    .await;
    let leader = world.wait_leader().await;
    let standby = 1 - leader;
    let leader_key = world.replicas[leader].access_key_id().to_string();
    let standby_key = world.replicas[standby].access_key_id().to_string();

    let mut objects = Vec::new();
    for i in 0..6 {
        objects.push(world.create(&format!("before-{i}"), "cn-shanghai").await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.count_by(&leader_key, "CopyImage").await < 2 {
        assert!(Instant::now() < deadline, "the leader started no copies");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    world.replicas[leader].signal("STOP");
    let frozen_at = Utc::now();
    // Work the frozen leader will find waiting when it resumes: deletions (cancellations) and
    // new copies.
    let deleted = ["before-0", "before-1"];
    for name in deleted {
        world
            .api
            .delete(name, &Default::default())
            .await
            .expect("delete");
    }
    for i in 0..2 {
        objects.push(world.create(&format!("during-{i}"), "cn-beijing").await);
    }

    let first = world
        .first_call_by(
            &standby_key,
            LEASE + TAKEOVER_MARGIN + Duration::from_secs(5),
        )
        .await;
    let takeover = elapsed_between(frozen_at, first);
    assert!(
        takeover <= LEASE + TAKEOVER_MARGIN,
        "the standby's first ECS call came {takeover:?} after the freeze"
    );
    assert_eq!(
        world.holder().await.as_deref(),
        Some(world.replicas[standby].pod_name())
    );

    // The old leader resumes with a lease it no longer holds and work in hand.
    world.replicas[leader].signal("CONT");
    let status = world.replicas[leader]
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old leader still runs 30s after SIGCONT"));
    assert!(
        !status.success(),
        "the old leader exits with an error: {status}"
    );
    assert!(
        world.replicas[leader]
            .log()
            .contains("lost the leader-election lease"),
        "the old leader says why it exits"
    );

    let late: Vec<Call> = calls(&world.emulator)
        .await
        .into_iter()
        .filter(|c| c.access_key_id == leader_key && c.mutates() && c.at >= first)
        .collect();
    assert!(
        late.is_empty(),
        "the old leader changed ECS after the new leader's first call at {first}: {late:?}"
    );

    // The new leader finishes the work: cancelled copies gone, the others copied once.
    for name in deleted {
        world.wait_gone(name, Duration::from_secs(60)).await;
    }
    let remaining: Vec<ImageCopy> = objects
        .into_iter()
        .filter(|o| !deleted.contains(&o.name_any().as_str()))
        .collect();
    for object in &remaining {
        world
            .wait_ready(&object.name_any(), Duration::from_secs(90))
            .await;
    }
    world.assert_one_copy_each(&remaining).await;
}

#[tokio::test]
async fn leader_election_off_needs_no_lease() {
    let apiserver = support::apiserver();
    let client = apiserver.client().await;
    support::install_crds(&client).await;
    let ns = support::fresh_namespace(&client, "no-leader").await;
    let emulator = support::Emulator::start(&["--copy-seconds", "1"]).await;
    let _operator = support::Operator::start(
        &apiserver.kubeconfig,
        emulator.endpoint(),
        &ns,
        &["--leader-elect=false"],
    )
    .await;
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &image_copy_with("solo", json!({"destinationRegionId": "cn-shanghai"})),
    )
    .await
    .expect("create");
    let deadline = Instant::now() + Duration::from_secs(30);
    while emulator.count("CopyImage").await == 0 {
        assert!(Instant::now() < deadline, "the operator did not copy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    assert!(
        leases.get_opt(LEASE_NAME).await.expect("get").is_none(),
        "no Lease with --leader-elect=false"
    );
}

#[test]
fn timing_out_of_order_is_refused_before_anything_starts() {
    let out = Command::new(support::OPERATOR_BIN)
        .args([
            "run",
            "--leader-election-lease-duration",
            "4s",
            "--leader-election-renew-deadline",
            "5s",
        ])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run the operator");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retry period < renew deadline < lease duration"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "refused before serving metrics"
    );
}
