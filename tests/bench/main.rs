//! The performance benchmark (`make bench`; method and figures in BENCHMARKS.md).
//!
//! One run on the real kube-apiserver and one ECS emulator:
//! 1. the baseline — a per-object poller with its own access key — makes N copies and follows
//!    each until Available;
//! 2. the operator (the binary `BENCH_OPERATOR_BIN`, `make bench` builds it in release) gets N
//!    ImageCopy objects over R destination regions, until all are Ready;
//! 3. all are held at rest for `BENCH_AT_REST`;
//! 4. all are deleted, until gone.
//!
//! The call counts come from the emulator's call log (per access key, with millisecond
//! timestamps), the image timestamps from its admin API, memory and CPU from `/proc/<pid>` of
//! the operator, reconciles from its `/metrics`. The figures are printed as a table and written
//! as JSON (`target/bench/latest.json`).
//!
//! `cargo test` runs only `bench_smoke`, a tiny run checking that the benchmark still works; the
//! real one is `#[ignore]`d.

#![recursion_limit = "256"]

#[path = "../support/mod.rs"]
mod support;

mod baseline;
mod config;
mod launch;
mod measure;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ecs_image_operator::api::ImageCopy;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use config::{BenchConfig, SOURCE_IMAGE, SOURCE_REGION};
use launch::{BASELINE_KEY, Call, Emulator, OPERATOR_KEY, Operator};
use measure::{ProcessSample, counter_total, seconds_between};
use report::{Report, Side};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the full benchmark takes minutes; `make bench` runs it"]
async fn bench() {
    let config = BenchConfig::from_env().unwrap_or_else(|e| panic!("benchmark settings: {e}"));
    let report = run(&config).await;
    report.print();
    report.write(&config.output);
}

/// A tiny run, so that `cargo test` notices when the benchmark itself breaks.
#[tokio::test(flavor = "multi_thread")]
async fn bench_smoke() {
    let config = BenchConfig {
        objects: 6,
        regions: 2,
        copy_seconds: 2.0,
        poll_interval: Duration::from_secs(1),
        resync_interval: Duration::from_secs(2),
        at_rest: Duration::from_secs(4),
        region_qps: 10,
        concurrency: 4,
        api_parallelism: 4,
        operator_bin: support::OPERATOR_BIN.into(),
        output: support::repo_root().join("target/bench/smoke.json"),
        phase_timeout: Duration::from_secs(60),
    };
    let report = run(&config).await;
    report.write(&config.output);
    assert_eq!(report.ours.copy_image_calls, 6, "one CopyImage per object");
    assert_eq!(
        report.baseline.copy_image_calls, 6,
        "one CopyImage per copy"
    );
    assert!(
        report.baseline.describe_calls >= 6,
        "the baseline polls every copy at least once: {}",
        report.baseline.describe_calls
    );
    assert!(
        report.ours.describe_calls > 0,
        "the operator follows its copies"
    );
    assert!(
        report.ours.ready_time_ratio.is_some_and(|r| r >= 1.0),
        "no copy is Ready before the copy time: {:?}",
        report.ours.ready_time_ratio
    );
    assert!(report.rss_peak_mib > 0.0 && report.cpu_seconds > 0.0);
}

/// When each object was created and what the benchmark's own watch saw of it.
#[derive(Debug, Clone, Default)]
struct Observed {
    created: Option<DateTime<Utc>>,
    region: String,
    image_id: Option<String>,
    /// When the watch first saw the Ready condition True (millisecond resolution).
    ready_seen: Option<DateTime<Utc>>,
    /// That condition's `lastTransitionTime` (whole seconds, as Kubernetes stores it).
    ready_transition: Option<DateTime<Utc>>,
}

type Observations = Arc<Mutex<HashMap<String, Observed>>>;

fn lock(observations: &Observations) -> std::sync::MutexGuard<'_, HashMap<String, Observed>> {
    observations.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches the namespace's ImageCopy objects into a store (to see them go) and records when
/// each first turned Ready.
async fn watch(api: Api<ImageCopy>, observations: Observations) -> Store<ImageCopy> {
    let (store, writer) = reflector::store();
    let mut objects = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .boxed();
    tokio::spawn(async move {
        while let Some(object) = objects.next().await {
            let Ok(object) = object else { continue };
            let now = Utc::now();
            let mut observations = lock(&observations);
            let entry = observations.entry(object.name_any()).or_default();
            entry.region = object.spec.destination_region_id.clone();
            let Some(status) = &object.status else {
                continue;
            };
            entry.image_id = status.image_id.clone().or(entry.image_id.take());
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True");
            if let Some(ready) = ready
                && entry.ready_seen.is_none()
            {
                entry.ready_seen = Some(now);
                entry.ready_transition = Some(to_chrono(&ready.last_transition_time));
            }
        }
    });
    store
        .wait_until_ready()
        .await
        .expect("the benchmark's watch lists the namespace");
    store
}

