//! What an `ImageReplication` wants done, as a pure function of its spec, its status and the
//! child `ImageCopy` objects it owns: which copies to create, change or delete, what to publish,
//! and the status to show.
//!
//! Generations: a child's *template* is its `ImageCopy` spec without the two fields a copy may
//! change in place (`deletionPolicy`, `credentialsSecretRef`). A child whose template is what the
//! replication now wants for its region is *current*; any other child of a region still wanted
//! is *previous*, and stays — published — until every region's current child is Ready, so that
//! consumers are never left without an image. A child of a region no longer wanted goes at once.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::image_copy::CopyPhase;
use crate::api::image_replication::RegionStatus;
use crate::api::{
    Condition, ImageCopy, ImageCopySpec, ImageReplication, ImageReplicationSpec,
    ImageReplicationStatus, REPLICATION_UID_LABEL,
};
use crate::controller::conditions::{self, QUEUED, READY, RECONCILING, STALLED, Wanted};
use crate::controller::task::decide::Notice;

/// Label with a child's destination region, for `kubectl get imgcp -l`.
pub const REGION_LABEL: &str = "imageops.dev/region";
/// Label with the hash of a child's template (see the module docs).
pub const TEMPLATE_LABEL: &str = "imageops.dev/template";
/// Keys of the published ConfigMap besides the regions.
pub const SOURCE_REGION_KEY: &str = "sourceRegionId";
pub const SOURCE_IMAGE_KEY: &str = "sourceImageId";

/// Longest object name Kubernetes accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The copy this replication wants in `region`, without the fields that may change in place.
pub fn template(spec: &ImageReplicationSpec, region: &str) -> ImageCopySpec {
    ImageCopySpec {
        source_region_id: spec.source_region_id.clone(),
        source_image_id: spec.source_image_id.clone(),
        destination_region_id: region.to_string(),
        destination_image_name: spec.destination_image_name.clone(),
        destination_description: spec.destination_description.clone(),
        encrypted: spec.encrypted,
        kms_key_id: spec
            .kms_key_ids
            .as_ref()
            .and_then(|keys| keys.get(region).cloned()),
        resource_group_id: spec.resource_group_id.clone(),
        tags: spec.tags.clone(),
        deletion_policy: Default::default(),
        credentials_secret_ref: None,
    }
}

/// A short, stable hash of a child's template: equal specs hash equal whatever their mutable
/// fields say.
pub fn template_hash(spec: &ImageCopySpec) -> String {
    let mut fixed = spec.clone();
    fixed.deletion_policy = Default::default();
    fixed.credentials_secret_ref = None;
    // Serialising a struct of strings, bools and ordered maps cannot fail.
    let bytes = serde_json::to_vec(&fixed).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..4])
}

/// The name of the child for `region` with template hash `hash`: `<replication>-<region>-<hash>`,
/// the replication's part shortened when the whole would be too long.
pub fn child_name(replication: &str, region: &str, hash: &str) -> String {
    let suffix = format!("-{region}-{hash}");
    let room = MAX_NAME.saturating_sub(suffix.len());
    let mut head: String = replication.chars().take(room).collect();
    // A name may not have `-` or `.` just before the suffix's `-`... nor end with them.
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}{suffix}")
}

/// The full child object for `region`, owned by `replication`.
pub fn child(replication: &ImageReplication, uid: &str, region: &str) -> ImageCopy {
    let spec = &replication.spec;
    let mut copy = template(spec, region);
    let hash = template_hash(&copy);
    copy.deletion_policy = spec.deletion_policy;
    copy.credentials_secret_ref = spec.credentials_secret_ref.clone();
    let name = child_name(&replication.name_any(), region, &hash);
    let labels = BTreeMap::from([
        (REPLICATION_UID_LABEL.to_string(), uid.to_string()),
        (REGION_LABEL.to_string(), region.to_string()),
        (TEMPLATE_LABEL.to_string(), hash),
    ]);
    ImageCopy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: replication.namespace(),
            labels: Some(labels),
            // The reference that makes the copy the replication's: `kubectl` shows the owner,
            // and a cluster's garbage collector removes what outlives the replication.
            owner_references: replication
                .controller_owner_ref(&())
                .map(|owner| vec![owner]),
            ..Default::default()
        },
        spec: copy,
        status: None,
    }
}

