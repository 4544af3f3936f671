//! The chaos suite: many copies to several regions, and imports and exports, while the emulator
//! throttles, fails and delays calls, the operator is SIGKILLed and restarted at random moments,
//! and objects are deleted at random moments (mid-task included). Afterwards the emulator's state
//! must show the operator's promises kept: every live object Ready — each copy and import with
//! exactly one owned image, each export with exactly one export task — no image carrying the owner
//! tag of an object that is gone, no task still running for an object that is gone, no finalizer
//! left behind, and no CopyImage for an object after its image id was recorded.
//!
//! Each mode runs the same plan against a cloud that misbehaves differently: plain faults, a
//! tag index that lags writes, and a cloud that ignores `ClientToken`. `make test` runs the
//! short plan; `make chaos LONG=1` (`CHAOS_LONG=1`) the long one. `CHAOS_SEED` replays a run.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use ecs_image_operator::api::{ImageCopy, ImageExport, ImageImport};
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::watcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use support::Emulator;
use support::stage::*;

const REGIONS: [&str; 3] = ["cn-shanghai", "cn-beijing", "cn-shenzhen"];

/// How big a run is.
struct Plan {
    /// ImageCopy objects; a third as many imports and as many exports come on top.
    objects: usize,
    kills: usize,
    deletes: usize,
    /// Emulated seconds a copy takes once it runs.
    copy_seconds: &'static str,
    /// Emulated seconds an import or export takes: longer than a copy, so that deletes and kills
    /// catch tasks mid-way.
    task_seconds: &'static str,
    /// How long the system may take to settle once the chaos stops.
    settle: Duration,
}

fn plan() -> Plan {
    if std::env::var("CHAOS_LONG").is_ok_and(|v| v == "1") {
        Plan {
            objects: 36,
            kills: 22,
            deletes: 12,
            copy_seconds: "6",
            task_seconds: "20",
            settle: Duration::from_secs(300),
        }
    } else {
        Plan {
            objects: 9,
            kills: 5,
            deletes: 3,
            copy_seconds: "3",
            task_seconds: "10",
            settle: Duration::from_secs(120),
        }
    }
}

impl Plan {
    /// ImageImport objects, and as many ImageExport objects.
    fn tasks(&self) -> usize {
        (self.objects / 3).max(1)
    }
}

/// The image the `i`-th export exports: one each, since ECS runs one export of an image at a time.
fn export_source(i: usize) -> String {
    format!("m-chaosexport{i}")
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Throttling, 5xx and latency.
    Faults,
    /// As above, and images stay invisible to tag-filtered listings for a while after a write.
    TagIndexLag,
    /// As above, and CopyImage ignores `ClientToken`, as older API versions did.
    ClientTokenIgnored,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Faults => "faults",
            Mode::TagIndexLag => "tag-lag",
            Mode::ClientTokenIgnored => "no-token",
        }
    }

    /// What stays on after the chaos: the cloud's nature, not its bad day.
    fn nature(self) -> Value {
        match self {
            Mode::Faults => json!({}),
            Mode::TagIndexLag => json!({"tagIndexLagSeconds": 8.0}),
            Mode::ClientTokenIgnored => json!({"ignoreClientToken": true}),
        }
    }
}

const BAD_DAY: fn() -> Value = || json!({"throttleRate": 0.1, "errorRate": 0.05, "latencyMs": 30});
const GOOD_DAY: fn() -> Value = || json!({"throttleRate": 0.0, "errorRate": 0.0, "latencyMs": 0});

/// What one run found; all but `copies`, `imports`, `exports`, `kills` and `faults` must be zero.
#[derive(Debug, Default)]
struct Report {
    copies: usize,
    imports: usize,
    exports: usize,
    kills: usize,
    faults: usize,
    duplicates: usize,
    orphans: usize,
    leftover_finalizers: usize,
}

impl Report {
    fn line(&self) -> String {
        format!(
            "chaos: copies={} imports={} exports={} kills={} faults={} duplicates={} orphans={} leftover_finalizers={}",
            self.copies,
            self.imports,
            self.exports,
            self.kills,
            self.faults,
            self.duplicates,
            self.orphans,
            self.leftover_finalizers
        )
    }
}

/// When the test first saw each object's `status.imageId` (by UID): a CopyImage with that
/// object's token arriving later is a copy made after the id was recorded.
type Recorded = Arc<Mutex<HashMap<String, SystemTime>>>;

