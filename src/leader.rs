//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never act at once.
//!
//! The shape is client-go's elector, with three durations (`retry < renew deadline < lease`):
//!
//! - A candidate never compares the holder's `renewTime` with its own wall clock: it remembers
//!   the Lease record it last saw and the local monotonic instant at which that record first
//!   appeared, and counts the lease expired only once the record has not changed for
//!   `leaseDurationSeconds` on its own clock. Clock skew between replicas cannot matter.
//! - Every write carries the `resourceVersion` it read, so two candidates cannot both win.
//! - Every Lease API call runs under a timeout, so a hung request cannot hold renewal up.
//! - The holder tries to renew every retry period. A timer enforces the renew deadline: when
//!   no renewal succeeded within it, counted from the start of the last successful attempt, the
//!   holder stops leading (the process exits and is restarted).
//! - The holder keeps the ECS [`Fence`] open only while it is sure it leads: opened until the
//!   renew deadline after each successful renewal, closed at once when an attempt fails or
//!   times out. A candidate takes over no earlier than a full lease duration after it saw the
//!   last renewal, which is after that renewal started; so the old holder's fence shut at
//!   least `lease duration - renew deadline` before anyone else can act.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ecs::Fence;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "leader election needs retry period < renew deadline < lease duration, got {retry_period:?}, {renew_deadline:?} and {lease_duration:?}"
    )]
    InvalidTiming {
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    },
    #[error("Lease API: {0}")]
    Api(#[from] kube::Error),
    #[error("the Lease API did not answer within {0:?}")]
    Timeout(Duration),
}

/// The three durations of leader election, checked to be in the order that makes it safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTiming {
    /// How long a candidate waits, after the Lease last changed, before taking it over.
    lease_duration: Duration,
    /// How long the holder goes on acting without a successful renewal.
    renew_deadline: Duration,
    /// How often the holder renews and a candidate looks at the Lease; also the limit of one
    /// Lease API call.
    retry_period: Duration,
}

impl ElectionTiming {
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, LeaderError> {
        if retry_period.is_zero()
            || retry_period >= renew_deadline
            || renew_deadline >= lease_duration
        {
            return Err(LeaderError::InvalidTiming {
                lease_duration,
                renew_deadline,
                retry_period,
            });
        }
        Ok(ElectionTiming {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// `leaseDurationSeconds` is whole seconds; rounding up keeps other candidates waiting at
    /// least as long as this replica assumes.
    fn lease_duration_seconds(&self) -> i32 {
        let seconds =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(seconds).unwrap_or(i32::MAX)
    }
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process, e.g. the pod name.
    pub identity: String,
    pub timing: ElectionTiming,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// Open only while this replica is sure it holds the lease.
    fence: Fence,
    /// The Lease record last seen, and since when (on this process's clock).
    observed: Mutex<Option<Observation>>,
}

/// What one attempt to take or keep the lease found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    HeldBy(String),
}

impl LeaderElector {
    /// `fence` should start closed; the elector opens it while it leads.
    pub fn new(client: Client, config: LeaseConfig, fence: Fence) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            fence,
            observed: Mutex::new(None),
        }
    }

