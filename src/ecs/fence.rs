//! A switch that stops an [`EcsClient`](super::EcsClient) from changing anything in the cloud.
//!
//! Leader election closes it the moment this replica is no longer sure it leads; every call that
//! creates, cancels or deletes (anything but `Describe*`/`List*`) is then refused before it is
//! signed, including the retries of a call that started while the fence was open. Reads go on,
//! so a replica that lost the lease can still answer probes and finish its bookkeeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by every clone of a client; cloning the fence shares the switch.
#[derive(Clone, Debug)]
pub struct Fence(Arc<AtomicBool>);

impl Fence {
    /// A fence that lets mutations through until [`Fence::close`].
    pub fn open() -> Self {
        Fence(Arc::new(AtomicBool::new(true)))
    }

    /// A fence that refuses mutations until [`Fence::reopen`].
    pub fn closed() -> Self {
        Fence(Arc::new(AtomicBool::new(false)))
    }

    pub fn close(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn reopen(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
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
}
