//! Work in flight, followed per region on a due-time schedule.
//!
//! An object whose image is being made registers here with what its status shows ([`Followed`]).
//! One poller per (region, account) lists the region's owned images newest first, and only back
//! to the oldest image anyone follows or asked about, often enough that progress shows (at least
//! once per six poll intervals). When a followed image is due to finish (estimated from the
//! progress ECS reports) it lists only the images that ended, back to that one: a page, however
//! many are still running, whose news it merges into its latest full listing. It then wakes only
//! the objects whose image changed: finished, failed or gone at once, progress at most once per
//! poll interval. An object not woken costs neither a reconcile nor a call, however many are in
//! flight.
//!
//! ECS lists images newest first. Were a listing ever in another order, the objects would miss
//! their images in it and look them up by id: the order decides the cost, never a verdict.
//!
//! Reconciles that need a recent listing for other reasons (a new object looking for an image
//! it may already own, a restart) ask through [`InFlight::listing`]; they share the poller's
//! next listing instead of making calls of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::listings::{Listing, ended_statuses, followed_statuses};
use super::owned_images::{ImageState, listed_after};
use super::progress_budget::ProgressBudget;
use super::progress_trail::ProgressTrail;
use super::wakes::Wakes;
use crate::api::{OWNER_UID_TAG, Word};
use crate::ecs::{
    DescribeImagesRequest, EcsClient, EcsError, Image, ImageStatus, MAX_PAGE_SIZE, MAX_PAGES,
    parse_percent,
};

/// How an object is reached when its image changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    /// Shared: most objects live in a few namespaces.
    pub namespace: Word,
    pub name: String,
}

/// What an object's status shows about its image in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    pub image_id: String,
    /// When the work started (our clock), for the estimate of when it ends and, until ECS has
    /// said when it made the image, how far back a listing must reach to show it.
    pub started: Timestamp,
    /// Every image the object can own was made after this (see [`listed_since`]).
    pub object_since: Timestamp,
    pub state: ImageState,
    pub progress: Option<String>,
}

/// The timing of the pollers.
#[derive(Clone, Debug)]
pub struct Pacing {
    /// The longest wait between listings while anything is followed; also how often progress
    /// alone wakes an object.
    pub poll_interval: Duration,
    /// The shortest wait between two listings of one region, however much is due.
    pub min_gap: Duration,
    /// The shortest wait before a listing of the images that ended, after any listing.
    pub end_gap: Duration,
    /// How long a reconcile waits for a listing it asked for.
    pub wait_limit: Duration,
    /// A region with nothing followed and nothing asked for this long loses its poller.
    pub idle_exit: Duration,
    /// Objects woken for new progress alone, per second over all regions (see
    /// [`ProgressBudget`]).
    pub progress_writes_per_second: u32,
}

impl Pacing {
    pub fn new(poll_interval: Duration, progress_writes_per_second: u32) -> Self {
        Pacing {
            poll_interval,
            progress_writes_per_second,
            min_gap: MIN_GAP.min(poll_interval),
            end_gap: END_GAP.min(poll_interval),
            wait_limit: poll_interval.max(Duration::from_secs(15)),
            idle_exit: (poll_interval * 30).max(Duration::from_secs(600)),
        }
    }
}

/// One listing a second per region at most: a cost bounded by the regions rather than by the
/// objects.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Where copies end one after another (a region's batch, started at the API budget), each
/// listing of ended images sees those due since the last: 1.5 s apart, a copy is seen within
/// 0.75 s of its end on average, under the second or two a user notices, for two thirds of the
/// calls one a second would cost.
const END_GAP: Duration = Duration::from_millis(1500);

/// Key: (region, signer) — objects with their own Secret may sign as another account.
type Key = (String, String);

type Published = Option<Result<Arc<Listing>, EcsError>>;

struct Entry {
    object: ObjectKey,
    followed: Followed,
    /// How far back a listing must reach to show the image.
    since: Timestamp,
    /// Whether `since` comes from the image's own `CreationTime`.
    since_created: bool,
    due: Instant,
    /// What the look at `due` is for.
    look: Look,
    /// Looks for its end that did not find it ended (see [`END_LOOKS`]).
    end_misses: u8,
    progress_woken: Option<Instant>,
    /// New progress the poller saw but did not wake the object for (the budget was spent).
    progress_unshown: bool,
    /// The progress listings showed for the image, for the estimate of its end.
    trail: ProgressTrail,
}

/// Why an image in flight is looked at next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// For its progress (or whether a queued copy began): a listing of every status.
    Progress,
    /// Because its progress says it has ended: a listing of ended images suffices, one page
    /// reaching back to it.
    End,
}

/// Looks for the end of an image that find it still running before it is looked at for its
/// progress again, at the poll interval: its progress did not rise evenly after all (or the
/// cloud's tag index lags), and looking every second for it would be a hot loop.
const END_LOOKS: u8 = 3;

struct RegionState {
    ecs: EcsClient,
    entries: HashMap<String, Entry>,
    /// The oldest creation time a waiting reconcile asked the next listing to reach.
    asked_since: Option<Timestamp>,
    latest: Option<Arc<Listing>>,
    /// The listing reaching furthest back, kept beside the latest: objects created before it
    /// was taken find what they may already own in it, however many wait to start.
    widest: Option<Arc<Listing>>,
    last_fetch: Option<Instant>,
}

struct Region {
    state: Mutex<RegionState>,
    changed: Notify,
    published: watch::Sender<Published>,
}

pub struct InFlight {
    pacing: Pacing,
    regions: Arc<Mutex<HashMap<Key, Arc<Region>>>>,
    wakes: Wakes,
    progress_budget: Arc<ProgressBudget>,
}

