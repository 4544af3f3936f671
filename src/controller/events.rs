//! Events about objects (`events.k8s.io/v1`), a repeat of the same event within
//! [`SERIES_WINDOW`] folded into the first one as a series.
//!
//! kube-runtime's `Recorder` does the same, but keeps every event it published, whole, in a map
//! it prunes only when it publishes again: at 2,000 objects that map was three quarters of the
//! operator's heap, and its growth the peak of the process (BENCHMARKS.md). A repeat needs only
//! the first event's name and count, so that is all this keeps, under a digest of what makes
//! two events the same, for at most [`CAPACITY`] events.
//! A repeat whose entry was dropped starts a new Event object, as a repeat after the window does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Error};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long after its last occurrence an event can still be repeated as a series: client-go's
/// and kube-runtime's choice, well within the apiserver's one-hour event TTL.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The most events remembered for series at once (client-go's event cache is as large). Each
/// is a digest, the first Event's name, a count and a time, about 120 bytes with the map's own,
/// so the cache stays under half a megabyte however many objects there are.
const CAPACITY: usize = 4096;

/// Publishes events; shared by every reconcile.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Mutex<SeriesCache>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            series: Mutex::new(SeriesCache::new(CAPACITY, SERIES_WINDOW)),
        }
    }

    /// Publishes `event` about `regarding`: a new Event object, or a series count on the Event of
    /// the same occurrence published within the window.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), Error> {
        let key = series_key(event, regarding);
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let repeat = self.lock().repeat(key, now);
        if let Some(Repeat { name, count }) = repeat {
            let series = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    self.lock().record(key, name, count, now);
                    return Ok(());
                }
                // The first Event expired or was deleted: this occurrence starts a new one.
                Err(Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let created = events
            .create(
                &PostParams::default(),
                &self.new_event(event, regarding, now),
            )
            .await?;
        if let Some(name) = created.metadata.name {
            self.lock().record(key, name, 1, now);
        }
        Ok(())
    }

    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        K8sEvent {
            metadata: ObjectMeta {
                // Unique per object and moment, as kubectl and client-go name events.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(type_name(event.type_).into()),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events of this recorder the same occurrence: both objects, type, reason,
/// action and note (the Events API does not let a series change its note), as a digest. The
/// fields joined would take a few hundred bytes per remembered event; 128 bits of their SHA-256
/// take 16, and two different occurrences share them with a chance of about 2^-128 per pair.
/// Fields are separated by NUL, which only the note, placed last, could hold.
fn series_key(event: &Event, regarding: &ObjectReference) -> SeriesKey {
    let mut digest = Sha256::new();
    let mut field = |value: &str| {
        digest.update(value.as_bytes());
        digest.update([0]);
    };
    for reference in std::iter::once(regarding).chain(event.secondary.as_ref()) {
        for part in [
            &reference.api_version,
            &reference.kind,
            &reference.namespace,
            &reference.name,
            &reference.uid,
        ] {
            field(part.as_deref().unwrap_or_default());
        }
    }
    field(type_name(event.type_));
    field(&event.reason);
    field(&event.action);
    digest.update(event.note.as_deref().unwrap_or_default().as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest.finalize()[..16]);
    SeriesKey::from_be_bytes(key)
}

/// See [`series_key`].
type SeriesKey = u128;

/// The next occurrence of a remembered event.
#[derive(Debug, PartialEq, Eq)]
struct Repeat {
    /// The first Event's name.
    name: String,
    /// The series count including this occurrence.
    count: i32,
}

struct Entry {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Events published within the window, by [`series_key`], at most `capacity` of them.
struct SeriesCache {
    capacity: usize,
    window: Duration,
    entries: HashMap<SeriesKey, Entry>,
    /// When expired entries were last dropped.
    swept: Option<Timestamp>,
}

impl SeriesCache {
    fn new(capacity: usize, window: Duration) -> Self {
        SeriesCache {
            capacity,
            window,
            entries: HashMap::new(),
            swept: None,
        }
    }

    fn live(&self, entry: &Entry, now: Timestamp) -> bool {
        Duration::try_from(now.duration_since(entry.last)).is_ok_and(|age| age < self.window)
            || entry.last > now
    }

    /// The series an occurrence at `now` continues, if its event is remembered and recent.
    fn repeat(&self, key: SeriesKey, now: Timestamp) -> Option<Repeat> {
        let entry = self.entries.get(&key).filter(|e| self.live(e, now))?;
        Some(Repeat {
            name: entry.name.clone(),
            count: entry.count.saturating_add(1),
        })
    }

    /// Remembers that the Event `name` was published (`count` occurrences so far) at `now`.
    fn record(&mut self, key: SeriesKey, name: String, count: i32, now: Timestamp) {
        self.sweep(now);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.drop_oldest_half();
        }
        self.entries.insert(
            key,
            Entry {
                name,
                count,
                last: now,
            },
        );
    }

    /// Drops expired entries, at most once per window (or sooner when full): amortised, each
    /// entry is looked at a constant number of times.
    fn sweep(&mut self, now: Timestamp) {
        let due = self.swept.is_none_or(|swept| {
            Duration::try_from(now.duration_since(swept)).is_ok_and(|since| since >= self.window)
        });
        if due || self.entries.len() >= self.capacity {
            let entries = std::mem::take(&mut self.entries);
            self.entries = entries
                .into_iter()
                .filter(|(_, entry)| self.live(entry, now))
                .collect();
            self.swept = Some(now);
        }
    }

    /// Makes room when every entry is recent: the older half goes, so the next half of the
    /// capacity fills without another scan.
    fn drop_oldest_half(&mut self) {
        let mut times: Vec<Timestamp> = self.entries.values().map(|e| e.last).collect();
        let middle = times.len() / 2;
        let (_, &mut median, _) = times.select_nth_unstable(middle);
        self.entries.retain(|_, entry| entry.last > median);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{patch, post};
    use k8s_openapi::jiff::SignedDuration;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + seconds)
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series_and_one_after_it_does_not() {
        let mut cache = SeriesCache::new(10, Duration::from_secs(360));
        assert_eq!(cache.repeat(1, at(0)), None);
        cache.record(1, "c.1".into(), 1, at(0));
        let repeat = cache.repeat(1, at(300));
        assert_eq!(
            repeat,
            Some(Repeat {
                name: "c.1".into(),
                count: 2
            })
        );
        cache.record(1, "c.1".into(), 2, at(300));
        assert_eq!(
            cache.repeat(1, at(600)).map(|r| r.count),
            Some(3),
            "the window runs from the last occurrence"
        );
        assert_eq!(cache.repeat(1, at(660)), None);
        assert_eq!(cache.repeat(2, at(1)), None);
    }

    #[test]
    fn expired_events_are_dropped_without_waiting_for_the_same_event_again() {
        let mut cache = SeriesCache::new(100, Duration::from_secs(360));
        for i in 0..50 {
            cache.record(i, format!("e{i}"), 1, at(0));
        }
        cache.record(50, "late".into(), 1, at(400));
        assert_eq!(cache.len(), 1, "only the recent event is kept");
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut cache = SeriesCache::new(100, Duration::from_secs(360));
        for i in 0..10_000 {
            cache.record(i, format!("e{i}"), 1, at(i as i64 / 100));
            assert!(cache.len() <= 100);
        }
        assert!(cache.repeat(9999, at(100)).is_some(), "the newest are kept");
        assert_eq!(cache.repeat(0, at(100)), None);
    }

    fn copy_reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("imageops.dev/v1alpha1".into()),
            kind: Some("ImageCopy".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[derive(Default)]
    struct Seen {
        created: Mutex<Vec<serde_json::Value>>,
        patched: Mutex<Vec<(String, serde_json::Value)>>,
        /// Names answered with 404, as if the Event expired.
        gone: Mutex<Vec<String>>,
    }

    async fn recorder() -> (Recorder, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(
                    |State(seen): State<Arc<Seen>>, Json(body): Json<serde_json::Value>| async move {
                        seen.created.lock().unwrap().push(body.clone());
                        (StatusCode::CREATED, Json(body))
                    },
                ),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(
                    |State(seen): State<Arc<Seen>>,
                     Path((_, name)): Path<(String, String)>,
                     body: String| async move {
                        if seen.gone.lock().unwrap().contains(&name) {
                            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
                            return (StatusCode::NOT_FOUND, Json(status));
                        }
                        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                        seen.patched.lock().unwrap().push((name.clone(), body));
                        (StatusCode::OK, Json(json!({"metadata": {"name": name}})))
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{address}").parse().unwrap();
        let client = Client::try_from(kube::Config::new(url)).unwrap();
        let reporter = Reporter {
            controller: "ecs-image-operator".into(),
            instance: Some("pod-1".into()),
        };
        (Recorder::new(client, reporter), seen)
    }

    #[tokio::test]
    async fn the_same_event_again_is_a_series_count_on_the_first_event() {
        let (recorder, seen) = recorder().await;
        let copy = copy_reference("c");
        recorder
            .publish(&event("Copying", "copy started"), &copy)
            .await
            .unwrap();
        recorder
            .publish(&event("Copying", "copy started"), &copy)
            .await
            .unwrap();
        recorder
            .publish(&event("Copying", "copy started"), &copy)
            .await
            .unwrap();
        let created = seen.created.lock().unwrap().clone();
        assert_eq!(created.len(), 1);
        let first = &created[0];
        assert_eq!(first["reason"], "Copying");
        assert_eq!(first["note"], "copy started");
        assert_eq!(first["regarding"]["name"], "c");
        assert_eq!(first["reportingController"], "ecs-image-operator");
        assert_eq!(first["reportingInstance"], "pod-1");
        let name = first["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("c."), "{name}");
        let patched = seen.patched.lock().unwrap().clone();
        let counts: Vec<_> = patched
            .iter()
            .map(|(n, body)| (n.clone(), body["series"]["count"].clone()))
            .collect();
        assert_eq!(counts, vec![(name.clone(), json!(2)), (name, json!(3))]);
    }

    #[tokio::test]
    async fn another_note_reason_or_object_is_an_event_of_its_own() {
        let (recorder, seen) = recorder().await;
        recorder
            .publish(&event("Progress", "at 10%"), &copy_reference("c"))
            .await
            .unwrap();
        recorder
            .publish(&event("Progress", "at 20%"), &copy_reference("c"))
            .await
            .unwrap();
        recorder
            .publish(&event("Available", "at 20%"), &copy_reference("c"))
            .await
            .unwrap();
        recorder
            .publish(&event("Progress", "at 10%"), &copy_reference("d"))
            .await
            .unwrap();
        assert_eq!(seen.created.lock().unwrap().len(), 4);
        assert!(seen.patched.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_repeat_of_an_event_that_is_gone_starts_a_new_one() {
        let (recorder, seen) = recorder().await;
        let copy = copy_reference("c");
        recorder
            .publish(&event("Failed", "denied"), &copy)
            .await
            .unwrap();
        let first = seen.created.lock().unwrap()[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        seen.gone.lock().unwrap().push(first);
        recorder
            .publish(&event("Failed", "denied"), &copy)
            .await
            .unwrap();
        assert_eq!(seen.created.lock().unwrap().len(), 2);
        recorder
            .publish(&event("Failed", "denied"), &copy)
            .await
            .unwrap();
        let patched = seen.patched.lock().unwrap().clone();
        assert_eq!(patched.len(), 1, "the new Event carries the series on");
        assert_eq!(patched[0].1["series"]["count"], 2);
    }
}