pub fn owned_by(object: &impl ResourceExt, uid: &str) -> bool {
    object.owner_references().iter().any(|o| o.uid == uid)
}

/// The two fields of a child that follow the replication without a new copy.
#[derive(Clone, Debug, PartialEq)]
pub struct MutableFields {
    pub name: String,
    pub deletion_policy: crate::api::common::DeletionPolicy,
    pub credentials_secret_ref: Option<crate::api::common::SecretReference>,
}

/// What to do in one pass while the replication lives.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub create: Vec<ImageCopy>,
    pub update: Vec<MutableFields>,
    /// Children to delete; their finalizers cancel or apply the deletion policy.
    pub delete: Vec<String>,
    /// The ConfigMap's data: the served image of each region, and the source they came from.
    pub published: BTreeMap<String, String>,
    pub status: ImageReplicationStatus,
    pub notices: Vec<Notice>,
}

/// What a child shows, read once.
struct ChildView<'a> {
    copy: &'a ImageCopy,
    region: &'a str,
    hash: String,
    deleting: bool,
    ready: bool,
}

impl<'a> ChildView<'a> {
    fn new(copy: &'a ImageCopy) -> Self {
        let conditions = child_conditions(copy);
        ChildView {
            region: &copy.spec.destination_region_id,
            hash: template_hash(&copy.spec),
            deleting: copy.metadata.deletion_timestamp.is_some(),
            ready: conditions::is_true(conditions, READY),
            copy,
        }
    }

    fn image_id(&self) -> Option<&'a str> {
        self.copy.status.as_ref()?.image_id.as_deref()
    }

    fn serving(&self) -> Option<&'a str> {
        if self.ready && !self.deleting {
            self.image_id()
        } else {
            None
        }
    }
}

fn child_conditions(copy: &ImageCopy) -> &[Condition] {
    copy.status.as_ref().map_or(&[], |s| &s.conditions)
}

