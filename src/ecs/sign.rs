//! Alibaba Cloud request signatures: V3 (`ACS3-HMAC-SHA256`, the default of current SDKs) and
//! V1 (`HMAC-SHA1`, still sent by legacy SDKs and by new ones with `signature_algorithm='v2'`).
//!
//! These are pure functions over already-decoded parameters so that the client (which signs)
//! and the emulator (which verifies what official SDKs send) canonicalise identically.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// RFC 3986 unreserved characters stay as they are; everything else is `%XY` (uppercase hex).
/// So space is `%20` (never `+`), `*` is `%2A` and `~` stays `~`.
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986_RESERVED).to_string()
}

/// `k1=v1&k2=v2` with keys sorted by byte order and both sides percent-encoded; empty values
/// are kept as `k=`. Used by V1 (over all parameters) and V3 (over the query).
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// V1 string to sign: `METHOD&%2F&percentEncode(canonical query)`. `params` are every request
/// parameter (query and form body) except `Signature`.
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// V1 signature: base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{access_key_secret}&").as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Lowercase hex SHA-256, the `x-acs-content-sha256` value and the canonical request's last line.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The parts of a request that V3 signs. Header names must be lowercase; `signed_headers` must
/// be sorted and each must be present in `headers`.
pub struct V3Input<'a> {
    pub method: &'a str,
    pub canonical_uri: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub signed_headers: &'a [String],
    pub hashed_payload: &'a str,
}

pub fn v3_canonical_request(input: &V3Input<'_>) -> String {
    let canonical_headers: String = input
        .signed_headers
        .iter()
        .map(|name| {
            let value = input
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim())
                .unwrap_or("");
            format!("{name}:{value}\n")
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method.to_ascii_uppercase(),
        input.canonical_uri,
        canonical_query(input.query),
        canonical_headers,
        input.signed_headers.join(";"),
        input.hashed_payload
    )
}

pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// V3 signature: lowercase hex HMAC-SHA256 keyed with the raw secret.
pub fn v3_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn v3_authorization(access_key_id: &str, signed_headers: &[String], signature: &str) -> String {
    format!(
        "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={signature}",
        signed_headers.join(";")
    )
}

/// The three fields of a V3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`; `None` when malformed.
pub fn parse_v3_authorization(header: &str) -> Option<V3Authorization> {
    let rest = header.strip_prefix(V3_ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value.to_string()),
            "SignedHeaders" => signed = Some(value.to_string()),
            "Signature" => signature = Some(value.to_string()),
            _ => {}
        }
    }
    let signed_headers = signed?
        .split(';')
        .filter(|h| !h.is_empty())
        .map(|h| h.to_ascii_lowercase())
        .collect();
    Some(V3Authorization {
        access_key_id: credential.filter(|c| !c.is_empty())?,
        signed_headers,
        signature: signature.filter(|s| !s.is_empty())?,
    })
}

/// Timestamps as both signatures want them: UTC `yyyy-MM-ddTHH:mm:ssZ`.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_rfc3986_as_alibaba_requires() {
        assert_eq!(percent_encode("a b*c~d"), "a%20b%2Ac~d");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
    }

    #[test]
    fn v3_authorization_round_trips() {
        let signed = vec!["host".to_string(), "x-acs-action".to_string()];
        let header = v3_authorization("testid", &signed, "abc123");
        let parsed = parse_v3_authorization(&header).unwrap();
        assert_eq!(parsed.access_key_id, "testid");
        assert_eq!(parsed.signed_headers, signed);
        assert_eq!(parsed.signature, "abc123");
        assert!(parse_v3_authorization("HMAC-SHA1 Credential=x").is_none());
    }
}
