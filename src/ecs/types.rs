//! Typed answers of the ECS operations the operator uses, decoded from the real nested JSON.
//! Fields ECS may omit are `Option`s or default to empty.

use std::fmt;

use serde::Deserialize;

use super::lenient;

/// Declares a string-valued ECS enum that keeps unknown values instead of failing.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(from = "String")]
        pub enum $name {
            $($variant,)+
            /// A value this client does not know (kept verbatim).
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(other) => other,
                }
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                match value.as_str() {
                    $($wire => $name::$variant,)+
                    _ => $name::Other(value),
                }
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name::from(value.to_string())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::Other(String::new())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `Status` of an image. `Waiting` means queued behind other copies in the region.
    ImageStatus {
        Creating = "Creating",
        Waiting = "Waiting",
        Available = "Available",
        UnAvailable = "UnAvailable",
        CreateFailed = "CreateFailed",
        Deprecated = "Deprecated",
    }
);

string_enum!(
    /// `TaskStatus` of an import/export task. A cancelled task reads `Deleted` ("已取消" in
    /// the API reference); `Cancelled` is kept for answers that spell it so.
    TaskStatus {
        Waiting = "Waiting",
        Processing = "Processing",
        Finished = "Finished",
        Failed = "Failed",
        Paused = "Paused",
        Deleted = "Deleted",
        Cancelled = "Cancelled",
    }
);

impl TaskStatus {
    /// The task has ended and will not change again: `Finished`, `Failed`, `Deleted` or
    /// `Cancelled`. Anything else (including an unknown status) may still move.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskStatus::Finished | TaskStatus::Failed | TaskStatus::Deleted | TaskStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Tag {
    #[serde(rename = "TagKey", deserialize_with = "lenient::string", default)]
    pub key: String,
    #[serde(rename = "TagValue", deserialize_with = "lenient::string", default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Image {
    #[serde(deserialize_with = "lenient::id")]
    pub image_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub image_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub description: String,
    pub status: ImageStatus,
    /// As ECS reports it, e.g. `"45%"`; see [`Image::progress_percent`].
    pub progress: Option<String>,
    #[serde(deserialize_with = "lenient::bool")]
    pub is_copied: Option<bool>,
    #[serde(deserialize_with = "lenient::bool")]
    pub usable: Option<bool>,
    pub creation_time: Option<String>,
    /// GiB.
    #[serde(deserialize_with = "lenient::number")]
    pub size: Option<u64>,
    pub image_owner_alias: Option<String>,
    #[serde(rename = "OSType")]
    pub os_type: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub resource_group_id: Option<String>,
    #[serde(deserialize_with = "lenient::list")]
    pub tags: Vec<Tag>,
}

impl Image {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|tag| tag.key == key)
            .map(|tag| tag.value.as_str())
    }

    /// `"45%"` → 45 (capped at 100); `None` when absent or unreadable.
    pub fn progress_percent(&self) -> Option<u8> {
        self.progress.as_deref().and_then(parse_percent)
    }

    /// `CreationTime` when it has the documented `2019-11-15T06:07:05Z` shape.
    pub fn created(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.creation_time.as_deref()?.parse().ok()
    }
}