/// The plan for a live replication, from its children (only those it owns).
pub fn plan(replication: &ImageReplication, uid: &str, children: &[ImageCopy], now: &Time) -> Plan {
    let spec = &replication.spec;
    let previous = replication.status.clone().unwrap_or_default();
    let views: Vec<ChildView> = children.iter().map(ChildView::new).collect();
    let regions = wanted_regions(spec);
    let mut plan = Plan::default();

    struct Region<'a, 'b> {
        id: &'a str,
        want: ImageCopy,
        current: Option<&'b ChildView<'b>>,
        previous: Vec<&'b ChildView<'b>>,
    }
    let mut rows: Vec<Region> = Vec::new();
    for region in &regions {
        let want = child(replication, uid, region);
        let hash = template_hash(&want.spec);
        let current = views.iter().find(|v| v.region == *region && v.hash == hash);
        let previous: Vec<&ChildView> = views
            .iter()
            .filter(|v| v.region == *region && v.hash != hash)
            .collect();
        rows.push(Region {
            id: region,
            want,
            current,
            previous,
        });
    }

    for row in &rows {
        match row.current {
            None => plan.create.push(row.want.clone()),
            Some(current) if !current.deleting => {
                if current.copy.spec.deletion_policy != spec.deletion_policy
                    || current.copy.spec.credentials_secret_ref != spec.credentials_secret_ref
                {
                    plan.update.push(mutable_fields(current.copy, spec));
                }
            }
            // Deleted by hand: it is made again once its finalizer is done.
            Some(_) => {}
        }
        for old in row.previous.iter().filter(|v| !v.deleting) {
            if old.copy.spec.deletion_policy != spec.deletion_policy
                || old.copy.spec.credentials_secret_ref != spec.credentials_secret_ref
            {
                plan.update.push(mutable_fields(old.copy, spec));
            }
        }
    }

    let all_ready = rows
        .iter()
        .all(|r| r.current.is_some_and(|c| c.ready && !c.deleting));
    let rolling = rows.iter().any(|r| r.previous.iter().any(|v| !v.deleting));
    if all_ready {
        for row in &rows {
            plan.delete.extend(
                row.previous
                    .iter()
                    .filter(|v| !v.deleting)
                    .map(|v| v.copy.name_any()),
            );
        }
    }
    let removed: Vec<&ChildView> = views
        .iter()
        .filter(|v| !regions.iter().any(|r| r == v.region))
        .collect();
    plan.delete.extend(
        removed
            .iter()
            .filter(|v| !v.deleting)
            .map(|v| v.copy.name_any()),
    );

    // What consumers see: while a new generation rolls out, each region keeps its Ready image
    // of the previous one, so the map never mixes two sources where it can help it.
    let mut source = (spec.source_region_id.clone(), spec.source_image_id.clone());
    for row in &rows {
        let old_serving = row.previous.iter().find_map(|v| v.serving());
        let current_serving = row.current.and_then(|c| c.serving());
        let served = if all_ready {
            current_serving
        } else if let Some(old) = old_serving {
            if let Some(old_view) = row.previous.iter().find(|v| v.serving().is_some()) {
                source = (
                    old_view.copy.spec.source_region_id.clone(),
                    old_view.copy.spec.source_image_id.clone(),
                );
            }
            Some(old)
        } else {
            current_serving
        };
        if let Some(image) = served {
            plan.published.insert(row.id.to_string(), image.to_string());
        }
    }
    plan.published
        .insert(SOURCE_REGION_KEY.to_string(), source.0.clone());
    plan.published
        .insert(SOURCE_IMAGE_KEY.to_string(), source.1.clone());

    // Status rows and conditions.
    let mut status = ImageReplicationStatus {
        observed_generation: replication.metadata.generation,
        published_to: previous.published_to.clone(),
        ..Default::default()
    };
    let mut progress_sum = 0u32;
    let mut queued = Vec::new();
    let mut stalled = Vec::new();
    let mut ready_now = Vec::new();
    for row in &rows {
        let mut line = RegionStatus {
            region_id: row.id.to_string(),
            image_copy: Some(row.want.name_any()),
            previous_image_id: row
                .previous
                .iter()
                .find_map(|v| v.serving())
                .map(str::to_string),
            ..Default::default()
        };
        if let Some(current) = row.current {
            let child_status = current.copy.status.clone().unwrap_or_default();
            line.image_id = child_status.image_id.clone();
            line.phase = child_status.phase;
            line.progress = child_status.progress.clone();
            if current.ready && !current.deleting {
                ready_now.push(row.id);
                progress_sum += 100;
            } else {
                progress_sum += percent(child_status.progress.as_deref()).min(99);
            }
            if child_status.phase == Some(CopyPhase::Queued) {
                queued.push(row.id);
            }
            if let Some(c) =
                conditions::find(&child_status.conditions, STALLED).filter(|c| c.status == "True")
            {
                stalled.push((row.id, c.reason.to_string(), c.message.clone()));
            }
        } else {
            line.phase = Some(CopyPhase::Pending);
        }
        status.regions.push(line);
    }
    let total = rows.len();
    status.ready_regions = ready_now.len() as i32;
    status.total_regions = total as i32;
    status.regions_ready = Some(format!("{}/{}", ready_now.len(), total));
    status.progress = Some(format!("{}%", progress_sum / total.max(1) as u32));

    let count = format!("{}/{} regions ready", ready_now.len(), total);
    let mut wanted = Vec::new();
    match stalled.first() {
        Some((region, reason, _)) => {
            let message = stalled
                .iter()
                .map(|(r, reason, message)| format!("{r}: {reason}: {message}"))
                .collect::<Vec<_>>()
                .join("; ");
            wanted.push(Wanted::new(
                STALLED,
                true,
                &format!("{region}:{reason}"),
                message,
            ));
        }
        None => wanted.push(Wanted::new(STALLED, false, "Progressing", "")),
    }
    if all_ready {
        wanted.push(Wanted::new(READY, true, "AllRegionsReady", count.clone()));
    } else {
        let reason = if stalled.is_empty() {
            "Replicating"
        } else {
            "Stalled"
        };
        wanted.push(Wanted::new(READY, false, reason, count.clone()));
    }
    let mut work = Vec::new();
    if !all_ready {
        work.push(count.clone());
    }
    if !queued.is_empty() {
        work.push(format!("queued in ECS: {}", queued.join(", ")));
    }
    if rolling {
        work.push("previous generation kept until every region is Ready".to_string());
    }
    if !removed.is_empty() {
        let names: Vec<&str> = removed.iter().map(|v| v.region).collect();
        work.push(format!("removing copies in {}", names.join(", ")));
    }
    // A previous copy's deletion can be refused for long (its image still used by instances):
    // the replication says so rather than look finished.
    let retiring: Vec<&ChildView> = rows
        .iter()
        .flat_map(|r| r.previous.iter().copied())
        .filter(|v| v.deleting)
        .collect();
    if !retiring.is_empty() {
        work.push(format!(
            "deleting {} cop{} of the previous generation",
            retiring.len(),
            if retiring.len() == 1 { "y" } else { "ies" }
        ));
    }
    let blocked: Vec<String> = removed
        .iter()
        .chain(&retiring)
        .filter_map(|v| {
            conditions::find(child_conditions(v.copy), STALLED)
                .filter(|c| c.status == "True")
                .map(|c| format!("{} ({})", v.copy.name_any(), c.reason))
        })
        .collect();
    if !blocked.is_empty() {
        work.push(format!("deletion blocked: {}", blocked.join(", ")));
    }
    let busy = !work.is_empty() && stalled.len() < total;
    let reason = if rolling {
        "RollingOut"
    } else if !all_ready {
        "Replicating"
    } else if !removed.is_empty() {
        "RemovingRegions"
    } else if !retiring.is_empty() {
        "RemovingPreviousGeneration"
    } else {
        "Ready"
    };
    wanted.push(Wanted::new(RECONCILING, busy, reason, work.join("; ")));
    if queued.is_empty() {
        wanted.push(Wanted::new(QUEUED, false, "NotQueued", ""));
    } else {
        wanted.push(Wanted::new(
            QUEUED,
            true,
            "Waiting",
            format!(
                "ECS queues the copies to {} behind other copies to those regions",
                queued.join(", ")
            ),
        ));
    }
    status.conditions = conditions::merge(
        &previous.conditions,
        &wanted,
        replication.metadata.generation,
        now,
    );

    // Events: a region becoming Ready, the whole replication becoming Ready, a stall.
    for line in status
        .regions
        .iter()
        .filter(|l| ready_now.contains(&l.region_id.as_str()))
    {
        let was_ready = previous.regions.iter().any(|r| {
            r.region_id == line.region_id
                && r.phase == Some(CopyPhase::Available)
                && r.image_id == line.image_id
        });
        if !was_ready {
            plan.notices.push(
                Notice::normal(
                    "RegionReady",
                    format!(
                        "{}: image {} is Ready",
                        line.region_id,
                        line.image_id.as_deref().unwrap_or_default()
                    ),
                )
                .with_action(format!("Ready-{}", line.region_id)),
            );
        }
    }
    if all_ready && !conditions::is_true(&previous.conditions, READY) {
        plan.notices.push(Notice::normal(
            "Ready",
            format!("the image is Ready in all {total} regions"),
        ));
    }
    if let Some((region, reason, message)) = stalled.first()
        && !conditions::is_true(&previous.conditions, STALLED)
    {
        plan.notices.push(Notice::warning(
            "Stalled",
            format!("{region}: {reason}: {message}"),
        ));
    }
    for name in &plan.create {
        plan.notices.push(
            Notice::normal(
                "CopyCreated",
                format!("created ImageCopy {}", name.name_any()),
            )
            .with_action(format!("Create-{}", name.spec.destination_region_id)),
        );
    }
    for name in &plan.delete {
        plan.notices.push(
            Notice::normal("CopyDeleted", format!("deleted ImageCopy {name}"))
                .with_action(format!("Delete-{name}")),
        );
    }
    plan.status = status;
    plan
}

