//! Schema pieces every kind shares: the deletion policy, the credentials reference, the tag
//! rules and the formats of ECS identifiers. Keeping them in one place keeps the admission rules
//! of all kinds the same.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// An ECS region id such as `cn-hangzhou` or `ap-southeast-1`.
pub(crate) const REGION_ID_PATTERN: &str = r"^[a-z]+(-[a-z0-9]+)+$";

/// An ECS image id such as `m-bp1g7004ksh0oeuc****` (lowercase, as ECS issues them).
pub(crate) const IMAGE_ID_PATTERN: &str = r"^m-[0-9a-z]+$";

/// An ECS image name: starts with a letter or Chinese character; then letters, Chinese
/// characters, digits, `.`, `:`, `_` and `-`.
pub(crate) const IMAGE_NAME_PATTERN: &str = r"^[a-zA-Z\p{Han}][a-zA-Z0-9\p{Han}.:_-]*$";

/// An OSS bucket name: lowercase letters, digits and `-`, neither first nor last a `-`. The
/// length (3-63) is a separate rule.
pub(crate) const OSS_BUCKET_PATTERN: &str = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$";

/// What happens to the image an object made when the object is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret: a DNS subdomain (lowercase letters, digits, `-` and `.`, at most 253
    /// characters), as Kubernetes requires of Secret names.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Most tags a user may set on an image: ECS allows 20 per image and the operator adds its two
/// owner tags (`crate::api::OWNER_UID_TAG`, `crate::api::OWNER_TAG`).
pub const MAX_USER_TAGS: u32 = 18;

/// Schema of an optional `spec.tags` map, with ECS's tag rules as schema limits and CEL rules.
/// Keys: 1-128 characters, not starting with `aliyun`, `acs:` or the operator's own
/// `imageops.dev/`, no `http://` or `https://`. Values: up to 128 characters (empty allowed), not
/// starting with `acs:`, no `http://` or `https://`.
pub(crate) fn tags_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": MAX_USER_TAGS,
        "additionalProperties": {
            "type": "string",
            "maxLength": 128,
            "x-kubernetes-validations": [
                {"rule": "!self.startsWith('acs:')", "message": "spec.tags values must not start with acs:"},
                {"rule": "!self.contains('http://') && !self.contains('https://')", "message": "spec.tags values must not contain http:// or https://"}
            ]
        },
        "x-kubernetes-validations": [
            {"rule": "self.all(k, size(k) >= 1 && size(k) <= 128)", "message": "spec.tags keys must be 1-128 characters"},
            {"rule": "self.all(k, !k.startsWith('aliyun') && !k.startsWith('acs:') && !k.startsWith('imageops.dev/'))", "message": "spec.tags keys must not start with aliyun, acs: or imageops.dev/"},
            {"rule": "self.all(k, !k.contains('http://') && !k.contains('https://'))", "message": "spec.tags keys must not contain http:// or https://"}
        ]
    })
}
