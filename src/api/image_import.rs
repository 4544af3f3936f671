//! `ImageImport`: import disk image files from OSS as a custom image and follow the import task
//! until the image is usable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    DeletionPolicy, IMAGE_NAME_PATTERN, OSS_BUCKET_PATTERN, REGION_ID_PATTERN, SecretReference,
    tags_schema,
};
use super::condition::Condition;

/// Imports disk image files from OSS as a custom ECS image (`ImportImage`), follows the import
/// task until the image is Available, and on delete cancels a task in flight (`CancelTask`) or
/// applies `deletionPolicy` to the imported image.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imageops.dev",
    version = "v1alpha1",
    kind = "ImageImport",
    plural = "imageimports",
    shortname = "imgimp",
    category = "ecs-images",
    namespaced,
    status = "ImageImportStatus",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.regionId"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.imageId"}"#,
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".status.taskId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.regionId == oldSelf.regionId").message("spec.regionId is immutable").field_path(".regionId"),
    validation = Rule::new("(has(self.imageName) ? self.imageName : '') == (has(oldSelf.imageName) ? oldSelf.imageName : '')").message("spec.imageName is immutable").field_path(".imageName"),
    validation = Rule::new("(has(self.description) ? self.description : '') == (has(oldSelf.description) ? oldSelf.description : '')").message("spec.description is immutable").field_path(".description"),
    validation = Rule::new("self.osType == oldSelf.osType").message("spec.osType is immutable").field_path(".osType"),
    validation = Rule::new("(has(self.platform) ? self.platform : '') == (has(oldSelf.platform) ? oldSelf.platform : '')").message("spec.platform is immutable").field_path(".platform"),
    validation = Rule::new("self.architecture == oldSelf.architecture").message("spec.architecture is immutable").field_path(".architecture"),
    validation = Rule::new("self.diskDeviceMappings == oldSelf.diskDeviceMappings").message("spec.diskDeviceMappings is immutable").field_path(".diskDeviceMappings"),
    validation = Rule::new("(has(self.tags) ? self.tags : {}) == (has(oldSelf.tags) ? oldSelf.tags : {})").message("spec.tags is immutable").field_path(".tags")
)]
pub struct ImageImportSpec {
    /// Region to import into, e.g. `cn-hangzhou`; ECS requires it to be the region of the OSS
    /// buckets.
    #[schemars(length(min = 2, max = 64), regex(pattern = REGION_ID_PATTERN))]
    pub region_id: String,

    /// Name of the new image: 2-128 characters, starting with a letter or Chinese character;
    /// digits, `.`, `:`, `_` and `-` allowed; not starting with `aliyun` or `acs:`; no `http://`
    /// or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 128), regex(pattern = IMAGE_NAME_PATTERN))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('aliyun') && !self.startsWith('acs:')").message("spec.imageName must not start with aliyun or acs:"),
        validation = Rule::new("!self.contains('http://') && !self.contains('https://')").message("spec.imageName must not contain http:// or https://")
    )]
    pub image_name: Option<String>,

    /// Description of the new image: 2-256 characters, not starting with `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('http://') && !self.startsWith('https://')").message("spec.description must not start with http:// or https://"))]
    pub description: Option<String>,

    /// Operating system of the imported disk: `linux` (default) or `windows`.
    #[serde(default)]
    pub os_type: OsType,

    /// Operating system distribution as ECS names it, e.g. `Aliyun`, `CentOS`, `Ubuntu`,
    /// `Windows Server 2022` or `Others Linux` (ECS's default); at most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub platform: Option<String>,

    /// CPU architecture of the imported system: `x86_64` (default), `arm64` or `i386`.
    #[serde(default)]
    pub architecture: Architecture,

    /// The disk image files: the first is the system disk, the others (at most 16) data disks.
    #[schemars(length(min = 1, max = 17))]
    pub disk_device_mappings: Vec<DiskDeviceMapping>,

    /// Tags for the new image. ECS allows 20 tags per image and the operator adds its two owner
    /// tags, so at most 18 here. Keys: 1-128 characters, not starting with `aliyun`, `acs:` or the
    /// operator's own `imageops.dev/`, no `http://` or `https://`. Values: up to 128 characters
    /// (empty allowed), not starting with `acs:`, no `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Option<BTreeMap<String, String>>,

    /// What happens to the imported image when this object is deleted: `Delete` (default)
    /// deletes it, `Retain` keeps it. An import still in flight is always cancelled.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Secret in this object's namespace with `accessKeyId`, `accessKeySecret` and optionally
    /// `securityToken`; without it the operator's own credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// One disk image file in OSS and the disk it becomes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskDeviceMapping {
    /// OSS bucket holding the file, in the import's region: 3-63 lowercase letters, digits and
    /// `-`, not starting or ending with `-`.
    #[schemars(length(min = 3, max = 63), regex(pattern = OSS_BUCKET_PATTERN))]
    pub oss_bucket: String,

    /// Name (key) of the file in the bucket, 1-1024 characters.
    #[schemars(length(min = 1, max = 1024))]
    pub oss_object: String,

    /// Format of the file: `RAW`, `VHD`, `QCOW2` or `VMDK`; ECS detects it when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskImageFormat>,

    /// Size in GiB of the disk made from the file, 5-2048; it must not be smaller than the
    /// file's virtual disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 2048))]
    pub disk_image_size: Option<i32>,

    /// Device name of the disk, e.g. `/dev/xvdb`; ECS no longer requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub device: Option<String>,
}

/// Format of a disk image file to import.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiskImageFormat {
    /// A raw disk image.
    Raw,
    /// Microsoft Virtual Hard Disk.
    Vhd,
    /// QEMU copy-on-write version 2.
    Qcow2,
    /// VMware Virtual Machine Disk.
    Vmdk,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    #[default]
    Linux,
    Windows,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Architecture {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
    #[serde(rename = "i386")]
    I386,
}

/// Observed state of an `ImageImport`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageImportStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the import stands: `Pending`, `Importing`, `Available`, `Failed`, `Cancelling` or
    /// `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ImportPhase>,
    /// ID of the ECS import task, recorded as soon as ImportImage returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Status of the task as ECS reports it, e.g. `Processing`, `Finished`, `Failed`,
    /// `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<String>,
    /// ID of the new image, recorded as soon as ImportImage returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Task progress as ECS reports it, e.g. `45%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// ImportImage calls begun for this object, counted before each call; it picks the call's
    /// ClientToken, so an import made again (after the image was lost) uses a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_attempts: Option<i32>,
    /// When the import began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the import ended: the image became Available, or the task failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `Ready`, `Reconciling` and `Stalled`, one of each type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ImportPhase {
    /// Accepted; ImportImage not yet answered.
    Pending,
    /// The import task runs; `progress` rises.
    Importing,
    /// The imported image is Available.
    Available,
    /// The import failed or cannot be made; see the `Stalled` condition.
    Failed,
    /// Being deleted: CancelTask sent, waiting for the task to end.
    Cancelling,
    /// Being deleted: the imported image is being deleted.
    Deleting,
}
