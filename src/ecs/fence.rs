//! A switch that stops an [`EcsClient`](super::EcsClient) from changing anything in the cloud.
//!
//! Leader election closes it the moment this replica is no longer sure it leads; every call that
//! creates, cancels or deletes (anything but `Describe*`/`List*`) is then refused before it is
//! signed, including the retries of a call that started while the fence was open. Reads go on,
//! so a replica that lost the lease can still answer probes and finish its bookkeeping.
//!
//! The fence can also be opened only until an instant ([`Fence::reopen_until`]): past it, it
//! counts as closed without anyone closing it. A process that was frozen (SIGSTOP, a stalled
//! VM) and resumes after its renew deadline then finds the fence shut at once, whichever of
//! its tasks happens to run first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// `State::open_until` when closed.
const CLOSED: u64 = 0;
/// `State::open_until` when open without a time limit.
const OPEN: u64 = u64::MAX;

/// Shared by every clone of a client; cloning the fence shares the switch.
#[derive(Clone, Debug)]
pub struct Fence(Arc<State>);

#[derive(Debug)]
struct State {
    /// Nanoseconds after `epoch` until which mutations pass; [`CLOSED`] or [`OPEN`].
    open_until: AtomicU64,
    epoch: Instant,
}

impl Fence {
    fn with(open_until: u64) -> Self {
        Fence(Arc::new(State {
            open_until: AtomicU64::new(open_until),
            epoch: Instant::now(),
        }))
    }

    /// A fence that lets mutations through until [`Fence::close`].
    pub fn open() -> Self {
        Fence::with(OPEN)
    }

    /// A fence that refuses mutations until [`Fence::reopen`].
    pub fn closed() -> Self {
        Fence::with(CLOSED)
    }

    pub fn close(&self) {
        self.0.open_until.store(CLOSED, Ordering::SeqCst);
    }

    pub fn reopen(&self) {
        self.0.open_until.store(OPEN, Ordering::SeqCst);
    }

    /// Lets mutations through until `deadline`, and refuses them from then on.
    pub fn reopen_until(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.0.epoch).as_nanos();
        let open_until = u64::try_from(nanos).unwrap_or(OPEN).min(OPEN - 1);
        self.0.open_until.store(open_until, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        match self.0.open_until.load(Ordering::SeqCst) {
            CLOSED => false,
            OPEN => true,
            open_until => self.0.epoch.elapsed().as_nanos() < u128::from(open_until),
        }
    }
}

/// Whether `action` changes state in the cloud. ECS names its reads `Describe*` and `List*`.
pub fn is_mutation(action: &str) -> bool {
    !(action.starts_with("Describe") || action.starts_with("List"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_everything_else_is_a_mutation() {
        for read in ["DescribeImages", "DescribeTasks", "ListTagResources"] {
            assert!(!is_mutation(read), "{read}");
        }
        for write in [
            "CopyImage",
            "CancelCopyImage",
            "DeleteImage",
            "ImportImage",
            "ExportImage",
            "CancelTask",
            "TagResources",
        ] {
            assert!(is_mutation(write), "{write}");
        }
    }

    #[test]
    fn clones_share_the_switch() {
        let fence = Fence::open();
        let other = fence.clone();
        other.close();
        assert!(!fence.is_open());
        fence.reopen();
        assert!(other.is_open());
    }

    #[test]
    fn a_fence_opened_until_an_instant_closes_by_itself_then() {
        let fence = Fence::closed();
        fence.reopen_until(Instant::now() + std::time::Duration::from_millis(50));
        assert!(fence.is_open());
        std::thread::sleep(std::time::Duration::from_millis(80));
        assert!(!fence.is_open(), "past the instant, mutations are refused");
        fence.reopen_until(Instant::now());
        assert!(!fence.is_open(), "an instant already passed opens nothing");
        fence.reopen();
        assert!(fence.is_open(), "reopen lifts the time limit");
    }
}
