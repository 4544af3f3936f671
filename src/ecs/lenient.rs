//! Forgiving field decoders. ECS answers are inconsistent across operations and API
//! generations (`"true"` vs `true`, `"40"` vs `40`, lists wrapped as `{"Tag":[..]}` or not,
//! `null` for absent values); one odd field must not make a whole answer unreadable.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `null` or a non-string becomes the empty string.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
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
/// some documentation samples show, or nothing. Items that do not decode are skipped.
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
        .filter_map(|item| serde_json::from_value(item).ok())
        .collect())
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
}
