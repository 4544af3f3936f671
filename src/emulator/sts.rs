//! STS `AssumeRoleWithOIDC` (API 2015-04-01), the RRSA exchange: an anonymous call trading an
//! OIDC token for temporary credentials that the ECS endpoint then accepts with their security
//! token until they expire (STS API reference, AssumeRoleWithOIDC).

use chrono::TimeDelta;
use serde_json::json;

use super::actions::{Reply, reply, timestamp};
use super::auth::KeyStore;
use super::errors::ApiError;
use super::images::ACCOUNT_ID;
use super::params::Params;
use super::state::Time;

pub const STS_VERSION: &str = "2015-04-01";
pub const ACTION: &str = "AssumeRoleWithOIDC";

/// Lifetimes the real service accepts: 15 minutes up to the role's maximum (at most 12 hours).
const MIN_DURATION: i64 = 900;
const MAX_DURATION: i64 = 43_200;

pub fn assume_role_with_oidc(
    params: &Params,
    keys: &mut KeyStore,
    now: Time,
) -> Result<Reply, ApiError> {
    if params.get("Version") != Some(STS_VERSION) {
        return Err(ApiError::invalid_version());
    }
    let role_arn = params.required("RoleArn")?;
    params.required("OIDCProviderArn")?;
    let token = params
        .non_empty("OIDCToken")
        .ok_or_else(|| ApiError::oidc_token_invalid("The OIDCToken can not empty."))?;
    if token.split('.').count() != 3 {
        return Err(ApiError::oidc_token_invalid(
            "The number of Jwt field should be divided into 3 parts with '.' .",
        ));
    }
    let session = params.required("RoleSessionName")?;
    let session_ok = (2..=64).contains(&session.len())
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-' | '_'));
    if !session_ok {
        return Err(ApiError::invalid_role_session_name());
    }
    let duration = match params.non_empty("DurationSeconds") {
        None => 3600,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| (MIN_DURATION..=MAX_DURATION).contains(d))
            .ok_or_else(ApiError::invalid_duration_seconds)?,
    };
    Ok(credentials_reply(
        &keys.issue(TimeDelta::seconds(duration), now),
        role_arn,
        session,
    ))
}

/// The AssumeRoleWithOIDC response body (also served by the admin API for short-lived test
/// credentials).
pub fn credentials_reply(
    credential: &super::auth::StsCredential,
    role_arn: &str,
    session: &str,
) -> Reply {
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    reply(json!({
        "AssumedRoleUser": {
            "Arn": format!("acs:ram::{ACCOUNT_ID}:role/{}/{session}", role_name.to_ascii_lowercase()),
            "AssumedRoleId": format!(
                "3{}:{session}",
                credential.access_key_id.get(4..20).unwrap_or_default()
            ),
        },
        "Credentials": {
            "AccessKeyId": credential.access_key_id,
            "AccessKeySecret": credential.access_key_secret,
            "SecurityToken": credential.security_token,
            "Expiration": timestamp(credential.expiration),
        },
    }))
}