impl InFlight {
    pub fn new(pacing: Pacing) -> Self {
        InFlight {
            progress_budget: Arc::new(ProgressBudget::new(
                pacing.progress_writes_per_second,
                pacing.poll_interval,
            )),
            pacing,
            regions: Arc::default(),
            wakes: Wakes::default(),
        }
    }

    /// The objects of `kind` to reconcile because their image changed.
    pub fn wakes(&self, kind: &'static str) -> mpsc::UnboundedReceiver<ObjectKey> {
        self.wakes.receiver(kind)
    }

    /// Follows (or goes on following) an object's image in flight.
    pub fn follow(
        &self,
        ecs: &EcsClient,
        signer: &str,
        region: &str,
        uid: &str,
        object: ObjectKey,
        followed: Followed,
    ) {
        let slot = self.region(ecs, signer, region);
        let mut state = lock(&slot.state);
        let (progress_woken, trail, end_misses, scheduled) = match state.entries.get(uid) {
            Some(e) if e.followed.image_id == followed.image_id => (
                e.progress_woken,
                e.trail.clone(),
                e.end_misses,
                // What the poller last saw, written by the object it woke: its next look stays
                // where the poller set it, with every other image's, not one reconcile later,
                // which would cost a listing of its own.
                (e.followed == followed).then_some((e.due, e.look)),
            ),
            _ => (None, ProgressTrail::default(), 0, None),
        };
        let (due, look) = scheduled.unwrap_or_else(|| {
            let (after, look) = next_look(
                &followed,
                &trail,
                end_misses,
                Timestamp::now(),
                self.pacing.poll_interval,
            );
            (Instant::now() + after, look)
        });
        let (since, since_created) = image_since(&state, &followed);
        state.ecs = ecs.clone();
        state.entries.insert(
            uid.to_string(),
            Entry {
                object,
                followed,
                since,
                since_created,
                due,
                look,
                end_misses,
                progress_woken,
                // Whatever it wrote, the next listing compares with it.
                progress_unshown: false,
                trail,
            },
        );
        drop(state);
        slot.changed.notify_one();
    }

    /// How far back a listing must reach to show the image `followed` names: from when ECS
    /// made it if a listing said so, else from when the work started.
    pub fn since(
        &self,
        ecs: &EcsClient,
        signer: &str,
        region: &str,
        followed: &Followed,
    ) -> Timestamp {
        let slot = self.region(ecs, signer, region);
        let state = lock(&slot.state);
        image_since(&state, followed).0
    }

    /// How old a listing may be for the object `uid` following `image_id`. While the region's
    /// poller follows that image it looks at it on its own schedule, at most
    /// [`PROGRESS_POLLS`] poll intervals apart, and wakes the object when it changes: a
    /// reconcile on a timer of the object's own (the controller's safety-net requeue) reads
    /// the poller's latest listing rather than asking for a listing of its own. Otherwise a
    /// poll interval.
    pub fn listing_age_limit(
        &self,
        signer: &str,
        region: &str,
        uid: &str,
        image_id: &str,
    ) -> Duration {
        let key = (region.to_string(), signer.to_string());
        let slot = lock(&self.regions).get(&key).cloned();
        let followed = slot.is_some_and(|slot| {
            lock(&slot.state)
                .entries
                .get(uid)
                .is_some_and(|entry| entry.followed.image_id == image_id)
        });
        if followed {
            self.pacing.poll_interval * PROGRESS_POLLS
        } else {
            self.pacing.poll_interval
        }
    }

    /// Stops following the object, wherever it was followed.
    pub fn unfollow(&self, uid: &str) {
        let regions: Vec<Arc<Region>> = lock(&self.regions).values().cloned().collect();
        for region in regions {
            lock(&region.state).entries.remove(uid);
        }
    }

    /// How many objects are followed, over all regions.
    pub fn followed_count(&self) -> usize {
        let regions: Vec<Arc<Region>> = lock(&self.regions).values().cloned().collect();
        regions.iter().map(|r| lock(&r.state).entries.len()).sum()
    }

    /// A listing of the region's owned images made after `since`, taken after `taken_after` —
    /// or, for an object following `image_id`, one that read that image after it (the news of
    /// the copies that ended): the latest or the widest one kept if either will do, else the
    /// poller's next, asked for now and shared with every other reconcile asking meanwhile.
    pub async fn listing(
        &self,
        ecs: &EcsClient,
        signer: &str,
        region: &str,
        since: Timestamp,
        taken_after: Timestamp,
        image_id: Option<&str>,
    ) -> Result<Arc<Listing>, EcsError> {
        let slot = self.region(ecs, signer, region);
        let adequate = |listing: &Listing| {
            let read_after = |at: Timestamp| at > taken_after;
            listing.covers(since)
                && (read_after(listing.taken_at)
                    || image_id
                        .and_then(|id| listing.read_at(id))
                        .is_some_and(read_after))
        };
        {
            let state = lock(&slot.state);
            let kept = [&state.latest, &state.widest];
            if let Some(listing) = kept.into_iter().flatten().find(|l| adequate(l)) {
                return Ok(listing.clone());
            }
        }
        let ask = || {
            let mut state = lock(&slot.state);
            state.asked_since = Some(state.asked_since.map_or(since, |s| s.min(since)));
            drop(state);
            slot.changed.notify_one();
        };
        let wait = async {
            // The listing must start after `taken_after` (a second or two from now at most).
            let early = taken_after.duration_since(Timestamp::now());
            if let Ok(early) = Duration::try_from(early) {
                tokio::time::sleep(early).await;
            }
            let mut published = slot.published.subscribe();
            ask();
            loop {
                if published.changed().await.is_err() {
                    return Err(EcsError::Transport {
                        message: format!("the poller of {region} ended"),
                    });
                }
                match &*published.borrow_and_update() {
                    Some(Ok(listing)) if adequate(listing) => return Ok(listing.clone()),
                    Some(Err(e)) => return Err(e.clone()),
                    // One begun before this question, or cut shorter: ask again.
                    _ => ask(),
                }
            }
        };
        match tokio::time::timeout(self.pacing.wait_limit, wait).await {
            Ok(result) => result,
            Err(_) => Err(EcsError::Timeout(self.pacing.wait_limit)),
        }
    }

