//! Client for the Alibaba Cloud ECS OpenAPI, version 2014-05-26. No Kubernetes here.
//!
//! - [`sign`]: V3/V1 signature primitives (shared with the emulator, which verifies them).
//! - [`EcsClient`]: signed calls with per-region rate limits and retries, typed operations.
//! - [`CredentialsProvider`]: static credentials or the standard chain (env, RRSA).
//! - [`cli`]: the `ecs` subcommand.

pub mod cli;
mod client;
mod credentials;
mod error;
mod fence;
mod lenient;
mod ops;
mod request;
mod response;
mod retry;
mod rrsa;
pub mod sign;
mod types;

pub use client::{CallObserver, EcsClient, EcsClientConfig};
pub use credentials::{Credentials, CredentialsProvider};
pub use error::{ApiErrorDetails, EcsError};
pub use fence::Fence;
pub use lenient::undecodable_items;
pub use ops::{
    CopyImageRequest, DescribeImagesRequest, DescribeTasksRequest, DiskDeviceMapping,
    ExportImageRequest, ImportImageRequest, ListTagResourcesRequest, MAX_PAGE_SIZE, MAX_PAGES,
    MAX_TASK_FILTER_IDS,
};
pub use request::{API_VERSION, SignatureVersion};
pub use retry::Backoff;
pub use rrsa::{REFRESH_BEFORE_EXPIRY, RrsaConfig};
pub use types::{
    CopyImageResponse, DescribeImagesResponse, DescribeTasksResponse, ExportImageResponse, Image,
    ImageStatus, ImportImageResponse, ListTagResourcesResponse, OperationProgress, Region,
    RelatedItem, Tag, TagResource, Task, TaskAttribute, TaskFailure, TaskStatus, parse_percent,
};
