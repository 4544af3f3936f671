//! Turns for starting work, per region, at the rate the region's API budget allows.
//!
//! A thousand objects applied at once cannot all start at once: each start waits for the
//! region's rate limit. Waiting inside a reconcile would hold a worker and keep every other
//! object — a copy that just finished, a deletion — queued behind the whole backlog. So an object
//! whose turn is more than [`HOLD`] away takes a turn and is woken at it (kube-runtime's
//! `reconcile_on`), and the workers stay free for what is due now. The turns of a region are
//! handed out in order, so one task per region wakes them from a queue: ten thousand objects
//! waiting to start hold a queue entry each, not a timer each in the controller's scheduler.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::in_flight::ObjectKey;
use super::wakes::Wakes;

/// A turn this close is waited for inside the reconcile.
const HOLD: Duration = Duration::from_secs(1);

pub struct StartSlots {
    interval: Duration,
    wakes: Wakes,
    state: Arc<Mutex<Slots>>,
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
}

impl StartSlots {
    /// `per_second` starts per region; objects are woken at their turn through `wakes`.
    pub fn new(per_second: u32, wakes: Wakes) -> Self {
        StartSlots {
            interval: Duration::from_secs(1) / per_second.max(1),
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
                    self.state.clone(),
                    self.wakes.clone(),
                ));
            }
        }
        Some(turn - now)
    }

    /// Drops the turn of an object that is gone (its queue entry is passed over).
    pub fn forget(&self, uid: &str) {
        lock(&self.state).taken.remove(uid);
    }
}

/// Wakes the objects of `region` at their turns, until its queue is empty.
async fn wake_in_turn(region: String, state: Arc<Mutex<Slots>>, wakes: Wakes) {
    loop {
        let next = {
            let mut slots = lock(&state);
            let Slots { taken, queues, .. } = &mut *slots;
            let Some(queue) = queues.get_mut(&region) else {
                return;
            };
            let now = Instant::now();
            while let Some((turn, uid)) = queue.front() {
                if *turn > now {
                    break;
                }
                // Still its turn: not forgotten, and not started or retaken since.
                if let Some((taken_turn, object)) = taken.get(&**uid)
                    && taken_turn == turn
                {
                    wakes.wake(object);
                }
                queue.pop_front();
            }
            match queue.front() {
                Some((turn, _)) => *turn,
                None => {
                    queues.remove(&region);
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
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
            namespace: crate::api::Word::new("ns"),
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
}
