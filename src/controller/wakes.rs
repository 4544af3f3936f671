//! Objects to reconcile now, sent to each kind's controller (kube-runtime's `reconcile_on`):
//! how the in-flight pollers, the drift check and the turns to start reach objects that wait for
//! no change of their own and keep no timer in the controller's scheduler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;

use super::in_flight::ObjectKey;

#[derive(Clone, Default)]
pub struct Wakes {
    senders: Arc<Mutex<HashMap<&'static str, mpsc::UnboundedSender<ObjectKey>>>>,
}

impl Wakes {
    /// The objects of `kind` to reconcile.
    pub fn receiver(&self, kind: &'static str) -> mpsc::UnboundedReceiver<ObjectKey> {
        let (sender, receiver) = mpsc::unbounded();
        self.lock().insert(kind, sender);
        receiver
    }

    pub fn wake(&self, object: &ObjectKey) {
        if let Some(sender) = self.lock().get(object.kind) {
            let _ = sender.unbounded_send(object.clone());
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<&'static str, mpsc::UnboundedSender<ObjectKey>>> {
        self.senders.lock().unwrap_or_else(|e| e.into_inner())
    }
}
