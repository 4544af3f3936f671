//! Typed ECS operations on top of [`EcsClient::call`]: the request structs know their wire
//! parameter names, the methods decode the answers into [`super::types`].

use std::future::Future;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::EcsClient;
use super::error::EcsError;
use super::types::{
    CopyImageResponse, DescribeImagesResponse, DescribeRegionsResponse, DescribeTasksResponse,
    ExportImageResponse, Image, ImageStatus, ImportImageResponse, ListTagResourcesResponse, Region,
    Task, TaskAttribute,
};

/// DescribeImages and DescribeTasks accept at most 100 results per page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Most pages one listing walks: 50 000 images (or tasks) at full pages, far above any
/// account's image quota. A server that keeps promising more is wrong, and must not keep us
/// calling forever.
pub const MAX_PAGES: u32 = 500;

/// DescribeTasks takes at most this many `TaskIds`, and as many `ResourceIds`.
pub const MAX_TASK_FILTER_IDS: usize = 100;

/// Request parameters in wire form, in insertion order (signing sorts them).
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn region(region: &str) -> Self {
        let mut params = Params::default();
        params.set("RegionId", region);
        params
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_string(), value.into()));
    }

    /// Absent and empty values are not sent: ECS treats an empty value as a (bad) value.
    fn opt(&mut self, key: &str, value: Option<impl ToString>) {
        if let Some(value) = value.map(|v| v.to_string()).filter(|v| !v.is_empty()) {
            self.set(key, value);
        }
    }

    /// `Tag.1.Key=..&Tag.1.Value=..`, 1-based as ECS flattens lists. An empty value is left out,
    /// which in a filter means "any value of this key".
    fn tags(&mut self, prefix: &str, tags: &[(String, String)]) {
        for (index, (key, value)) in tags.iter().enumerate() {
            self.set(&format!("{prefix}.{}.Key", index + 1), key.as_str());
            self.opt(
                &format!("{prefix}.{}.Value", index + 1),
                Some(value.as_str()),
            );
        }
    }

    fn list(&mut self, prefix: &str, values: &[String]) {
        for (index, value) in values.iter().enumerate() {
            self.set(&format!("{prefix}.{}", index + 1), value.as_str());
        }
    }
}

/// `CopyImage`, sent to the source region; the answer names the new destination image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyImageRequest {
    pub source_region: String,
    pub image_id: String,
    pub destination_region: String,
    pub destination_image_name: Option<String>,
    pub destination_description: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub resource_group_id: Option<String>,
    pub tags: Vec<(String, String)>,
    /// ≤ 64 ASCII characters; makes a retried CopyImage return the same image.
    pub client_token: Option<String>,
}

impl CopyImageRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.source_region);
        p.set("ImageId", self.image_id.as_str());
        p.set("DestinationRegionId", self.destination_region.as_str());
        p.opt("DestinationImageName", self.destination_image_name.as_ref());
        p.opt(
            "DestinationDescription",
            self.destination_description.as_ref(),
        );
        p.opt("Encrypted", self.encrypted);
        p.opt("KMSKeyId", self.kms_key_id.as_ref());
        p.opt("ResourceGroupId", self.resource_group_id.as_ref());
        p.tags("Tag", &self.tags);
        p.opt("ClientToken", self.client_token.as_ref());
        p
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeImagesRequest {
    pub region: String,
    pub image_id: Option<String>,
    /// Fuzzy match.
    pub image_name: Option<String>,
    /// ECS returns only `Available` images when this is empty: list every status you follow.
    pub status: Vec<ImageStatus>,
    /// `self`, `system`, `others`, `marketplace`.
    pub image_owner_alias: Option<String>,
    /// Exact tag filters.
    pub tags: Vec<(String, String)>,
    pub page_number: Option<u32>,
    /// At most [`MAX_PAGE_SIZE`].
    pub page_size: Option<u32>,
}

impl DescribeImagesRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.region);
        p.opt("ImageId", self.image_id.as_ref());
        p.opt("ImageName", self.image_name.as_ref());
        let status: Vec<&str> = self.status.iter().map(ImageStatus::as_str).collect();
        p.opt("Status", Some(status.join(",")));
        p.opt("ImageOwnerAlias", self.image_owner_alias.as_ref());
        p.tags("Tag", &self.tags);
        p.opt("PageNumber", self.page_number);
        p.opt("PageSize", self.page_size);
        p
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskDeviceMapping {
    pub oss_bucket: String,
    pub oss_object: String,
    /// `RAW`, `VHD`, `QCOW2`...
    pub format: Option<String>,
    /// GiB.
    pub disk_image_size: Option<u32>,
}

