//! Finished work, checked for drift per region, without a timer or a reconcile per object.
//!
//! An object whose work finished (a copy or an import Ready) registers here with the image it
//! finished with and then waits for a change of its own instead of a requeue. One checker per
//! (region, account) reads the region's drift listing (the shared [`RegionListings`], one full
//! listing per resync interval) for as long as anything is registered, and wakes (kube-runtime's
//! `reconcile_on`, as the in-flight pollers do) only the objects whose image drifted: gone, no
//! longer Available or usable, or with another image carrying the object's owner tag beside it.
//! With thousands of finished copies that is one listing per region per interval and no
//! reconcile at all, instead of a scheduled requeue (an entry in the controller's scheduler and
//! a timer, the largest per-object item after the cache) and a reconcile per object.
//!
//! A woken object leaves the register; its reconcile registers it again if it is still
//! finished. A listing that fails wakes every object it was to check, so that each shows the
//! failure in its own status and reads its credentials again, as its own resync used to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::{debug, warn};

use super::in_flight::ObjectKey;
use super::listings::{Listing, RegionListings};
use super::owned_images::ImageState;
use super::uid::Uid;
use super::wakes::Wakes;
use crate::ecs::EcsClient;

/// The shortest wait between two looks at a region's drift listing. The checker reckons a
/// listing's age by the wall clock, the shared slot by the monotonic one: a look a hair too
/// early finds the same listing, costs nothing and is made again this much later.
const MIN_WAIT: Duration = Duration::from_millis(100);

/// Key: (region, signer) — objects with their own Secret may sign as another account.
type Key = (String, String);

/// What a finished object's status shows of its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub image_id: String,
    /// Whether the status counts the image usable (Ready).
    pub usable: bool,
}

struct Entry {
    object: ObjectKey,
    settled: Settled,
    /// When it was registered: only a listing taken after this may judge it. An older one can
    /// show a copy that has just finished still Creating, and the object woken would read the
    /// same listing and go back to Copying.
    since: Timestamp,
}

struct Region {
    ecs: EcsClient,
    /// By object UID.
    entries: HashMap<Uid, Entry>,
}

type Regions = Arc<Mutex<HashMap<Key, Arc<Mutex<Region>>>>>;

pub struct Drift {
    every: Duration,
    listings: Arc<RegionListings<Listing>>,
    regions: Regions,
    wakes: Wakes,
}

impl Drift {
    /// Checks against `listings`, whose listings are refreshed once they are `every` old, and
    /// wakes through `wakes`.
    pub fn new(every: Duration, listings: Arc<RegionListings<Listing>>, wakes: Wakes) -> Self {
        Drift {
            every,
            listings,
            regions: Regions::default(),
            wakes,
        }
    }

    /// Checks the object's finished image from now on, until it drifts or the object goes
    /// elsewhere.
    pub fn watch(
        &self,
        ecs: &EcsClient,
        signer: &str,
        region: &str,
        uid: &str,
        object: ObjectKey,
        settled: Settled,
    ) {
        let key = (region.to_string(), signer.to_string());
        let uid = Uid::new(uid);
        let mut regions = lock(&self.regions);
        // Its credentials may have changed account since it was last registered.
        for (other, slot) in regions.iter() {
            if *other != key {
                lock(slot).entries.remove(&uid);
            }
        }
        // Inserted with the map still locked: a checker leaves only with both locked and its
        // region empty, so nothing is added to a region whose checker has gone.
        let slot = regions
            .entry(key.clone())
            .or_insert_with(|| {
                let slot = Arc::new(Mutex::new(Region {
                    ecs: ecs.clone(),
                    entries: HashMap::new(),
                }));
                let checker = Checker {
                    key,
                    slot: slot.clone(),
                    regions: self.regions.clone(),
                    listings: self.listings.clone(),
                    wakes: self.wakes.clone(),
                    every: self.every,
                };
                tokio::spawn(checker.run());
                slot
            })
            .clone();
        let mut slot = lock(&slot);
        slot.ecs = ecs.clone();
        let since = Timestamp::now();
        slot.entries.insert(
            uid,
            Entry {
                object,
                settled,
                since,
            },
        );
    }

    /// Stops checking the object, wherever it was checked.
    pub fn unwatch(&self, uid: &str) {
        let uid = Uid::new(uid);
        let regions: Vec<_> = lock(&self.regions).values().cloned().collect();
        for region in regions {
            lock(&region).entries.remove(&uid);
        }
    }

    /// How many objects are checked, over all regions.
    pub fn watched_count(&self) -> usize {
        let regions: Vec<_> = lock(&self.regions).values().cloned().collect();
        regions.iter().map(|r| lock(r).entries.len()).sum()
    }
}