fn watch_recorded_ids(stage: &Stage) -> (Recorded, tokio::task::JoinHandle<()>) {
    let recorded: Recorded = Arc::default();
    let api = stage.api.clone();
    let seen = recorded.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                _ => continue,
            };
            for object in objects {
                if image_id(&object).is_some()
                    && let Some(uid) = object.uid()
                {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(uid)
                        .or_insert_with(SystemTime::now);
                }
            }
        }
    });
    (recorded, task)
}

async fn run(mode: Mode) -> Report {
    let plan = plan();
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "chaos {}: seed {seed} (CHAOS_SEED={seed} replays it)",
        mode.name()
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // Any --image replaces the emulator's default image, the copies' source: name it too.
    let sources: Vec<String> = (0..plan.tasks())
        .map(export_source)
        .chain([SOURCE_IMAGE.to_string()])
        .map(|image| format!("{SOURCE_REGION}:{image}"))
        .collect();
    let mut emulator_args = vec![
        "--copy-seconds",
        plan.copy_seconds,
        "--task-seconds",
        plan.task_seconds,
        "--region-concurrency",
        "2",
    ];
    for source in &sources {
        emulator_args.extend(["--image", source.as_str()]);
    }
    let emulator = Emulator::start(&emulator_args).await;
    let endpoint = emulator.endpoint().to_string();
    let mut stage = Stage::start_with(
        &format!("chaos-{}", mode.name()),
        emulator,
        &endpoint,
        &["--stalled-retry", "2s"],
    )
    .await;
    let mut faults = mode.nature();
    merge(&mut faults, BAD_DAY());
    stage.emulator.set_faults(&faults).await;
    let (recorded, watch) = watch_recorded_ids(&stage);

    let names: Vec<String> = (0..plan.objects).map(|i| format!("copy-{i}")).collect();
    let import_names: Vec<String> = (0..plan.tasks()).map(|i| format!("import-{i}")).collect();
    let export_names: Vec<String> = (0..plan.tasks()).map(|i| format!("export-{i}")).collect();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    let mut remember = |name: &str, uid: Option<String>| {
        uids.insert(name.to_string(), uid.expect("created objects have a UID"));
    };
    for (i, name) in names.iter().enumerate() {
        let object = image_copy_to(name, REGIONS[i % REGIONS.len()]);
        remember(name, stage.create(&object).await.uid());
    }
    for (i, name) in import_names.iter().enumerate() {
        let object = image_import_with(name, json!({"regionId": REGIONS[i % REGIONS.len()]}));
        remember(name, stage.objects().create(&object).await.uid());
    }
    for (i, name) in export_names.iter().enumerate() {
        let object = image_export_with(name, json!({"imageId": export_source(i)}));
        remember(name, stage.objects().create(&object).await.uid());
    }
    // A third of each kind is deleted.
    let mut doomed = Vec::new();
    for (kind, all, count) in [
        (Doomed::Copy, &names, plan.deletes),
        (Doomed::Import, &import_names, plan.tasks() / 3),
        (Doomed::Export, &export_names, plan.tasks() / 3),
    ] {
        let mut some = all.clone();
        shuffle(&mut some, &mut rng);
        doomed.extend(some.into_iter().take(count).map(|name| (kind, name)));
    }
    shuffle(&mut doomed, &mut rng);

    let mut report = Report::default();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    for round in 0..plan.kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..3500))).await;
        // Deletes spread over the rounds, some while the operator is down.
        if let Some((kind, name)) = doomed.get(round * doomed.len() / plan.kills.max(1))
            && deleted.insert(name.clone())
        {
            kind.delete(&stage, name).await;
        }
        stage.operator.kill_9();
        report.kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        stage.operator.restart().await;
    }
    for (kind, name) in &doomed {
        if deleted.insert(name.clone()) {
            kind.delete(&stage, name).await;
        }
    }

    let mut calm = mode.nature();
    merge(&mut calm, GOOD_DAY());
    stage.emulator.set_faults(&calm).await;
    let live: Vec<&String> = names.iter().filter(|n| !deleted.contains(*n)).collect();
    let live_imports: Vec<&String> = import_names
        .iter()
        .filter(|n| !deleted.contains(*n))
        .collect();
    let live_exports: Vec<&String> = export_names
        .iter()
        .filter(|n| !deleted.contains(*n))
        .collect();
    let lives = Lives {
        copies: &live,
        imports: &live_imports,
        exports: &live_exports,
    };
    settle(&stage, &lives, &deleted, &uids, plan.settle).await;
    watch.abort();

    let calls = stage.emulator.calls().await;
    let calls = calls["calls"].as_array().cloned().unwrap_or_default();
    let images = stage.emulator.images().await;
    let tasks = stage.emulator.tasks().await;
    let live_uids: BTreeSet<&str> = live
        .iter()
        .chain(&live_imports)
        .chain(&live_exports)
        .map(|n| uids[*n].as_str())
        .collect();

    report.copies = calls
        .iter()
        .filter(|c| c["action"] == "CopyImage" && c["code"] == "")
        .count();
    let succeeded = |action: &str| {
        calls
            .iter()
            .filter(|c| c["action"] == action && c["code"] == "")
            .count()
    };
    report.imports = succeeded("ImportImage");
    report.exports = succeeded("ExportImage");
    report.faults = calls
        .iter()
        .filter(|c| {
            let code = c["code"].as_str().unwrap_or_default();
            code.starts_with("Throttling")
                || code == "ServiceUnavailable"
                || code == "InternalError"
        })
        .count();
    let owned_per_uid = owned_images_per_uid(&images);
    for name in &live {
        let uid = &uids[*name];
        let object = stage.get(name).await;
        let owned = owned_per_uid.get(uid.as_str()).cloned().unwrap_or_default();
        if owned.len() != 1 || owned.first().map(String::as_str) != image_id(&object) {
            eprintln!(
                "{name}: owns {owned:?}, status.imageId {:?}",
                image_id(&object)
            );
            report.duplicates += owned.len().saturating_sub(1).max(1);
        }
    }
    let imports = stage.objects::<ImageImport>();
    for name in &live_imports {
        let uid = &uids[*name];
        let object = imports.get(name).await;
        let owned = owned_per_uid.get(uid.as_str()).cloned().unwrap_or_default();
        if owned.len() != 1 || owned.first().map(String::as_str) != image_id(&object) {
            eprintln!(
                "{name}: owns {owned:?}, status.imageId {:?}",
                image_id(&object)
            );
            report.duplicates += owned.len().saturating_sub(1).max(1);
        }
    }
    // Exports leave no image: their tasks tell. Each export has an image of its own.
    let exports = stage.objects::<ImageExport>();
    for (i, name) in export_names.iter().enumerate() {
        let source = export_source(i);
        let of_image: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["taskAction"] == "ExportImage" && t["resourceId"] == source.as_str())
            .collect();
        if !deleted.contains(name) {
            let object = exports.get(name).await;
            if of_image.len() != 1 || of_image[0]["taskId"].as_str() != task_id(&object) {
                eprintln!(
                    "{name}: export tasks {of_image:?}, status.taskId {:?}",
                    task_id(&object)
                );
                report.duplicates += of_image.len().saturating_sub(1).max(1);
            }
        } else if of_image.len() > 1 {
            eprintln!("{name} (deleted): export tasks {of_image:?}");
            report.duplicates += of_image.len() - 1;
        }
    }
    report.duplicates += copies_after_recording(&calls, &uids, &recorded);
    // Once settled nothing runs any more: a running task belongs to an object that is gone.
    for task in tasks
        .iter()
        .filter(|t| t["taskStatus"] == "Processing" || t["taskStatus"] == "Waiting")
    {
        eprintln!("a task still runs after the objects settled: {task}");
        report.orphans += 1;
    }
    report.orphans = owned_per_uid
        .iter()
        .filter(|(uid, _)| !live_uids.contains(*uid))
        .map(|(uid, images)| {
            eprintln!("orphans of gone object {uid}: {images:?}");
            images.len()
        })
        .sum();
    for (kind, name) in &doomed {
        if kind.exists(&stage, name).await {
            report.leftover_finalizers += 1;
        }
    }
    report
}