/// `ImportImage`: the first mapping is the system disk, the others data disks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportImageRequest {
    pub region: String,
    pub image_name: Option<String>,
    pub description: Option<String>,
    pub os_type: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub boot_mode: Option<String>,
    pub license_type: Option<String>,
    pub role_name: Option<String>,
    pub disk_device_mappings: Vec<DiskDeviceMapping>,
    pub tags: Vec<(String, String)>,
    pub resource_group_id: Option<String>,
    pub client_token: Option<String>,
}

impl ImportImageRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.region);
        p.opt("ImageName", self.image_name.as_ref());
        p.opt("Description", self.description.as_ref());
        p.opt("OSType", self.os_type.as_ref());
        p.opt("Platform", self.platform.as_ref());
        p.opt("Architecture", self.architecture.as_ref());
        p.opt("BootMode", self.boot_mode.as_ref());
        p.opt("LicenseType", self.license_type.as_ref());
        p.opt("RoleName", self.role_name.as_ref());
        for (index, disk) in self.disk_device_mappings.iter().enumerate() {
            let prefix = format!("DiskDeviceMapping.{}", index + 1);
            p.set(&format!("{prefix}.OSSBucket"), disk.oss_bucket.as_str());
            p.set(&format!("{prefix}.OSSObject"), disk.oss_object.as_str());
            p.opt(&format!("{prefix}.Format"), disk.format.as_ref());
            p.opt(&format!("{prefix}.DiskImageSize"), disk.disk_image_size);
        }
        p.tags("Tag", &self.tags);
        p.opt("ResourceGroupId", self.resource_group_id.as_ref());
        p.opt("ClientToken", self.client_token.as_ref());
        p
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportImageRequest {
    pub region: String,
    pub image_id: String,
    pub oss_bucket: String,
    pub oss_prefix: Option<String>,
    /// `raw` (default), `vhd`, `qcow2`, `vmdk`, `vdi`.
    pub image_format: Option<String>,
    pub role_name: Option<String>,
}

impl ExportImageRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.region);
        p.set("ImageId", self.image_id.as_str());
        p.set("OSSBucket", self.oss_bucket.as_str());
        p.opt("OSSPrefix", self.oss_prefix.as_ref());
        p.opt("ImageFormat", self.image_format.as_ref());
        p.opt("RoleName", self.role_name.as_ref());
        p
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeTasksRequest {
    pub region: String,
    /// At most [`MAX_TASK_FILTER_IDS`], sent comma-separated.
    pub task_ids: Vec<String>,
    /// Tasks whose resource is one of these (for ImportImage the new image, for ExportImage the
    /// exported one); at most [`MAX_TASK_FILTER_IDS`], sent as `ResourceIds.N` like the
    /// official SDKs.
    pub resource_ids: Vec<String>,
    /// `ImportImage`, `ExportImage`, `RedeployInstance`, `ModifyDiskSpec`, `ArchiveSnapshot`.
    pub task_action: Option<String>,
    /// Only `Finished`, `Processing` and `Failed` filter anything.
    pub task_status: Option<String>,
    pub page_number: Option<u32>,
    /// At most [`MAX_PAGE_SIZE`].
    pub page_size: Option<u32>,
}

impl DescribeTasksRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.region);
        p.opt("TaskIds", Some(self.task_ids.join(",")));
        p.list("ResourceIds", &self.resource_ids);
        p.opt("TaskAction", self.task_action.as_ref());
        p.opt("TaskStatus", self.task_status.as_ref());
        p.opt("PageNumber", self.page_number);
        p.opt("PageSize", self.page_size);
        p
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTagResourcesRequest {
    pub region: String,
    /// `image`, `instance`, `disk`...
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub next_token: Option<String>,
}

impl ListTagResourcesRequest {
    fn params(&self) -> Params {
        let mut p = Params::region(&self.region);
        p.set("ResourceType", self.resource_type.as_str());
        p.list("ResourceId", &self.resource_ids);
        p.tags("Tag", &self.tags);
        p.opt("NextToken", self.next_token.as_ref());
        p
    }
}

impl EcsClient {
    async fn call_typed<T: DeserializeOwned>(
        &self,
        region: &str,
        action: &str,
        params: Params,
    ) -> Result<T, EcsError> {
        let value = self.call(region, action, &params.0).await?;
        decode(action, value)
    }

