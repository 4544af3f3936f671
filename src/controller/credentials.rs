//! Which ECS credentials an object uses: its own `credentialsSecretRef` (same namespace only),
//! else the operator's standard chain.

use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{Context, Error};
use crate::ecs::{Credentials, CredentialsProvider, EcsClient};

/// An ECS client bound to the object's credentials, and who signs with them.
pub struct ObjectEcs {
    pub client: EcsClient,
    /// The AccessKeyId and a fingerprint of its secret: region listings are shared by objects
    /// that sign alike, so one object's wrong secret never fails another's listing.
    pub signer: String,
}

/// Resolves credentials for an object in `namespace`. `Error::Credentials` is terminal for the
/// object (`Stalled` with the reason) until the Secret or the operator's configuration changes;
/// an STS outage comes back as a transient `Error::Ecs`.
pub async fn for_object(
    ctx: &Context,
    namespace: &str,
    secret_name: Option<&str>,
) -> Result<ObjectEcs, Error> {
    let provider = match secret_name {
        Some(name) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let secret = secrets.get_opt(name).await?.ok_or_else(|| Error::Credentials {
                reason: "SecretNotFound",
                message: format!("Secret {namespace}/{name} named by spec.credentialsSecretRef does not exist"),
            })?;
            let data = secret.data.unwrap_or_default();
            let credentials = Credentials::from_secret_data(|key| data.get(key).map(|v| v.0.clone())).map_err(|e| Error::Credentials {
                reason: "InvalidCredentialsSecret",
                message: format!("Secret {namespace}/{name}: {e}"),
            })?;
            CredentialsProvider::fixed(credentials)
        }
        None => ctx.default_credentials.clone().ok_or_else(|| Error::Credentials {
            reason: "CredentialsUnavailable",
            message: "the operator has no credentials of its own (ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET or RRSA) and the object names no spec.credentialsSecretRef".into(),
        })?,
    };
    let credentials = provider.credentials().await.map_err(|e| {
        if e.is_transient() {
            // STS unreachable or overloaded: retried with backoff, not a verdict on the role.
            Error::Ecs(e)
        } else {
            Error::Credentials {
                reason: "CredentialsUnavailable",
                message: e.to_string(),
            }
        }
    })?;
    Ok(ObjectEcs {
        client: ctx.ecs.with_credentials(provider),
        signer: signer(&credentials),
    })
}

/// `AccessKeyId/fingerprint`: the fingerprint tells secrets apart in memory, and is never shown.
fn signer(credentials: &Credentials) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    credentials.access_key_secret().hash(&mut hasher);
    format!("{}/{:016x}", credentials.access_key_id(), hasher.finish())
}