/// Whether `listing` shows the finished image of the object `uid` other than its status does:
/// gone (the object then looks it up by id before it believes so), no longer Available, usable
/// where the status says not or the other way round, or beside another image with the object's
/// owner tag.
pub fn drifted(listing: &Listing, uid: &Uid, settled: &Settled) -> bool {
    let Some(image) = listing.image(&settled.image_id) else {
        return true;
    };
    image.state != ImageState::Available
        || (image.usable != Some(false)) != settled.usable
        || listing
            .owned_by(uid)
            .any(|other| other.image_id != settled.image_id)
}

struct Checker {
    key: Key,
    slot: Arc<Mutex<Region>>,
    regions: Regions,
    listings: Arc<RegionListings<Listing>>,
    wakes: Wakes,
    every: Duration,
}

impl Checker {
    async fn run(self) {
        let mut checked: Option<Arc<Listing>> = None;
        loop {
            if self.leave_if_idle() {
                return;
            }
            let ecs = lock(&self.slot).ecs.clone();
            let wait = match self.listings.get(&ecs, &self.key.1, &self.key.0).await {
                Ok(listing) if checked.as_ref().is_some_and(|c| Arc::ptr_eq(c, &listing)) => {
                    MIN_WAIT
                }
                Ok(listing) => {
                    self.wake(|uid, entry| {
                        listing.taken_at > entry.since && drifted(&listing, uid, &entry.settled)
                    });
                    // The next listing is due once this one is `every` old.
                    let age = Timestamp::now().duration_since(listing.taken_at);
                    let age = Duration::try_from(age).unwrap_or_default();
                    checked = Some(listing);
                    self.every.saturating_sub(age).max(MIN_WAIT)
                }
                Err(error) => {
                    warn!(region = %self.key.0, %error, "the drift listing failed; waking the finished objects to show it");
                    self.wake(|_, _| true);
                    self.every
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Wakes the registered objects `woken` picks, and lets them go.
    fn wake(&self, woken: impl Fn(&Uid, &Entry) -> bool) {
        let mut slot = lock(&self.slot);
        let before = slot.entries.len();
        slot.entries.retain(|uid, entry| {
            if !woken(uid, entry) {
                return true;
            }
            self.wakes.wake(&entry.object);
            false
        });
        debug!(region = %self.key.0, checked = before, woken = before - slot.entries.len(), "checked the finished objects for drift");
    }

    fn leave_if_idle(&self) -> bool {
        let mut regions = lock(&self.regions);
        if lock(&self.slot).entries.is_empty() {
            regions.remove(&self.key);
            return true;
        }
        false
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OWNER_UID_TAG;
    use crate::ecs::Image;
    use futures::StreamExt;
    use serde_json::{Value, json};

    fn image(id: &str, owner: &str, status: &str) -> Value {
        json!({
            "ImageId": id, "Status": status, "Progress": "100%", "Usable": true,
            "CreationTime": "2026-01-01T00:00:00Z",
            "Tags": {"Tag": [{"TagKey": OWNER_UID_TAG, "TagValue": owner}]}
        })
    }

    fn listing(images: &[Value]) -> Listing {
        let images: Vec<Image> = images
            .iter()
            .map(|i| serde_json::from_value(i.clone()).unwrap())
            .collect();
        Listing::new(Timestamp::now(), None, images)
    }

    fn ready(image_id: &str) -> Settled {
        Settled {
            image_id: image_id.into(),
            usable: true,
        }
    }

    #[test]
    fn only_a_gone_changed_or_doubled_image_has_drifted() {
        let listed = listing(&[
            image("m-a", "uid-a", "Available"),
            image("m-b", "uid-b", "CreateFailed"),
            image("m-c", "uid-c", "Available"),
            image("m-c2", "uid-c", "Creating"),
        ]);
        assert!(!drifted(&listed, &Uid::new("uid-a"), &ready("m-a")));
        assert!(
            drifted(&listed, &Uid::new("uid-b"), &ready("m-b")),
            "no longer Available"
        );
        assert!(
            drifted(&listed, &Uid::new("uid-c"), &ready("m-c")),
            "another owned image"
        );
        assert!(drifted(&listed, &Uid::new("uid-d"), &ready("m-d")), "gone");
        let not_usable = Settled {
            usable: false,
            ..ready("m-a")
        };
        assert!(
            drifted(&listed, &Uid::new("uid-a"), &not_usable),
            "usable again, the status still says not"
        );
        let mut unusable = image("m-u", "uid-u", "Available");
        unusable["Usable"] = json!(false);
        let unusable = listing(&[unusable]);
        assert!(
            drifted(&unusable, &Uid::new("uid-u"), &ready("m-u")),
            "no longer usable"
        );
        let shown_not_usable = Settled {
            usable: false,
            ..ready("m-u")
        };
        assert!(!drifted(&unusable, &Uid::new("uid-u"), &shown_not_usable));
    }

    /// A local ECS answering DescribeImages with `images`; counts the requests.
    async fn fake_ecs(images: Arc<Mutex<Vec<Value>>>) -> (EcsClient, Arc<Mutex<usize>>) {
        let requests: Arc<Mutex<usize>> = Arc::default();
        let counter = requests.clone();
        let app = axum::Router::new().fallback(move || {
            let (images, counter) = (images.clone(), counter.clone());
            async move {
                *lock(&counter) += 1;
                let all = lock(&images).clone();
                axum::Json(json!({
                    "RequestId": "r", "TotalCount": all.len(), "PageNumber": 1, "PageSize": 100,
                    "Images": {"Image": all}
                }))
            }
        });
        (crate::controller::local_ecs(app).await, requests)
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "ImageCopy",
            namespace: crate::api::Word::new("ns"),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn one_listing_per_interval_wakes_only_the_objects_whose_image_drifted() {
        let images = Arc::new(Mutex::new(vec![
            image("m-a", "uid-a", "Available"),
            image("m-b", "uid-b", "Available"),
            image("m-c", "uid-c", "Available"),
        ]));
        let (ecs, requests) = fake_ecs(images.clone()).await;
        let every = Duration::from_millis(1500);
        let listings = Arc::new(RegionListings::<Listing>::new(every));
        let wakes = Wakes::default();
        let drift = Drift::new(every, listings, wakes.clone());
        let mut wakes = wakes.receiver("ImageCopy");
        for name in ["a", "b", "c"] {
            let uid = format!("uid-{name}");
            drift.watch(
                &ecs,
                "key",
                "cn-shanghai",
                &uid,
                key(name),
                ready(&format!("m-{name}")),
            );
        }
        let quiet = tokio::time::timeout(Duration::from_millis(800), wakes.next()).await;
        assert!(quiet.is_err(), "nothing drifted: {quiet:?}");
        // Out of band: a's image deleted, a second image tagged as c's.
        {
            let mut images = lock(&images);
            images.remove(0);
            images.push(image("m-c2", "uid-c", "Available"));
        }
        let mut woken = Vec::new();
        for _ in 0..2 {
            let next = tokio::time::timeout(every * 2, wakes.next()).await;
            woken.push(next.ok().flatten().expect("woken within the interval").name);
        }
        woken.sort();
        assert_eq!(woken, ["a", "c"]);
        assert_eq!(drift.watched_count(), 1, "b is still checked");
        let more = tokio::time::timeout(every * 2, wakes.next()).await;
        assert!(more.is_err(), "b did not drift: {more:?}");
        let made = *lock(&requests);
        assert!(
            (2..=4).contains(&made),
            "one listing per interval, not one per object: {made}"
        );
        drift.unwatch("uid-b");
        assert_eq!(drift.watched_count(), 0);
    }

    #[tokio::test]
    async fn a_listing_taken_before_an_object_finished_does_not_judge_it() {
        let (ecs, _) = fake_ecs(Arc::new(Mutex::new(vec![image(
            "m-a", "uid-a", "Creating",
        )])))
        .await;
        let every = Duration::from_secs(60);
        let listings = Arc::new(RegionListings::<Listing>::new(every));
        // The shared drift listing, taken while the copy still ran.
        listings.get(&ecs, "key", "cn-shanghai").await.unwrap();
        let wakes = Wakes::default();
        let drift = Drift::new(every, listings, wakes.clone());
        let mut woken = wakes.receiver("ImageCopy");
        drift.watch(&ecs, "key", "cn-shanghai", "uid-a", key("a"), ready("m-a"));
        let none = tokio::time::timeout(Duration::from_millis(500), woken.next()).await;
        assert!(none.is_err(), "judged by a listing older than it: {none:?}");
        assert_eq!(drift.watched_count(), 1);
    }

    #[tokio::test]
    async fn a_failed_listing_wakes_every_object_it_was_to_check() {
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::FORBIDDEN,
                axum::Json(json!({
                    "RequestId": "r", "Code": "Forbidden.RAM", "Message": "no"
                })),
            )
        });
        let ecs = crate::controller::local_ecs(app).await;
        let every = Duration::from_secs(60);
        let wakes = Wakes::default();
        let drift = Drift::new(every, Arc::new(RegionListings::new(every)), wakes.clone());
        let mut wakes = wakes.receiver("ImageCopy");
        drift.watch(&ecs, "key", "cn-shanghai", "uid-a", key("a"), ready("m-a"));
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(woken.ok().flatten(), Some(key("a")));
        assert_eq!(drift.watched_count(), 0);
    }
}
