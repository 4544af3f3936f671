//! Request authentication exactly as the gateway does it for official SDK traffic
//! (Alibaba Cloud's V1 and V3 signature documentation): V1 (`Signature` parameter, HMAC-SHA1) and V3
//! (`Authorization: ACS3-HMAC-SHA256 …`), timestamps, nonces, and STS security tokens issued by
//! this emulator. Canonicalisation is shared with the client in [`crate::ecs::sign`].

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use rand::Rng;

use super::errors::ApiError;
use super::state::Time;
use crate::ecs::sign;

const V1_VALIDITY: TimeDelta = TimeDelta::minutes(31);
const V3_VALIDITY: TimeDelta = TimeDelta::minutes(15);

/// Headers a V3 signature must cover so that a captured request cannot be re-targeted or
/// replayed with a new nonce or date.
const V3_MUST_SIGN: &[&str] = &[
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];

/// A request as it arrived: decoded query and form parameters, lowercase header names.
pub struct Incoming<'a> {
    pub method: &'a str,
    pub query: &'a [(String, String)],
    pub form: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Incoming<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct StsCredential {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: String,
    pub expiration: Time,
}

/// Long-term access keys from the command line plus temporary ones issued by the STS endpoint.
#[derive(Debug, Default)]
pub struct KeyStore {
    permanent: HashMap<String, String>,
    temporary: HashMap<String, StsCredential>,
    /// Token → the temporary key it was issued with, to tell a mismatch from garbage.
    token_owner: HashMap<String, String>,
}

fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl KeyStore {
    pub fn new(keys: &[(String, String)]) -> Self {
        Self {
            permanent: keys.iter().cloned().collect(),
            ..Self::default()
        }
    }

    /// Issues a temporary key. Tokens look like real ones (`CAIS` + base64), including the `+`,
    /// `/` and `=` that clients must encode correctly.
    pub fn issue(&mut self, lifetime: TimeDelta, now: Time) -> StsCredential {
        let mut raw = [0u8; 96];
        rand::rng().fill(&mut raw[..]);
        let credential = StsCredential {
            access_key_id: format!("STS.{}", random_string(28)),
            access_key_secret: random_string(44),
            security_token: format!(
                "CAIS{}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
            expiration: now + lifetime,
        };
        self.token_owner.insert(
            credential.security_token.clone(),
            credential.access_key_id.clone(),
        );
        self.temporary
            .insert(credential.access_key_id.clone(), credential.clone());
        credential
    }

    /// The secret to verify with, after the security-token rules: a temporary key needs exactly
    /// the token it was issued with and must not have expired; a long-term key takes no token.
    fn secret(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        now: Time,
    ) -> Result<&str, ApiError> {
        let token = token.filter(|t| !t.is_empty());
        if let Some(secret) = self.permanent.get(access_key_id) {
            return match token {
                None => Ok(secret),
                Some(_) => Err(ApiError::security_token_mismatch()),
            };
        }
        let credential = self
            .temporary
            .get(access_key_id)
            .ok_or_else(ApiError::access_key_not_found)?;
        let token = token.ok_or_else(ApiError::missing_security_token)?;
        if token != credential.security_token {
            return Err(if self.token_owner.contains_key(token) {
                ApiError::security_token_mismatch()
            } else {
                ApiError::security_token_malformed()
            });
        }
        if now >= credential.expiration {
            return Err(ApiError::security_token_expired());
        }
        Ok(&credential.access_key_secret)
    }
}

/// Nonces seen within the timestamp validity window; older ones cannot be replayed anyway
/// because their timestamp is rejected, so they are forgotten.
#[derive(Debug, Default)]
pub struct NonceCache {
    order: VecDeque<(Time, String)>,
    seen: HashSet<String>,
}

impl NonceCache {
    fn claim(&mut self, nonce: &str, now: Time) -> Result<(), ApiError> {
        while let Some((at, _)) = self.order.front() {
            if now - *at <= V1_VALIDITY {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if !self.seen.insert(nonce.to_string()) {
            return Err(ApiError::nonce_used());
        }
        self.order.push_back((now, nonce.to_string()));
        Ok(())
    }
}

fn parse_timestamp(value: &str) -> Option<Time> {
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%SZ")
        .map(|t| t.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

fn check_timestamp(
    value: Option<&str>,
    name: &str,
    validity: TimeDelta,
    now: Time,
) -> Result<(), ApiError> {
    let at = value
        .and_then(parse_timestamp)
        .ok_or_else(|| ApiError::illegal_timestamp(name))?;
    if (now - at).abs() > validity {
        return Err(ApiError::illegal_timestamp(name));
    }
    Ok(())
}

/// Verifies whichever signature the request carries. V1 wins when a `Signature` parameter is
/// present (that is how the gateway tells them apart); a request with neither is rejected.
pub fn verify(
    req: &Incoming<'_>,
    keys: &KeyStore,
    nonces: &mut NonceCache,
    now: Time,
) -> Result<(), ApiError> {
    if req.param("Signature").is_some() {
        verify_v1(req, keys, nonces, now)
    } else if let Some(authorization) = req.header("authorization") {
        verify_v3(req, authorization, keys, nonces, now)
    } else {
        Err(ApiError::incomplete_signature())
    }
}

fn verify_v1(
    req: &Incoming<'_>,
    keys: &KeyStore,
    nonces: &mut NonceCache,
    now: Time,
) -> Result<(), ApiError> {
    let signature = req.param("Signature").unwrap_or_default();
    let access_key_id = req
        .param("AccessKeyId")
        .filter(|v| !v.is_empty())
        .ok_or_else(ApiError::incomplete_signature)?;
    let nonce = req
        .param("SignatureNonce")
        .filter(|v| !v.is_empty())
        .ok_or_else(ApiError::incomplete_signature)?;
    if signature.is_empty()
        || !req
            .param("SignatureMethod")
            .is_some_and(|m| m.eq_ignore_ascii_case("HMAC-SHA1"))
        || req.param("SignatureVersion") != Some("1.0")
    {
        return Err(ApiError::incomplete_signature());
    }
    check_timestamp(req.param("Timestamp"), "Timestamp", V1_VALIDITY, now)?;
    let secret = keys.secret(access_key_id, req.param("SecurityToken"), now)?;
    let signed: Vec<(String, String)> = req
        .query
        .iter()
        .chain(req.form.iter())
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    let string_to_sign = sign::v1_string_to_sign(req.method, &signed);
    if sign::v1_signature(secret, &string_to_sign) != signature {
        return Err(ApiError::signature_mismatch(&format!(
            "server string to sign is:{string_to_sign}"
        )));
    }
    nonces.claim(nonce, now)
}

fn verify_v3(
    req: &Incoming<'_>,
    authorization: &str,
    keys: &KeyStore,
    nonces: &mut NonceCache,
    now: Time,
) -> Result<(), ApiError> {
    let auth =
        sign::parse_v3_authorization(authorization).ok_or_else(ApiError::incomplete_signature)?;
    if V3_MUST_SIGN
        .iter()
        .any(|h| !auth.signed_headers.iter().any(|s| s == h))
    {
        return Err(ApiError::incomplete_signature());
    }
    let token = req.header("x-acs-security-token");
    if token.is_some()
        && !auth
            .signed_headers
            .iter()
            .any(|s| s == "x-acs-security-token")
    {
        return Err(ApiError::incomplete_signature());
    }
    let nonce = req
        .header("x-acs-signature-nonce")
        .filter(|v| !v.is_empty())
        .ok_or_else(ApiError::incomplete_signature)?;
    check_timestamp(req.header("x-acs-date"), "x-acs-date", V3_VALIDITY, now)?;
    let secret = keys.secret(
        &auth.access_key_id,
        token.or_else(|| req.param("SecurityToken")),
        now,
    )?;
    let hashed_payload = sign::sha256_hex(req.body);
    if !req
        .header("x-acs-content-sha256")
        .is_some_and(|h| h.eq_ignore_ascii_case(&hashed_payload))
    {
        return Err(ApiError::signature_mismatch(&format!(
            "x-acs-content-sha256 does not match the request body, whose SHA-256 is {hashed_payload}."
        )));
    }
    let canonical_request = sign::v3_canonical_request(&sign::V3Input {
        method: req.method,
        canonical_uri: "/",
        query: req.query,
        headers: req.headers,
        signed_headers: &auth.signed_headers,
        hashed_payload: &hashed_payload,
    });
    let string_to_sign = sign::v3_string_to_sign(&canonical_request);
    if !sign::v3_signature(secret, &string_to_sign).eq_ignore_ascii_case(&auth.signature) {
        return Err(ApiError::signature_mismatch(&format!(
            "server canonical request is:{canonical_request} server string to sign is:{string_to_sign}"
        )));
    }
    nonces.claim(nonce, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn temporary_keys_need_their_own_unexpired_token() {
        let mut keys = KeyStore::new(&[("testid".into(), "testsecret".into())]);
        let a = keys.issue(TimeDelta::seconds(900), now());
        let b = keys.issue(TimeDelta::seconds(900), now());
        assert_eq!(keys.secret("testid", None, now()).unwrap(), "testsecret");
        assert_eq!(
            keys.secret(&a.access_key_id, Some(&a.security_token), now())
                .unwrap(),
            a.access_key_secret
        );
        let code = |r: Result<&str, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(keys.secret("testid", Some(&a.security_token), now())),
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        assert_eq!(
            code(keys.secret(&a.access_key_id, Some(&b.security_token), now())),
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        assert_eq!(
            code(keys.secret(&a.access_key_id, Some("CAISgarbage"), now())),
            "InvalidSecurityToken.Malformed"
        );
        assert_eq!(
            code(keys.secret(&a.access_key_id, None, now())),
            "MissingSecurityToken"
        );
        assert_eq!(
            code(keys.secret(
                &a.access_key_id,
                Some(&a.security_token),
                now() + TimeDelta::seconds(900)
            )),
            "InvalidSecurityToken.Expired"
        );
        assert_eq!(
            code(keys.secret("nobody", None, now())),
            "InvalidAccessKeyId.NotFound"
        );
    }

    #[test]
    fn nonces_are_single_use_within_the_window() {
        let mut nonces = NonceCache::default();
        nonces.claim("n1", now()).unwrap();
        assert_eq!(
            nonces.claim("n1", now()).unwrap_err().code,
            "SignatureNonceUsed"
        );
        // Past the validity window the nonce is forgotten (its timestamp would be rejected).
        nonces.claim("n1", now() + TimeDelta::minutes(32)).unwrap();
    }

    #[test]
    fn timestamps_outside_the_window_are_illegal() {
        let check = |ts: &str, validity| check_timestamp(Some(ts), "Timestamp", validity, now());
        check("2026-03-01T11:50:00Z", V3_VALIDITY).unwrap();
        check("2026-03-01T12:14:00Z", V3_VALIDITY).unwrap();
        assert!(check("2026-03-01T11:40:00Z", V3_VALIDITY).is_err());
        check("2026-03-01T11:40:00Z", V1_VALIDITY).unwrap();
        assert!(check("yesterday", V1_VALIDITY).is_err());
    }
}
