//! Region-batched listings shared by every object: the images this operator owns (copies and
//! imports are followed from them) and the export tasks running in a region.
//!
//! Every in-flight copy to a region is followed from one `DescribeImages` listing of that region
//! (owner-tag filter, every status, 100 per page), shared by all objects and refreshed at most
//! once per poll interval; running exports likewise from one `DescribeTasks` listing. So the
//! number of calls grows with regions and ticks, not with the number of objects.
//!
//! A listing runs as its own task: callers wait for it at most `wait_limit` and then give up with
//! a transient error, so a region whose endpoint hangs holds no reconcile worker for long and the
//! other regions go on. Slots of (region, account) pairs nobody asked for in a while are dropped:
//! RRSA rotates the AccessKeyId, and each new key would otherwise add a slot forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::owned_images::{ImageSnapshot, snapshot};
use super::uid::Uid;
use crate::api::OWNER_UID_TAG;
use crate::ecs::{
    DescribeImagesRequest, DescribeTasksRequest, EcsClient, EcsError, Image, ImageStatus,
    MAX_PAGE_SIZE, Task,
};

/// Something listed per region and shared: how to fetch it.
pub trait Listed: Send + Sync + Sized + 'static {
    fn fetch(ecs: EcsClient, region: String) -> BoxFuture<'static, Result<Self, EcsError>>;
}

/// Every status a copy can be in. Without an explicit list ECS returns only Available images;
/// an owned image missing from the list would look deleted and be copied again, so `Deprecated`
/// (someone deprecated the copy) is listed too.
pub fn followed_statuses() -> Vec<ImageStatus> {
    vec![
        ImageStatus::Creating,
        ImageStatus::Waiting,
        ImageStatus::Available,
        ImageStatus::UnAvailable,
        ImageStatus::CreateFailed,
        ImageStatus::Deprecated,
    ]
}

/// Every status of an image no longer in flight: what a listing made only to see which copies
/// ended asks for. Those copies are older than the ones still running, so newest first such a
/// listing reaches back to the copy due in one page, however many run after it.
pub fn ended_statuses() -> Vec<ImageStatus> {
    followed_statuses()
        .into_iter()
        .filter(|s| !matches!(s, ImageStatus::Creating | ImageStatus::Waiting))
        .collect()
}

/// One region's owned images at one moment.
#[derive(Debug)]
pub struct Listing {
    /// When the listing request started: an image recorded before this should be in it (the
    /// tag index may still lag, so absence is only ever a hint).
    pub taken_at: Timestamp,
    /// `None`: every owned image; else only those made after this (a newest-first listing cut
    /// short, see `in_flight`).
    pub covers_since: Option<Timestamp>,
    /// One record per listed image, sorted by image id. A region's listing holds every finished
    /// copy, and up to four of a region are alive at once (the drift listing, the poller's
    /// latest and widest, one being made), so each image is kept once, with only what the
    /// objects read, instead of in maps keyed by copies of its id.
    records: Vec<Record>,
    /// Positions in `records` of the images with an owner tag, sorted by owner UID, so that an
    /// object finds its images without a scan.
    by_owner: Vec<u32>,
}

/// What the objects need of one listed image.
#[derive(Clone, Debug)]
struct Record {
    snapshot: ImageSnapshot,
    /// `CreationTime`, when readable.
    created: Option<Timestamp>,
    /// The owner UID tag.
    owner: Option<Uid>,
    /// How long after the listing's `taken_at` this image was read, in milliseconds: 0 but for
    /// news from a later, narrower listing (see [`Listing::with_news`]).
    read_after_ms: u32,
}

impl Record {
    fn of(image: &Image) -> Self {
        Record {
            snapshot: snapshot(image),
            created: image.created(),
            owner: image.tag(OWNER_UID_TAG).map(Uid::new),
            read_after_ms: 0,
        }
    }
}

impl Listed for Listing {
    fn fetch(ecs: EcsClient, region: String) -> BoxFuture<'static, Result<Self, EcsError>> {
        async move {
            let taken_at = Timestamp::now();
            let records = list_owned_images(&ecs, &region).await?;
            Ok(Listing::from_records(taken_at, None, records))
        }
        .boxed()
    }
}

