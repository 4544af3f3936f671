//! Turns for starting work, per region, at the rate the region's API budget allows.
//!
//! A thousand objects applied at once cannot all start at once: each start waits for the
//! region's rate limit. Waiting inside a reconcile would hold a worker and keep every other
//! object — a copy that just finished, a deletion — queued behind the whole backlog. So an object
//! whose turn is more than [`HOLD`] away takes a turn and is woken at it (kube-runtime's
//! `reconcile_on`), and the workers stay free for what is due now. The turns of a region are
//! handed out in order, so one task per region wakes them from a queue: ten thousand objects
//! waiting to start hold a queue entry each, not a timer each in the controller's scheduler.
//!
//! Turns follow the budget, but the starts follow the apiserver, which writes each start's
//! status: on a small control plane it may serve fewer starts a second than the budget allows.
//! So a region wakes its next object only while fewer than a second's worth of woken objects
//! have yet to come to their start ([`Window`]): the backlog waits here, in order, and not in the
//! controller's work queue, where a copy that just finished would wait behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::in_flight::ObjectKey;
use super::wakes::Wakes;

/// A turn this close is waited for inside the reconcile.
const HOLD: Duration = Duration::from_secs(1);

/// How long a woken object keeps its place in the window without coming to its start (it may
/// have been deleted, or failed before it): then the next one is woken anyway.
const PATIENCE: Duration = Duration::from_secs(10);

pub struct StartSlots {
    interval: Duration,
    /// Woken objects of a region that may be on their way to their start at once.
    window: usize,
    wakes: Wakes,
    state: Arc<Mutex<Slots>>,
}

/// The woken objects of one region that have not come to their start yet.
#[derive(Default)]
struct Window {
    /// (when woken, object UID).
    woken: Vec<(Instant, Box<str>)>,
    /// Told when one of them starts.
    started: Arc<Notify>,
}

impl Window {
    /// Forgets those woken longer than [`PATIENCE`] ago; when the oldest left loses its place.
    fn prune(&mut self, now: Instant) -> Option<Instant> {
        self.woken.retain(|(at, _)| now < *at + PATIENCE);
        self.woken.iter().map(|(at, _)| *at + PATIENCE).min()
    }

    fn started(&mut self, uid: &str) {
        let before = self.woken.len();
        self.woken.retain(|(_, woken)| &**woken != uid);
        if self.woken.len() < before {
            self.started.notify_one();
        }
    }
}

#[derive(Default)]
struct Slots {
    /// Per region: the first turn nobody has taken.
    next_free: HashMap<String, Instant>,
    /// Per object UID: the turn it took, and whom to wake then.
    taken: HashMap<String, (Instant, ObjectKey)>,
    /// Per region, the turns still to wake, in order: (turn, object UID). A region has a queue
    /// exactly while its waking task runs.
    queues: HashMap<String, VecDeque<(Instant, Box<str>)>>,
    /// Per region with a queue: the objects woken and not started yet.
    windows: HashMap<String, Window>,
}

impl StartSlots {
    /// `per_second` starts per region; objects are woken at their turn through `wakes`.
    pub fn new(per_second: u32, wakes: Wakes) -> Self {
        StartSlots {
            interval: Duration::from_secs(1) / per_second.max(1),
            window: usize::try_from(per_second.max(1)).unwrap_or(usize::MAX),
            wakes,
            state: Arc::default(),
        }
    }

    /// `None`: start now. `Some(wait)`: the object's turn comes after `wait`; it is kept, and
    /// `object` is woken then.
    pub fn turn(&self, region: &str, uid: &str, object: &ObjectKey) -> Option<Duration> {
        let now = Instant::now();
        let mut slots = lock(&self.state);
        if let Some(&(turn, _)) = slots.taken.get(uid) {
            if turn <= now + HOLD {
                slots.taken.remove(uid);
                if let Some(window) = slots.windows.get_mut(region) {
                    window.started(uid);
                }
                return None;
            }
            return Some(turn - now);
        }
        let next_free = slots.next_free.entry(region.to_string()).or_insert(now);
        let turn = (*next_free).max(now);
        *next_free = turn + self.interval;
        if turn <= now + HOLD {
            return None;
        }
        slots.taken.insert(uid.to_string(), (turn, object.clone()));
        match slots.queues.get_mut(region) {
            Some(queue) => queue.push_back((turn, uid.into())),
            None => {
                slots
                    .queues
                    .insert(region.to_string(), VecDeque::from([(turn, uid.into())]));
                tokio::spawn(wake_in_turn(
                    region.to_string(),
                    self.window,
                    self.state.clone(),
                    self.wakes.clone(),
                ));
            }
        }
        Some(turn - now)
    }

    /// Drops the turn of an object that is gone (its queue entry is passed over).
    pub fn forget(&self, uid: &str) {
        let mut slots = lock(&self.state);
        slots.taken.remove(uid);
        for window in slots.windows.values_mut() {
            window.started(uid);
        }
    }
}