fn to_chrono(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.0.as_millisecond())
        .expect("a Kubernetes timestamp is within chrono's range")
}

fn object_name(index: usize) -> String {
    format!("bench-{index:05}")
}

fn image_copy(name: &str, destination: &str) -> ImageCopy {
    serde_json::from_value(json!({
        "apiVersion": "imageops.dev/v1alpha1",
        "kind": "ImageCopy",
        "metadata": {"name": name},
        "spec": {
            "sourceRegionId": SOURCE_REGION,
            "sourceImageId": SOURCE_IMAGE,
            "destinationRegionId": destination,
        },
    }))
    .expect("the benchmark's manifest is a valid ImageCopy")
}

/// Calls by `key` of `action` with `at` in `[from, to)`.
fn calls_of<'a>(
    calls: &'a [Call],
    key: &'a str,
    action: &'a str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl Iterator<Item = &'a Call> + 'a {
    calls
        .iter()
        .filter(move |c| c.access_key_id == key && c.action == action && c.at >= from && c.at < to)
}

fn counts_by_action(calls: &[Call], key: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for call in calls.iter().filter(|c| c.access_key_id == key) {
        *counts.entry(call.action.clone()).or_insert(0) += 1;
    }
    counts
}

fn sample(operator: &Operator) -> ProcessSample {
    ProcessSample::read(operator.pid()).unwrap_or_else(|e| panic!("operator process: {e}"))
}