    fn region(&self, ecs: &EcsClient, signer: &str, region: &str) -> Arc<Region> {
        let key = (region.to_string(), signer.to_string());
        let mut regions = lock(&self.regions);
        if let Some(slot) = regions.get(&key) {
            return slot.clone();
        }
        let slot = Arc::new(Region {
            state: Mutex::new(RegionState {
                ecs: ecs.clone(),
                entries: HashMap::new(),
                asked_since: None,
                latest: None,
                widest: None,
                last_fetch: None,
            }),
            changed: Notify::new(),
            published: watch::channel(None).0,
        });
        regions.insert(key.clone(), slot.clone());
        let poller = Poller {
            key,
            slot: slot.clone(),
            regions: self.regions.clone(),
            wakes: self.wakes.clone(),
            pacing: self.pacing.clone(),
            progress_budget: self.progress_budget.clone(),
        };
        tokio::spawn(poller.run());
        slot
    }
}

/// When to look at the image next, and why: when its progress says it ends, and before that
/// often enough to show progress — a quarter of the way to its end, at least one poll interval
/// and at most [`PROGRESS_POLLS`] apart. Progress rises about evenly while a copy runs; a queued
/// image shows none and is looked at every poll interval, and so is one whose end was looked for
/// [`END_LOOKS`] times in vain.
pub fn next_look(
    followed: &Followed,
    trail: &ProgressTrail,
    end_misses: u8,
    now: Timestamp,
    poll_interval: Duration,
) -> (Duration, Look) {
    match remaining(followed, trail, now) {
        Some(remaining) if end_misses < END_LOOKS => {
            let progress_every =
                (remaining / 4).clamp(poll_interval, poll_interval * PROGRESS_POLLS);
            if remaining <= progress_every {
                (remaining, Look::End)
            } else {
                (progress_every, Look::Progress)
            }
        }
        _ => (poll_interval, Look::Progress),
    }
}

/// How long the image surely still needs at most, from its progress so far — every reading of
/// it if they agree on an even rise, else the latest alone; `None` when it shows no rate.
fn remaining(followed: &Followed, trail: &ProgressTrail, now: Timestamp) -> Option<Duration> {
    let elapsed = Duration::try_from(now.duration_since(followed.started)).unwrap_or_default();
    match (&followed.state, percent(followed.progress.as_deref())) {
        (ImageState::Creating, Some(0..=99)) if let Some(end) = trail.latest_end() => Some(
            Duration::try_from_secs_f64(end)
                .map_or(Duration::ZERO, |end| end.saturating_sub(elapsed)),
        ),
        (ImageState::Creating, Some(p @ 1..=99)) => {
            Some(elapsed.mul_f64(f64::from(100 - p) / f64::from(p)))
        }
        (ImageState::Creating, Some(100..)) => Some(Duration::ZERO),
        _ => None,
    }
}

/// A long copy shows new progress at least this many poll intervals apart.
const PROGRESS_POLLS: u32 = 6;

struct Poller {
    key: Key,
    slot: Arc<Region>,
    regions: Arc<Mutex<HashMap<Key, Arc<Region>>>>,
    wakes: Wakes,
    pacing: Pacing,
    progress_budget: Arc<ProgressBudget>,
}

/// What the poller does next.
enum Plan {
    /// List the images made after this, for what the looks due are for.
    List(Timestamp, Look),
    Sleep(Instant),
    Idle,
}