/// Wakes the objects of `region` at their turns, while its window has room, until its queue is
/// empty.
async fn wake_in_turn(region: String, window_size: usize, state: Arc<Mutex<Slots>>, wakes: Wakes) {
    loop {
        let (next, started) = {
            let mut slots = lock(&state);
            let Slots {
                taken,
                queues,
                windows,
                ..
            } = &mut *slots;
            let Some(queue) = queues.get_mut(&region) else {
                return;
            };
            let window = windows.entry(region.clone()).or_default();
            let now = Instant::now();
            let mut place_freed = window.prune(now);
            while let Some((turn, uid)) = queue.front() {
                if *turn > now || window.woken.len() >= window_size {
                    break;
                }
                // Still its turn: not forgotten, and not started or retaken since.
                if let Some((taken_turn, object)) = taken.get(&**uid)
                    && taken_turn == turn
                {
                    wakes.wake(object);
                    window.woken.push((now, uid.clone()));
                    place_freed = place_freed.or(Some(now + PATIENCE));
                }
                queue.pop_front();
            }
            let started = window.started.clone();
            match queue.front() {
                Some(_) if window.woken.len() >= window_size => (place_freed, Some(started)),
                Some((turn, _)) => (Some(*turn), None),
                None => {
                    queues.remove(&region);
                    windows.remove(&region);
                    return;
                }
            }
        };
        let until = next.unwrap_or_else(Instant::now);
        match started {
            Some(started) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = started.notified() => {}
                }
            }
            None => tokio::time::sleep_until(until).await,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "ImageCopy",
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_gets_turns_at_the_budget_and_keeps_them() {
        let slots = StartSlots::new(10, Wakes::default());
        let waits: Vec<Option<Duration>> = (0..30)
            .map(|i| slots.turn("cn-hangzhou", &format!("uid-{i}"), &key("c")))
            .collect();
        // The first second's worth starts at once; the rest come back 100 ms apart.
        assert!(waits[..11].iter().all(Option::is_none), "{waits:?}");
        assert_eq!(waits[11], Some(Duration::from_millis(1100)));
        assert_eq!(waits[29], Some(Duration::from_millis(2900)));
        assert_eq!(
            slots.turn("cn-beijing", "uid-other", &key("c")),
            None,
            "each region has its own budget"
        );
        // Coming back early keeps the turn; at its turn the object starts.
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(
            slots.turn("cn-hangzhou", "uid-29", &key("c")),
            Some(Duration::from_millis(1900))
        );
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(slots.turn("cn-hangzhou", "uid-29", &key("c")), None);
        assert_eq!(
            slots.turn("cn-hangzhou", "uid-29", &key("c")),
            None,
            "a later start (a retry) takes a new turn, here free at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn objects_waiting_for_a_turn_are_woken_at_it_in_order_unless_gone() {
        let wakes = Wakes::default();
        let mut woken = wakes.receiver("ImageCopy");
        let slots = StartSlots::new(1, wakes);
        let started = Instant::now();
        assert_eq!(slots.turn("cn-hangzhou", "uid-a", &key("a")), None);
        assert_eq!(slots.turn("cn-hangzhou", "uid-b", &key("b")), None);
        for name in ["c", "d", "e"] {
            let uid = format!("uid-{name}");
            assert!(slots.turn("cn-hangzhou", &uid, &key(name)).is_some());
        }
        slots.forget("uid-d");
        let first = woken.next().await.expect("woken");
        assert_eq!(first, key("c"));
        assert_eq!(started.elapsed(), Duration::from_secs(2), "at its turn");
        assert_eq!(slots.turn("cn-hangzhou", "uid-c", &key("c")), None);
        assert_eq!(woken.next().await, Some(key("e")), "d is gone");
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert!(
            lock(&slots.state).queues.is_empty(),
            "the region's waking task ends with its queue"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_a_second_of_woken_objects_wait_to_start_at_once() {
        let wakes = Wakes::default();
        let mut woken = wakes.receiver("ImageCopy");
        // Two starts a second: a window of two.
        let slots = StartSlots::new(2, wakes);
        let started = Instant::now();
        for i in 0..3 {
            assert_eq!(slots.turn("r", &format!("uid-{i}"), &key("now")), None);
        }
        for name in ["a", "b", "c", "d"] {
            let uid = format!("uid-{name}");
            assert!(slots.turn("r", &uid, &key(name)).is_some());
        }
        assert_eq!(woken.next().await, Some(key("a")));
        assert_eq!(woken.next().await, Some(key("b")));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let held = tokio::time::timeout(Duration::from_secs(5), woken.next()).await;
        assert!(
            held.is_err(),
            "c's turn came at 2.5 s, but a and b have not started: {held:?}"
        );
        assert_eq!(slots.turn("r", "uid-a", &key("a")), None, "a starts");
        assert_eq!(woken.next().await, Some(key("c")), "a's place goes to c");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        assert_eq!(
            woken.next().await,
            Some(key("d")),
            "b never came: its place is given up after a while"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2) + PATIENCE);
    }
}
