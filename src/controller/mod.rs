//! The controllers: a kind-neutral core ([`task`]) and one module per kind, each keeping its
//! decisions in a pure `decide` module.

pub mod conditions;
pub mod credentials;
pub mod drift;
pub mod ecs_tasks;
pub mod events;
pub mod image_copy;
pub mod image_export;
pub mod image_import;
pub mod image_replication;
pub mod in_flight;
pub mod listings;
pub mod metrics;
pub mod needs_work;
pub mod owned_images;
pub mod progress_budget;
pub mod progress_trail;
pub mod start_slots;
pub mod task;
pub mod uid;
pub mod wakes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use crate::ecs::{CredentialsProvider, EcsClient, EcsError};
use drift::Drift;
use events::Recorder;
use in_flight::{InFlight, Pacing};
use listings::{Listing, RegionListings, RunningExports};
use metrics::Metrics;
use start_slots::StartSlots;
use wakes::Wakes;

/// Timing knobs of the controllers.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How often in-flight work is looked at; also the age of a shared region listing.
    pub poll_interval: Duration,
    /// How often finished copies are checked (e.g. for out-of-band deletion): the age of the
    /// drift listing.
    pub resync_interval: Duration,
    /// Wait after a terminal error before trying again.
    pub stalled_retry: Duration,
    /// Ceiling of the per-object backoff after transient errors.
    pub max_backoff: Duration,
    /// Status writes for new progress alone, per second over every object in flight.
    pub progress_writes_per_second: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_interval: Duration::from_secs(10),
            resync_interval: Duration::from_secs(300),
            stalled_retry: Duration::from_secs(300),
            max_backoff: Duration::from_secs(300),
            progress_writes_per_second: 10,
        }
    }
}

/// Shared by every reconciliation.
pub struct Context {
    pub client: Client,
    /// Carries the shared HTTP pool, per-region rate limits and the metrics observer; each call
    /// goes through `with_credentials` for the object's credentials.
    pub ecs: EcsClient,
    /// The operator's own credentials from the standard chain, when it has any.
    pub default_credentials: Option<CredentialsProvider>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The owned images of each region, every one of them, for finished copies and imports:
    /// refreshed at most once per resync (drift-check) interval.
    pub listings: Arc<RegionListings<Listing>>,
    /// Finished copies and imports, checked against `listings` per region; only those whose
    /// image drifted are woken.
    pub drift: Drift,
    /// Copies in flight, followed per region on a due-time schedule; also the recent listings
    /// that objects not yet started look in.
    pub in_flight: InFlight,
    /// Turns for starting copies, per source region, at its API budget.
    pub start_slots: StartSlots,
    /// Objects woken by the drift check and at their turn to start.
    pub wakes: Wakes,
    /// The running export tasks of each region.
    pub running_exports: RegionListings<RunningExports>,
    pub timing: Timing,
    /// When each object last read its task's progress by id (exports: listings carry none).
    pub progress_reads: Throttle,
    backoffs: Backoffs,
}

impl Context {
    pub fn new(
        client: Client,
        ecs: EcsClient,
        default_credentials: Option<CredentialsProvider>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        timing: Timing,
    ) -> Self {
        let listings = Arc::new(RegionListings::with_limits(
            timing.resync_interval,
            timing.poll_interval.max(Duration::from_secs(15)),
            (timing.resync_interval * 3).max(Duration::from_secs(600)),
        ));
        let wakes = Wakes::default();
        Context {
            start_slots: StartSlots::new(ecs.region_qps(), wakes.clone()),
            client,
            ecs,
            default_credentials,
            recorder,
            metrics,
            drift: Drift::new(timing.resync_interval, listings.clone(), wakes.clone()),
            wakes,
            listings,
            in_flight: InFlight::new(Pacing::new(
                timing.poll_interval,
                timing.progress_writes_per_second,
            )),
            running_exports: RegionListings::new(timing.poll_interval),
            backoffs: Backoffs::new(timing.poll_interval, timing.max_backoff),
            progress_reads: Throttle::new(timing.poll_interval * PROGRESS_READ_POLLS),
            timing,
        }
    }

    /// The delay before retrying an object after another consecutive failure.
    pub fn backoff_after_failure(&self, uid: &str) -> Duration {
        self.backoffs.next(uid)
    }

    /// Drops everything kept for an object that is gone, so per-object state does not grow
    /// with every object ever seen.
    pub fn forget(&self, kind: &str, uid: &str) {
        self.backoffs.reset(uid);
        self.progress_reads.forget(uid);
        self.in_flight.unfollow(uid);
        self.drift.unwatch(uid);
        self.start_slots.forget(uid);
        self.metrics.set_in_flight(kind, uid, None);
    }