impl Poller {
    async fn run(self) {
        loop {
            match self.plan() {
                Plan::List(since, look) => self.list(since, look).await,
                Plan::Sleep(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = self.slot.changed.notified() => {}
                    }
                }
                Plan::Idle => {
                    let idle = tokio::time::sleep(self.pacing.idle_exit);
                    tokio::select! {
                        _ = idle => if self.leave_if_idle() { return },
                        _ = self.slot.changed.notified() => {}
                    }
                }
            }
        }
    }

    fn plan(&self) -> Plan {
        let state = lock(&self.slot.state);
        let oldest = state
            .entries
            .values()
            .map(|e| e.since)
            .chain(state.asked_since)
            .min();
        let Some(since) = oldest else {
            return Plan::Idle;
        };
        let due = if state.asked_since.is_some() {
            Instant::now()
        } else {
            state
                .entries
                .values()
                .map(|e| e.due)
                .min()
                .unwrap_or_else(Instant::now)
        };
        let earliest = state
            .last_fetch
            .map_or(due, |at| due.max(at + self.pacing.min_gap));
        let now = Instant::now();
        if earliest > now {
            return Plan::Sleep(earliest);
        }
        if state.asked_since.is_some() {
            return Plan::List(since, Look::Progress);
        }
        // Only ends due: the ended images back to the oldest of them.
        let mut ends_since = None;
        for entry in state.entries.values().filter(|e| e.due <= now) {
            if entry.look == Look::Progress {
                return Plan::List(since, Look::Progress);
            }
            ends_since = Some(ends_since.map_or(entry.since, |s: Timestamp| s.min(entry.since)));
        }
        let end_earliest = state.last_fetch.map_or(now, |at| at + self.pacing.end_gap);
        if end_earliest > now {
            return Plan::Sleep(end_earliest);
        }
        Plan::List(ends_since.unwrap_or(since), Look::End)
    }

    fn leave_if_idle(&self) -> bool {
        let mut regions = lock(&self.regions);
        let state = lock(&self.slot.state);
        if state.entries.is_empty() && state.asked_since.is_none() {
            regions.remove(&self.key);
            return true;
        }
        false
    }

    async fn list(&self, since: Timestamp, look: Look) {
        let asked = Instant::now();
        let ecs = {
            let mut state = lock(&self.slot.state);
            if look == Look::Progress {
                state.asked_since = None;
            }
            state.last_fetch = Some(asked);
            state.ecs.clone()
        };
        let statuses = match look {
            Look::Progress => followed_statuses(),
            Look::End => ended_statuses(),
        };
        let taken_at = Timestamp::now();
        let listed = list_since(&ecs, &self.key.0, since, statuses);
        let result = tokio::time::timeout(self.pacing.wait_limit, listed)
            .await
            .unwrap_or(Err(EcsError::Timeout(self.pacing.wait_limit)));
        match result {
            Ok(images) if look == Look::End => {
                let news = Listing::new(taken_at, Some(since), images);
                let mut state = lock(&self.slot.state);
                let woken = self.ended(&mut state, &news, asked);
                // Before the wakes: the woken objects read their news in the latest listing.
                if let Some(latest) = &state.latest {
                    state.latest = Some(Arc::new(latest.with_news(&news)));
                }
                drop(state);
                self.wake(&woken);
            }
            Ok(images) => {
                let listing = Arc::new(Listing::new(taken_at, Some(since), images));
                let mut state = lock(&self.slot.state);
                let woken = self.changed(&mut state, &listing, Timestamp::now());
                let wider = state.widest.as_ref().is_none_or(|widest| {
                    widest
                        .covers_since
                        .is_some_and(|reach| listing.covers(reach))
                });
                if wider {
                    state.widest = Some(listing.clone());
                }
                state.latest = Some(listing.clone());
                drop(state);
                self.wake(&woken);
                self.slot.published.send_replace(Some(Ok(listing)));
            }
            Err(error) if look == Look::End => {
                warn!(region = %self.key.0, %error, "listing the images that ended failed; trying again");
                self.retry_later();
            }
            Err(error) => {
                warn!(region = %self.key.0, %error, "listing the images in flight failed; trying again");
                self.retry_later();
                self.slot.published.send_replace(Some(Err(error)));
            }
        }
    }

    fn retry_later(&self) {
        let retry = Instant::now() + self.pacing.poll_interval;
        for entry in lock(&self.slot.state).entries.values_mut() {
            entry.due = entry.due.max(retry);
        }
    }

    fn wake(&self, objects: &[ObjectKey]) {
        for object in objects {
            self.wakes.wake(object);
        }
    }

    /// The objects whose image `news` (ended images only, asked at `asked`) shows ended; an
    /// image due to end that is not among them is looked for again a little later.
    fn ended(&self, state: &mut RegionState, news: &Listing, asked: Instant) -> Vec<ObjectKey> {
        let now = Instant::now();
        let mut woken = Vec::new();
        state.entries.retain(|_, entry| {
            if !news.covers(entry.since) {
                return true;
            }
            if news
                .image(&entry.followed.image_id)
                .is_some_and(|image| !image.state.in_flight())
            {
                woken.push(entry.object.clone());
                return false;
            }
            if entry.look == Look::End && entry.due <= asked {
                entry.end_misses += 1;
                if entry.end_misses < END_LOOKS {
                    entry.due = now + self.pacing.end_gap * u32::from(entry.end_misses);
                } else {
                    entry.look = Look::Progress;
                    entry.due = now;
                }
            }
            true
        });
        woken
    }

    /// The objects whose image changed, to wake; sets when each is looked at next. The listing
    /// was answered at `answered`.
    fn changed(
        &self,
        state: &mut RegionState,
        listing: &Listing,
        answered: Timestamp,
    ) -> Vec<ObjectKey> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut woken = Vec::new();
        let mut finished = Vec::new();
        // Objects with new progress to show: (when last woken for progress, UID).
        let mut progressed = Vec::new();
        for (uid, entry) in state.entries.iter_mut() {
            let followed = &mut entry.followed;
            let listed = listing.image(&followed.image_id);
            let state_now = listed.map(|image| image.state.clone());
            let ended = match &state_now {
                Some(state) => !state.in_flight(),
                // Made before its work was recorded (an adopted image): list back to the
                // object's creation before taking its absence for anything.
                None if !entry.since_created && entry.since > followed.object_since => {
                    entry.since = followed.object_since;
                    entry.due = now;
                    continue;
                }
                // Absent from a listing that should show it: its object looks it up by id.
                None => listed_after(Some(followed.started), listing.taken_at),
            };
            let state_changed = state_now.as_ref().is_some_and(|s| *s != followed.state);
            if ended || state_changed {
                woken.push(entry.object.clone());
                if ended {
                    finished.push(uid.clone());
                    continue;
                }
                // It writes its progress too, outside the budget.
                entry.progress_woken = Some(now);
                entry.progress_unshown = false;
            }
            if let Some(created) = listing.created(&followed.image_id) {
                entry.since = before(created);
                entry.since_created = true;
            }
            if let (Some(state_now), Some(image)) = (state_now, listed) {
                if let (ImageState::Creating, Some(shown)) =
                    (&state_now, percent(image.progress.as_deref()))
                {
                    let after_start =
                        |at: Timestamp| at.duration_since(followed.started).as_secs_f64();
                    entry
                        .trail
                        .record(shown, after_start(listing.taken_at), after_start(answered));
                }
                let moved =
                    percent(image.progress.as_deref()) != percent(followed.progress.as_deref());
                followed.state = state_now;
                followed.progress = image.progress.as_deref().map(str::to_string);
                // Listings a poll interval apart land a little early or late: a tenth is slack.
                let progress_due = entry
                    .progress_woken
                    .is_none_or(|at| now >= at + self.pacing.poll_interval * 9 / 10);
                if (moved || entry.progress_unshown) && progress_due {
                    progressed.push((entry.progress_woken, uid.clone()));
                }
            }
            let (after, look) = next_look(
                followed,
                &entry.trail,
                entry.end_misses,
                wall,
                self.pacing.poll_interval,
            );
            entry.due = now + after;
            entry.look = look;
        }
        for uid in finished {
            state.entries.remove(&uid);
        }
        // Never shown first, then those shown longest ago.
        progressed.sort_unstable();
        let shown = self.progress_budget.take(progressed.len());
        for (index, (_, uid)) in progressed.iter().enumerate() {
            let Some(entry) = state.entries.get_mut(uid) else {
                continue;
            };
            entry.progress_unshown = index >= shown;
            if index < shown {
                woken.push(entry.object.clone());
                entry.progress_woken = Some(now);
            }
        }
        debug!(region = %self.key.0, followed = state.entries.len(), "listed the images in flight");
        woken
    }
}