    /// Copies an image to another region; returns the destination image id at once (the copy
    /// itself runs for minutes: follow it with [`EcsClient::describe_images`]).
    pub async fn copy_image(
        &self,
        request: &CopyImageRequest,
    ) -> Result<CopyImageResponse, EcsError> {
        let value = self
            .call(&request.source_region, "CopyImage", &request.params().0)
            .await?;
        Ok(CopyImageResponse {
            request_id: text(&value, &["RequestId"]).unwrap_or_default(),
            image_id: required(&value, "CopyImage", &["ImageId"])?,
        })
    }

    /// Cancels a copy in flight; `region` and `image_id` are the destination's.
    pub async fn cancel_copy_image(&self, region: &str, image_id: &str) -> Result<(), EcsError> {
        let mut p = Params::region(region);
        p.set("ImageId", image_id);
        self.call(region, "CancelCopyImage", &p.0).await.map(drop)
    }

    pub async fn describe_images(
        &self,
        request: &DescribeImagesRequest,
    ) -> Result<DescribeImagesResponse, EcsError> {
        self.call_typed(&request.region, "DescribeImages", request.params())
            .await
    }

    /// Every page of a DescribeImages query (page size [`MAX_PAGE_SIZE`] unless set), at most
    /// [`MAX_PAGES`] of them: a listing still unfinished after that is an error.
    pub async fn describe_all_images(
        &self,
        request: &DescribeImagesRequest,
    ) -> Result<Vec<Image>, EcsError> {
        self.describe_all_images_as(request, |image| image).await
    }

    /// Every page of `request`, each image turned by `keep` into what the caller keeps as soon
    /// as its page arrives: a listing of thousands of images never holds them all whole.
    pub async fn describe_all_images_as<T>(
        &self,
        request: &DescribeImagesRequest,
        keep: impl Fn(Image) -> T + Copy,
    ) -> Result<Vec<T>, EcsError> {
        all_pages("DescribeImages", |page_number| async move {
            let page = DescribeImagesRequest {
                page_number: Some(page_number),
                page_size: Some(request.page_size.unwrap_or(MAX_PAGE_SIZE)),
                ..request.clone()
            };
            let answer = self.describe_images(&page).await?;
            Ok((
                answer.images.into_iter().map(keep).collect(),
                answer.total_count,
            ))
        })
        .await
    }

    /// Deletes a custom image; ECS treats an image that does not exist as success.
    pub async fn delete_image(
        &self,
        region: &str,
        image_id: &str,
        force: bool,
    ) -> Result<(), EcsError> {
        let mut p = Params::region(region);
        p.set("ImageId", image_id);
        if force {
            p.set("Force", "true");
        }
        self.call(region, "DeleteImage", &p.0).await.map(drop)
    }

    pub async fn import_image(
        &self,
        request: &ImportImageRequest,
    ) -> Result<ImportImageResponse, EcsError> {
        let value = self
            .call(&request.region, "ImportImage", &request.params().0)
            .await?;
        Ok(ImportImageResponse {
            request_id: text(&value, &["RequestId"]).unwrap_or_default(),
            image_id: text(&value, &["ImageId"]).unwrap_or_default(),
            // Current SDK models say `TaskId`; the 2021 documentation samples `ImportTaskId`.
            task_id: required(&value, "ImportImage", &["TaskId", "ImportTaskId"])?,
        })
    }

    pub async fn export_image(
        &self,
        request: &ExportImageRequest,
    ) -> Result<ExportImageResponse, EcsError> {
        let value = self
            .call(&request.region, "ExportImage", &request.params().0)
            .await?;
        Ok(ExportImageResponse {
            request_id: text(&value, &["RequestId"]).unwrap_or_default(),
            task_id: required(&value, "ExportImage", &["TaskId", "ExportTaskId"])?,
        })
    }

    pub async fn describe_tasks(
        &self,
        request: &DescribeTasksRequest,
    ) -> Result<DescribeTasksResponse, EcsError> {
        self.call_typed(&request.region, "DescribeTasks", request.params())
            .await
    }

    /// Every page of a DescribeTasks query (page size [`MAX_PAGE_SIZE`] unless set), at most
    /// [`MAX_PAGES`] of them: a listing still unfinished after that is an error.
    pub async fn describe_all_tasks(
        &self,
        request: &DescribeTasksRequest,
    ) -> Result<Vec<Task>, EcsError> {
        all_pages("DescribeTasks", |page_number| async move {
            let page = DescribeTasksRequest {
                page_number: Some(page_number),
                page_size: Some(request.page_size.unwrap_or(MAX_PAGE_SIZE)),
                ..request.clone()
            };
            let answer = self.describe_tasks(&page).await?;
            Ok((answer.tasks, answer.total_count))
        })
        .await
    }

