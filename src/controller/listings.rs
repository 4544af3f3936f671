//! Region-batched listing of the images this operator owns.
//!
//! Every in-flight copy to a region is followed from one `DescribeImages` listing of that region
//! (owner-tag filter, every status, 100 per page), shared by all objects and refreshed at most
//! once per poll interval. So the number of DescribeImages calls grows with regions and ticks,
//! not with the number of objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::api::OWNER_UID_TAG;
use crate::ecs::{DescribeImagesRequest, EcsClient, EcsError, Image, ImageStatus, MAX_PAGE_SIZE};

/// Every status a copy can be in. Without an explicit list ECS returns only Available images;
/// an owned image missing from the list would look deleted and be copied again, so `Deprecated`
/// (someone deprecated the copy) is listed too.
pub fn followed_statuses() -> Vec<ImageStatus> {
    vec![
        ImageStatus::Creating,
        ImageStatus::Waiting,
        ImageStatus::Available,
        ImageStatus::UnAvailable,
        ImageStatus::CreateFailed,
        ImageStatus::Deprecated,
    ]
}

/// One region's owned images at one moment.
#[derive(Debug)]
pub struct Listing {
    /// When the listing request started: an image recorded before this must be in it.
    pub taken_at: Timestamp,
    pub images: HashMap<String, Image>,
}

/// Key: (region, AccessKeyId) — objects with their own Secret may see another account.
type Key = (String, String);

struct Slot {
    fetched: Option<(Instant, Arc<Listing>)>,
}

pub struct RegionListings {
    max_age: Duration,
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl RegionListings {
    /// `max_age` is how old a shared listing may be before the next reader refreshes it.
    pub fn new(max_age: Duration) -> Self {
        RegionListings {
            max_age,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The region's listing, fetched only if the shared one is older than `max_age`. Concurrent
    /// callers of one region wait for a single fetch instead of each making their own.
    pub async fn get(
        &self,
        ecs: &EcsClient,
        access_key_id: &str,
        region: &str,
    ) -> Result<Arc<Listing>, EcsError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry((region.to_string(), access_key_id.to_string()))
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot { fetched: None })))
                .clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, listing)) = &slot.fetched
            && at.elapsed() < self.max_age
        {
            return Ok(listing.clone());
        }
        let taken_at = Timestamp::now();
        let images = ecs
            .describe_all_images(&DescribeImagesRequest {
                region: region.to_string(),
                status: followed_statuses(),
                image_owner_alias: Some("self".into()),
                // Key only: every image this operator owns, whatever the owner's UID.
                tags: vec![(OWNER_UID_TAG.to_string(), String::new())],
                page_size: Some(MAX_PAGE_SIZE),
                ..Default::default()
            })
            .await?;
        let listing = Arc::new(Listing {
            taken_at,
            images: images
                .into_iter()
                .map(|i| (i.image_id.clone(), i))
                .collect(),
        });
        slot.fetched = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }
}