/// The export tasks running (`Processing`) in one region at one moment.
#[derive(Debug)]
pub struct RunningExports {
    /// When the listing request started.
    pub taken_at: Timestamp,
    pub tasks: HashMap<String, Task>,
}

impl Listed for RunningExports {
    fn fetch(ecs: EcsClient, region: String) -> BoxFuture<'static, Result<Self, EcsError>> {
        async move {
            let taken_at = Timestamp::now();
            let tasks = ecs
                .describe_all_tasks(&DescribeTasksRequest {
                    region,
                    task_action: Some("ExportImage".into()),
                    task_status: Some("Processing".into()),
                    page_size: Some(MAX_PAGE_SIZE),
                    ..Default::default()
                })
                .await?;
            Ok(RunningExports {
                taken_at,
                tasks: tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(),
            })
        }
        .boxed()
    }
}

impl Listing {
    pub fn new(taken_at: Timestamp, covers_since: Option<Timestamp>, images: Vec<Image>) -> Self {
        let records = images.iter().map(Record::of).collect();
        Self::from_records(taken_at, covers_since, records)
    }

    fn from_records(
        taken_at: Timestamp,
        covers_since: Option<Timestamp>,
        mut records: Vec<Record>,
    ) -> Self {
        // Pages can shift while a listing is read, so an image may come twice: keep the later.
        records.reverse();
        records.sort_by(|a, b| a.snapshot.image_id.cmp(&b.snapshot.image_id));
        records.dedup_by(|later, first| later.snapshot.image_id == first.snapshot.image_id);
        records.shrink_to_fit();
        let mut by_owner: Vec<u32> = (0..records.len())
            .filter(|&i| records[i].owner.is_some())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_owner.sort_by(|&a, &b| records[a as usize].owner.cmp(&records[b as usize].owner));
        Listing {
            taken_at,
            covers_since,
            records,
            by_owner,
        }
    }

    fn record(&self, image_id: &str) -> Option<&Record> {
        self.records
            .binary_search_by(|r| r.snapshot.image_id.as_str().cmp(image_id))
            .ok()
            .map(|i| &self.records[i])
    }

    pub fn image(&self, image_id: &str) -> Option<&ImageSnapshot> {
        self.record(image_id).map(|r| &r.snapshot)
    }

    /// When the image was read: `taken_at`, or later for news merged in.
    pub fn read_at(&self, image_id: &str) -> Option<Timestamp> {
        let after = self.record(image_id)?.read_after_ms;
        Some(self.taken_at + SignedDuration::from_millis(i64::from(after)))
    }

    /// This listing with the images of `news`, a later listing of fewer statuses (the copies
    /// that ended), in place of what it showed of them. It stays as old as it was for every
    /// other image and for absence: `news` says nothing of the images it does not show.
    pub fn with_news(&self, news: &Listing) -> Listing {
        let later = news.taken_at.duration_since(self.taken_at).as_millis();
        let read_after_ms = u32::try_from(later.max(0)).unwrap_or(u32::MAX);
        let mut records = self.records.clone();
        records.extend(news.records.iter().map(|record| Record {
            read_after_ms: read_after_ms.max(record.read_after_ms),
            ..record.clone()
        }));
        // `from_records` keeps the later of two records of one image: the news.
        Listing::from_records(self.taken_at, self.covers_since, records)
    }

    /// When ECS says the image was made.
    pub fn created(&self, image_id: &str) -> Option<Timestamp> {
        self.record(image_id)?.created
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether every owned image made after `since` is in it (as far as ECS listed it).
    pub fn covers(&self, since: Timestamp) -> bool {
        self.covers_since.is_none_or(|covered| covered <= since)
    }

    /// The listed images tagged with `uid` as their owner.
    pub fn owned_by<'a>(&'a self, uid: &Uid) -> impl Iterator<Item = &'a ImageSnapshot> + 'a {
        let owner = |i: &u32| self.records[*i as usize].owner.as_ref();
        let start = self.by_owner.partition_point(|i| owner(i) < Some(uid));
        let end = self.by_owner.partition_point(|i| owner(i) <= Some(uid));
        self.by_owner[start..end]
            .iter()
            .map(|&i| &self.records[i as usize].snapshot)
    }
}

/// Key: (region, signer) — objects with their own Secret may sign as another account.
type Key = (String, String);

type Fetch<T> = Shared<BoxFuture<'static, Result<Arc<T>, EcsError>>>;