    /// One task's details: progress ([`TaskAttribute::progress_percent`]) and, for a failed
    /// task, why ([`TaskAttribute::failure`]).
    pub async fn describe_task_attribute(
        &self,
        region: &str,
        task_id: &str,
    ) -> Result<TaskAttribute, EcsError> {
        let mut p = Params::region(region);
        p.set("TaskId", task_id);
        self.call_typed(region, "DescribeTaskAttribute", p).await
    }

    /// Cancels a running ImportImage/ExportImage task. ECS refuses with
    /// `InvalidTaskId.NotFound` (400) for an unknown task, `InvalidTaskId.TaskActionNotSupport`
    /// (403) for another kind of task, `InvalidTaskId.IncorrectTaskStatus` (403) for a task no
    /// longer running, and `CancelTaskFailed` (403) when it cannot cancel it (`docs/ecs-tasks.md`).
    pub async fn cancel_task(&self, region: &str, task_id: &str) -> Result<(), EcsError> {
        let mut p = Params::region(region);
        p.set("TaskId", task_id);
        self.call(region, "CancelTask", &p.0).await.map(drop)
    }

    /// Regions visible to the account; `region` only picks the endpoint asked.
    pub async fn describe_regions(&self, region: &str) -> Result<Vec<Region>, EcsError> {
        let mut p = Params::default();
        p.set("AcceptLanguage", "en-US");
        let answer: DescribeRegionsResponse = self.call_typed(region, "DescribeRegions", p).await?;
        Ok(answer.regions)
    }

    /// Adds or overwrites tags on up to 50 resources of one type.
    pub async fn tag_resources(
        &self,
        region: &str,
        resource_type: &str,
        resource_ids: &[String],
        tags: &[(String, String)],
    ) -> Result<(), EcsError> {
        let mut p = Params::region(region);
        p.set("ResourceType", resource_type);
        p.list("ResourceId", resource_ids);
        p.tags("Tag", tags);
        self.call(region, "TagResources", &p.0).await.map(drop)
    }

    pub async fn list_tag_resources(
        &self,
        request: &ListTagResourcesRequest,
    ) -> Result<ListTagResourcesResponse, EcsError> {
        self.call_typed(&request.region, "ListTagResources", request.params())
            .await
    }
}

/// Walks the pages of a listing: `fetch(n)` answers page `n`'s items and the listing's
/// `TotalCount`. Stops when the count is reached or a page comes back empty; more than
/// [`MAX_PAGES`] pages is an error.
async fn all_pages<T, F, Fut>(action: &str, mut fetch: F) -> Result<Vec<T>, EcsError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, u64), EcsError>>,
{
    let mut items = Vec::new();
    for page_number in 1..=MAX_PAGES {
        let (page, total_count) = fetch(page_number).await?;
        let received = page.len();
        items.extend(page);
        if items.len() as u64 >= total_count {
            return Ok(items);
        }
        // An empty page ends the walk whatever TotalCount claims: it also shrinks while items
        // are deleted between two pages, and asking again would loop on nothing.
        if received == 0 {
            tracing::debug!(
                action,
                page_number,
                total_count,
                listed = items.len(),
                "page empty before TotalCount was reached; listing ends here"
            );
            return Ok(items);
        }
    }
    Err(EcsError::Decode {
        status: 200,
        message: format!(
            "{action} still promised more items after {MAX_PAGES} pages ({} items); listing abandoned",
            items.len()
        ),
        request_id: None,
    })
}

fn decode<T: DeserializeOwned>(action: &str, value: Value) -> Result<T, EcsError> {
    let request_id = text(&value, &["RequestId"]);
    serde_json::from_value(value).map_err(|e| EcsError::Decode {
        status: 200,
        message: format!("unexpected {action} answer: {e}"),
        request_id,
    })
}

