//! The simulated account: images per region, import/export tasks and the per-region queues that
//! run copies and tasks.
//!
//! Time is never slept through. Every job records when it was queued and started, and
//! [`World::advance`] replays what happened up to `now`: a finishing job frees its slot at its
//! exact finish time and the next waiting job starts at that instant. So the state is exact for
//! any `now`, whichever request or admin call happens to observe it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;

pub type Time = DateTime<Utc>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImageStatus {
    Available,
    Creating,
    Waiting,
    UnAvailable,
    CreateFailed,
    Deprecated,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 6] = [
        ImageStatus::Available,
        ImageStatus::Creating,
        ImageStatus::Waiting,
        ImageStatus::UnAvailable,
        ImageStatus::CreateFailed,
        ImageStatus::Deprecated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Available => "Available",
            ImageStatus::Creating => "Creating",
            ImageStatus::Waiting => "Waiting",
            ImageStatus::UnAvailable => "UnAvailable",
            ImageStatus::CreateFailed => "CreateFailed",
            ImageStatus::Deprecated => "Deprecated",
        }
    }

    /// Case-insensitive, as the API accepts `available` as well as `Available`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(value))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Running {
        started: Time,
    },
    Done {
        finished: Time,
    },
    /// Ended in failure at `at`, `percent` done.
    Failed {
        at: Time,
        percent: u32,
    },
    Cancelled {
        at: Time,
    },
}

/// One unit of simulated work in a region's queue (an image copy or an import/export task).
#[derive(Debug, Clone)]
pub struct Job {
    /// Queue order: lower runs first.
    seq: u64,
    duration: TimeDelta,
    /// A failing job stops halfway through its run and ends `Failed` instead of `Done`.
    fails: bool,
    pub phase: Phase,
}

impl Job {
    /// When a running job ends: after its duration, or after half of it for a failing one.
    fn finish_at(&self) -> Option<Time> {
        match self.phase {
            Phase::Running { started } if self.fails => Some(started + self.duration / 2),
            Phase::Running { started } => Some(started + self.duration),
            _ => None,
        }
    }

    /// The phase a job reaches when it ends at `at`.
    fn ended(&self, at: Time) -> Phase {
        if self.fails {
            Phase::Failed {
                at,
                percent: self.percent(at),
            }
        } else {
            Phase::Done { finished: at }
        }
    }

    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::Waiting | Phase::Running { .. })
    }

    /// Whole percent done; 100 only once finished, so `100%` always means `Available`/`Finished`.
    pub fn percent(&self, now: Time) -> u32 {
        match self.phase {
            Phase::Waiting | Phase::Cancelled { .. } => 0,
            Phase::Done { .. } => 100,
            Phase::Failed { percent, .. } => percent,
            Phase::Running { started } => {
                let total = self.duration.num_milliseconds().max(1);
                let elapsed = (now - started).num_milliseconds().clamp(0, total);
                u32::try_from(elapsed * 100 / total).map_or(99, |p| p.min(99))
            }
        }
    }
}

/// Starts waiting jobs, oldest first, while the queue has free slots, as of instant `at`.
fn fill(jobs: &mut [&mut Job], concurrency: usize, at: Time) {
    let running = jobs
        .iter()
        .filter(|j| matches!(j.phase, Phase::Running { .. }))
        .count();
    let mut waiting: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].phase == Phase::Waiting)
        .collect();
    waiting.sort_by_key(|&i| jobs[i].seq);
    for i in waiting
        .into_iter()
        .take(concurrency.saturating_sub(running))
    {
        jobs[i].phase = Phase::Running { started: at };
    }
}