fn percent(progress: Option<&str>) -> Option<u8> {
    progress.and_then(parse_percent)
}

/// Owned images of `region` in `statuses` made after `since`, newest first: pages until one
/// reaches past it.
async fn list_since(
    ecs: &EcsClient,
    region: &str,
    since: Timestamp,
    statuses: Vec<ImageStatus>,
) -> Result<Vec<Image>, EcsError> {
    let mut images = Vec::new();
    for page_number in 1..=MAX_PAGES {
        let page = ecs
            .describe_images(&DescribeImagesRequest {
                region: region.to_string(),
                status: statuses.clone(),
                image_owner_alias: Some("self".into()),
                tags: vec![(OWNER_UID_TAG.to_string(), String::new())],
                page_number: Some(page_number),
                page_size: Some(MAX_PAGE_SIZE),
                ..Default::default()
            })
            .await?;
        let count = page.images.len();
        let reached = page
            .images
            .last()
            .and_then(|image| image.created())
            .is_some_and(|created| created < since);
        images.extend(page.images);
        let listed = u64::try_from(images.len()).unwrap_or(u64::MAX);
        if reached || count < MAX_PAGE_SIZE as usize || listed >= page.total_count {
            return Ok(images);
        }
    }
    Err(EcsError::Transport {
        message: format!(
            "DescribeImages in {region} still had pages after {}",
            MAX_PAGES
        ),
    })
}

/// How far back a listing must reach for `obj`: every image it can own was made after its
/// creation.
pub fn listed_since<K: Resource>(obj: &K) -> Timestamp {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::MIN, |created| before(created.0))
}

/// How far back to list for `followed`'s image, and whether that is from its `CreationTime`.
fn image_since(state: &RegionState, followed: &Followed) -> (Timestamp, bool) {
    let listed = [&state.latest, &state.widest]
        .into_iter()
        .flatten()
        .find_map(|listing| listing.created(&followed.image_id));
    match listed {
        Some(created) => (before(created), true),
        None => (before(followed.started), false),
    }
}

/// `at` less a margin for our clock, the apiserver's and ECS's disagreeing (and for ECS's
/// whole seconds). A listing cut too short only costs a lookup by id, never a verdict.
fn before(at: Timestamp) -> Timestamp {
    at.checked_sub(CLOCK_MARGIN).unwrap_or(at)
}

