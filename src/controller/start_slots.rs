//! Turns for starting work, per region, at the rate the region's API budget allows.
//!
//! A thousand objects applied at once cannot all start at once: each start waits for the
//! region's rate limit. Waiting inside a reconcile would hold a worker and keep every other
//! object — a copy that just finished, a deletion — queued behind the whole backlog. So an object
//! whose turn is more than [`HOLD`] away takes a turn and comes back for it, and the workers stay
//! free for what is due now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A turn this close is waited for inside the reconcile.
const HOLD: Duration = Duration::from_secs(1);

pub struct StartSlots {
    interval: Duration,
    state: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Per region: the first turn nobody has taken.
    next_free: HashMap<String, Instant>,
    /// Per object UID: the turn it took.
    taken: HashMap<String, Instant>,
}

impl StartSlots {
    /// `per_second` starts per region.
    pub fn new(per_second: u32) -> Self {
        StartSlots {
            interval: Duration::from_secs(1) / per_second.max(1),
            state: Mutex::default(),
        }
    }

    /// `None`: start now. `Some(wait)`: come back after `wait`, the object's turn is kept.
    pub fn turn(&self, region: &str, uid: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut slots = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&turn) = slots.taken.get(uid) {
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
        slots.taken.insert(uid.to_string(), turn);
        Some(turn - now)
    }

    /// Drops the turn of an object that is gone.
    pub fn forget(&self, uid: &str) {
        let mut slots = self.state.lock().unwrap_or_else(|e| e.into_inner());
        slots.taken.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_backlog_gets_turns_at_the_budget_and_keeps_them() {
        let slots = StartSlots::new(10);
        let waits: Vec<Option<Duration>> = (0..30)
            .map(|i| slots.turn("cn-hangzhou", &format!("uid-{i}")))
            .collect();
        // The first second's worth starts at once; the rest come back 100 ms apart.
        assert!(waits[..11].iter().all(Option::is_none), "{waits:?}");
        assert_eq!(waits[11], Some(Duration::from_millis(1100)));
        assert_eq!(waits[29], Some(Duration::from_millis(2900)));
        assert_eq!(
            slots.turn("cn-beijing", "uid-other"),
            None,
            "each region has its own budget"
        );
        // Coming back early keeps the turn; at its turn the object starts.
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(
            slots.turn("cn-hangzhou", "uid-29"),
            Some(Duration::from_millis(1900))
        );
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(slots.turn("cn-hangzhou", "uid-29"), None);
        assert_eq!(
            slots.turn("cn-hangzhou", "uid-29"),
            None,
            "a later start (a retry) takes a new turn, here free at once"
        );
    }
}
