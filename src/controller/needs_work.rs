//! Which watch events wake an object's reconcile: a change of its spec (generation), of its
//! finalizers, or the start of its deletion. A status write (ours) must not, or an error path
//! whose status changes would retry at once instead of after its backoff.
//!
//! kube-runtime's `predicate_filter` does the same with a key of three strings (name, namespace
//! and UID) per object, some 270 bytes each at 10,000 objects. Here an object is known by its UID
//! as a number, and forgotten when it is deleted or absent from a relist.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use kube::Resource;
use kube::runtime::watcher::Event;

use super::uid::Uid;

/// What was last seen of each object: its UID and a hash of what a reconcile depends on.
#[derive(Default)]
pub struct NeedsWork {
    seen: HashMap<u128, u64>,
    /// The objects of a relist under way; those seen before but not in it were deleted meanwhile.
    relisted: Option<HashSet<u128>>,
}

impl NeedsWork {
    /// The object of `event` if a reconcile should see it: new, or changed in what a reconcile
    /// depends on. An object whose UID is not a UUID as Kubernetes writes one is always passed
    /// on.
    pub fn filter<K: Resource>(&mut self, event: Event<K>) -> Option<K> {
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            Event::InitApply(object) => {
                let uid = uid(&object);
                if let (Some(relisted), Some(uid)) = (&mut self.relisted, uid) {
                    relisted.insert(uid);
                }
                self.changed(uid, &object).then_some(object)
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.seen.retain(|uid, _| relisted.contains(uid));
                }
                None
            }
            Event::Apply(object) => self.changed(uid(&object), &object).then_some(object),
            Event::Delete(object) => {
                if let Some(uid) = uid(&object) {
                    self.seen.remove(&uid);
                }
                None
            }
        }
    }

    fn changed<K: Resource>(&mut self, uid: Option<u128>, object: &K) -> bool {
        match uid {
            Some(uid) => {
                let hash = work_hash(object);
                self.seen.insert(uid, hash) != Some(hash)
            }
            None => true,
        }
    }
}

fn uid<K: Resource>(object: &K) -> Option<u128> {
    match Uid::new(object.meta().uid.as_deref()?) {
        Uid::Uuid(bytes) => Some(u128::from_be_bytes(bytes)),
        Uid::Text(_) => None,
    }
}

/// What a reconcile depends on besides the cloud: the spec (generation), the finalizers, and
/// whether deletion started.
fn work_hash<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let mut hasher = std::hash::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    const UID: &str = "6f0b0ae4-4b0c-4a8f-9d3e-0c1f2a3b4c5d";

    fn object(uid: &str, generation: i64, status_note: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("copy".into()),
                namespace: Some("images".into()),
                uid: Some(uid.into()),
                generation: Some(generation),
                finalizers: Some(vec!["imageops.dev/cleanup".into()]),
                ..Default::default()
            },
            data: Some([("status".to_string(), status_note.to_string())].into()),
            ..Default::default()
        }
    }

    fn passed(needs: &mut NeedsWork, event: Event<ConfigMap>) -> bool {
        needs.filter(event).is_some()
    }

    #[test]
    fn a_status_write_wakes_nothing_and_a_spec_change_does() {
        let mut needs = NeedsWork::default();
        assert!(passed(&mut needs, Event::Apply(object(UID, 1, "new"))));
        assert!(!passed(
            &mut needs,
            Event::Apply(object(UID, 1, "copying 40%"))
        ));
        assert!(passed(
            &mut needs,
            Event::Apply(object(UID, 2, "copying 40%"))
        ));
    }

    #[test]
    fn the_start_of_deletion_and_a_finalizer_change_wake_the_object() {
        let mut needs = NeedsWork::default();
        let mut copy = object(UID, 1, "");
        assert!(passed(&mut needs, Event::Apply(copy.clone())));
        copy.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(passed(&mut needs, Event::Apply(copy.clone())));
        copy.metadata.finalizers = None;
        assert!(passed(&mut needs, Event::Apply(copy)));
    }

    #[test]
    fn an_object_made_again_under_its_name_is_new() {
        let mut needs = NeedsWork::default();
        assert!(passed(&mut needs, Event::Apply(object(UID, 1, ""))));
        let again = "0d4c3b2a-1f0c-4e3d-9f8a-4c0b4ae40b6f";
        assert!(passed(&mut needs, Event::Apply(object(again, 1, ""))));
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let mut needs = NeedsWork::default();
        assert!(passed(&mut needs, Event::Apply(object(UID, 1, ""))));
        assert!(!passed(&mut needs, Event::Delete(object(UID, 1, ""))));
        assert!(needs.seen.is_empty());
    }

    #[test]
    fn a_relist_passes_what_changed_and_forgets_what_is_gone() {
        let mut needs = NeedsWork::default();
        let gone = "0d4c3b2a-1f0c-4e3d-9f8a-4c0b4ae40b6f";
        assert!(passed(&mut needs, Event::Apply(object(UID, 1, ""))));
        assert!(passed(&mut needs, Event::Apply(object(gone, 1, ""))));
        assert!(!passed(&mut needs, Event::Init));
        assert!(!passed(
            &mut needs,
            Event::InitApply(object(UID, 1, "later"))
        ));
        assert!(!passed(&mut needs, Event::InitDone));
        assert_eq!(needs.seen.len(), 1);
        assert!(passed(&mut needs, Event::Apply(object(gone, 1, ""))));
    }

    #[test]
    fn an_object_without_a_uuid_is_always_passed_on() {
        let mut needs = NeedsWork::default();
        assert!(passed(
            &mut needs,
            Event::Apply(object("not-a-uuid", 1, ""))
        ));
        assert!(passed(
            &mut needs,
            Event::Apply(object("not-a-uuid", 1, ""))
        ));
        assert!(needs.seen.is_empty());
    }
}
