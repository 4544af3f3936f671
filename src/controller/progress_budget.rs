//! Status writes for progress alone, paced across the operator.
//!
//! A listing of a region can show new progress for every copy in flight at once, and each object
//! it wakes writes its status. With a thousand copies running that is a thousand writes in a
//! burst, every poll interval: the apiserver and the workers are then busy with what is only a
//! display while copies wait for their turn to start and finished ones to be marked Ready. So
//! progress alone spends from this budget (a token bucket refilled at `--progress-writes-per-second`);
//! a start, an end, a failure or a change of state never does. With few copies in flight every
//! copy shows its progress every poll interval, as without a budget; with many, each shows it
//! less often, the copies shown least recently first.

// A bucket of its own rather than `governor` (which the ECS client's rate limits use): it runs on
// tokio's clock, so a test with paused time sees it refill as time is advanced.
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct ProgressBudget {
    per_second: f64,
    /// What the bucket holds when full: a poll interval's worth, so that listings a poll
    /// interval apart can spend the whole rate.
    capacity: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl ProgressBudget {
    /// `per_second` writes a second on average, at most `per_second × over` at once.
    pub fn new(per_second: u32, over: Duration) -> Self {
        let per_second = f64::from(per_second.max(1));
        let capacity = (per_second * over.as_secs_f64()).max(1.0);
        ProgressBudget {
            per_second,
            capacity,
            bucket: Mutex::new(Bucket {
                tokens: capacity,
                refilled: Instant::now(),
            }),
        }
    }

    /// How many of `wanted` progress writes may go now (taken from the budget).
    pub fn take(&self, wanted: usize) -> usize {
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.capacity);
        bucket.refilled = now;
        // Whole tokens only; `tokens` is at most `capacity`, a few thousand.
        let granted = (bucket.tokens.floor() as usize).min(wanted);
        bucket.tokens -= granted as f64;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_then_the_rate() {
        let budget = ProgressBudget::new(10, Duration::from_secs(10));
        assert_eq!(
            budget.take(30),
            30,
            "less than a poll interval's worth goes at once"
        );
        assert_eq!(budget.take(500), 70, "the rest of the bucket");
        assert_eq!(budget.take(5), 0, "then nothing until it refills");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(budget.take(100), 15, "ten a second");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(budget.take(1000), 100, "never more than the bucket holds");
    }
}