/// The kind of a doomed object.
#[derive(Clone, Copy, Debug)]
enum Doomed {
    Copy,
    Import,
    Export,
}

impl Doomed {
    async fn delete(self, stage: &Stage, name: &str) {
        match self {
            Doomed::Copy => stage.delete(name).await,
            Doomed::Import => stage.objects::<ImageImport>().delete(name).await,
            Doomed::Export => stage.objects::<ImageExport>().delete(name).await,
        }
    }

    async fn exists(self, stage: &Stage, name: &str) -> bool {
        let found = match self {
            Doomed::Copy => stage.api.get_opt(name).await.map(|o| o.is_some()),
            Doomed::Import => stage
                .objects::<ImageImport>()
                .api
                .get_opt(name)
                .await
                .map(|o| o.is_some()),
            Doomed::Export => stage
                .objects::<ImageExport>()
                .api
                .get_opt(name)
                .await
                .map(|o| o.is_some()),
        };
        found.unwrap_or(true)
    }
}

/// The objects that must end Ready, by kind.
struct Lives<'a> {
    copies: &'a [&'a String],
    imports: &'a [&'a String],
    exports: &'a [&'a String],
}

/// Waits until every live object is Ready (copies and imports with exactly one owned image) and
/// every deleted one is gone, or `timeout` passes (the report then counts what is wrong).
async fn settle(
    stage: &Stage,
    lives: &Lives<'_>,
    deleted: &BTreeSet<String>,
    uids: &BTreeMap<String, String>,
    timeout: Duration,
) {
    let imports = stage.objects::<ImageImport>();
    let exports = stage.objects::<ImageExport>();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let images = stage.emulator.images().await;
        let owned = owned_images_per_uid(&images);
        let one_image = |name: &String| owned.get(uids[name].as_str()).map(Vec::len) == Some(1);
        let mut settled = true;
        for name in lives.copies {
            settled &= is_ready(&stage.get(name).await) && one_image(name);
        }
        for name in lives.imports {
            settled &= is_ready(&imports.get(name).await) && one_image(name);
        }
        for name in lives.exports {
            settled &= is_ready(&exports.get(name).await);
        }
        for name in deleted {
            settled &= stage.api.get_opt(name).await.ok().flatten().is_none()
                && imports.api.get_opt(name).await.ok().flatten().is_none()
                && exports.api.get_opt(name).await.ok().flatten().is_none();
        }
        if settled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Image ids by the owner UID tag they carry.
fn owned_images_per_uid(images: &[Value]) -> BTreeMap<&str, Vec<String>> {
    let mut owned: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for image in images {
        if let Some(uid) = image["tags"]["imageops.dev/owner-uid"].as_str() {
            owned
                .entry(uid)
                .or_default()
                .push(image["imageId"].as_str().unwrap_or_default().to_string());
        }
    }
    owned
}

/// CopyImage calls that arrived after the test saw the object's image id recorded. A call
/// belongs to an object when its ClientToken is the object's UID or `UID-n`.
fn copies_after_recording(
    calls: &[Value],
    uids: &BTreeMap<String, String>,
    recorded: &Recorded,
) -> usize {
    let recorded = recorded.lock().unwrap_or_else(|e| e.into_inner());
    let mut late = 0;
    for call in calls.iter().filter(|c| c["action"] == "CopyImage") {
        let token = call["clientToken"].as_str().unwrap_or_default();
        let Some(uid) = uids
            .values()
            .find(|uid| token == uid.as_str() || token.starts_with(&format!("{uid}-")))
        else {
            continue;
        };
        let at = call["at"]
            .as_str()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| SystemTime::from(at.with_timezone(&Utc)));
        if let (Some(at), Some(seen)) = (at, recorded.get(uid))
            && at > *seen
        {
            eprintln!(
                "CopyImage for {uid} at {} after its image id was recorded",
                call["at"]
            );
            late += 1;
        }
    }
    late
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

fn image_copy_to(name: &str, region: &str) -> ImageCopy {
    serde_json::from_value(manifest(name, json!({"destinationRegionId": region})))
        .expect("the chaos manifest is a valid ImageCopy")
}

/// The three modes at once (each has its own emulator, operator and namespace), then the
/// totals as the last line.
#[tokio::test]
async fn chaos() {
    let plan = plan();
    let modes = [Mode::Faults, Mode::TagIndexLag, Mode::ClientTokenIgnored];
    let (faults, lag, no_token) = tokio::join!(run(modes[0]), run(modes[1]), run(modes[2]));
    let mut total = Report::default();
    for (mode, report) in modes.iter().zip([faults, lag, no_token]) {
        println!("{} mode={}", report.line(), mode.name());
        assert!(
            report.kills >= plan.kills,
            "{} mode={}",
            report.line(),
            mode.name()
        );
        total.copies += report.copies;
        total.imports += report.imports;
        total.exports += report.exports;
        total.kills += report.kills;
        total.faults += report.faults;
        total.duplicates += report.duplicates;
        total.orphans += report.orphans;
        total.leftover_finalizers += report.leftover_finalizers;
    }
    println!("{}", total.line());
    assert_eq!(
        (total.duplicates, total.orphans, total.leftover_finalizers),
        (0, 0, 0),
        "{}",
        total.line()
    );
}