    /// Waits until this process holds the lease, opens the fence, and returns when the winning
    /// attempt started (what [`LeaderElector::keep_leading`] counts the renew deadline from).
    pub async fn acquire(&self) -> Instant {
        let timing = self.config.timing;
        let mut last_holder = None;
        loop {
            let started = Instant::now();
            let deadline = started + timing.renew_deadline;
            match self.try_acquire_or_renew(deadline).await {
                Ok(Attempt::Leading) => {
                    self.fence.reopen_until(deadline.into_std());
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return started;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.config.name, %holder, "waiting until the current leader stops renewing its lease");
                        last_holder = Some(holder);
                    }
                }
                Err(e) => {
                    warn!(lease = %self.config.name, error = %e, "leader election attempt failed")
                }
            }
            tokio::time::sleep(timing.retry_period).await;
        }
    }

    /// Renews the lease every retry period until no renewal has succeeded within the renew
    /// deadline, or another replica holds the lease; then returns with the fence closed, and
    /// the caller must stop. `acquired` is what [`LeaderElector::acquire`] returned.
    pub async fn keep_leading(&self, acquired: Instant) {
        let timing = self.config.timing;
        let lease = &self.config.name;
        let mut deadline = acquired + timing.renew_deadline;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(timing.retry_period) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            let started = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew(deadline)).await {
                Ok(Ok(Attempt::Leading)) => {
                    deadline = started + timing.renew_deadline;
                    self.fence.reopen_until(deadline.into_std());
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    self.fence.close();
                    warn!(%lease, %holder, "lost the lease to another replica");
                    return;
                }
                Ok(Err(e)) => {
                    // Until a renewal succeeds this replica cannot know it still leads.
                    self.fence.close();
                    warn!(%lease, error = %e, "cannot renew the lease; ECS changes are fenced until a renewal succeeds");
                }
                Err(_) => break,
            }
        }
        self.fence.close();
        warn!(%lease, renew_deadline = ?timing.renew_deadline, "no renewal succeeded within the renew deadline; stepping down");
    }

    /// Gives the lease up on graceful shutdown so the next replica need not wait for expiry.
    pub async fn release(&self) {
        self.fence.close();
        let deadline = Instant::now() + self.config.timing.renew_deadline;
        let name = &self.config.name;
        let mut lease = match self.bounded(deadline, self.api.get_opt(name)).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                warn!(lease = %name, error = %e, "cannot release the lease");
                return;
            }
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let params = PostParams::default();
        let release = self.api.replace(name, &params, &lease);
        if let Err(e) = self.bounded(deadline, release).await {
            warn!(lease = %name, error = %e, "cannot release the lease");
        }
    }

    /// One Lease API call, given at most a retry period and never past `deadline`.
    async fn bounded<T>(
        &self,
        deadline: Instant,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaderError> {
        let limit = self
            .config
            .timing
            .retry_period
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LeaderError::Timeout(limit)),
        }
    }

    /// Remembers `lease` as the record seen now (keeping the first-seen instant when it did
    /// not change) and judges it.
    fn observe(&self, lease: &Lease) -> Verdict {
        let record = LeaseRecord::of(lease);
        let now = Instant::now();
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let observation = Observation::after(observed.take(), record, now);
        let verdict = observation.judge(
            &self.config.identity,
            self.config.timing.lease_duration,
            now,
        );
        *observed = Some(observation);
        verdict
    }

    async fn try_acquire_or_renew(&self, deadline: Instant) -> Result<Attempt, LeaderError> {
        let name = &self.config.name;
        let now = Timestamp::now();
        let Some(mut lease) = self.bounded(deadline, self.api.get_opt(name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for_us(None, now, 0)),
            };
            let params = PostParams::default();
            let create = self.api.create(&params, &lease);
            return match self.bounded(deadline, create).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Leading)
                }
                Err(LeaderError::Api(kube::Error::Api(e))) if e.code == 409 => {
                    Ok(Attempt::HeldBy("another replica".into()))
                }
                Err(e) => Err(e),
            };
        };
        let ours = match self.observe(&lease) {
            Verdict::Held { holder } => return Ok(Attempt::HeldBy(holder)),
            Verdict::Ours => true,
            Verdict::Vacant => false,
            Verdict::Expired { holder } => {
                info!(lease = %name, %holder, "the lease has not changed for its duration; taking it over");
                false
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time } else { None };
        lease.spec = Some(self.spec_for_us(acquired, now, transitions));
        // `replace` sends the resourceVersion we read: a concurrent winner makes this a 409.
        let params = PostParams::default();
        let replace = self.api.replace(name, &params, &lease);
        match self.bounded(deadline, replace).await {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Leading)
            }
            Err(LeaderError::Api(kube::Error::Api(e))) if e.code == 409 => {
                Ok(Attempt::HeldBy("another replica".into()))
            }
            Err(e) => Err(e),
        }
    }

    fn spec_for_us(
        &self,
        acquire_time: Option<MicroTime>,
        now: Timestamp,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.timing.lease_duration_seconds()),
            acquire_time: Some(acquire_time.unwrap_or(MicroTime(now))),
            // Informational only: no replica compares it with its own clock.
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// The parts of a Lease that change whenever its holder renews it or someone takes it over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LeaseRecord {
    holder: Option<String>,
    lease_duration_seconds: Option<i32>,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    lease_transitions: Option<i32>,
    resource_version: Option<String>,
}

impl LeaseRecord {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        LeaseRecord {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            lease_transitions: spec.lease_transitions,
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// A Lease record and the local instant at which this process first saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation {
    record: LeaseRecord,
    since: Instant,
}

/// Whether a candidate may take the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// This process holds it.
    Ours,
    /// Nobody holds it (never held, or released).
    Vacant,
    /// Its record has not changed for its lease duration: the holder stopped renewing.
    Expired { holder: String },
    /// Someone else holds it and has renewed it recently, as far as this process can tell.
    Held { holder: String },
}