struct Slot<T> {
    fetched: Option<(Instant, Arc<T>)>,
    in_flight: Option<Fetch<T>>,
    last_used: Instant,
}

pub struct RegionListings<T> {
    max_age: Duration,
    wait_limit: Duration,
    idle_eviction: Duration,
    slots: Arc<Mutex<HashMap<Key, Slot<T>>>>,
}

impl<T: Listed> RegionListings<T> {
    /// `max_age` is how old a shared listing may be before the next reader refreshes it.
    pub fn new(max_age: Duration) -> Self {
        // Long enough for a healthy listing of many pages, short enough that a hanging endpoint
        // gives the worker back well within a poll or two; slots live for many polls.
        Self::with_limits(
            max_age,
            max_age.max(Duration::from_secs(15)),
            (max_age * 30).max(Duration::from_secs(600)),
        )
    }

    /// `wait_limit`: how long a caller waits for a listing; `idle_eviction`: how long a slot
    /// nobody asks for is kept.
    pub fn with_limits(max_age: Duration, wait_limit: Duration, idle_eviction: Duration) -> Self {
        RegionListings {
            max_age,
            wait_limit,
            idle_eviction,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How many (region, account) slots are kept; for tests of eviction.
    pub fn slot_count(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The region's listing, fetched only if the shared one is older than `max_age`. Concurrent
    /// callers of one region share a single fetch instead of each making their own.
    pub async fn get(
        &self,
        ecs: &EcsClient,
        signer: &str,
        region: &str,
    ) -> Result<Arc<T>, EcsError> {
        let key = (region.to_string(), signer.to_string());
        let fetch = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let idle = self.idle_eviction;
            slots.retain(|_, slot| {
                slot.in_flight.is_some() || now.duration_since(slot.last_used) < idle
            });
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                fetched: None,
                in_flight: None,
                last_used: now,
            });
            slot.last_used = now;
            if let Some((at, listing)) = &slot.fetched
                && at.elapsed() < self.max_age
            {
                return Ok(listing.clone());
            }
            match &slot.in_flight {
                Some(fetch) => fetch.clone(),
                None => {
                    let fetch = self.start_fetch(ecs.clone(), key);
                    slot.in_flight = Some(fetch.clone());
                    fetch
                }
            }
        };
        match tokio::time::timeout(self.wait_limit, fetch).await {
            Ok(result) => result,
            Err(_) => Err(EcsError::Timeout(self.wait_limit)),
        }
    }

    /// Runs the listing as a task of its own that stores its result in the slot when done.
    fn start_fetch(&self, ecs: EcsClient, key: Key) -> Fetch<T> {
        let slots = self.slots.clone();
        let task = tokio::spawn(async move {
            // A listing is as old as its first request: aged from then, one per `max_age` is
            // one per `max_age`, however long its pages take.
            let started = Instant::now();
            let result = T::fetch(ecs, key.0.clone()).await.map(Arc::new);
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get_mut(&key) {
                slot.in_flight = None;
                if let Ok(listing) = &result {
                    slot.fetched = Some((started, listing.clone()));
                }
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(EcsError::Transport {
                    message: format!("region listing task ended: {e}"),
                })
            })
        }
        .boxed()
        .shared()
    }
}

