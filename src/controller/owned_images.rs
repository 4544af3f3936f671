//! The images an object owns, found in ECS: through the owner-tag index, by id (no tag filter:
//! tag indexes lag), or by reading every own image's tags. Shared by the kinds that make images.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::image_copy::DeletionPolicy;
use crate::api::{OWNER_UID_TAG, Word};
use crate::controller::Error;
use crate::controller::listings::followed_statuses;
use crate::controller::task::{CloudTask, Notice, Pass};
use crate::ecs::{DescribeImagesRequest, EcsClient, EcsError, Image};

/// ECS's view of an image an object owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSnapshot {
    pub image_id: String,
    pub state: ImageState,
    /// As ECS reports it, e.g. `45%`: one of a few words, kept once for the whole process
    /// however many images of a listing show it.
    pub progress: Option<Word>,
    /// `Usable` when ECS says; `None` when it does not.
    pub usable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Queued behind other copies to the same region.
    Waiting,
    Creating,
    Available,
    /// `CreateFailed`, `UnAvailable` or anything else that will not become Available.
    Failed(String),
}

impl ImageState {
    pub fn from_ecs(status: &str) -> ImageState {
        match status {
            "Waiting" => ImageState::Waiting,
            "Creating" => ImageState::Creating,
            "Available" => ImageState::Available,
            other => ImageState::Failed(other.to_string()),
        }
    }

    pub fn in_flight(&self) -> bool {
        matches!(self, ImageState::Waiting | ImageState::Creating)
    }
}

/// The image to keep among several this object owns — a live one before a failed one, the
/// furthest along first — and the rest.
pub fn keep_best(images: &[ImageSnapshot]) -> (ImageSnapshot, Vec<ImageSnapshot>) {
    let rank = |s: &ImageSnapshot| match s.state {
        ImageState::Available => 0,
        ImageState::Creating => 1,
        ImageState::Waiting => 2,
        ImageState::Failed(_) => 3,
    };
    let mut sorted = images.to_vec();
    sorted.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.image_id.cmp(&b.image_id)));
    let best = sorted.remove(0);
    (best, sorted)
}

/// The next step of releasing one owned image on the delete path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupStep {
    /// The work that makes the image is in flight: cancel it.
    Cancel { image_id: String },
    /// ECS cannot cancel that work: wait for it to finish, then apply the policy.
    WaitForTask,
    /// Finished (or failed) with `deletionPolicy: Delete`: DeleteImage.
    Delete { image_id: String },
    /// Finished with `deletionPolicy: Retain`: leave the image.
    Retain { image_id: String },
    /// Nothing exists: release the finalizer.
    Done,
}

/// `image` as ECS shows it now (`None`: it does not exist); `cancel_refused`: ECS already said
/// it cannot cancel the work on it.
pub fn release_step(
    policy: DeletionPolicy,
    image: Option<&ImageSnapshot>,
    cancel_refused: bool,
) -> CleanupStep {
    let Some(image) = image else {
        return CleanupStep::Done;
    };
    match (&image.state, policy) {
        (state, _) if state.in_flight() && cancel_refused => CleanupStep::WaitForTask,
        (state, _) if state.in_flight() => CleanupStep::Cancel {
            image_id: image.image_id.clone(),
        },
        (_, DeletionPolicy::Delete) => CleanupStep::Delete {
            image_id: image.image_id.clone(),
        },
        (_, DeletionPolicy::Retain) => CleanupStep::Retain {
            image_id: image.image_id.clone(),
        },
    }
}

/// The images in `region` tagged as owned by `uid`, through the tag index.
pub async fn lookup_owned(
    ecs: &EcsClient,
    region: &str,
    uid: &str,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    let tag = (OWNER_UID_TAG.to_string(), uid.to_string());
    owned_images_in(ecs, region, uid, vec![tag]).await
}

/// The images of the account in `region` whose tags name `uid` as owner, found without a tag
/// filter (so without the tag index); costs a listing of every own image in the region, so it
/// is only for the rare case of an unrecorded copy on the delete path.
pub async fn lookup_owned_untagged(
    ecs: &EcsClient,
    region: &str,
    uid: &str,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    owned_images_in(ecs, region, uid, Vec::new()).await
}

/// Own images of `region` matching the `tags` filter whose owner tag is `uid`.
pub async fn owned_images_in(
    ecs: &EcsClient,
    region: &str,
    uid: &str,
    tags: Vec<(String, String)>,
) -> Result<Vec<ImageSnapshot>, EcsError> {
    let images = ecs
        .describe_all_images(&DescribeImagesRequest {
            region: region.to_string(),
            status: followed_statuses(),
            image_owner_alias: Some("self".into()),
            tags,
            page_size: Some(crate::ecs::MAX_PAGE_SIZE),
            ..Default::default()
        })
        .await?;
    Ok(images
        .iter()
        .filter(|image| image.tag(OWNER_UID_TAG) == Some(uid))
        .map(snapshot)
        .collect())
}

/// What a lookup by image id found.
pub enum Lookup {
    Exists(ImageSnapshot),
    Absent,
    /// ECS listed something that could not be decoded: neither present nor absent.
    Unreadable,
}