fn text(value: &Value, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| value.get(*name).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn required(value: &Value, action: &str, names: &[&str]) -> Result<String, EcsError> {
    text(value, names).ok_or_else(|| EcsError::Decode {
        status: 200,
        message: format!("{action} answer has no {}", names.join(" or ")),
        request_id: text(value, &["RequestId"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
        params
            .0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn copy_image_uses_the_documented_wire_names() {
        let request = CopyImageRequest {
            source_region: "cn-hangzhou".into(),
            image_id: "m-src".into(),
            destination_region: "cn-shanghai".into(),
            destination_image_name: Some("web-v1".into()),
            destination_description: None,
            encrypted: Some(true),
            kms_key_id: Some("key-1".into()),
            resource_group_id: Some(String::new()),
            tags: vec![
                ("imageops.dev/owner-uid".into(), "uid-1".into()),
                ("team".into(), "web".into()),
            ],
            client_token: Some("uid-1".into()),
        };
        let p = request.params();
        assert_eq!(get(&p, "RegionId"), Some("cn-hangzhou"));
        assert_eq!(get(&p, "DestinationRegionId"), Some("cn-shanghai"));
        assert_eq!(get(&p, "Encrypted"), Some("true"));
        assert_eq!(get(&p, "KMSKeyId"), Some("key-1"));
        assert_eq!(get(&p, "Tag.2.Key"), Some("team"));
        assert_eq!(get(&p, "Tag.1.Value"), Some("uid-1"));
        assert_eq!(get(&p, "ClientToken"), Some("uid-1"));
        assert_eq!(get(&p, "DestinationDescription"), None);
        assert_eq!(
            get(&p, "ResourceGroupId"),
            None,
            "empty values are not sent"
        );
    }

    #[test]
    fn describe_images_joins_statuses() {
        let request = DescribeImagesRequest {
            region: "cn-shanghai".into(),
            status: vec![
                ImageStatus::Creating,
                ImageStatus::Waiting,
                ImageStatus::Available,
            ],
            tags: vec![("imageops.dev/owner-uid".into(), "u".into())],
            page_size: Some(100),
            ..Default::default()
        };
        let p = request.params();
        assert_eq!(get(&p, "Status"), Some("Creating,Waiting,Available"));
        assert_eq!(get(&p, "Tag.1.Key"), Some("imageops.dev/owner-uid"));
        assert_eq!(get(&p, "PageSize"), Some("100"));
        assert_eq!(get(&p, "PageNumber"), None);
        let none = DescribeImagesRequest::default().params();
        assert_eq!(get(&none, "Status"), None);
    }

    #[test]
    fn import_image_flattens_disks() {
        let request = ImportImageRequest {
            region: "cn-hangzhou".into(),
            disk_device_mappings: vec![DiskDeviceMapping {
                oss_bucket: "b".into(),
                oss_object: "o.qcow2".into(),
                format: Some("QCOW2".into()),
                disk_image_size: Some(40),
            }],
            ..Default::default()
        };
        let p = request.params();
        assert_eq!(get(&p, "DiskDeviceMapping.1.OSSObject"), Some("o.qcow2"));
        assert_eq!(get(&p, "DiskDeviceMapping.1.DiskImageSize"), Some("40"));
    }

    #[test]
    fn describe_tasks_sends_every_filter() {
        let request = DescribeTasksRequest {
            region: "cn-hangzhou".into(),
            task_ids: vec!["t-1".into(), "t-2".into()],
            resource_ids: vec!["m-1".into(), "m-2".into()],
            task_action: Some("ImportImage".into()),
            task_status: Some("Failed".into()),
            page_number: Some(2),
            page_size: Some(100),
        };
        let p = request.params();
        assert_eq!(get(&p, "TaskIds"), Some("t-1,t-2"));
        assert_eq!(get(&p, "ResourceIds.1"), Some("m-1"));
        assert_eq!(get(&p, "ResourceIds.2"), Some("m-2"));
        assert_eq!(get(&p, "TaskAction"), Some("ImportImage"));
        assert_eq!(get(&p, "TaskStatus"), Some("Failed"));
        assert_eq!(get(&p, "PageNumber"), Some("2"));
        assert_eq!(get(&p, "PageSize"), Some("100"));
        let none = DescribeTasksRequest::default().params();
        assert_eq!(none.0.len(), 1, "only RegionId: {:?}", none.0);
    }

    #[test]
    fn task_ids_accept_old_and_new_names() {
        let new = serde_json::json!({"RequestId": "R", "TaskId": "t-1"});
        let old = serde_json::json!({"RequestId": "R", "ExportTaskId": "t-2"});
        assert_eq!(
            required(&new, "ExportImage", &["TaskId", "ExportTaskId"]).unwrap(),
            "t-1"
        );
        assert_eq!(
            required(&old, "ExportImage", &["TaskId", "ExportTaskId"]).unwrap(),
            "t-2"
        );
        let err = required(
            &serde_json::json!({"RequestId": "R"}),
            "ExportImage",
            &["TaskId"],
        )
        .unwrap_err();
        assert_eq!(err.request_id(), Some("R"));
    }
}