/// Every owned image of the region, each kept as a record as soon as its page arrives: a
/// region's whole listing is never held as full images.
async fn list_owned_images(ecs: &EcsClient, region: &str) -> Result<Vec<Record>, EcsError> {
    let request = DescribeImagesRequest {
        region: region.to_string(),
        status: followed_statuses(),
        image_owner_alias: Some("self".into()),
        // Key only: every image this operator owns, whatever the owner's UID.
        tags: vec![(OWNER_UID_TAG.to_string(), String::new())],
        page_size: Some(MAX_PAGE_SIZE),
        ..Default::default()
    };
    ecs.describe_all_images_as(&request, |image| Record::of(&image))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::owned_images::ImageState;

    /// A local ECS that never answers for `hung_region` and lists nothing elsewhere; counts
    /// the requests per region.
    async fn fake_ecs(
        hung_region: &'static str,
    ) -> (EcsClient, Arc<Mutex<HashMap<String, usize>>>) {
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let counter = counter.clone();
            async move {
                let query = uri.query().unwrap_or_default().to_string();
                let region = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "RegionId")
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                *counter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(region.clone())
                    .or_default() += 1;
                if region == hung_region {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                axum::Json(serde_json::json!({
                    "RequestId": "r", "TotalCount": 0, "PageNumber": 1, "PageSize": 100,
                    "Images": {"Image": []}
                }))
            }
        });
        let client = crate::controller::local_ecs(app).await;
        (client, seen)
    }

    const UID_A: &str = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";

    fn image(id: &str, owner: Option<&str>, status: &str) -> Image {
        let tags: Vec<serde_json::Value> = owner
            .map(|uid| serde_json::json!({"TagKey": OWNER_UID_TAG, "TagValue": uid}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "ImageId": id, "Status": status, "Progress": "100%",
            "CreationTime": "2026-01-01T00:00:00Z", "Tags": {"Tag": tags}
        }))
        .unwrap()
    }

    #[test]
    fn a_listing_finds_images_by_id_and_by_owner_and_keeps_each_once() {
        let listing = Listing::new(
            Timestamp::now(),
            None,
            vec![
                image("m-3", Some("uid-b"), "Available"),
                image("m-1", Some(UID_A), "Creating"),
                image("m-2", None, "Available"),
                image("m-4", Some(UID_A), "Available"),
                // Shifted onto the next page while it was read: the later answer counts.
                image("m-1", Some(UID_A), "Available"),
                // The same UUID spelled otherwise is another tag value.
                image("m-5", Some(&UID_A.to_uppercase()), "Available"),
            ],
        );
        assert_eq!(listing.len(), 5);
        let state = |id| listing.image(id).map(|i| i.state.clone());
        assert_eq!(state("m-1"), Some(ImageState::Available));
        assert_eq!(state("m-2"), Some(ImageState::Available));
        assert_eq!(state("m-6"), None);
        assert_eq!(
            listing.created("m-3"),
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        let owned = |uid: &str| -> Vec<String> {
            let mut ids: Vec<String> = listing
                .owned_by(&Uid::new(uid))
                .map(|i| i.image_id.clone())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(owned(UID_A), ["m-1", "m-4"]);
        assert_eq!(owned(&UID_A.to_uppercase()), ["m-5"]);
        assert_eq!(owned("uid-b"), ["m-3"]);
        assert!(owned("uid-c").is_empty());
        assert!(owned("").is_empty());
    }

    #[tokio::test]
    async fn a_hanging_region_neither_holds_its_callers_nor_blocks_other_regions() {
        let (ecs, seen) = fake_ecs("cn-hangzhou").await;
        let listings = RegionListings::<Listing>::with_limits(
            Duration::from_secs(10),
            Duration::from_millis(300),
            Duration::from_secs(600),
        );
        let started = Instant::now();
        let (hung_a, hung_b, healthy) = tokio::join!(
            listings.get(&ecs, "key", "cn-hangzhou"),
            listings.get(&ecs, "key", "cn-hangzhou"),
            listings.get(&ecs, "key", "cn-shanghai"),
        );
        assert!(matches!(hung_a, Err(EcsError::Timeout(_))), "{hung_a:?}");
        assert!(matches!(hung_b, Err(EcsError::Timeout(_))), "{hung_b:?}");
        assert!(healthy.is_ok(), "{healthy:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let hangzhou_requests = || seen.lock().unwrap().get("cn-hangzhou").copied();
        assert_eq!(hangzhou_requests(), Some(1), "one shared listing");
        // A caller arriving while the listing still hangs waits for that one, not a new one.
        assert!(listings.get(&ecs, "key", "cn-hangzhou").await.is_err());
        assert_eq!(hangzhou_requests(), Some(1));
    }

    #[tokio::test]
    async fn slots_nobody_asks_for_are_dropped() {
        let (ecs, _) = fake_ecs("none").await;
        let listings = RegionListings::<Listing>::with_limits(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_millis(100),
        );
        for rotated_key in ["LTAI-1", "LTAI-2", "LTAI-3"] {
            listings
                .get(&ecs, rotated_key, "cn-shanghai")
                .await
                .unwrap();
        }
        assert_eq!(listings.slot_count(), 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        listings.get(&ecs, "LTAI-4", "cn-shanghai").await.unwrap();
        assert_eq!(listings.slot_count(), 1, "keys rotated away are forgotten");
    }
}