pub async fn describe_one(
    ecs: &EcsClient,
    region: &str,
    image_id: &str,
) -> Result<Lookup, EcsError> {
    let response = ecs
        .describe_images(&DescribeImagesRequest {
            region: region.to_string(),
            image_id: Some(image_id.to_string()),
            status: followed_statuses(),
            ..Default::default()
        })
        .await;
    match response {
        Ok(r) => Ok(match r.images.iter().find(|i| i.image_id == image_id) {
            Some(image) => Lookup::Exists(snapshot(image)),
            None if r.total_count > r.images.len() as u64 => Lookup::Unreadable,
            None => Lookup::Absent,
        }),
        Err(e) if e.code() == Some("InvalidImageId.NotFound") => Ok(Lookup::Absent),
        Err(e) => Err(e),
    }
}

pub fn snapshot(image: &Image) -> ImageSnapshot {
    ImageSnapshot {
        image_id: image.image_id.clone(),
        state: ImageState::from_ecs(image.status.as_str()),
        progress: image.progress.as_deref().map(Word::new),
        usable: image.usable,
    }
}

/// Every image an object owns in `region`, each with the policy it gets: the
/// recorded image (or, if none, the best one found) follows `deletionPolicy`; any other is a
/// duplicate and is removed. Duplicates come first so the kept image is handled last.
pub async fn with_policies(
    ecs: &EcsClient,
    region: &str,
    recorded_id: Option<&str>,
    uid: &str,
    policy: DeletionPolicy,
) -> Result<Vec<(ImageSnapshot, DeletionPolicy)>, Error> {
    let mut recorded = None;
    if let Some(id) = recorded_id {
        match describe_one(ecs, region, id).await? {
            Lookup::Exists(image) => recorded = Some(image),
            Lookup::Absent => {}
            Lookup::Unreadable => {
                return Err(Error::Unreadable(format!(
                    "ECS answered about {id} with an item that could not be decoded"
                )));
            }
        }
    }
    let mut tagged = lookup_owned(ecs, region, uid).await?;
    if recorded_id.is_none() {
        // A call that makes an image was sent but its image never recorded (a crash in
        // between). The tag index may not show that image yet, and releasing the finalizer now
        // would orphan it: read the owner tag off every image of the account in the region.
        for image in lookup_owned_untagged(ecs, region, uid).await? {
            if !tagged.iter().any(|t| t.image_id == image.image_id) {
                tagged.push(image);
            }
        }
    }
    tagged.retain(|image| Some(image.image_id.as_str()) != recorded_id);
    let (kept, duplicates) = match recorded {
        Some(image) => (Some(image), tagged),
        None if tagged.is_empty() => (None, tagged),
        None => {
            let (best, rest) = keep_best(&tagged);
            (Some(best), rest)
        }
    };
    let mut images: Vec<_> = duplicates
        .into_iter()
        .map(|image| (image, DeletionPolicy::Delete))
        .collect();
    images.extend(kept.map(|image| (image, policy)));
    Ok(images)
}

/// Deletes an owned image (one already gone counts as deleted) and says so in an event;
/// `noun` names it for people, e.g. "destination image".
pub async fn delete<K: CloudTask>(
    pass: &Pass<'_, K>,
    region: &str,
    image_id: &str,
    noun: &str,
) -> Result<(), EcsError> {
    match pass.ecs.client.delete_image(region, image_id, false).await {
        Ok(()) => {}
        Err(e) if e.code() == Some("InvalidImageId.NotFound") => {}
        Err(e) => return Err(e),
    }
    tracing::info!(kind = K::KIND, object = %pass.name(), image = %image_id, "deleted {noun}");
    let note = format!("deleted {noun} {image_id}");
    pass.publish(&[Notice::normal("Deleted", note)]).await;
    Ok(())
}

/// Leaves an owned image in place per `deletionPolicy: Retain`, and says so in an event.
pub async fn retain<K: CloudTask>(pass: &Pass<'_, K>, image_id: &str, noun: &str) {
    let note = format!("deletionPolicy Retain: kept {noun} {image_id}");
    pass.publish(&[Notice::normal("Retained", note)]).await;
}

/// A listing must start this long after the image was recorded before an absent image counts as
/// lost: `startTime` has whole seconds only.
const LISTING_MARGIN: SignedDuration = SignedDuration::from_secs(2);

/// Whether a listing taken at `taken_at` started clearly after the image was recorded at
/// `recorded` (a missing or absurd time — status is user-writable — counts as not after).
pub fn listed_after(recorded: Option<Timestamp>, taken_at: Timestamp) -> bool {
    recorded
        .and_then(|t| t.checked_add(LISTING_MARGIN).ok())
        .is_some_and(|t| taken_at > t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_counts_only_when_taken_after_the_recording() {
        let now = Timestamp::now();
        let earlier = now - SignedDuration::from_secs(10);
        assert!(listed_after(Some(earlier), now));
        assert!(!listed_after(Some(now), now));
        assert!(!listed_after(None, now));
        assert!(
            !listed_after(Some(Timestamp::MAX), now),
            "a start time at the end of time neither panics nor counts"
        );
    }
}