/// `"45%"` → 45 (capped at 100); `None` when unreadable.
pub fn parse_percent(text: &str) -> Option<u8> {
    let number = text.trim().trim_end_matches('%').trim();
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| value.min(100.0).floor() as u8)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeImagesResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient::count")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub page_number: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub page_size: u64,
    #[serde(deserialize_with = "lenient::list")]
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyImageResponse {
    pub request_id: String,
    /// The new image in the destination region.
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportImageResponse {
    pub request_id: String,
    pub image_id: String,
    pub task_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportImageResponse {
    pub request_id: String,
    pub task_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Task {
    #[serde(deserialize_with = "lenient::id")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub task_action: String,
    pub task_status: TaskStatus,
    /// Sent by ECS as the string `"true"`/`"false"`.
    #[serde(deserialize_with = "lenient::bool")]
    pub support_cancel: Option<bool>,
    /// `yyyy-MM-ddTHH:mmZ` (minute precision).
    pub creation_time: Option<String>,
    /// Empty or absent while the task runs.
    pub finished_time: Option<String>,
    /// For ImportImage the new image, for ExportImage the exported image.
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeTasksResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient::count")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub page_number: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub page_size: u64,
    #[serde(rename = "TaskSet", deserialize_with = "lenient::list")]
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RelatedItem {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub value: String,
}

/// One sub-operation of a task; failed ones carry the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OperationProgress {
    /// `Success`, `Failed`, …
    #[serde(deserialize_with = "lenient::string")]
    pub operation_status: String,
    /// Empty unless the operation failed.
    #[serde(deserialize_with = "lenient::string")]
    pub error_code: String,
    #[serde(deserialize_with = "lenient::string")]
    pub error_msg: String,
    #[serde(rename = "RelatedItemSet", deserialize_with = "lenient::list")]
    pub related_items: Vec<RelatedItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskAttribute {
    #[serde(deserialize_with = "lenient::string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub region_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub task_action: String,
    pub task_status: TaskStatus,
    /// Progress as ECS reports it, e.g. `"100%"`; see [`TaskAttribute::progress_percent`].
    pub task_process: Option<String>,
    #[serde(deserialize_with = "lenient::bool")]
    pub support_cancel: Option<bool>,
    pub creation_time: Option<String>,
    pub finished_time: Option<String>,
    #[serde(deserialize_with = "lenient::count")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub success_count: u64,
    #[serde(deserialize_with = "lenient::count")]
    pub failed_count: u64,
    #[serde(rename = "OperationProgressSet", deserialize_with = "lenient::list")]
    pub operation_progress: Vec<OperationProgress>,
}

/// Why a task failed, as ECS reports it in `OperationProgress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub code: String,
    /// May be empty.
    pub message: String,
}

impl TaskAttribute {
    /// `"45%"` → 45 (capped at 100); `None` when absent or unreadable.
    pub fn progress_percent(&self) -> Option<u8> {
        self.task_process.as_deref().and_then(parse_percent)
    }

    /// The first error code an operation of the task reports, with its message; `None` when no
    /// operation carries one (a running or finished task, or a failed one that says nothing).
    pub fn failure(&self) -> Option<TaskFailure> {
        self.operation_progress
            .iter()
            .find(|op| !op.error_code.is_empty())
            .map(|op| TaskFailure {
                code: op.error_code.clone(),
                message: op.error_msg.clone(),
            })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Region {
    #[serde(deserialize_with = "lenient::string")]
    pub region_id: String,
    pub local_name: Option<String>,
    pub region_endpoint: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct DescribeRegionsResponse {
    #[serde(deserialize_with = "lenient::list")]
    pub regions: Vec<Region>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagResource {
    #[serde(deserialize_with = "lenient::string")]
    pub resource_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub resource_type: String,
    #[serde(deserialize_with = "lenient::string")]
    pub tag_key: String,
    #[serde(deserialize_with = "lenient::string")]
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListTagResourcesResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub request_id: String,
    /// Present when more results follow; pass it back in the next request.
    pub next_token: Option<String>,
    #[serde(deserialize_with = "lenient::list")]
    pub tag_resources: Vec<TagResource>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_images_decodes_the_real_nested_shape() {
        let json = r#"{
          "RequestId": "R-1", "TotalCount": 2, "PageNumber": 1, "PageSize": 100, "RegionId": "cn-shanghai",
          "Images": {"Image": [
            {"ImageId": "m-copy1", "ImageName": "web-v1", "Description": "copied", "Status": "Creating",
             "Progress": "45%", "IsCopied": true, "Usable": false, "CreationTime": "2024-05-01T10:00:00Z",
             "Size": 40, "OSType": "linux",
             "Tags": {"Tag": [{"TagKey": "imageops.dev/owner-uid", "TagValue": "uid-1"}]},
             "DiskDeviceMappings": {"DiskDeviceMapping": [{"Size": "40", "Progress": "45%"}]}},
            {"ImageId": "m-copy2", "Status": "Waiting", "Tags": {"Tag": []}}
          ]}
        }"#;
        let answer: DescribeImagesResponse = serde_json::from_str(json).unwrap();
        assert_eq!(answer.total_count, 2);
        assert_eq!(answer.page_size, 100);
        let first = &answer.images[0];
        assert_eq!(first.status, ImageStatus::Creating);
        assert_eq!(first.progress_percent(), Some(45));
        assert_eq!(first.is_copied, Some(true));
        assert_eq!(first.usable, Some(false));
        assert_eq!(first.size, Some(40));
        assert_eq!(first.os_type.as_deref(), Some("linux"));
        assert_eq!(first.tag("imageops.dev/owner-uid"), Some("uid-1"));
        assert_eq!(first.tag("missing"), None);
        let second = &answer.images[1];
        assert_eq!(second.status, ImageStatus::Waiting);
        assert_eq!(second.progress_percent(), None);
        assert!(second.image_name.is_empty());
    }

    #[test]
    fn unknown_statuses_are_kept() {
        let image: Image = serde_json::from_str(r#"{"Status":"Frozen"}"#).unwrap();
        assert_eq!(image.status, ImageStatus::Other("Frozen".into()));
        assert_eq!(image.status.to_string(), "Frozen");
        assert_eq!(ImageStatus::from("UnAvailable"), ImageStatus::UnAvailable);
    }

    #[test]
    fn percentages_parse_leniently() {
        assert_eq!(parse_percent("100%"), Some(100));
        assert_eq!(parse_percent(" 7 % "), Some(7));
        assert_eq!(parse_percent("150%"), Some(100));
        assert_eq!(parse_percent("12.9%"), Some(12));
        assert_eq!(parse_percent("-1%"), None);
        assert_eq!(parse_percent("soon"), None);
    }

    #[test]
    fn task_attribute_reads_string_booleans_and_progress() {
        let json = r#"{"RequestId":"R","RegionId":"cn-hangzhou","TaskId":"t-1","TaskAction":"ExportImage",
          "TaskStatus":"Finished","TaskProcess":"100%","SupportCancel":"false",
          "CreationTime":"2015-11-24T12:50Z","FinishedTime":"2015-11-24T12:52Z",
          "OperationProgressSet":{"OperationProgress":[{"OperationStatus":"Success",
            "RelatedItemSet":{"RelatedItem":[{"Name":"OSSBucket","Value":"b"}]}}]}}"#;
        let task: TaskAttribute = serde_json::from_str(json).unwrap();
        assert_eq!(task.task_status, TaskStatus::Finished);
        assert_eq!(task.support_cancel, Some(false));
        assert_eq!(task.progress_percent(), Some(100));
        assert_eq!(task.operation_progress[0].related_items[0].value, "b");
    }

    #[test]
    fn a_failed_task_says_why_and_odd_shapes_do_not_hide_it() {
        let json = r#"{"TaskId":"t-1","TaskStatus":"Failed","TaskProcess":"50%","FailedCount":"1",
          "OperationProgressSet":{"OperationProgress":[
            {"OperationStatus":"Success","ErrorCode":null,"ErrorMsg":""},
            {"OperationStatus":"Failed","ErrorCode":"ImportImage.OssObjectNotFound","ErrorMsg":"gone"}]}}"#;
        let task: TaskAttribute = serde_json::from_str(json).unwrap();
        assert!(task.task_status.is_final());
        assert_eq!(task.failed_count, 1);
        assert_eq!(task.progress_percent(), Some(50));
        assert_eq!(
            task.failure(),
            Some(TaskFailure {
                code: "ImportImage.OssObjectNotFound".into(),
                message: "gone".into()
            })
        );
        let running: TaskAttribute = serde_json::from_str(
            r#"{"TaskStatus":"Processing","OperationProgressSet":{"OperationProgress":[{"ErrorCode":""}]}}"#,
        )
        .unwrap();
        assert_eq!(running.failure(), None);
        assert!(!running.task_status.is_final());
        assert!(!TaskStatus::from("Frozen").is_final());
        assert!(TaskStatus::Deleted.is_final());
    }

    #[test]
    fn task_sets_and_regions_unwrap() {
        let tasks: DescribeTasksResponse = serde_json::from_str(
            r#"{"TotalCount":"1","TaskSet":{"Task":[{"TaskId":"t-1","TaskStatus":"Processing","SupportCancel":"true"}]}}"#,
        )
        .unwrap();
        assert_eq!(tasks.total_count, 1);
        assert_eq!(tasks.tasks[0].task_status, TaskStatus::Processing);
        assert_eq!(tasks.tasks[0].support_cancel, Some(true));
        let regions: DescribeRegionsResponse = serde_json::from_str(
            r#"{"Regions":{"Region":[{"RegionId":"cn-hangzhou","RegionEndpoint":"ecs.cn-hangzhou.aliyuncs.com"}]}}"#,
        )
        .unwrap();
        assert_eq!(regions.regions[0].region_id, "cn-hangzhou");
    }
}