fn mutable_fields(copy: &ImageCopy, spec: &ImageReplicationSpec) -> MutableFields {
    MutableFields {
        name: copy.name_any(),
        deletion_policy: spec.deletion_policy,
        credentials_secret_ref: spec.credentials_secret_ref.clone(),
    }
}

/// The destination regions, each once, in the spec's order (admission already refuses
/// duplicates; this keeps a plan sane for objects from before that rule).
fn wanted_regions(spec: &ImageReplicationSpec) -> Vec<String> {
    let mut regions: Vec<String> = Vec::new();
    for region in &spec.destination_region_ids {
        if region != &spec.source_region_id && !regions.contains(region) {
            regions.push(region.clone());
        }
    }
    regions
}

fn percent(progress: Option<&str>) -> u32 {
    progress
        .and_then(|p| p.trim().trim_end_matches('%').trim().parse::<f64>().ok())
        .map_or(0, |p| p.clamp(0.0, 100.0) as u32)
}

/// What to do in one pass while the replication is being deleted: delete every child, and
/// show what is left until they are gone.
#[derive(Clone, Debug)]
pub struct Teardown {
    pub delete: Vec<String>,
    /// Children still there (their finalizers cancelling or applying the deletion policy).
    pub remaining: usize,
    pub status: ImageReplicationStatus,
}

