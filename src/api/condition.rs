//! `Condition`: one aspect of an object's state, with the JSON and the schema of Kubernetes'
//! `metav1.Condition`, kept small in memory.
//!
//! The operator's cache holds every object for the life of the process, and with
//! `metav1.Condition` an object's four conditions were two thirds of it: each kept its type,
//! status and reason as strings of its own. Those are words from a small vocabulary (`Ready`,
//! `True`, `Copying`, the ECS error codes), so here each distinct word is stored once for the
//! whole process and every condition points at it. Only the message stays a string per object.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as MetaCondition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The state of one aspect of an object, as `metav1.Condition` has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Stalled`, ...
    #[serde(rename = "type")]
    pub type_: Word,
    /// `True`, `False` or `Unknown`.
    pub status: Word,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: Time,
    /// A CamelCase word saying why, such as `Copying` or an ECS error code.
    pub reason: Word,
    #[serde(default)]
    pub message: String,
}

/// The schema is `metav1.Condition`'s own, so that the CRDs say what Kubernetes users know.
impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        MetaCondition::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        MetaCondition::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        MetaCondition::json_schema(generator)
    }
}

/// A condition's type, status or reason. Equal words share one copy for the whole process; a
/// word longer than `MAX_SHARED_LEN`, or met after `MAX_SHARED_WORDS` others, keeps a copy of
/// its own, so that words written by someone else cannot grow the shared set without bound.
#[derive(Clone)]
pub struct Word(Stored);

#[derive(Clone)]
enum Stored {
    Shared(&'static str),
    // Boxed so that a word takes the room of a `&str` (16 bytes), not of a `String` (24): the
    // rare word of its own pays an allocation more, every shared word takes less room.
    #[expect(
        clippy::box_collection,
        reason = "a thin pointer keeps every Word small"
    )]
    Own(Box<String>),
}

/// Far more than the operator's own words (a few dozen types, statuses, reasons and ECS
/// error codes).
const MAX_SHARED_WORDS: usize = 1024;
/// Longer than any CamelCase reason or ECS error code.
const MAX_SHARED_LEN: usize = 64;

static SHARED_WORDS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

impl Word {
    /// A word known when the operator was built: it points at the binary's own copy.
    pub const fn from_static(word: &'static str) -> Word {
        Word(Stored::Shared(word))
    }

    /// `word`, shared with every other copy of it in the process where that is allowed.
    pub fn new(word: &str) -> Word {
        match shared(word) {
            Some(word) => Word(Stored::Shared(word)),
            None => Word(Stored::Own(Box::new(word.to_owned()))),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Stored::Shared(word) => word,
            Stored::Own(word) => word,
        }
    }
}

/// The process's copy of `word`, made on first sight; `None` for a word that may not be shared.
fn shared(word: &str) -> Option<&'static str> {
    if word.len() > MAX_SHARED_LEN {
        return None;
    }
    // The set is only ever added to, so a panic elsewhere cannot leave it half-changed.
    let mut words = SHARED_WORDS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = words.get(word) {
        return Some(known);
    }
    if words.len() >= MAX_SHARED_WORDS {
        return None;
    }
    // Leaked on purpose: a shared word lives as long as the process, and at most
    // MAX_SHARED_WORDS of MAX_SHARED_LEN bytes are ever made.
    let stored: &'static str = Box::leak(word.into());
    words.insert(stored);
    Some(stored)
}

impl Deref for Word {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Word {
    fn eq(&self, other: &Word) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Word {}

// As the text, so that it agrees with `Eq` whether a word is shared or not.
impl std::hash::Hash for Word {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Word {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Word {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Word {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl Serialize for Word {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Word, D::Error> {
        struct WordVisitor;

        impl serde::de::Visitor<'_> for WordVisitor {
            type Value = Word;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Word, E> {
                Ok(Word::new(word))
            }
        }

        deserializer.deserialize_str(WordVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_at(word: &Word) -> *const u8 {
        word.as_str().as_ptr()
    }

    #[test]
    fn a_condition_reads_and_writes_the_json_of_metav1_condition() {
        let json = serde_json::json!({
            "type": "Ready",
            "status": "False",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-12-04T10:00:00Z",
            "reason": "Copying",
            "message": "copying to m-1"
        });
        let ours: Condition = serde_json::from_value(json.clone()).unwrap();
        let theirs: MetaCondition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(ours.type_, "Ready");
        assert_eq!(ours.status, "False");
        assert_eq!(ours.reason, theirs.reason.as_str());
        assert_eq!(ours.last_transition_time, theirs.last_transition_time);
        assert_eq!(serde_json::to_value(&ours).unwrap(), json);
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(&theirs).unwrap()
        );
    }

    #[test]
    fn the_same_word_read_twice_is_stored_once() {
        let first: Word = serde_json::from_str("\"CopyingSomewhereElse\"").unwrap();
        let second: Word = serde_json::from_str("\"CopyingSomewhereElse\"").unwrap();
        assert_eq!(stored_at(&first), stored_at(&second));
    }

    #[test]
    fn a_long_word_keeps_a_copy_of_its_own() {
        let long = "x".repeat(MAX_SHARED_LEN + 1);
        let first = Word::new(&long);
        let second = Word::new(&long);
        assert_eq!(first, second);
        assert_ne!(stored_at(&first), stored_at(&second));
    }

    #[test]
    fn a_shared_and_an_own_copy_of_one_word_are_one_key() {
        const LONG: &str = "a-namespace-name-longer-than-any-word-the-process-shares-at-all-x";
        let own = Word::new(LONG);
        assert!(matches!(own.0, Stored::Own(_)));
        let keys: std::collections::HashSet<Word> = [Word::from_static(LONG), own].into();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_word_takes_no_more_room_than_a_string_slice() {
        assert_eq!(std::mem::size_of::<Word>(), std::mem::size_of::<&str>());
    }
}