const CLOCK_MARGIN: SignedDuration = SignedDuration::from_secs(15);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use serde_json::{Value, json};

    fn followed(image_id: &str, state: ImageState, progress: Option<&str>, ago: u64) -> Followed {
        let now = Timestamp::now();
        Followed {
            image_id: image_id.into(),
            started: now - SignedDuration::from_secs(ago as i64),
            object_since: now - SignedDuration::from_secs(3600),
            state,
            progress: progress.map(str::to_string),
        }
    }

    #[test]
    fn the_next_look_is_when_the_progress_says_the_copy_ends() {
        let poll = Duration::from_secs(10);
        let look =
            |f: &Followed| next_look(f, &ProgressTrail::default(), 0, Timestamp::now(), poll);
        let at = |f: &Followed| look(f).0.as_secs_f64().round();
        let half = followed("m-1", ImageState::Creating, Some("50%"), 4);
        assert_eq!(at(&half), 4.0, "due when half as long again has passed");
        let early = followed("m-1", ImageState::Creating, Some("10%"), 20);
        assert_eq!(
            at(&early),
            45.0,
            "a quarter of the 180 s left, for progress"
        );
        let long = followed("m-1", ImageState::Creating, Some("1%"), 10);
        assert_eq!(
            at(&long),
            60.0,
            "progress at least every six poll intervals"
        );
        let soon = followed("m-1", ImageState::Creating, Some("80%"), 40);
        assert!(
            (at(&soon) - 10.0).abs() < 0.2,
            "never sooner than the poll interval for progress, but at its end: {}",
            at(&soon)
        );
        let done = followed("m-1", ImageState::Creating, Some("100%"), 4);
        assert_eq!(at(&done), 0.0);
        let queued = followed("m-1", ImageState::Waiting, Some("0%"), 4);
        assert_eq!(at(&queued), 10.0, "a queued copy shows no rate");
        let unknown = followed("m-1", ImageState::Creating, None, 4);
        assert_eq!(at(&unknown), 10.0);
        assert_eq!(look(&half).1, Look::End, "the look at its end");
        assert_eq!(look(&early).1, Look::Progress);
        assert_eq!(look(&queued).1, Look::Progress);
        let missed = next_look(
            &half,
            &ProgressTrail::default(),
            END_LOOKS,
            Timestamp::now(),
            poll,
        );
        assert_eq!(
            missed,
            (poll, Look::Progress),
            "an end looked for in vain: progress at the poll interval"
        );
    }

    #[test]
    fn readings_over_time_bring_the_look_at_the_end_closer_than_the_last_percent_alone() {
        let poll = Duration::from_secs(10);
        // A ten-minute copy at 99%, 597 s after it started: the percent alone allows up to
        // 1/99 of that (6 s) more.
        let last = followed("m-1", ImageState::Creating, Some("99%"), 597);
        let alone = next_look(&last, &ProgressTrail::default(), 0, Timestamp::now(), poll).0;
        assert!((alone.as_secs_f64() - 6.03).abs() < 0.1, "{alone:?}");
        // Listings saw 49% until 299.5 s, 50% from 300.2 s and 99% from 594.2 s: it ends by
        // 600.2 s.
        let mut trail = ProgressTrail::default();
        trail.record(49, 299.5, 299.7);
        trail.record(50, 300.0, 300.2);
        trail.record(99, 594.0, 594.2);
        let read = next_look(&last, &trail, 0, Timestamp::now(), poll).0;
        assert!((read.as_secs_f64() - 3.2).abs() < 0.1, "{read:?}");
    }

    /// A local ECS answering DescribeImages from those of `images` (newest first) in the
    /// statuses asked for, 100 per page; keeps the `Status` parameter of each page asked for.
    async fn fake_ecs(images: Arc<Mutex<Vec<Value>>>) -> (EcsClient, Arc<Mutex<Vec<String>>>) {
        let pages: Arc<Mutex<Vec<String>>> = Arc::default();
        let counter = pages.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (images, counter) = (images.clone(), counter.clone());
            async move {
                let query = uri.query().unwrap_or_default().to_string();
                let param = |name: &str| {
                    form_urlencoded::parse(query.as_bytes())
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.to_string())
                };
                let page: usize = param("PageNumber")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let statuses = param("Status").unwrap_or_default();
                lock(&counter).push(statuses.clone());
                let all: Vec<Value> = lock(&images)
                    .iter()
                    .filter(|image| {
                        let status = image["Status"].as_str().unwrap_or_default();
                        statuses.split(',').any(|s| s == status)
                    })
                    .cloned()
                    .collect();
                let chunk: Vec<Value> = all
                    .iter()
                    .skip((page - 1) * 100)
                    .take(100)
                    .cloned()
                    .collect();
                axum::Json(json!({
                    "RequestId": "r", "TotalCount": all.len(), "PageNumber": page, "PageSize": 100,
                    "Images": {"Image": chunk}
                }))
            }
        });
        let client = crate::controller::local_ecs(app).await;
        (client, pages)
    }

    fn image(id: &str, status: &str, progress: &str, created: Timestamp) -> Value {
        json!({
            "ImageId": id, "Status": status, "Progress": progress,
            "CreationTime": created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "Tags": {"Tag": [{"TagKey": OWNER_UID_TAG, "TagValue": format!("uid-{id}")}]}
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "ImageCopy",
            namespace: crate::api::Word::new("ns"),
            name: name.into(),
        }
    }

    fn quick() -> Pacing {
        Pacing {
            poll_interval: Duration::from_secs(2),
            min_gap: Duration::from_millis(100),
            end_gap: Duration::from_millis(100),
            wait_limit: Duration::from_secs(5),
            idle_exit: Duration::from_secs(60),
            progress_writes_per_second: 1000,
        }
    }

    /// What one listing of the region, asked for now, wakes: every object woken within a
    /// moment of the first.
    async fn woken_by_a_listing(
        in_flight: &InFlight,
        ecs: &EcsClient,
        wakes: &mut mpsc::UnboundedReceiver<ObjectKey>,
    ) -> Vec<String> {
        let now = Timestamp::now();
        let since = now - SignedDuration::from_hours(1);
        in_flight
            .listing(ecs, "key", "cn-shanghai", since, now, None)
            .await
            .unwrap();
        let mut names = Vec::new();
        while let Ok(Some(object)) =
            tokio::time::timeout(Duration::from_millis(300), wakes.next()).await
        {
            names.push(object.name);
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn progress_alone_wakes_objects_within_the_budget_the_ones_not_shown_first() {
        let now = Timestamp::now();
        let copies = ["m-a", "m-b", "m-c", "m-d"];
        let mut all: Vec<Value> = copies
            .iter()
            .map(|id| image(id, "Creating", "50%", now))
            .collect();
        all.push(image("m-done", "Available", "100%", now));
        let (ecs, _) = fake_ecs(Arc::new(Mutex::new(all))).await;
        // One write a second, two at most at once (a 2 s poll interval's worth).
        let in_flight = InFlight::new(Pacing {
            progress_writes_per_second: 1,
            ..quick()
        });
        let mut wakes = in_flight.wakes("ImageCopy");
        for id in copies.iter().chain(&["m-done"]) {
            // Far from their end: no look of their own comes during the test.
            let f = followed(id, ImageState::Creating, Some("40%"), 300);
            in_flight.follow(&ecs, "key", "cn-shanghai", &format!("uid-{id}"), key(id), f);
        }
        let mut first = woken_by_a_listing(&in_flight, &ecs, &mut wakes).await;
        assert_eq!(first.len(), 3, "two progress writes and the end: {first:?}");
        assert!(
            first.contains(&"m-done".into()),
            "an end never waits: {first:?}"
        );
        first.retain(|name| name != "m-done");

        // The bucket refills in 2 s; it holds two at most.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let second = woken_by_a_listing(&in_flight, &ecs, &mut wakes).await;
        assert_eq!(second.len(), 2, "{second:?}");
        let mut both: Vec<String> = first.iter().chain(&second).cloned().collect();
        both.sort();
        assert_eq!(
            both, copies,
            "the copies whose 50% was not shown yet, not those shown already"
        );
    }

    #[tokio::test]
    async fn a_followed_object_on_its_own_timer_reads_the_pollers_listing_instead_of_asking() {
        let now = Timestamp::now();
        let images = vec![image("m-a", "Creating", "50%", now)];
        let (ecs, pages) = fake_ecs(Arc::new(Mutex::new(images))).await;
        let in_flight = InFlight::new(quick());
        let f = followed("m-a", ImageState::Creating, Some("50%"), 300);
        in_flight.follow(&ecs, "key", "cn-shanghai", "uid-a", key("m-a"), f);
        let since = now - SignedDuration::from_hours(1);
        in_flight
            .listing(&ecs, "key", "cn-shanghai", since, now, None)
            .await
            .unwrap();
        assert_eq!(lock(&pages).len(), 1);

        let poll = quick().poll_interval;
        let limit =
            |uid: &str, image: &str| in_flight.listing_age_limit("key", "cn-shanghai", uid, image);
        assert_eq!(limit("uid-a", "m-a"), poll * PROGRESS_POLLS);
        assert_eq!(
            limit("uid-a", "m-other"),
            poll,
            "another image than the one followed"
        );
        assert_eq!(limit("uid-b", "m-a"), poll, "not followed");
        assert_eq!(
            in_flight.listing_age_limit("key", "cn-beijing", "uid-a", "m-a"),
            poll,
            "another region"
        );

        // Past a poll interval, the object followed still reads the poller's listing.
        tokio::time::sleep(poll + Duration::from_millis(200)).await;
        let taken_after = Timestamp::now() - limit("uid-a", "m-a");
        let listing = in_flight
            .listing(&ecs, "key", "cn-shanghai", since, taken_after, Some("m-a"))
            .await
            .unwrap();
        assert!(listing.image("m-a").is_some());
        assert_eq!(lock(&pages).len(), 1, "no listing of its own");
    }

    #[tokio::test]
    async fn only_the_object_whose_copy_finished_is_woken() {
        let now = Timestamp::now();
        let images = Arc::new(Mutex::new(vec![
            image("m-b", "Creating", "50%", now),
            image("m-a", "Creating", "50%", now),
        ]));
        let (ecs, _) = fake_ecs(images.clone()).await;
        let in_flight = InFlight::new(quick());
        let mut wakes = in_flight.wakes("ImageCopy");
        for id in ["m-a", "m-b"] {
            let f = followed(id, ImageState::Creating, Some("50%"), 1);
            in_flight.follow(&ecs, "key", "cn-shanghai", &format!("uid-{id}"), key(id), f);
        }
        lock(&images)[1] = image("m-a", "Available", "100%", now);
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(woken.ok().flatten(), Some(key("m-a")));
        assert_eq!(
            in_flight.followed_count(),
            1,
            "the finished copy is no longer followed"
        );
        let more = tokio::time::timeout(Duration::from_millis(1500), wakes.next()).await;
        assert!(
            more.is_err(),
            "m-b did not change and is not woken: {more:?}"
        );
    }

    #[tokio::test]
    async fn an_adopted_image_made_before_its_work_was_recorded_is_found_not_taken_for_gone() {
        let now = Timestamp::now();
        let mut all = Vec::new();
        for i in 0..100 {
            all.push(image(&format!("m-new{i}"), "Available", "100%", now));
        }
        for i in 0..100 {
            let created = now - SignedDuration::from_mins(30);
            all.push(image(&format!("m-mid{i}"), "Available", "100%", created));
        }
        let adopted_at = now - SignedDuration::from_hours(1);
        all.push(image("m-adopted", "Creating", "50%", adopted_at));
        let (ecs, pages) = fake_ecs(Arc::new(Mutex::new(all))).await;
        let in_flight = InFlight::new(quick());
        let mut wakes = in_flight.wakes("ImageCopy");
        let mut adopted = followed("m-adopted", ImageState::Creating, Some("50%"), 1);
        adopted.object_since = now - SignedDuration::from_hours(2);
        in_flight.follow(
            &ecs,
            "key",
            "cn-shanghai",
            "uid-m-adopted",
            key("m-adopted"),
            adopted,
        );
        let woken = tokio::time::timeout(Duration::from_secs(3), wakes.next()).await;
        assert!(
            woken.is_err(),
            "the image is in flight, not gone: {woken:?}"
        );
        assert_eq!(in_flight.followed_count(), 1);
        assert!(
            lock(&pages).len() >= 5,
            "2 pages back to its start, then 3 back to the object's creation"
        );
    }

    #[tokio::test]
    async fn a_listing_reaches_back_only_to_the_oldest_image_asked_about() {
        let now = Timestamp::now();
        let mut all = Vec::new();
        // 50 recent images, then 250 finished long ago: newest first, as ECS lists them.
        for i in 0..50 {
            all.push(image(&format!("m-new{i}"), "Creating", "10%", now));
        }
        for i in 0..250 {
            all.push(image(
                &format!("m-old{i}"),
                "Available",
                "100%",
                now - SignedDuration::from_hours(48),
            ));
        }
        let (ecs, pages) = fake_ecs(Arc::new(Mutex::new(all))).await;
        let in_flight = InFlight::new(quick());
        let since = now - SignedDuration::from_secs(3600);
        let listing = in_flight
            .listing(&ecs, "key", "cn-shanghai", since, now, None)
            .await
            .unwrap();
        assert_eq!(lock(&pages).len(), 1, "one page reaches past the hour");
        assert!(listing.image("m-new49").is_some());
        assert!(listing.covers(since) && !listing.covers(since - SignedDuration::from_secs(1)));
        // A second reader within the age limit shares it; an older question needs a new one.
        in_flight
            .listing(&ecs, "key", "cn-shanghai", since, now, None)
            .await
            .unwrap();
        assert_eq!(lock(&pages).len(), 1);
        let everything = in_flight
            .listing(&ecs, "key", "cn-shanghai", Timestamp::MIN, now, None)
            .await
            .unwrap();
        assert_eq!(everything.len(), 300);
        assert_eq!(lock(&pages).len(), 4);
    }

    /// 150 copies that just began, newest first, and `m-due`, begun 99 s ago at 99%.
    fn region_ending(now: Timestamp) -> Vec<Value> {
        let mut all: Vec<Value> = (0..150)
            .map(|i| image(&format!("m-new{i}"), "Creating", "1%", now))
            .collect();
        all.push(image(
            "m-due",
            "Creating",
            "99%",
            now - SignedDuration::from_secs(99),
        ));
        all
    }

    fn follow_all(in_flight: &InFlight, ecs: &EcsClient, now: Timestamp) {
        for i in 0..150 {
            let id = format!("m-new{i}");
            let f = followed(&id, ImageState::Creating, Some("1%"), 1);
            in_flight.follow(ecs, "key", "cn-shanghai", &format!("uid-{id}"), key(&id), f);
        }
        let mut due = followed("m-due", ImageState::Creating, Some("99%"), 99);
        due.started = now - SignedDuration::from_secs(99);
        in_flight.follow(ecs, "key", "cn-shanghai", "uid-m-due", key("m-due"), due);
    }

    #[tokio::test]
    async fn a_copy_due_to_end_is_seen_in_one_page_of_ended_images_and_read_by_its_object() {
        let now = Timestamp::now();
        let images = Arc::new(Mutex::new(region_ending(now)));
        let (ecs, pages) = fake_ecs(images.clone()).await;
        let in_flight = InFlight::new(quick());
        let mut wakes = in_flight.wakes("ImageCopy");
        let since = now - SignedDuration::from_secs(200);
        in_flight
            .listing(&ecs, "key", "cn-shanghai", since, now, None)
            .await
            .unwrap();
        follow_all(&in_flight, &ecs, now);
        lock(&pages).clear();
        lock(&images)[150] = image(
            "m-due",
            "Available",
            "100%",
            now - SignedDuration::from_secs(99),
        );
        let woken = tokio::time::timeout(Duration::from_secs(3), wakes.next()).await;
        assert_eq!(woken.ok().flatten(), Some(key("m-due")));
        let asked = lock(&pages).clone();
        let ended = ended_statuses()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            asked,
            [ended],
            "one page of ended images, not the 2 pages of everything in flight"
        );
        // Its object reads the news in the latest listing, without a listing of its own.
        let after_end = Timestamp::now() - SignedDuration::from_millis(900);
        let read = in_flight
            .listing(&ecs, "key", "cn-shanghai", since, after_end, Some("m-due"))
            .await
            .unwrap();
        assert_eq!(
            read.image("m-due").map(|i| i.state.clone()),
            Some(ImageState::Available)
        );
        assert_eq!(
            read.image("m-new7").map(|i| i.state.clone()),
            Some(ImageState::Creating),
            "the copies still running are as the full listing showed them"
        );
        assert!(
            read.taken_at < after_end,
            "absence is judged by the full listing's time"
        );
        assert_eq!(lock(&pages).len(), 1);
        assert_eq!(in_flight.followed_count(), 150);
    }

    #[tokio::test]
    async fn an_end_looked_for_in_vain_goes_back_to_progress_looks_without_a_hot_loop() {
        let now = Timestamp::now();
        let (ecs, pages) = fake_ecs(Arc::new(Mutex::new(region_ending(now)))).await;
        let in_flight = InFlight::new(quick());
        let _wakes = in_flight.wakes("ImageCopy");
        follow_all(&in_flight, &ecs, now);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let asked = lock(&pages).clone();
        let full = followed_statuses()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let ends = asked.iter().filter(|s| **s != full).count();
        assert_eq!(
            ends,
            usize::from(END_LOOKS),
            "three looks for the end that never came: {asked:?}"
        );
        assert!(
            (2..=4).contains(&(asked.len() - ends)),
            "then a full listing of 2 pages at the poll interval: {asked:?}"
        );
        assert_eq!(in_flight.followed_count(), 151, "nothing taken for ended");
    }

    #[tokio::test]
    async fn an_object_writing_back_what_the_poller_saw_keeps_its_next_look() {
        let (ecs, _) = fake_ecs(Arc::default()).await;
        let in_flight = InFlight::new(quick());
        let follow =
            |f: Followed| in_flight.follow(&ecs, "key", "cn-shanghai", "uid-1", key("m-1"), f);
        let due = || {
            let region = lock(&in_flight.regions).values().next().cloned().unwrap();
            lock(&region.state).entries["uid-1"].due
        };
        let seen = followed("m-1", ImageState::Creating, Some("10%"), 20);
        follow(seen.clone());
        let first = due();
        tokio::time::sleep(Duration::from_millis(300)).await;
        follow(seen.clone());
        assert_eq!(
            due(),
            first,
            "a look 300 ms later would cost a listing of its own"
        );
        follow(Followed {
            progress: Some("11%".into()),
            ..seen
        });
        assert_ne!(
            due(),
            first,
            "what the poller did not see is scheduled anew"
        );
    }
}
