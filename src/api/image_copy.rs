//! `ImageCopy`: copy a custom image to another region and follow it until it is usable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use super::common::{DeletionPolicy, SecretReference};
use super::common::{IMAGE_ID_PATTERN, IMAGE_NAME_PATTERN, REGION_ID_PATTERN, tags_schema};
use super::condition::Condition;

/// Copies a custom ECS image to another region (`CopyImage`), follows the copy until the
/// destination image is Available, and on delete cancels a copy in flight or applies
/// `deletionPolicy` to the finished image.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imageops.dev",
    version = "v1alpha1",
    kind = "ImageCopy",
    plural = "imagecopies",
    shortname = "imgcp",
    category = "ecs-images",
    namespaced,
    status = "ImageCopyStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceRegionId"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destinationRegionId"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.imageId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.destinationRegionId != self.sourceRegionId").message("spec.destinationRegionId must differ from spec.sourceRegionId").field_path(".destinationRegionId"),
    validation = Rule::new("!has(self.kmsKeyId) || (has(self.encrypted) && self.encrypted)").message("spec.kmsKeyId requires spec.encrypted: true").field_path(".kmsKeyId"),
    validation = Rule::new("self.sourceRegionId == oldSelf.sourceRegionId").message("spec.sourceRegionId is immutable").field_path(".sourceRegionId"),
    validation = Rule::new("self.sourceImageId == oldSelf.sourceImageId").message("spec.sourceImageId is immutable").field_path(".sourceImageId"),
    validation = Rule::new("self.destinationRegionId == oldSelf.destinationRegionId").message("spec.destinationRegionId is immutable").field_path(".destinationRegionId"),
    validation = Rule::new("(has(self.destinationImageName) ? self.destinationImageName : '') == (has(oldSelf.destinationImageName) ? oldSelf.destinationImageName : '')").message("spec.destinationImageName is immutable").field_path(".destinationImageName"),
    validation = Rule::new("(has(self.destinationDescription) ? self.destinationDescription : '') == (has(oldSelf.destinationDescription) ? oldSelf.destinationDescription : '')").message("spec.destinationDescription is immutable").field_path(".destinationDescription"),
    validation = Rule::new("(has(self.encrypted) && self.encrypted) == (has(oldSelf.encrypted) && oldSelf.encrypted)").message("spec.encrypted is immutable").field_path(".encrypted"),
    validation = Rule::new("(has(self.kmsKeyId) ? self.kmsKeyId : '') == (has(oldSelf.kmsKeyId) ? oldSelf.kmsKeyId : '')").message("spec.kmsKeyId is immutable").field_path(".kmsKeyId"),
    validation = Rule::new("(has(self.resourceGroupId) ? self.resourceGroupId : '') == (has(oldSelf.resourceGroupId) ? oldSelf.resourceGroupId : '')").message("spec.resourceGroupId is immutable").field_path(".resourceGroupId"),
    validation = Rule::new("(has(self.tags) ? self.tags : {}) == (has(oldSelf.tags) ? oldSelf.tags : {})").message("spec.tags is immutable").field_path(".tags")
)]
pub struct ImageCopySpec {
    /// Region of the source image, e.g. `cn-hangzhou`.
    #[schemars(length(min = 2, max = 64), regex(pattern = REGION_ID_PATTERN))]
    pub source_region_id: String,

    /// ID of the source custom image (`m-...`); it must be Available.
    #[schemars(length(min = 3, max = 64), regex(pattern = IMAGE_ID_PATTERN))]
    pub source_image_id: String,

    /// Region to copy the image to; must differ from `sourceRegionId`.
    #[schemars(length(min = 2, max = 64), regex(pattern = REGION_ID_PATTERN))]
    pub destination_region_id: String,

    /// Name of the new image: 2-128 characters, starting with a letter or Chinese character;
    /// digits, `.`, `:`, `_` and `-` allowed; not starting with `aliyun` or `acs:`; no `http://`
    /// or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 128),
        regex(pattern = IMAGE_NAME_PATTERN)
    )]
    #[x_kube(
        validation = Rule::new("!self.startsWith('aliyun') && !self.startsWith('acs:')").message("spec.destinationImageName must not start with aliyun or acs:"),
        validation = Rule::new("!self.contains('http://') && !self.contains('https://')").message("spec.destinationImageName must not contain http:// or https://")
    )]
    pub destination_image_name: Option<String>,

    /// Description of the new image: 2-256 characters, not starting with `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('http://') && !self.startsWith('https://')").message("spec.destinationDescription must not start with http:// or https://"))]
    pub destination_description: Option<String>,

    /// Encrypt the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,

    /// KMS key for the encrypted copy; requires `encrypted: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub kms_key_id: Option<String>,

    /// Resource group of the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub resource_group_id: Option<String>,

    /// Tags for the new image. ECS allows 20 tags per image and the operator adds its two owner
    /// tags, so at most 18 here. Keys: 1-128 characters, not starting with `aliyun`, `acs:` or the
    /// operator's own `imageops.dev/`, no `http://` or `https://`. Values: up to 128 characters
    /// (empty allowed), not starting with `acs:`, no `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Option<BTreeMap<String, String>>,

    /// What happens to a finished copy when this object is deleted: `Delete` (default) deletes
    /// the destination image, `Retain` keeps it. A copy still in flight is always cancelled.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Secret in this object's namespace with `accessKeyId`, `accessKeySecret` and optionally
    /// `securityToken`; without it the operator's own credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// Observed state of an `ImageCopy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCopyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CopyPhase>,
    /// ID of the destination image, recorded as soon as CopyImage returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Copy progress as ECS reports it, e.g. `45%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Copies started for this object; a copy made again after the destination image was lost
    /// uses a new ClientToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum CopyPhase {
    /// Accepted; CopyImage not yet answered.
    Pending,
    /// ECS reports the copy as `Waiting` behind other copies to the same region.
    Queued,
    /// ECS reports `Creating`; `progress` rises.
    Copying,
    /// The destination image is Available.
    Available,
    /// The copy failed or cannot be made; see the `Stalled` condition.
    Failed,
    /// Being deleted: CancelCopyImage sent or waiting for a copy that cannot be cancelled.
    Cancelling,
    /// Being deleted: the finished destination image is being deleted.
    Deleting,
}