impl Observation {
    /// The observation after seeing `record` at `now`: an unchanged record keeps the instant
    /// it was first seen, a changed one starts anew.
    fn after(previous: Option<Observation>, record: LeaseRecord, now: Instant) -> Observation {
        match previous {
            Some(previous) if previous.record == record => previous,
            _ => Observation { record, since: now },
        }
    }

    /// Judged only by how long the record has stayed the same on this process's clock; the
    /// holder's `renewTime` is never compared with local time. A record without a duration
    /// counts with `default_duration`.
    fn judge(&self, identity: &str, default_duration: Duration, now: Instant) -> Verdict {
        let Some(holder) = self.record.holder.clone() else {
            return Verdict::Vacant;
        };
        if holder == identity {
            return Verdict::Ours;
        }
        let duration = self
            .record
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(default_duration);
        if now.saturating_duration_since(self.since) >= duration {
            Verdict::Expired { holder }
        } else {
            Verdict::Held { holder }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::*;

    const LEASE: Duration = Duration::from_secs(4);

    fn record(holder: &str, renewed: Timestamp, version: u64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: Some(4),
            renew_time: Some(MicroTime(renewed)),
            resource_version: Some(version.to_string()),
            ..Default::default()
        }
    }

    /// Observes `records` one second apart on the candidate's clock; the verdicts in order.
    fn verdicts(records: impl IntoIterator<Item = LeaseRecord>) -> Vec<Verdict> {
        let start = Instant::now();
        let mut observation = None;
        records
            .into_iter()
            .enumerate()
            .map(|(second, record)| {
                let now = start + Duration::from_secs(second as u64);
                let next = Observation::after(observation.take(), record, now);
                let verdict = next.judge("me", LEASE, now);
                observation = Some(next);
                verdict
            })
            .collect()
    }

    #[test]
    fn a_holder_that_keeps_renewing_is_never_taken_over_whatever_its_clock_says() {
        let day = SignedDuration::from_hours(24);
        for holder_clock in [Timestamp::now() - day * 365, Timestamp::now() + day * 365] {
            let renewals = (0..20u64).map(|second| {
                record(
                    "other",
                    holder_clock + SignedDuration::from_secs(second as i64),
                    second,
                )
            });
            for verdict in verdicts(renewals) {
                assert_eq!(
                    verdict,
                    Verdict::Held {
                        holder: "other".into()
                    },
                    "holder clock {holder_clock}"
                );
            }
        }
    }

    #[test]
    fn a_lease_expires_once_its_record_stayed_the_same_for_its_duration_on_our_clock() {
        let far_future = Timestamp::now() + SignedDuration::from_hours(24 * 365);
        let frozen = record("other", far_future, 7);
        let seen = verdicts(std::iter::repeat_n(frozen, 6));
        let held = Verdict::Held {
            holder: "other".into(),
        };
        let expired = Verdict::Expired {
            holder: "other".into(),
        };
        assert_eq!(
            seen,
            [
                held.clone(),
                held.clone(),
                held.clone(),
                held,
                expired.clone(),
                expired
            ]
        );
    }

    #[test]
    fn a_new_candidate_waits_a_full_lease_even_when_the_renew_time_looks_old() {
        let long_ago = Timestamp::now() - SignedDuration::from_hours(24 * 365);
        let seen = verdicts(std::iter::repeat_n(record("other", long_ago, 1), 5));
        assert!(
            seen[..4].iter().all(|v| matches!(v, Verdict::Held { .. })),
            "{seen:?}"
        );
        assert!(matches!(seen[4], Verdict::Expired { .. }), "{seen:?}");
    }

    #[test]
    fn any_change_of_the_record_restarts_the_wait() {
        let now = Timestamp::now();
        let mut records: Vec<LeaseRecord> =
            std::iter::repeat_n(record("other", now, 1), 3).collect();
        // Only the resourceVersion changes (say, a label was added): still a sign of life.
        records.extend(std::iter::repeat_n(record("other", now, 2), 5));
        let seen = verdicts(records);
        assert!(
            seen[..7].iter().all(|v| matches!(v, Verdict::Held { .. })),
            "{seen:?}"
        );
        assert!(matches!(seen[7], Verdict::Expired { .. }), "{seen:?}");
    }

    #[test]
    fn a_released_lease_is_free_and_our_own_lease_is_ours_at_once() {
        let vacant = LeaseRecord {
            resource_version: Some("3".into()),
            ..Default::default()
        };
        assert_eq!(verdicts([vacant]), [Verdict::Vacant]);
        // A restarted process with the same identity (same pod) need not wait for itself.
        assert_eq!(
            verdicts([record("me", Timestamp::now(), 1)]),
            [Verdict::Ours]
        );
    }

    #[test]
    fn a_record_without_a_duration_counts_with_ours() {
        let mut unsized_record = record("other", Timestamp::now(), 1);
        unsized_record.lease_duration_seconds = None;
        let seen = verdicts(std::iter::repeat_n(unsized_record, 5));
        assert!(matches!(seen[3], Verdict::Held { .. }), "{seen:?}");
        assert!(matches!(seen[4], Verdict::Expired { .. }), "{seen:?}");
    }

    #[test]
    fn timing_must_be_retry_then_renew_deadline_then_lease() {
        let s = Duration::from_secs;
        assert!(ElectionTiming::new(s(15), s(10), s(2)).is_ok());
        assert!(
            ElectionTiming::new(
                Duration::from_millis(4000),
                s(3),
                Duration::from_millis(500)
            )
            .is_ok()
        );
        for (lease, renew, retry) in [
            (s(10), s(10), s(2)),
            (s(15), s(2), s(2)),
            (s(5), s(10), s(2)),
        ] {
            let error = ElectionTiming::new(lease, renew, retry).expect_err("refused");
            assert!(
                error
                    .to_string()
                    .contains("retry period < renew deadline < lease duration"),
                "{error}"
            );
        }
        assert!(ElectionTiming::new(s(15), s(10), Duration::ZERO).is_err());
    }

    #[test]
    fn a_fractional_lease_duration_is_rounded_up_for_other_candidates() {
        let timing = ElectionTiming::new(
            Duration::from_millis(3500),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .expect("valid");
        assert_eq!(timing.lease_duration_seconds(), 4);
    }

    /// An apiserver that accepts connections and never answers.
    async fn hung_apiserver() -> (Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = format!("http://{address}").parse().expect("url");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        (client, server)
    }

    fn elector(client: Client, fence: Fence) -> LeaderElector {
        let timing = ElectionTiming::new(
            Duration::from_millis(3000),
            Duration::from_millis(2000),
            Duration::from_millis(500),
        )
        .expect("valid timing");
        let config = LeaseConfig {
            namespace: "default".into(),
            name: "test".into(),
            identity: "me".into(),
            timing,
        };
        LeaderElector::new(client, config, fence)
    }

    #[tokio::test]
    async fn a_hung_apiserver_fences_at_once_and_ends_leadership_at_the_renew_deadline() {
        let (client, server) = hung_apiserver().await;
        let fence = Fence::closed();
        let elector = elector(client, fence.clone());
        let acquired = Instant::now();
        fence.reopen_until((acquired + Duration::from_millis(2000)).into_std());
        let leading = elector.keep_leading(acquired);
        tokio::pin!(leading);
        // The first attempt starts after a retry period and its GET times out a retry period later.
        let fenced_by = Duration::from_millis(1600);
        tokio::select! {
            _ = &mut leading => panic!("stepped down before the renew deadline"),
            _ = tokio::time::sleep(fenced_by) => {}
        }
        assert!(!fence.is_open(), "a failed renewal closes the fence");
        tokio::time::timeout(Duration::from_millis(1500), leading)
            .await
            .expect("leadership ends at the renew deadline although no request ever answers");
        let held_for = acquired.elapsed();
        assert!(
            held_for >= Duration::from_millis(2000) && held_for < Duration::from_millis(2600),
            "stepped down after {held_for:?}"
        );
        assert!(!fence.is_open());
        server.abort();
    }

    #[tokio::test]
    async fn acquiring_against_a_hung_apiserver_keeps_the_fence_closed_and_retries() {
        let (client, server) = hung_apiserver().await;
        let fence = Fence::closed();
        let elector = elector(client, fence.clone());
        let outcome = tokio::time::timeout(Duration::from_secs(2), elector.acquire()).await;
        assert!(outcome.is_err(), "no lease without an answer");
        assert!(!fence.is_open());
        server.abort();
    }
}
