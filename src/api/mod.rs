//! Custom resource types of the `imageops.dev/v1alpha1` API. Types only: behaviour lives in
//! `crate::controller`.

pub mod common;
pub mod condition;
pub mod image_copy;
pub mod image_export;
pub mod image_import;
pub mod image_replication;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use condition::{Condition, Word};
pub use image_copy::{ImageCopy, ImageCopySpec, ImageCopyStatus};
pub use image_export::{ImageExport, ImageExportSpec, ImageExportStatus};
pub use image_import::{ImageImport, ImageImportSpec, ImageImportStatus};
pub use image_replication::{ImageReplication, ImageReplicationSpec, ImageReplicationStatus};

pub const GROUP: &str = "imageops.dev";
/// Finalizer that holds an object until its cloud resources were cancelled, deleted or retained.
pub const FINALIZER: &str = "imageops.dev/cleanup";
/// Tag put on every image and task the operator creates; the value is the owning object's UID.
pub const OWNER_UID_TAG: &str = "imageops.dev/owner-uid";
/// Label on every `ImageCopy` an `ImageReplication` made; the value is the replication's UID.
pub const REPLICATION_UID_LABEL: &str = "imageops.dev/replication-uid";
/// Tag with the owning object's `namespace/name`, for people looking at the cloud console.
pub const OWNER_TAG: &str = "imageops.dev/owner";

/// Every CRD this operator serves, in the order `ecs-image-operator crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ImageCopy::crd(),
        ImageImport::crd(),
        ImageExport::crd(),
        ImageReplication::crd(),
    ]
}

/// All CRDs as one YAML stream (documents separated by `---`).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
