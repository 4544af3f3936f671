//! Decoded request parameters (query string and form body merged) and the RPC conventions for
//! reading them: required values, 1-based indexed lists (`Tag.1.Key`, `ResourceId.1`), comma
//! lists, booleans and paging.

use std::collections::BTreeMap;

use super::errors::ApiError;

/// Signing and protocol parameters that V1 requests carry next to the operation's own ones.
/// They never take part in ClientToken idempotence comparisons.
const COMMON: &[&str] = &[
    "AccessKeyId",
    "Action",
    "ClientToken",
    "Format",
    "SecurityToken",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "Timestamp",
    "Version",
];

#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Form-decodes (`+` is a space) a query string or `application/x-www-form-urlencoded` body.
    pub fn decode(raw: &[u8]) -> Vec<(String, String)> {
        form_urlencoded::parse(raw).into_owned().collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value, or `None` when absent or empty (SDKs send unset optional values as empty).
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.non_empty(key)
            .ok_or_else(|| ApiError::missing_parameter(key))
    }

    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.non_empty(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::invalid_parameter(key)),
        }
    }

    /// `a,b,c` with blanks dropped.
    pub fn comma_list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Values of `Prefix.N` ordered by N.
    pub fn indexed(&self, prefix: &str) -> Vec<String> {
        let mut found: BTreeMap<u32, String> = BTreeMap::new();
        for (k, v) in &self.0 {
            if let Some(n) = k
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|n| n.parse::<u32>().ok())
            {
                found.entry(n).or_insert_with(|| v.clone());
            }
        }
        found.into_values().collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs ordered by N. A value may be absent (a filter on the key
    /// only); a key may not.
    pub fn tags(&self) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let mut found: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix("Tag.") else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let entry = found.entry(n).or_default();
            match field {
                "Key" => entry.0 = Some(v.clone()),
                "Value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        found
            .into_iter()
            .map(|(n, (key, value))| match key {
                Some(key) if !key.is_empty() => Ok((key, value)),
                _ => Err(ApiError::missing_parameter(&format!("Tag.{n}.Key"))),
            })
            .collect()
    }

    /// `(PageNumber, PageSize)`: defaults 1 and 10, PageSize at most 100.
    pub fn paging(&self) -> Result<(usize, usize), ApiError> {
        let number = match self.non_empty("PageNumber") {
            None => 1,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::invalid_parameter("PageNumber"))?,
        };
        let size = match self.non_empty("PageSize") {
            None => 10,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| ApiError::invalid_parameter("PageSize"))?,
        };
        Ok((number, size))
    }

    /// The operation's own parameters in a canonical order, to decide whether a request that
    /// reuses a ClientToken is the same request.
    pub fn fingerprint(&self) -> String {
        let mut own: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| !COMMON.contains(&k.as_str()))
            .collect();
        own.sort();
        own.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Slices one page out of `items` (PageNumber is 1-based).
pub fn page<T>(items: Vec<T>, number: usize, size: usize) -> Vec<T> {
    items
        .into_iter()
        .skip(number.saturating_sub(1).saturating_mul(size))
        .take(size)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn decode_treats_plus_as_space() {
        let decoded = Params::decode(b"ImageName=a+b&Description=x%2By%20z");
        assert_eq!(
            decoded,
            vec![
                ("ImageName".to_string(), "a b".to_string()),
                ("Description".to_string(), "x+y z".to_string())
            ]
        );
    }

    #[test]
    fn tags_are_ordered_by_index_and_need_keys() {
        let p = params(&[
            ("Tag.2.Key", "b"),
            ("Tag.1.Key", "a"),
            ("Tag.1.Value", "1"),
            ("Tag.10.Key", "c"),
        ]);
        assert_eq!(
            p.tags().unwrap(),
            vec![
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), None),
                ("c".to_string(), None)
            ]
        );
        let missing = params(&[("Tag.1.Value", "v")]);
        assert_eq!(missing.tags().unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn paging_defaults_and_limits() {
        assert_eq!(params(&[]).paging().unwrap(), (1, 10));
        assert_eq!(
            params(&[("PageNumber", "3"), ("PageSize", "100")])
                .paging()
                .unwrap(),
            (3, 100)
        );
        assert!(params(&[("PageSize", "101")]).paging().is_err());
        assert!(params(&[("PageNumber", "0")]).paging().is_err());
        assert_eq!(page(vec![1, 2, 3, 4, 5], 2, 2), vec![3, 4]);
    }

    #[test]
    fn fingerprint_ignores_signing_parameters() {
        let a = params(&[
            ("ImageId", "m-1"),
            ("SignatureNonce", "x"),
            ("ClientToken", "t"),
        ]);
        let b = params(&[
            ("SignatureNonce", "y"),
            ("ImageId", "m-1"),
            ("Timestamp", "z"),
        ]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), params(&[("ImageId", "m-2")]).fingerprint());
    }
}