/// Waits until `done` holds, checking every 250 ms; on timeout panics with `progress()`.
async fn wait_until(
    what: &str,
    timeout: Duration,
    done: impl Fn() -> bool,
    progress: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {timeout:?} ({})",
            progress()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(config: &BenchConfig) -> Report {
    let far_future = DateTime::<Utc>::MAX_UTC;
    let apiserver = support::apiserver();
    let client: Client = apiserver.client().await;
    support::install_crds(&client).await;
    let namespace = support::fresh_namespace(&client, "bench").await;
    let emulator = Emulator::start(config).await;
    eprintln!(
        "bench: {} objects, {} regions, copy {} s, tick {:?}, {} build",
        config.objects,
        config.regions,
        config.copy_seconds,
        config.poll_interval,
        config.build()
    );

    // 1. The baseline, alone on the emulator.
    let baseline_run = baseline::run(config, &emulator.endpoint).await;
    let baseline_images = emulator.images().await;
    let baseline_calls = emulator.calls().await;
    let available_at: HashMap<(String, String), DateTime<Utc>> = baseline_images
        .iter()
        .filter_map(|i| Some(((i.region_id.clone(), i.image_id.clone()), i.available_at?)))
        .collect();
    let baseline = Side {
        describe_calls: calls_of(
            &baseline_calls,
            BASELINE_KEY.0,
            "DescribeImages",
            DateTime::<Utc>::MIN_UTC,
            far_future,
        )
        .count() as u64,
        copy_image_calls: calls_of(
            &baseline_calls,
            BASELINE_KEY.0,
            "CopyImage",
            DateTime::<Utc>::MIN_UTC,
            far_future,
        )
        .count() as u64,
        ..Side::from_copies(
            config.copy_seconds,
            f64::from(config.region_qps),
            baseline_run.copies.iter().map(|c| {
                let available = available_at
                    .get(&(c.region.to_string(), c.image_id.clone()))
                    .copied();
                (c.started, c.seen_available, None, available)
            }),
        )
    };
    let baseline_failed_polls = baseline_run.failed_polls;
    futures::stream::iter(&baseline_run.copies)
        .for_each_concurrent(config.api_parallelism, |c| {
            emulator.delete_image(c.region, &c.image_id)
        })
        .await;
    emulator.reset_calls().await;
    eprintln!(
        "bench: baseline done ({} DescribeImages)",
        baseline.describe_calls
    );

    // 2. The operator, from N applies until all Ready.
    let operator = Operator::start(
        config,
        &apiserver.kubeconfig,
        &emulator.endpoint,
        &namespace,
    )
    .await;
    let idle = sample(&operator);
    let api: Api<ImageCopy> = Api::namespaced(client.clone(), &namespace);
    let observations: Observations = Arc::default();
    let store = watch(api.clone(), observations.clone()).await;
    let first_apply = Utc::now();
    futures::stream::iter(0..config.objects)
        .for_each_concurrent(config.api_parallelism, |index| {
            let api = api.clone();
            let observations = observations.clone();
            async move {
                let name = object_name(index);
                api.create(
                    &PostParams::default(),
                    &image_copy(&name, config.destination(index)),
                )
                .await
                .unwrap_or_else(|e| panic!("create ImageCopy {name}: {e}"));
                lock(&observations).entry(name).or_default().created = Some(Utc::now());
            }
        })
        .await;
    let applied = Utc::now();
    eprintln!(
        "bench: {} objects created in {:.1} s",
        config.objects,
        seconds_between(first_apply, applied)
    );
    let ready_count = || {
        lock(&observations)
            .values()
            .filter(|o| o.ready_seen.is_some())
            .count()
    };
    wait_until(
        "all Ready",
        config.phase_timeout,
        || ready_count() >= config.objects,
        || format!("{} of {} Ready", ready_count(), config.objects),
    )
    .await;
    let all_ready = lock(&observations)
        .values()
        .filter_map(|o| o.ready_seen)
        .max()
        .unwrap_or(applied);
    eprintln!(
        "bench: all Ready {:.1} s after the first apply",
        seconds_between(first_apply, all_ready)
    );
    let images = emulator.images().await;
    let available_at: HashMap<(String, String), DateTime<Utc>> = images
        .iter()
        .filter_map(|i| Some(((i.region_id.clone(), i.image_id.clone()), i.available_at?)))
        .collect();

    // 3. At rest.
    let rest_start = Utc::now();
    let at_rest_start = sample(&operator);
    let metrics_start = operator.metrics().await;
    tokio::time::sleep(config.at_rest).await;
    let rest_end = Utc::now();
    let at_rest_end = sample(&operator);
    let metrics_end = operator.metrics().await;
    let rise = |name: &str| counter_total(&metrics_end, name) - counter_total(&metrics_start, name);
    let operator_calls = emulator.calls().await;
    emulator.reset_calls().await;

    // 4. Delete everything.
    let delete_start = Utc::now();
    futures::stream::iter(0..config.objects)
        .for_each_concurrent(config.api_parallelism, |index| {
            let api = api.clone();
            async move {
                let name = object_name(index);
                api.delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete ImageCopy {name}: {e}"));
            }
        })
        .await;
    wait_until(
        "all deleted",
        config.phase_timeout,
        || store.is_empty(),
        || format!("{} objects left", store.len()),
    )
    .await;
    let all_gone = Utc::now();
    let end = sample(&operator);
    let deletion_calls = emulator.calls().await;

    // The figures.
    let observed: Vec<Observed> = lock(&observations).values().cloned().collect();
    let ours = Side {
        describe_calls: calls_of(
            &operator_calls,
            OPERATOR_KEY.0,
            "DescribeImages",
            first_apply,
            rest_start,
        )
        .count() as u64,
        copy_image_calls: calls_of(
            &operator_calls,
            OPERATOR_KEY.0,
            "CopyImage",
            first_apply,
            rest_start,
        )
        .count() as u64,
        ..Side::from_copies(
            config.copy_seconds,
            f64::from(config.region_qps),
            observed.iter().filter_map(|o| {
                let available = o
                    .image_id
                    .as_ref()
                    .and_then(|id| available_at.get(&(o.region.clone(), id.clone())))
                    .copied();
                Some((o.created?, o.ready_seen?, o.ready_transition, available))
            }),
        )
    };
    let last_copy_image = calls_of(
        &operator_calls,
        OPERATOR_KEY.0,
        "CopyImage",
        first_apply,
        rest_start,
    )
    .map(|c| c.at)
    .max();
    let mut steady_by_region: BTreeMap<String, u64> = BTreeMap::new();
    for call in calls_of(
        &operator_calls,
        OPERATOR_KEY.0,
        "DescribeImages",
        rest_start,
        rest_end,
    ) {
        *steady_by_region.entry(call.region_id.clone()).or_insert(0) += 1;
    }
    let failed_calls = operator_calls
        .iter()
        .chain(&deletion_calls)
        .filter(|c| c.access_key_id == OPERATOR_KEY.0 && !c.code.is_empty())
        .count() as u64;
    Report::new(
        config,
        report::Phases {
            first_apply,
            applied,
            all_ready,
            rest_start,
            rest_end,
            delete_start,
            all_gone,
            last_copy_image,
        },
        ours,
        baseline,
        report::Operator {
            idle,
            at_rest_start,
            at_rest_end,
            end,
            reconciles_at_rest: rise("ecs_image_operator_reconciles_total"),
            reconcile_cpu_at_rest: rise("ecs_image_operator_reconcile_cpu_seconds_total"),
            steady_describe_calls_by_region: steady_by_region,
            calls_in_flight_and_at_rest: counts_by_action(&operator_calls, OPERATOR_KEY.0),
            calls_deleting: counts_by_action(&deletion_calls, OPERATOR_KEY.0),
            failed_calls,
        },
        baseline_failed_polls,
    )
}
