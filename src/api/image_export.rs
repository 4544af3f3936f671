//! `ImageExport`: export a custom image to an OSS bucket and follow the export task until the
//! file is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{IMAGE_ID_PATTERN, OSS_BUCKET_PATTERN, REGION_ID_PATTERN, SecretReference};
use super::condition::Condition;

/// Exports a custom ECS image to an OSS bucket (`ExportImage`) and follows the export task until
/// it ends; on delete cancels a task in flight (`CancelTask`). The exported file belongs to the
/// bucket's owner: deleting this object never deletes it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imageops.dev",
    version = "v1alpha1",
    kind = "ImageExport",
    plural = "imageexports",
    shortname = "imgexp",
    category = "ecs-images",
    namespaced,
    status = "ImageExportStatus",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.regionId"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.imageId"}"#,
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".status.taskId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.regionId == oldSelf.regionId").message("spec.regionId is immutable").field_path(".regionId"),
    validation = Rule::new("self.imageId == oldSelf.imageId").message("spec.imageId is immutable").field_path(".imageId"),
    validation = Rule::new("self.ossBucket == oldSelf.ossBucket").message("spec.ossBucket is immutable").field_path(".ossBucket"),
    validation = Rule::new("(has(self.ossPrefix) ? self.ossPrefix : '') == (has(oldSelf.ossPrefix) ? oldSelf.ossPrefix : '')").message("spec.ossPrefix is immutable").field_path(".ossPrefix"),
    validation = Rule::new("(has(self.imageFormat) ? self.imageFormat : '') == (has(oldSelf.imageFormat) ? oldSelf.imageFormat : '')").message("spec.imageFormat is immutable").field_path(".imageFormat")
)]
pub struct ImageExportSpec {
    /// Region of the image, e.g. `cn-hangzhou`; ECS requires the bucket to be in it.
    #[schemars(length(min = 2, max = 64), regex(pattern = REGION_ID_PATTERN))]
    pub region_id: String,

    /// ID of the custom image to export (`m-...`); it must be Available.
    #[schemars(length(min = 3, max = 64), regex(pattern = IMAGE_ID_PATTERN))]
    pub image_id: String,

    /// OSS bucket to write the file to: 3-63 lowercase letters, digits and `-`, not starting or
    /// ending with `-`.
    #[schemars(length(min = 3, max = 63), regex(pattern = OSS_BUCKET_PATTERN))]
    pub oss_bucket: String,

    /// Prefix of the exported file's name: 1-30 letters and digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 30), regex(pattern = r"^[a-zA-Z0-9]+$"))]
    pub oss_prefix: Option<String>,

    /// Format of the exported file: `raw` (ECS's default when unset), `vhd`, `qcow2`, `vmdk` or
    /// `vdi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_format: Option<ExportImageFormat>,

    /// Secret in this object's namespace with `accessKeyId`, `accessKeySecret` and optionally
    /// `securityToken`; without it the operator's own credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// Format of the exported file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportImageFormat {
    /// A raw disk image.
    Raw,
    /// Microsoft Virtual Hard Disk.
    Vhd,
    /// QEMU copy-on-write version 2.
    Qcow2,
    /// VMware Virtual Machine Disk.
    Vmdk,
    /// VirtualBox Disk Image.
    Vdi,
}

/// Observed state of an `ImageExport`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageExportStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the export stands: `Pending`, `Exporting`, `Exported`, `Failed` or `Cancelling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    /// ID of the ECS export task, recorded as soon as ExportImage returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Status of the task as ECS reports it, e.g. `Processing`, `Finished`, `Failed`,
    /// `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<String>,
    /// Task progress as ECS reports it, e.g. `45%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// ExportImage calls begun for this object, counted before each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_attempts: Option<i32>,
    /// Name of the exported file in `spec.ossBucket`, once ECS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oss_object: Option<String>,
    /// When the export began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the export ended: the file was written, or the task failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `Ready`, `Reconciling` and `Stalled`, one of each type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExportPhase {
    /// Accepted; ExportImage not yet answered.
    Pending,
    /// The export task runs; `progress` rises.
    Exporting,
    /// The task finished: the file is in the bucket.
    Exported,
    /// The export failed or cannot be made; see the `Stalled` condition.
    Failed,
    /// Being deleted: CancelTask sent, waiting for the task to end.
    Cancelling,
}