/// Replays the queue up to `now`: finishes due jobs in finish order and starts the next waiting
/// job at each finish instant.
fn run_until(jobs: &mut [&mut Job], concurrency: usize, now: Time) {
    loop {
        let next = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| j.finish_at().map(|at| (at, j.seq, i)))
            .min();
        match next {
            Some((at, _, i)) if at <= now => {
                jobs[i].phase = jobs[i].ended(at);
                fill(jobs, concurrency, at);
            }
            _ => break,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Origin {
    Seeded,
    Copy {
        source_region: String,
        source_image: String,
        job: Job,
    },
    Import {
        task_id: String,
    },
}

#[derive(Debug, Clone)]
pub struct Image {
    pub region: String,
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: ImageStatus,
    /// Whole percent, kept current by [`World::advance`].
    pub progress: u32,
    pub created: Time,
    /// When the image turned `Available`, by the emulated clock; `None` before.
    pub available_at: Option<Time>,
    pub tags: Vec<(String, String)>,
    /// When the tags last changed (creation included), for the tag index lag fault.
    pub tags_changed: Time,
    pub os_type: String,
    pub platform: String,
    pub architecture: String,
    pub size_gib: u32,
    pub encrypted: bool,
    pub resource_group_id: String,
    pub origin: Origin,
}

impl Image {
    pub fn is_copy(&self) -> bool {
        matches!(self.origin, Origin::Copy { .. })
    }

    pub fn copy_in_flight(&self) -> bool {
        matches!(&self.origin, Origin::Copy { job, .. } if job.in_flight())
    }

    /// Whether the tag index has caught up with this image's latest tags, `lag` after they were
    /// written.
    pub fn tag_indexed(&self, now: Time, lag: TimeDelta) -> bool {
        now >= self.tags_changed + lag
    }

    /// DescribeImages' `Usable`: `Available`, and for a copy, `delay` past the moment it turned
    /// `Available` (a fresh copy is not usable at once in a real region).
    pub fn usable(&self, now: Time, delay: TimeDelta) -> bool {
        self.status == ImageStatus::Available
            && (!self.is_copy() || self.available_at.is_some_and(|at| now >= at + delay))
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Adds or overwrites tags, keeping first-set order.
    pub fn set_tags(&mut self, tags: &[(String, String)], now: Time) {
        self.tags_changed = now;
        for (key, value) in tags {
            match self.tags.iter_mut().find(|(k, _)| k == key) {
                Some(existing) => existing.1 = value.clone(),
                None => self.tags.push((key.clone(), value.clone())),
            }
        }
    }
}

/// The task kinds DescribeTasks documents. Only ImportImage and ExportImage are run by the
/// emulator; the others exist as seeded tasks (`POST /_emulator/tasks`) for CancelTask's refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    ImportImage,
    ExportImage,
    RedeployInstance,
    ModifyDiskSpec,
    ArchiveSnapshot,
}

impl TaskAction {
    pub const ALL: [TaskAction; 5] = [
        TaskAction::ImportImage,
        TaskAction::ExportImage,
        TaskAction::RedeployInstance,
        TaskAction::ModifyDiskSpec,
        TaskAction::ArchiveSnapshot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskAction::ImportImage => "ImportImage",
            TaskAction::ExportImage => "ExportImage",
            TaskAction::RedeployInstance => "RedeployInstance",
            TaskAction::ModifyDiskSpec => "ModifyDiskSpec",
            TaskAction::ArchiveSnapshot => "ArchiveSnapshot",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }

    /// CancelTask cancels only the tasks ImportImage and ExportImage start.
    pub fn cancellable(self) -> bool {
        matches!(self, TaskAction::ImportImage | TaskAction::ExportImage)
    }
}

/// Why a task failed, as DescribeTaskAttribute's `OperationProgress` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub region: String,
    pub action: TaskAction,
    /// The imported image, or the exported one; empty for a seeded task without one.
    pub image_id: String,
    pub created: Time,
    pub job: Job,
    /// Set on a task that fails (its job fails); reported once it has.
    pub failure: Option<TaskFailure>,
    /// A seeded task keeps this progress and its state until CancelTask changes it; it takes no
    /// place in the region's queue.
    pub pinned_progress: Option<u32>,
    /// `OperationProgressSet` related items (OSSBucket, OSSObject, ImageFormat …).
    pub related: Vec<(String, String)>,
}

impl Task {
    /// DescribeTasks' TaskStatus; a cancelled task reads `Deleted` ("已取消" in the API docs).
    pub fn status(&self) -> &'static str {
        match self.job.phase {
            Phase::Waiting => "Waiting",
            Phase::Running { .. } => "Processing",
            Phase::Done { .. } => "Finished",
            Phase::Failed { .. } => "Failed",
            Phase::Cancelled { .. } => "Deleted",
        }
    }

    pub fn finished_time(&self) -> Option<Time> {
        match self.job.phase {
            Phase::Done { finished } => Some(finished),
            Phase::Failed { at, .. } | Phase::Cancelled { at } => Some(at),
            _ => None,
        }
    }

    /// Whole percent done.
    pub fn percent(&self, now: Time) -> u32 {
        self.pinned_progress
            .unwrap_or_else(|| self.job.percent(now))
    }

    /// The failure to report: only once the task has failed.
    pub fn reported_failure(&self) -> Option<&TaskFailure> {
        self.failure
            .as_ref()
            .filter(|_| matches!(self.job.phase, Phase::Failed { .. }))
    }

    /// Run by the region's task queue (not a seeded one).
    fn queued(&self) -> bool {
        self.pinned_progress.is_none()
    }
}

