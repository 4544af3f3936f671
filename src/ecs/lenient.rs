//! Forgiving field decoders. ECS answers are inconsistent across operations and API
//! generations (`"true"` vs `true`, `"40"` vs `40`, lists wrapped as `{"Tag":[..]}` or not,
//! `null` for absent values); one odd field must not make a whole answer unreadable.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// List items that could not be decoded, since the process started.
static UNDECODABLE_ITEMS: AtomicU64 = AtomicU64::new(0);

/// How many list items (images, tasks, …) were left out of answers because they did not decode.
/// An item left out is an image the operator cannot see: each one is logged and counted, so a
/// decision taken without it can be traced.
pub fn undecodable_items() -> u64 {
    UNDECODABLE_ITEMS.load(Ordering::Relaxed)
}

/// `null` or a non-string becomes the empty string.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// An id (`ImageId`, `TaskId`): a non-empty string. Unlike [`string`] it refuses anything else,
/// so an item whose id cannot be read is left out (and counted) rather than kept under an empty
/// id that matches nothing — which would make a present image look absent.
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        other => Err(serde::de::Error::custom(format!(
            "expected an id string, got {other}"
        ))),
    }
}

/// `true`/`false` as JSON booleans or strings; anything else is unknown.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

/// A non-negative integer as a JSON number or a decimal string.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Like [`number`] but `0` when absent, for counters such as `TotalCount`.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number(d).map(Option::unwrap_or_default)
}

/// A list as ECS wraps it (`{"Images":{"Image":[..]}}` → the inner array), a bare array as
/// some documentation samples show, or nothing. Items that do not decode are left out, each with
/// a warning naming it and a count in [`undecodable_items`]; callers that must not mistake a
/// left-out item for an absent one compare with the answer's `TotalCount`.
pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        Value::Object(map) => map
            .into_iter()
            .find_map(|(_, v)| match v {
                Value::Array(items) => Some(items),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match T::deserialize(&item) {
            Ok(decoded) => Some(decoded),
            Err(error) => {
                UNDECODABLE_ITEMS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, item = %identify(&item), "left an undecodable item out of an ECS answer");
                None
            }
        })
        .collect())
}

/// The id fields of an item, for the log line about it (never the whole item: it can be large).
fn identify(item: &Value) -> String {
    let ids: Vec<String> = ["ImageId", "TaskId", "ResourceId", "RegionId"]
        .iter()
        .filter_map(|key| item.get(*key).map(|v| format!("{key}={v}")))
        .collect();
    if ids.is_empty() {
        "(no id)".into()
    } else {
        ids.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(default)]
    struct Sample {
        #[serde(deserialize_with = "string")]
        s: String,
        #[serde(deserialize_with = "bool")]
        b: Option<bool>,
        #[serde(deserialize_with = "number")]
        n: Option<u64>,
        #[serde(deserialize_with = "list")]
        l: Vec<u32>,
    }

    #[test]
    fn odd_shapes_decode() {
        let parse = |json: &str| serde_json::from_str::<Sample>(json).unwrap();
        assert_eq!(
            parse(r#"{"s":null,"b":"true","n":"40","l":{"Item":[1,2]}}"#),
            Sample {
                s: String::new(),
                b: Some(true),
                n: Some(40),
                l: vec![1, 2]
            }
        );
        assert_eq!(
            parse(r#"{"s":"x","b":false,"n":7,"l":[3,"bad",4]}"#),
            Sample {
                s: "x".into(),
                b: Some(false),
                n: Some(7),
                l: vec![3, 4]
            }
        );
        assert_eq!(parse(r#"{"l":""}"#), Sample::default());
    }

    #[test]
    fn an_unreadable_id_leaves_the_item_out() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Item {
            #[serde(deserialize_with = "id")]
            id: String,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct Answer {
            #[serde(deserialize_with = "list")]
            items: Vec<Item>,
        }
        let answer: Answer =
            serde_json::from_str(r#"{"items":[{"id":"m-1"},{"id":{"bad":true}},{"id":""}]}"#)
                .unwrap();
        assert_eq!(answer.items, vec![Item { id: "m-1".into() }]);
    }

    #[test]
    fn left_out_items_are_counted() {
        let before = undecodable_items();
        let parsed: Sample = serde_json::from_str(r#"{"l":[1,"bad",{"x":1}]}"#).unwrap();
        assert_eq!(parsed.l, vec![1]);
        assert!(undecodable_items() >= before + 2);
    }
}