    pub fn reset_failures(&self, uid: &str) {
        self.backoffs.reset(uid);
    }
}

/// Progress read by id at most once per this many poll intervals per object: the shared
/// listing follows the task's status every poll, the progress needs one call per object.
const PROGRESS_READ_POLLS: u32 = 3;

/// At most one action per object per interval.
pub struct Throttle {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `uid` may act now; if so, counts this as its action.
    pub fn due(&self, uid: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get(uid) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(uid.to_string(), now);
                true
            }
        }
    }

    pub fn forget(&self, uid: &str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

/// Consecutive failures per object UID, for exponential backoff: from the poll interval,
/// doubling, capped, with jitter so objects that failed together spread out.
pub struct Backoffs {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoffs {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoffs {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure of `uid` and returns how long to wait before the next try.
    pub fn next(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let base = self.base.as_secs_f64().max(0.5);
        let exp = base * 2f64.powi((*n).min(16) as i32 - 1);
        let capped = exp.min(self.max.as_secs_f64());
        let jitter = rand::random_range(0.8..1.2);
        Duration::from_secs_f64(capped * jitter)
    }

    pub fn reset(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Objects with failures on record.
    pub fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Errors that end a reconciliation early; the controller retries them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("ECS: {0}")]
    Ecs(#[from] EcsError),
    #[error("object has no {0}")]
    MissingObjectField(&'static str),
    #[error("credentials: {reason}: {message}")]
    Credentials {
        reason: &'static str,
        message: String,
    },
    /// The finalizer cannot finish: the object shows why (phase `Deleting`, `Stalled`).
    #[error("deletion blocked: {code}: {message}")]
    DeletionBlocked { code: String, message: String },
    /// ECS answered with something that could not be decoded where a decision depends on it.
    #[error("unreadable ECS answer: {0}")]
    Unreadable(String),
    /// Not a failure: a replication's finalizer stays until its copies finished their own
    /// cleanup.
    #[error("waiting for {0} ImageCopy object(s) to finish their cleanup")]
    WaitingForChildren(usize),
    /// Not a failure: the finalizer stays until ECS finishes work it could not cancel.
    #[error("waiting for {0} to finish; ECS cannot cancel it")]
    WaitingForTask(String),
}

impl Error {
    /// A short label for metrics: the ECS error code when there is one.
    pub fn metric_code(&self) -> String {
        match self {
            Error::Kube(_) => "KubernetesApi".into(),
            Error::Ecs(e) => e.code().unwrap_or("Transport").to_string(),
            Error::MissingObjectField(_) => "InvalidObject".into(),
            Error::Credentials { reason, .. } => (*reason).to_string(),
            Error::Unreadable(_) => "Unreadable".into(),
            Error::DeletionBlocked { code, .. } => code.clone(),
            Error::WaitingForTask(_) => "WaitingForTask".into(),
            Error::WaitingForChildren(_) => "WaitingForChildren".into(),
        }
    }
}

/// For unit tests: an ECS client for a local server answering with `app`.
#[cfg(test)]
pub(crate) async fn local_ecs(app: axum::Router) -> EcsClient {
    use crate::ecs::{Credentials, EcsClientConfig};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    EcsClient::new(
        EcsClientConfig {
            endpoint: Some(url::Url::parse(&format!("http://{address}")).unwrap()),
            max_attempts: 1,
            ..Default::default()
        },
        CredentialsProvider::fixed(Credentials::new("id", "secret")),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_forgets_objects() {
        let backoffs = Backoffs::new(Duration::from_secs(1), Duration::from_secs(8));
        let delays: Vec<f64> = (0..6).map(|_| backoffs.next("a").as_secs_f64()).collect();
        for (delay, expected) in delays.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
            assert!(
                (expected * 0.8..=expected * 1.2).contains(delay),
                "{delays:?}"
            );
        }
        backoffs.next("b");
        assert_eq!(backoffs.tracked(), 2);
        backoffs.reset("a");
        backoffs.reset("b");
        assert_eq!(
            backoffs.tracked(),
            0,
            "deleted objects leave nothing behind"
        );
        assert!(backoffs.next("a") < Duration::from_secs_f64(1.3));
    }

    #[test]
    fn throttle_lets_each_object_act_once_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(60));
        assert!(throttle.due("a"));
        assert!(!throttle.due("a"), "again within the interval");
        assert!(throttle.due("b"), "objects are throttled each on its own");
        throttle.forget("a");
        assert!(throttle.due("a"), "a forgotten object starts afresh");
    }
}