/// A task put in place by the admin API, in the state given.
#[derive(Debug, Clone)]
pub struct SeedTask {
    pub region: String,
    pub action: TaskAction,
    pub status: SeedTaskStatus,
    pub resource_id: String,
    pub progress: u32,
    pub failure: TaskFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedTaskStatus {
    Waiting,
    Processing,
    Finished,
    Failed,
    Deleted,
}

impl SeedTaskStatus {
    pub fn parse(value: &str) -> Option<Self> {
        [
            ("Waiting", Self::Waiting),
            ("Processing", Self::Processing),
            ("Finished", Self::Finished),
            ("Failed", Self::Failed),
            ("Deleted", Self::Deleted),
        ]
        .into_iter()
        .find(|(name, _)| *name == value)
        .map(|(_, status)| status)
    }
}

/// What a new copy needs; validation happened before.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub source_region: String,
    pub source_image: String,
    pub destination_region: String,
    pub name: String,
    pub description: String,
    pub encrypted: bool,
    pub resource_group_id: String,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ImportSpec {
    pub region: String,
    pub name: String,
    pub description: String,
    pub os_type: String,
    pub platform: String,
    pub architecture: String,
    pub size_gib: u32,
    pub tags: Vec<(String, String)>,
    pub related: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SeedImage {
    pub region: String,
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub copy: TimeDelta,
    pub task: TimeDelta,
    /// Running jobs per region and queue (copies and tasks queue separately).
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Same token, same parameters: answer with the earlier result.
    Same(String),
    /// Same token, different parameters.
    Mismatch,
}

#[derive(Debug)]
pub struct World {
    timing: Timing,
    images: BTreeMap<String, Image>,
    tasks: BTreeMap<String, Task>,
    /// (action, region, ClientToken) → (parameter fingerprint, resulting id).
    tokens: HashMap<(String, String, String), (String, String)>,
    next_seq: u64,
}

impl World {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            images: BTreeMap::new(),
            tasks: BTreeMap::new(),
            tokens: HashMap::new(),
            next_seq: 0,
        }
    }

    fn job(&mut self, duration: TimeDelta, fails: bool) -> Job {
        self.next_seq += 1;
        Job {
            seq: self.next_seq,
            duration,
            fails,
            phase: Phase::Waiting,
        }
    }

    /// `prefix` + 20 lowercase alphanumerics, unique among images and tasks.
    fn new_id(&self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        loop {
            let suffix: String = (0..20)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            let id = format!("{prefix}{suffix}");
            if !self.images.contains_key(&id) && !self.tasks.contains_key(&id) {
                return id;
            }
        }
    }

    fn copy_jobs(&mut self, region: &str) -> Vec<&mut Job> {
        self.images
            .values_mut()
            .filter(|i| i.region == region)
            .filter_map(|i| match &mut i.origin {
                Origin::Copy { job, .. } => Some(job),
                _ => None,
            })
            .collect()
    }

    fn task_jobs(&mut self, region: &str) -> Vec<&mut Job> {
        self.tasks
            .values_mut()
            .filter(|t| t.region == region && t.queued())
            .map(|t| &mut t.job)
            .collect()
    }

    fn fill_copies(&mut self, region: &str, at: Time) {
        let concurrency = self.timing.concurrency;
        fill(&mut self.copy_jobs(region), concurrency, at);
    }

    fn fill_tasks(&mut self, region: &str, at: Time) {
        let concurrency = self.timing.concurrency;
        fill(&mut self.task_jobs(region), concurrency, at);
    }

