//! `ImageReplication`: one source image copied to many regions, through one child `ImageCopy`
//! per destination region, with one status and an optional published region → image map.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    DeletionPolicy, IMAGE_ID_PATTERN, IMAGE_NAME_PATTERN, REGION_ID_PATTERN, SecretReference,
    tags_schema,
};
use super::condition::Condition;
use super::image_copy::CopyPhase;

/// Most destination regions of one replication: more than ECS has regions, few enough to keep
/// the admission rules cheap.
pub const MAX_DESTINATION_REGIONS: u32 = 64;

/// Copies one custom ECS image to every region in `destinationRegionIds` through one child
/// `ImageCopy` per region, shows per-region progress, and publishes the region → image map to a
/// ConfigMap. A changed source (or any other field of the copies) makes a new generation of
/// copies; the previous one stays until the new one is Ready in every region.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imageops.dev",
    version = "v1alpha1",
    kind = "ImageReplication",
    plural = "imagereplications",
    shortname = "imgrep",
    category = "ecs-images",
    namespaced,
    status = "ImageReplicationStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceImageId"}"#,
    printcolumn = r#"{"name":"Regions","type":"string","jsonPath":".status.regionsReady"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.destinationRegionIds.exists(r, r == self.sourceRegionId)").message("spec.destinationRegionIds must not include spec.sourceRegionId").field_path(".destinationRegionIds"),
    validation = Rule::new("!has(self.kmsKeyIds) || (has(self.encrypted) && self.encrypted)").message("spec.kmsKeyIds requires spec.encrypted: true").field_path(".kmsKeyIds"),
    validation = Rule::new("!has(self.kmsKeyIds) || self.kmsKeyIds.all(r, r in self.destinationRegionIds)").message("spec.kmsKeyIds keys must be regions of spec.destinationRegionIds").field_path(".kmsKeyIds"),
    validation = Rule::new("!has(self.destinationImageName) || !has(oldSelf.destinationImageName) || self.destinationImageName != oldSelf.destinationImageName || (self.sourceRegionId == oldSelf.sourceRegionId && self.sourceImageId == oldSelf.sourceImageId && (has(self.destinationDescription) ? self.destinationDescription : '') == (has(oldSelf.destinationDescription) ? oldSelf.destinationDescription : '') && (has(self.encrypted) && self.encrypted) == (has(oldSelf.encrypted) && oldSelf.encrypted) && (has(self.kmsKeyIds) ? self.kmsKeyIds : {}) == (has(oldSelf.kmsKeyIds) ? oldSelf.kmsKeyIds : {}) && (has(self.resourceGroupId) ? self.resourceGroupId : '') == (has(oldSelf.resourceGroupId) ? oldSelf.resourceGroupId : '') && (has(self.tags) ? self.tags : {}) == (has(oldSelf.tags) ? oldSelf.tags : {}))").message("spec.destinationImageName must change when the source, description, encryption, resource group or tags change: ECS image names are unique in a region, and the current images stay until their replacements are Ready").field_path(".destinationImageName")
)]
pub struct ImageReplicationSpec {
    /// Region of the source image, e.g. `cn-hangzhou`.
    #[schemars(length(min = 2, max = 64), regex(pattern = REGION_ID_PATTERN))]
    pub source_region_id: String,

    /// ID of the source custom image (`m-...`); it must be Available. Changing it makes a new
    /// generation of copies; the current ones stay until the new ones are Ready everywhere.
    #[schemars(length(min = 3, max = 64), regex(pattern = IMAGE_ID_PATTERN))]
    pub source_image_id: String,

    /// Regions to copy the image to: at least one, each once, not the source region. Adding a
    /// region adds a copy; removing one deletes its copy (cancelled when in flight, else
    /// `deletionPolicy` applies).
    #[schemars(schema_with = "destination_regions_schema")]
    pub destination_region_ids: Vec<String>,

    /// Name of every copy (ECS image names are unique within a region): 2-128 characters,
    /// starting with a letter or Chinese character; digits, `.`, `:`, `_` and `-` allowed; not
    /// starting with `aliyun` or `acs:`; no `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 128), regex(pattern = IMAGE_NAME_PATTERN))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('aliyun') && !self.startsWith('acs:')").message("spec.destinationImageName must not start with aliyun or acs:"),
        validation = Rule::new("!self.contains('http://') && !self.contains('https://')").message("spec.destinationImageName must not contain http:// or https://")
    )]
    pub destination_image_name: Option<String>,

    /// Description of every copy: 2-256 characters, not starting with `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('http://') && !self.startsWith('https://')").message("spec.destinationDescription must not start with http:// or https://"))]
    pub destination_description: Option<String>,

    /// Encrypt the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,

    /// KMS key per destination region for the encrypted copies (KMS keys belong to a region);
    /// a region without a key uses ECS's default key. Requires `encrypted: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kms_key_ids_schema")]
    pub kms_key_ids: Option<BTreeMap<String, String>>,

    /// Resource group of the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub resource_group_id: Option<String>,

    /// Tags for the copies, with the rules of `ImageCopy`'s `tags` (at most 18; keys 1-128
    /// characters, not starting with `aliyun`, `acs:` or `imageops.dev/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Option<BTreeMap<String, String>>,

    /// What happens to a finished copy when its region is removed or this object is deleted:
    /// `Delete` (default) deletes the image, `Retain` keeps it. A copy in flight is cancelled.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Secret in this object's namespace with `accessKeyId`, `accessKeySecret` and optionally
    /// `securityToken`, for every copy; without it the operator's own credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// Name of a ConfigMap in this namespace to publish the result to: one key per region with
    /// its image id, plus `sourceRegionId` and `sourceImageId`. The operator creates and owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub publish_to: Option<String>,
}

fn destination_regions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_DESTINATION_REGIONS,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "minLength": 2, "maxLength": 64, "pattern": REGION_ID_PATTERN}
    })
}

fn kms_key_ids_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": MAX_DESTINATION_REGIONS,
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 128}
    })
}

/// Observed state of an `ImageReplication`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageReplicationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One row per destination region, in the order of `spec.destinationRegionIds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["regionId".into()]))]
    pub regions: Vec<RegionStatus>,
    /// Destination regions whose copy is Ready.
    #[serde(default)]
    pub ready_regions: i32,
    /// Destination regions.
    #[serde(default)]
    pub total_regions: i32,
    /// `readyRegions/totalRegions`, e.g. `3/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions_ready: Option<String>,
    /// Progress over all regions, e.g. `62%` (a Ready region counts as 100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The ConfigMap the region → image map was last published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One destination region of an `ImageReplication`, as its current copy shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    pub region_id: String,
    /// Name of the child `ImageCopy` of the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_copy: Option<String>,
    /// Image of the current generation in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Phase of the current copy; `Queued` while ECS holds it behind other copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CopyPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Ready image of the previous generation, kept (and published) until the current
    /// generation is Ready in every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image_id: Option<String>,
}