pub fn teardown(replication: &ImageReplication, children: &[ImageCopy], now: &Time) -> Teardown {
    let previous = replication.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    for row in &mut status.regions {
        let child = children
            .iter()
            .find(|c| row.image_copy.as_deref() == Some(c.name_any().as_str()));
        if let Some(child_status) = child.and_then(|c| c.status.as_ref()) {
            row.phase = child_status.phase;
            row.progress = child_status.progress.clone();
        }
    }
    let message = format!(
        "deleting {} ImageCopy object{}",
        children.len(),
        if children.len() == 1 { "" } else { "s" }
    );
    status.conditions = conditions::merge(
        &previous.conditions,
        &[
            Wanted::new(READY, false, "Deleting", message.clone()),
            Wanted::new(RECONCILING, true, "Deleting", message),
        ],
        replication.metadata.generation,
        now,
    );
    Teardown {
        delete: children
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| c.name_any())
            .collect(),
        remaining: children.len(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageCopyStatus;
    use crate::api::common::DeletionPolicy;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    const UID: &str = "2f6c1e7a-0000-4000-8000-000000000001";

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn replication(spec: serde_json::Value) -> ImageReplication {
        let mut base = json!({
            "sourceRegionId": "cn-hangzhou",
            "sourceImageId": "m-golden1",
            "destinationRegionIds": ["cn-shanghai", "cn-beijing", "cn-shenzhen"],
        });
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "ImageReplication",
            "metadata": {"name": "golden", "namespace": "images", "uid": UID, "generation": 1},
            "spec": base,
        }))
        .unwrap()
    }

    /// The child `rep` wants in `region`, showing `phase` (Ready when Available).
    fn child_in(rep: &ImageReplication, region: &str, phase: CopyPhase, image: &str) -> ImageCopy {
        let mut copy = child(rep, UID, region);
        let ready = phase == CopyPhase::Available;
        let mut conditions = vec![Wanted::new(READY, ready, "x", "")];
        if phase == CopyPhase::Failed {
            conditions.push(Wanted::new(
                STALLED,
                true,
                "InvalidImageId.NotFound",
                "The specified ImageId does not exist.",
            ));
        }
        copy.status = Some(ImageCopyStatus {
            phase: Some(phase),
            image_id: Some(image.into()),
            progress: Some(if ready { "100%" } else { "40%" }.into()),
            conditions: conditions::merge(&[], &conditions, Some(1), &at(0)),
            ..Default::default()
        });
        copy
    }

    fn names(copies: &[ImageCopy]) -> Vec<String> {
        copies.iter().map(|c| c.name_any()).collect()
    }

    fn condition<'a>(status: &'a ImageReplicationStatus, type_: &str) -> &'a Condition {
        conditions::find(&status.conditions, type_).unwrap()
    }

    #[test]
    fn a_new_replication_creates_one_owned_copy_per_region() {
        let rep = replication(json!({
            "encrypted": true,
            "kmsKeyIds": {"cn-beijing": "key-bj"},
            "deletionPolicy": "Retain",
            "credentialsSecretRef": {"name": "ak"},
        }));
        let plan = plan(&rep, UID, &[], &at(10));
        assert_eq!(plan.create.len(), 3);
        let regions: Vec<&str> = plan
            .create
            .iter()
            .map(|c| c.spec.destination_region_id.as_str())
            .collect();
        assert_eq!(regions, ["cn-shanghai", "cn-beijing", "cn-shenzhen"]);
        for copy in &plan.create {
            assert!(
                copy.name_any()
                    .starts_with(&format!("golden-{}-", copy.spec.destination_region_id))
            );
            assert_eq!(copy.spec.source_image_id, "m-golden1");
            assert_eq!(copy.spec.deletion_policy, DeletionPolicy::Retain);
            assert_eq!(
                copy.spec.credentials_secret_ref.as_ref().unwrap().name,
                "ak"
            );
            assert_eq!(copy.namespace().as_deref(), Some("images"));
            let owner = &copy.owner_references()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("ImageReplication", UID)
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(copy.labels()[REPLICATION_UID_LABEL], UID);
        }
        assert_eq!(plan.create[1].spec.kms_key_id.as_deref(), Some("key-bj"));
        assert_eq!(
            plan.create[0].spec.kms_key_id, None,
            "a region without a key"
        );
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.regions_ready.as_deref(), Some("0/3"));
        assert_eq!(plan.status.total_regions, 3);
        assert_eq!(plan.status.regions[0].phase, Some(CopyPhase::Pending));
        assert_eq!(condition(&plan.status, READY).status, "False");
        assert_eq!(condition(&plan.status, RECONCILING).status, "True");
        assert_eq!(
            plan.published.keys().collect::<Vec<_>>(),
            [SOURCE_IMAGE_KEY, SOURCE_REGION_KEY],
            "nothing is published before it is Ready"
        );
    }

    #[test]
    fn all_regions_ready_makes_the_replication_ready_and_published() {
        let rep = replication(json!({}));
        let children = vec![
            child_in(&rep, "cn-shanghai", CopyPhase::Available, "m-sh"),
            child_in(&rep, "cn-beijing", CopyPhase::Available, "m-bj"),
            child_in(&rep, "cn-shenzhen", CopyPhase::Available, "m-sz"),
        ];
        let plan = plan(&rep, UID, &children, &at(10));
        assert!(plan.create.is_empty() && plan.delete.is_empty() && plan.update.is_empty());
        assert_eq!(plan.status.ready_regions, 3);
        assert_eq!(plan.status.regions_ready.as_deref(), Some("3/3"));
        assert_eq!(plan.status.progress.as_deref(), Some("100%"));
        assert_eq!(condition(&plan.status, READY).status, "True");
        assert_eq!(condition(&plan.status, RECONCILING).status, "False");
        assert_eq!(plan.published["cn-shanghai"], "m-sh");
        assert_eq!(plan.published["cn-beijing"], "m-bj");
        assert_eq!(plan.published[SOURCE_IMAGE_KEY], "m-golden1");
        assert_eq!(plan.published[SOURCE_REGION_KEY], "cn-hangzhou");
        let reasons: Vec<&str> = plan.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons.iter().filter(|r| **r == "RegionReady").count(), 3);
        assert!(reasons.contains(&"Ready"));

        // The same again: nothing new to say.
        let mut again = rep.clone();
        again.status = Some(plan.status.clone());
        let second = super::plan(&again, UID, &children, &at(20));
        assert!(second.notices.is_empty(), "{:?}", second.notices);
        assert_eq!(
            second.status, plan.status,
            "an unchanged status is not rewritten"
        );
    }

    #[test]
    fn adding_a_region_creates_one_copy_and_removing_one_deletes_its_copy() {
        let rep = replication(
            json!({"destinationRegionIds": ["cn-shanghai", "cn-beijing", "cn-qingdao"]}),
        );
        let before = replication(json!({}));
        let children = vec![
            child_in(&before, "cn-shanghai", CopyPhase::Available, "m-sh"),
            child_in(&before, "cn-beijing", CopyPhase::Copying, "m-bj"),
            child_in(&before, "cn-shenzhen", CopyPhase::Copying, "m-sz"),
        ];
        let plan = plan(&rep, UID, &children, &at(10));
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].spec.destination_region_id, "cn-qingdao");
        assert_eq!(plan.delete, [children[2].name_any()]);
        assert_eq!(plan.status.total_regions, 3);
        assert_eq!(plan.status.regions_ready.as_deref(), Some("1/3"));
        assert!(!plan.published.contains_key("cn-shenzhen"));
        assert!(
            condition(&plan.status, RECONCILING)
                .message
                .contains("removing copies in cn-shenzhen")
        );
    }

    #[test]
    fn a_new_source_keeps_the_previous_copies_until_every_new_one_is_ready() {
        let old = replication(json!({}));
        let new = replication(json!({"sourceImageId": "m-golden2"}));
        let mut children = vec![
            child_in(&old, "cn-shanghai", CopyPhase::Available, "m-sh1"),
            child_in(&old, "cn-beijing", CopyPhase::Available, "m-bj1"),
            child_in(&old, "cn-shenzhen", CopyPhase::Available, "m-sz1"),
        ];
        let first = plan(&new, UID, &children, &at(10));
        assert_eq!(first.create.len(), 3, "a new generation in every region");
        assert_ne!(names(&first.create), names(&children));
        assert!(first.delete.is_empty(), "no window without images");
        assert_eq!(first.published["cn-beijing"], "m-bj1");
        assert_eq!(first.published[SOURCE_IMAGE_KEY], "m-golden1");
        assert_eq!(
            first.status.regions[1].previous_image_id.as_deref(),
            Some("m-bj1")
        );
        assert_eq!(condition(&first.status, RECONCILING).reason, "RollingOut");

        // Two of three new copies Ready: the map still shows one whole generation.
        children.push(child_in(&new, "cn-shanghai", CopyPhase::Available, "m-sh2"));
        children.push(child_in(&new, "cn-beijing", CopyPhase::Available, "m-bj2"));
        children.push(child_in(&new, "cn-shenzhen", CopyPhase::Copying, "m-sz2"));
        let partial = plan(&new, UID, &children, &at(20));
        assert!(partial.create.is_empty() && partial.delete.is_empty());
        assert_eq!(partial.published["cn-shanghai"], "m-sh1");
        assert_eq!(partial.published[SOURCE_IMAGE_KEY], "m-golden1");
        assert_eq!(partial.status.regions_ready.as_deref(), Some("2/3"));

        // All new Ready: the map moves over and the previous copies go.
        children[5] = child_in(&new, "cn-shenzhen", CopyPhase::Available, "m-sz2");
        let done = plan(&new, UID, &children, &at(30));
        assert_eq!(done.delete, names(&children[..3]));
        assert_eq!(done.published["cn-shenzhen"], "m-sz2");
        assert_eq!(done.published[SOURCE_IMAGE_KEY], "m-golden2");
        assert_eq!(condition(&done.status, READY).status, "True");
    }

    #[test]
    fn a_previous_copy_whose_deletion_is_refused_keeps_the_replication_reconciling() {
        let old = replication(json!({"destinationRegionIds": ["cn-shanghai"]}));
        let new = replication(
            json!({"destinationRegionIds": ["cn-shanghai"], "sourceImageId": "m-golden2"}),
        );
        let mut retiring = child_in(&old, "cn-shanghai", CopyPhase::Failed, "m-sh1");
        retiring.metadata.deletion_timestamp = Some(at(5));
        let children = vec![
            retiring,
            child_in(&new, "cn-shanghai", CopyPhase::Available, "m-sh2"),
        ];
        let plan = plan(&new, UID, &children, &at(10));
        assert_eq!(
            condition(&plan.status, READY).status,
            "True",
            "the new image serves"
        );
        let reconciling = condition(&plan.status, RECONCILING);
        assert_eq!(reconciling.status, "True");
        assert_eq!(reconciling.reason, "RemovingPreviousGeneration");
        assert!(
            reconciling
                .message
                .contains("deletion blocked: golden-cn-shanghai-")
                && reconciling.message.contains("(InvalidImageId.NotFound)"),
            "{}",
            reconciling.message
        );
        assert!(plan.delete.is_empty(), "it is being deleted already");
    }

    #[test]
    fn a_stalled_region_names_the_region_and_the_ecs_code() {
        let rep = replication(json!({}));
        let children = vec![
            child_in(&rep, "cn-shanghai", CopyPhase::Available, "m-sh"),
            child_in(&rep, "cn-beijing", CopyPhase::Failed, "m-bj"),
            child_in(&rep, "cn-shenzhen", CopyPhase::Copying, "m-sz"),
        ];
        let plan = plan(&rep, UID, &children, &at(10));
        let stalled = condition(&plan.status, STALLED);
        assert_eq!(stalled.status, "True");
        assert_eq!(stalled.reason, "cn-beijing:InvalidImageId.NotFound");
        assert!(stalled.message.contains(
            "cn-beijing: InvalidImageId.NotFound: The specified ImageId does not exist."
        ));
        assert_eq!(condition(&plan.status, READY).reason, "Stalled");
        assert!(
            plan.notices
                .iter()
                .any(|n| n.reason == "Stalled" && n.warning)
        );
    }

    #[test]
    fn queued_regions_show_in_their_rows_and_a_condition() {
        let rep = replication(json!({}));
        let children = vec![
            child_in(&rep, "cn-shanghai", CopyPhase::Copying, "m-sh"),
            child_in(&rep, "cn-beijing", CopyPhase::Queued, "m-bj"),
            child_in(&rep, "cn-shenzhen", CopyPhase::Queued, "m-sz"),
        ];
        let plan = plan(&rep, UID, &children, &at(10));
        assert_eq!(plan.status.regions[1].phase, Some(CopyPhase::Queued));
        let queued = condition(&plan.status, QUEUED);
        assert_eq!(queued.status, "True");
        assert!(
            queued.message.contains("cn-beijing, cn-shenzhen"),
            "{}",
            queued.message
        );
        assert!(
            condition(&plan.status, RECONCILING)
                .message
                .contains("queued in ECS: cn-beijing, cn-shenzhen")
        );
        assert_eq!(plan.status.progress.as_deref(), Some("40%"));
    }

    #[test]
    fn a_changed_deletion_policy_or_secret_patches_the_copies_without_new_ones() {
        let before = replication(json!({}));
        let after = replication(
            json!({"deletionPolicy": "Retain", "credentialsSecretRef": {"name": "ak"}}),
        );
        let children: Vec<ImageCopy> = ["cn-shanghai", "cn-beijing", "cn-shenzhen"]
            .iter()
            .map(|r| child_in(&before, r, CopyPhase::Available, "m-x"))
            .collect();
        let plan = plan(&after, UID, &children, &at(10));
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 3);
        assert!(plan.update.iter().all(|u| {
            u.deletion_policy == DeletionPolicy::Retain
                && u.credentials_secret_ref
                    .as_ref()
                    .is_some_and(|s| s.name == "ak")
        }));
    }

    #[test]
    fn a_copy_deleted_by_hand_is_made_again_once_it_is_gone() {
        let rep = replication(json!({"destinationRegionIds": ["cn-shanghai"]}));
        let mut copy = child_in(&rep, "cn-shanghai", CopyPhase::Available, "m-sh");
        copy.metadata.deletion_timestamp = Some(at(5));
        let deleting = plan(&rep, UID, std::slice::from_ref(&copy), &at(10));
        assert!(deleting.create.is_empty(), "its name is still taken");
        assert!(!deleting.published.contains_key("cn-shanghai"));
        let gone = plan(&rep, UID, &[], &at(20));
        assert_eq!(names(&gone.create), [copy.name_any()]);
    }

    #[test]
    fn the_template_hash_ignores_what_a_copy_may_change_in_place() {
        let rep = replication(json!({}));
        let mut spec = template(&rep.spec, "cn-shanghai");
        let hash = template_hash(&spec);
        spec.deletion_policy = DeletionPolicy::Retain;
        spec.credentials_secret_ref =
            Some(crate::api::common::SecretReference { name: "ak".into() });
        assert_eq!(template_hash(&spec), hash);
        spec.source_image_id = "m-other".into();
        assert_ne!(template_hash(&spec), hash);
        assert_eq!(hash.len(), 8);
    }

    #[test]
    fn child_names_fit_kubernetes_limits() {
        let long = "a".repeat(250);
        let name = child_name(&long, "ap-southeast-1", "0123abcd");
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.ends_with("-ap-southeast-1-0123abcd"));
        let dashed = format!("{}-{}", "b".repeat(229), "c".repeat(20));
        assert!(!child_name(&dashed, "ap-southeast-1", "0123abcd").contains("--"));
        assert_eq!(
            child_name("golden", "cn-shanghai", "0123abcd"),
            "golden-cn-shanghai-0123abcd"
        );
    }

    #[test]
    fn teardown_deletes_every_copy_and_waits_for_them() {
        let rep = replication(json!({}));
        let mut children = vec![
            child_in(&rep, "cn-shanghai", CopyPhase::Available, "m-sh"),
            child_in(&rep, "cn-beijing", CopyPhase::Copying, "m-bj"),
        ];
        children[1].metadata.deletion_timestamp = Some(at(5));
        let teardown = teardown(&rep, &children, &at(10));
        assert_eq!(
            teardown.delete,
            [children[0].name_any()],
            "a copy is deleted once"
        );
        assert_eq!(teardown.remaining, 2);
        assert_eq!(condition(&teardown.status, READY).reason, "Deleting");
        assert_eq!(super::teardown(&rep, &[], &at(20)).remaining, 0);
    }
}