    /// Brings every queue and every in-flight image up to `now`. Call before reading or changing
    /// anything.
    pub fn advance(&mut self, now: Time) {
        let concurrency = self.timing.concurrency;
        let copy_regions: BTreeSet<String> = self
            .images
            .values()
            .filter(|i| i.copy_in_flight())
            .map(|i| i.region.clone())
            .collect();
        for region in copy_regions {
            run_until(&mut self.copy_jobs(&region), concurrency, now);
        }
        let task_regions: BTreeSet<String> = self
            .tasks
            .values()
            .filter(|t| t.queued() && t.job.in_flight())
            .map(|t| t.region.clone())
            .collect();
        for region in task_regions {
            run_until(&mut self.task_jobs(&region), concurrency, now);
        }
        for image in self.images.values_mut() {
            let job = match &image.origin {
                Origin::Seeded => continue,
                Origin::Copy { job, .. } => job,
                Origin::Import { task_id } => match self.tasks.get(task_id) {
                    Some(task) => &task.job,
                    None => continue,
                },
            };
            image.progress = job.percent(now);
            image.available_at = match job.phase {
                Phase::Done { finished } => Some(finished),
                _ => None,
            };
            image.status = match job.phase {
                Phase::Waiting if image.is_copy() => ImageStatus::Waiting,
                Phase::Waiting | Phase::Running { .. } => ImageStatus::Creating,
                Phase::Done { .. } => ImageStatus::Available,
                // A failed import leaves its image behind as CreateFailed, to be deleted;
                // cancelled work removes its image, so that case is never observed.
                Phase::Failed { .. } | Phase::Cancelled { .. } => ImageStatus::CreateFailed,
            };
        }
    }

    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.values()
    }

    /// Whether an image in `region` already has this name (ECS refuses a second one).
    pub fn name_taken(&self, region: &str, name: &str) -> bool {
        self.images().any(|i| i.region == region && i.name == name)
    }

    pub fn image(&self, region: &str, id: &str) -> Option<&Image> {
        self.images.get(id).filter(|i| i.region == region)
    }

    pub fn image_mut(&mut self, region: &str, id: &str) -> Option<&mut Image> {
        self.images.get_mut(id).filter(|i| i.region == region)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn task(&self, region: &str, id: &str) -> Option<&Task> {
        self.tasks.get(id).filter(|t| t.region == region)
    }

    pub fn task_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    /// Whether the image is being created by an import still in flight (a failed import's
    /// image is not: it can be deleted).
    pub fn importing(&self, image_id: &str) -> bool {
        self.images
            .get(image_id)
            .and_then(|image| match &image.origin {
                Origin::Import { task_id } => self.tasks.get(task_id),
                _ => None,
            })
            .is_some_and(|task| task.job.in_flight())
    }

    /// The in-flight export of an image, if any (an image is exported by one task at a time).
    pub fn exporting(&self, image_id: &str) -> bool {
        self.tasks.values().any(|t| {
            t.action == TaskAction::ExportImage && t.image_id == image_id && t.job.in_flight()
        })
    }

    pub fn seed_image(&mut self, seed: SeedImage, now: Time) -> Result<(), SeedError> {
        if self.images.contains_key(&seed.id) {
            return Err(SeedError::Duplicate(seed.id));
        }
        let progress = if seed.status == ImageStatus::Available {
            100
        } else {
            0
        };
        self.images.insert(
            seed.id.clone(),
            Image {
                region: seed.region,
                id: seed.id,
                name: seed.name,
                description: String::new(),
                status: seed.status,
                progress,
                created: now,
                available_at: (seed.status == ImageStatus::Available).then_some(now),
                tags: seed.tags,
                tags_changed: now,
                os_type: "linux".to_string(),
                platform: "Aliyun".to_string(),
                architecture: "x86_64".to_string(),
                size_gib: 40,
                encrypted: false,
                resource_group_id: String::new(),
                origin: Origin::Seeded,
            },
        );
        Ok(())
    }

    pub fn new_image_id(&self) -> String {
        self.new_id("m-")
    }

    /// Queues a copy in the destination region and returns the new image's id.
    pub fn start_copy(&mut self, spec: CopySpec, now: Time) -> String {
        let (os_type, platform, architecture, size_gib) = self
            .images
            .get(&spec.source_image)
            .map(|s| {
                (
                    s.os_type.clone(),
                    s.platform.clone(),
                    s.architecture.clone(),
                    s.size_gib,
                )
            })
            .unwrap_or_else(|| ("linux".into(), "Aliyun".into(), "x86_64".into(), 40));
        let id = self.new_id("m-");
        let job = self.job(self.timing.copy, false);
        let region = spec.destination_region.clone();
        self.images.insert(
            id.clone(),
            Image {
                region: spec.destination_region,
                id: id.clone(),
                name: spec.name,
                description: spec.description,
                status: ImageStatus::Waiting,
                progress: 0,
                created: now,
                available_at: None,
                tags: spec.tags,
                tags_changed: now,
                os_type,
                platform,
                architecture,
                size_gib,
                encrypted: spec.encrypted,
                resource_group_id: spec.resource_group_id,
                origin: Origin::Copy {
                    source_region: spec.source_region,
                    source_image: spec.source_image,
                    job,
                },
            },
        );
        self.fill_copies(&region, now);
        self.advance(now);
        id
    }

    /// Removes an image (CancelCopyImage, DeleteImage, or out of band). An in-flight copy frees
    /// its slot now; an in-flight import is cancelled with it.
    pub fn remove_image(&mut self, id: &str, now: Time) -> Option<Image> {
        let image = self.images.remove(id)?;
        match &image.origin {
            Origin::Copy { job, .. } if job.in_flight() => self.fill_copies(&image.region, now),
            Origin::Import { task_id } => {
                if let Some(task) = self.tasks.get_mut(task_id).filter(|t| t.job.in_flight()) {
                    task.job.phase = Phase::Cancelled { at: now };
                    let region = task.region.clone();
                    self.fill_tasks(&region, now);
                }
            }
            _ => {}
        }
        self.advance(now);
        Some(image)
    }

    /// Queues an import, failing with `failure` when given; returns `(image id, task id)`.
    pub fn start_import(
        &mut self,
        spec: ImportSpec,
        failure: Option<TaskFailure>,
        now: Time,
    ) -> (String, String) {
        let image_id = self.new_id("m-");
        let task_id = self.new_id("t-");
        let job = self.job(self.timing.task, failure.is_some());
        self.tasks.insert(
            task_id.clone(),
            Task {
                id: task_id.clone(),
                region: spec.region.clone(),
                action: TaskAction::ImportImage,
                image_id: image_id.clone(),
                created: now,
                job,
                failure,
                pinned_progress: None,
                related: spec.related,
            },
        );
        self.images.insert(
            image_id.clone(),
            Image {
                region: spec.region.clone(),
                id: image_id.clone(),
                name: spec.name,
                description: spec.description,
                status: ImageStatus::Creating,
                progress: 0,
                created: now,
                available_at: None,
                tags: spec.tags,
                tags_changed: now,
                os_type: spec.os_type,
                platform: spec.platform,
                architecture: spec.architecture,
                size_gib: spec.size_gib,
                encrypted: false,
                resource_group_id: String::new(),
                origin: Origin::Import {
                    task_id: task_id.clone(),
                },
            },
        );
        self.fill_tasks(&spec.region, now);
        self.advance(now);
        (image_id, task_id)
    }

    /// Queues an export, failing with `failure` when given; returns the task id.
    pub fn start_export(
        &mut self,
        region: &str,
        image_id: &str,
        failure: Option<TaskFailure>,
        now: Time,
    ) -> String {
        let task_id = self.new_id("t-");
        let job = self.job(self.timing.task, failure.is_some());
        self.tasks.insert(
            task_id.clone(),
            Task {
                id: task_id.clone(),
                region: region.to_string(),
                action: TaskAction::ExportImage,
                image_id: image_id.to_string(),
                created: now,
                job,
                failure,
                pinned_progress: None,
                related: Vec::new(),
            },
        );
        self.fill_tasks(region, now);
        self.advance(now);
        task_id
    }

    /// Puts a task in place as given; it stays so until CancelTask changes it. Returns its id.
    pub fn seed_task(&mut self, seed: SeedTask, now: Time) -> String {
        let id = self.new_id("t-");
        let phase = match seed.status {
            SeedTaskStatus::Waiting => Phase::Waiting,
            SeedTaskStatus::Processing => Phase::Running { started: now },
            SeedTaskStatus::Finished => Phase::Done { finished: now },
            SeedTaskStatus::Failed => Phase::Failed {
                at: now,
                percent: seed.progress,
            },
            SeedTaskStatus::Deleted => Phase::Cancelled { at: now },
        };
        let mut job = self.job(self.timing.task, seed.status == SeedTaskStatus::Failed);
        job.phase = phase;
        self.tasks.insert(
            id.clone(),
            Task {
                id: id.clone(),
                region: seed.region,
                action: seed.action,
                image_id: seed.resource_id,
                created: now,
                job,
                failure: Some(seed.failure).filter(|_| seed.status == SeedTaskStatus::Failed),
                pinned_progress: Some(seed.progress),
                related: Vec::new(),
            },
        );
        id
    }

    /// Cancels an in-flight task; cancelling an import removes the image it was creating.
    /// Returns false when the task is not in flight.
    pub fn cancel_task(&mut self, id: &str, now: Time) -> bool {
        let Some(task) = self.tasks.get_mut(id).filter(|t| t.job.in_flight()) else {
            return false;
        };
        task.job.phase = Phase::Cancelled { at: now };
        let (region, action, image_id) = (task.region.clone(), task.action, task.image_id.clone());
        if action == TaskAction::ImportImage {
            self.images.remove(&image_id);
        }
        self.fill_tasks(&region, now);
        self.advance(now);
        true
    }

    pub fn recall(
        &self,
        action: &str,
        region: &str,
        token: &str,
        fingerprint: &str,
    ) -> Option<Recall> {
        let key = (action.to_string(), region.to_string(), token.to_string());
        self.tokens.get(&key).map(|(known, id)| {
            if known == fingerprint {
                Recall::Same(id.clone())
            } else {
                Recall::Mismatch
            }
        })
    }

    pub fn remember(
        &mut self,
        action: &str,
        region: &str,
        token: &str,
        fingerprint: String,
        id: String,
    ) {
        self.tokens.insert(
            (action.to_string(), region.to_string(), token.to_string()),
            (fingerprint, id),
        );
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    #[error("image {0} already exists")]
    Duplicate(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Time {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(seconds: f64) -> Time {
        t0() + TimeDelta::milliseconds((seconds * 1000.0) as i64)
    }

    fn world(concurrency: usize) -> World {
        world_with(Timing {
            copy: TimeDelta::seconds(10),
            task: TimeDelta::seconds(4),
            concurrency,
        })
    }

    /// A world with the Available source image `cn-hangzhou/m-src`.
    fn world_with(timing: Timing) -> World {
        let mut w = World::new(timing);
        w.seed_image(
            SeedImage {
                region: "cn-hangzhou".into(),
                id: "m-src".into(),
                name: "src".into(),
                status: ImageStatus::Available,
                tags: vec![],
            },
            t0(),
        )
        .unwrap();
        w
    }

    fn copy(w: &mut World, name: &str, now: Time) -> String {
        w.start_copy(
            CopySpec {
                source_region: "cn-hangzhou".into(),
                source_image: "m-src".into(),
                destination_region: "cn-shanghai".into(),
                name: name.into(),
                description: String::new(),
                encrypted: false,
                resource_group_id: String::new(),
                tags: vec![],
            },
            now,
        )
    }

    fn state(w: &mut World, id: &str, now: Time) -> (ImageStatus, u32) {
        w.advance(now);
        let i = w.image("cn-shanghai", id).unwrap();
        (i.status, i.progress)
    }

    #[test]
    fn concurrency_one_runs_copies_back_to_back() {
        let mut w = world(1);
        let a = copy(&mut w, "a", at(0.0));
        let b = copy(&mut w, "b", at(1.0));
        assert_eq!(state(&mut w, &a, at(2.5)), (ImageStatus::Creating, 25));
        assert_eq!(state(&mut w, &b, at(2.5)), (ImageStatus::Waiting, 0));
        // a finishes at 10; b starts exactly then, not when someone next looks.
        assert_eq!(state(&mut w, &a, at(15.0)), (ImageStatus::Available, 100));
        assert_eq!(state(&mut w, &b, at(15.0)), (ImageStatus::Creating, 50));
        assert_eq!(state(&mut w, &b, at(20.0)), (ImageStatus::Available, 100));
    }

    #[test]
    fn concurrency_two_runs_two_at_once() {
        let mut w = world(2);
        let ids: Vec<String> = (0..3)
            .map(|n| copy(&mut w, &format!("c{n}"), at(0.0)))
            .collect();
        w.advance(at(5.0));
        let statuses: Vec<ImageStatus> = ids
            .iter()
            .map(|id| w.image("cn-shanghai", id).unwrap().status)
            .collect();
        assert_eq!(
            statuses,
            vec![
                ImageStatus::Creating,
                ImageStatus::Creating,
                ImageStatus::Waiting
            ]
        );
        // Observing only long after everything is done still replays the queue exactly.
        assert_eq!(
            state(&mut w, &ids[2], at(19.0)),
            (ImageStatus::Creating, 90)
        );
        assert_eq!(
            state(&mut w, &ids[2], at(20.0)),
            (ImageStatus::Available, 100)
        );
    }

    #[test]
    fn queues_are_per_destination_region() {
        let mut w = world(1);
        let a = copy(&mut w, "a", at(0.0));
        let other = w.start_copy(
            CopySpec {
                source_region: "cn-hangzhou".into(),
                source_image: "m-src".into(),
                destination_region: "cn-beijing".into(),
                name: "x".into(),
                description: String::new(),
                encrypted: false,
                resource_group_id: String::new(),
                tags: vec![],
            },
            at(0.0),
        );
        w.advance(at(1.0));
        assert_eq!(
            w.image("cn-shanghai", &a).unwrap().status,
            ImageStatus::Creating
        );
        assert_eq!(
            w.image("cn-beijing", &other).unwrap().status,
            ImageStatus::Creating
        );
    }

    #[test]
    fn cancelling_frees_the_slot_at_once() {
        let mut w = world(1);
        let a = copy(&mut w, "a", at(0.0));
        let b = copy(&mut w, "b", at(0.0));
        let c = copy(&mut w, "c", at(0.0));
        w.advance(at(3.0));
        // Cancel a waiting one: nothing else moves.
        assert!(w.remove_image(&c, at(3.0)).is_some());
        assert_eq!(state(&mut w, &b, at(3.0)), (ImageStatus::Waiting, 0));
        // Cancel the running one: b starts at the cancel instant.
        assert!(w.remove_image(&a, at(4.0)).is_some());
        assert_eq!(state(&mut w, &b, at(9.0)), (ImageStatus::Creating, 50));
        assert!(w.image("cn-shanghai", &a).is_none());
    }

    #[test]
    fn zero_duration_copies_finish_immediately() {
        let mut w = world_with(Timing {
            copy: TimeDelta::zero(),
            task: TimeDelta::zero(),
            concurrency: 1,
        });
        let ids: Vec<String> = (0..3)
            .map(|n| copy(&mut w, &format!("z{n}"), t0()))
            .collect();
        for id in ids {
            assert_eq!(state(&mut w, &id, t0()), (ImageStatus::Available, 100));
        }
    }

    #[test]
    fn import_runs_as_a_task_and_cancel_removes_its_image() {
        let mut w = world(1);
        let spec = ImportSpec {
            region: "cn-hangzhou".into(),
            name: "imp".into(),
            description: String::new(),
            os_type: "linux".into(),
            platform: "Others Linux".into(),
            architecture: "x86_64".into(),
            size_gib: 20,
            tags: vec![],
            related: vec![],
        };
        let (image, task) = w.start_import(spec.clone(), None, at(0.0));
        let (image2, task2) = w.start_import(spec, None, at(0.0));
        w.advance(at(1.0));
        assert_eq!(w.task("cn-hangzhou", &task).unwrap().status(), "Processing");
        assert_eq!(w.task("cn-hangzhou", &task2).unwrap().status(), "Waiting");
        assert_eq!(
            w.image("cn-hangzhou", &image).unwrap().status,
            ImageStatus::Creating
        );
        assert_eq!(w.image("cn-hangzhou", &image).unwrap().progress, 25);
        assert!(w.cancel_task(&task, at(2.0)));
        assert!(w.image("cn-hangzhou", &image).is_none());
        assert_eq!(w.task("cn-hangzhou", &task).unwrap().status(), "Deleted");
        assert!(!w.cancel_task(&task, at(2.0)));
        w.advance(at(6.0));
        assert_eq!(w.task("cn-hangzhou", &task2).unwrap().status(), "Finished");
        assert_eq!(
            w.image("cn-hangzhou", &image2).unwrap().status,
            ImageStatus::Available
        );
    }

    fn import_spec() -> ImportSpec {
        ImportSpec {
            region: "cn-hangzhou".into(),
            name: "imp".into(),
            description: String::new(),
            os_type: "linux".into(),
            platform: "Others Linux".into(),
            architecture: "x86_64".into(),
            size_gib: 20,
            tags: vec![],
            related: vec![],
        }
    }

    fn oss_missing() -> TaskFailure {
        TaskFailure {
            code: "ImportImage.OssObjectNotFound".into(),
            message: "gone".into(),
        }
    }

    #[test]
    fn a_failing_import_stops_halfway_and_leaves_a_create_failed_image() {
        let mut w = world(1);
        let (image, task) = w.start_import(import_spec(), Some(oss_missing()), at(0.0));
        let (_, next) = w.start_import(import_spec(), None, at(0.0));
        w.advance(at(1.0));
        let t = w.task("cn-hangzhou", &task).unwrap();
        assert_eq!((t.status(), t.percent(at(1.0))), ("Processing", 25));
        assert_eq!(t.reported_failure(), None, "not failed yet");
        // Fails at half its 4 s run; the next task starts at that instant.
        w.advance(at(3.0));
        let t = w.task("cn-hangzhou", &task).unwrap();
        assert_eq!((t.status(), t.percent(at(3.0))), ("Failed", 50));
        assert_eq!(t.finished_time(), Some(at(2.0)));
        assert_eq!(t.reported_failure(), Some(&oss_missing()));
        assert!(!t.job.in_flight());
        assert_eq!(
            w.image("cn-hangzhou", &image).unwrap().status,
            ImageStatus::CreateFailed
        );
        assert_eq!(w.task("cn-hangzhou", &next).unwrap().percent(at(3.0)), 25);
        assert!(!w.cancel_task(&task, at(3.0)));
    }

    #[test]
    fn a_failing_export_leaves_its_image_available() {
        let mut w = world(1);
        let task = w.start_export("cn-hangzhou", "m-src", Some(oss_missing()), at(0.0));
        assert!(w.exporting("m-src"));
        w.advance(at(2.0));
        assert_eq!(w.task("cn-hangzhou", &task).unwrap().status(), "Failed");
        assert!(!w.exporting("m-src"));
        assert_eq!(
            w.image("cn-hangzhou", "m-src").unwrap().status,
            ImageStatus::Available
        );
    }

    #[test]
    fn seeded_tasks_keep_their_state_and_take_no_queue_slot() {
        let mut w = world(1);
        let seeded = w.seed_task(
            SeedTask {
                region: "cn-hangzhou".into(),
                action: TaskAction::RedeployInstance,
                status: SeedTaskStatus::Processing,
                resource_id: "i-1".into(),
                progress: 30,
                failure: oss_missing(),
            },
            at(0.0),
        );
        let (image, _) = w.start_import(import_spec(), None, at(0.0));
        w.advance(at(100.0));
        let t = w.task("cn-hangzhou", &seeded).unwrap();
        assert_eq!((t.status(), t.percent(at(100.0))), ("Processing", 30));
        assert_eq!(t.reported_failure(), None);
        assert_eq!(
            w.image("cn-hangzhou", &image).unwrap().status,
            ImageStatus::Available,
            "the import ran although a seeded task was processing"
        );
        let failed = w.seed_task(
            SeedTask {
                region: "cn-hangzhou".into(),
                action: TaskAction::ImportImage,
                status: SeedTaskStatus::Failed,
                resource_id: String::new(),
                progress: 10,
                failure: oss_missing(),
            },
            at(0.0),
        );
        let t = w.task("cn-hangzhou", &failed).unwrap();
        assert_eq!(t.status(), "Failed");
        assert_eq!(t.reported_failure(), Some(&oss_missing()));
    }

    #[test]
    fn client_tokens_remember_parameters() {
        let mut w = world(1);
        w.remember(
            "CopyImage",
            "cn-hangzhou",
            "tok",
            "a=1".into(),
            "m-x".into(),
        );
        assert_eq!(
            w.recall("CopyImage", "cn-hangzhou", "tok", "a=1"),
            Some(Recall::Same("m-x".into()))
        );
        assert_eq!(
            w.recall("CopyImage", "cn-hangzhou", "tok", "a=2"),
            Some(Recall::Mismatch)
        );
        assert_eq!(w.recall("CopyImage", "cn-beijing", "tok", "a=1"), None);
    }

    #[test]
    fn a_copy_records_when_it_turned_available_and_is_usable_after_the_delay() {
        let mut w = world(1);
        let a = copy(&mut w, "a", at(0.0));
        let delay = TimeDelta::seconds(5);
        w.advance(at(9.0));
        let image = w.image("cn-shanghai", &a).unwrap();
        assert_eq!(image.available_at, None);
        assert!(!image.usable(at(9.0), TimeDelta::zero()));
        // Observed late, the moment is still the exact finish time.
        w.advance(at(12.0));
        let image = w.image("cn-shanghai", &a).unwrap();
        assert_eq!(image.available_at, Some(at(10.0)));
        assert!(image.usable(at(12.0), TimeDelta::zero()));
        assert!(!image.usable(at(14.999), delay));
        assert!(image.usable(at(15.0), delay));
        // A seeded image was never copied, so the delay does not apply to it.
        let source = w.image("cn-hangzhou", "m-src").unwrap();
        assert_eq!(source.available_at, Some(t0()));
        assert!(source.usable(t0(), delay));
    }

    #[test]
    fn the_tag_index_catches_up_after_creation_and_after_each_change() {
        let mut w = world(1);
        let a = copy(&mut w, "a", at(0.0));
        let lag = TimeDelta::seconds(2);
        let image = w.image("cn-shanghai", &a).unwrap();
        assert!(image.tag_indexed(at(0.0), TimeDelta::zero()));
        assert!(!image.tag_indexed(at(1.9), lag));
        assert!(image.tag_indexed(at(2.0), lag));
        w.image_mut("cn-shanghai", &a)
            .unwrap()
            .set_tags(&[("k".into(), "v".into())], at(10.0));
        let image = w.image("cn-shanghai", &a).unwrap();
        assert!(!image.tag_indexed(at(11.0), lag));
        assert!(image.tag_indexed(at(12.0), lag));
    }

    #[test]
    fn new_ids_look_like_ecs_ids() {
        let w = world(1);
        let id = w.new_image_id();
        assert_eq!(id.len(), 22);
        assert!(id.starts_with("m-"));
        assert!(
            id[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
