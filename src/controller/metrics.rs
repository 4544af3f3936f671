//! Prometheus metrics, served on `/metrics` (README lists them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::ecs::CallObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    /// The ECS error code, or the operator's own reason (e.g. `SecretNotFound`).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub action: String,
    /// `ok` or the ECS error code.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindRegionLabels {
    pub kind: String,
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionPairLabels {
    pub source_region: String,
    pub destination_region: String,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_cpu: Family<KindLabels, Counter<f64, AtomicU64>>,
    errors: Family<ErrorLabels, Counter>,
    ecs_calls: Family<CallLabels, Counter>,
    in_flight: Family<KindRegionLabels, Gauge>,
    copy_duration: Family<RegionPairLabels, Histogram>,
    undecodable_items: Counter,
    listing_misses: Family<KindLabels, Counter>,
    duplicates_removed: Family<KindLabels, Counter>,
    /// Object UID → the labels it is counted under in `in_flight`.
    in_flight_objects: Mutex<HashMap<String, KindRegionLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ecs_image_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        let reconcile_cpu = Family::<KindLabels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "reconcile_cpu",
            "CPU time spent in reconciliations themselves (not in the calls they wait for)",
            Unit::Seconds,
            reconcile_cpu.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that hit an error, by error code",
            errors.clone(),
        );
        let ecs_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "ecs_calls",
            "ECS API calls (HTTP attempts) by action and result",
            ecs_calls.clone(),
        );
        let in_flight = Family::<KindRegionLabels, Gauge>::default();
        registry.register(
            "tasks_in_flight",
            "Objects whose ECS task (copy, import, export) is queued or running, by kind and region",
            in_flight.clone(),
        );
        let copy_duration = Family::<RegionPairLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(15.0, 2.0, 12))
        });
        registry.register(
            "copy_duration_seconds",
            "Time from CopyImage to an Available destination image, by region pair",
            copy_duration.clone(),
        );
        let undecodable_items = Counter::default();
        registry.register(
            "ecs_undecodable_items",
            "Items of ECS answers left out because they could not be decoded",
            undecodable_items.clone(),
        );
        let listing_misses = Family::<KindLabels, Counter>::default();
        registry.register(
            "listing_misses",
            "Owned resources a shared region listing lacked but a direct lookup found (lagging tag index, removed owner tag)",
            listing_misses.clone(),
        );
        let duplicates_removed = Family::<KindLabels, Counter>::default();
        registry.register(
            "duplicates_removed",
            "Extra cloud resources carrying an object's owner tag that were cancelled or deleted",
            duplicates_removed.clone(),
        );
        Metrics {
            registry,
            undecodable_items,
            listing_misses,
            duplicates_removed,
            reconciles,
            reconcile_cpu,
            errors,
            ecs_calls,
            in_flight,
            copy_duration,
            in_flight_objects: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn reconcile_cpu(&self, kind: &str, spent: Duration) {
        self.reconcile_cpu
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc_by(spent.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, code: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                code: code.into(),
            })
            .inc();
    }

    /// Marks an object's task as in flight in `region` (or, with `None`, as no longer in flight).
    pub fn set_in_flight(&self, kind: &str, uid: &str, region: Option<&str>) {
        let mut objects = self
            .in_flight_objects
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let wanted = region.map(|region| KindRegionLabels {
            kind: kind.into(),
            region: region.into(),
        });
        if objects.get(uid) == wanted.as_ref() {
            return;
        }
        if let Some(old) = objects.remove(uid) {
            self.in_flight.get_or_create(&old).dec();
        }
        if let Some(labels) = wanted {
            self.in_flight.get_or_create(&labels).inc();
            objects.insert(uid.to_string(), labels);
        }
    }

    pub fn copy_finished(&self, source_region: &str, destination_region: &str, took: Duration) {
        self.copy_duration
            .get_or_create(&RegionPairLabels {
                source_region: source_region.into(),
                destination_region: destination_region.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn listing_missed(&self, kind: &str) {
        self.listing_misses
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn duplicate_removed(&self, kind: &str) {
        self.duplicates_removed
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        // The ECS decoder counts on its own (it knows nothing of metrics): catch up here.
        let seen = crate::ecs::undecodable_items();
        self.undecodable_items
            .inc_by(seen.saturating_sub(self.undecodable_items.get()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl CallObserver for Metrics {
    fn observe(&self, action: &str, _region: &str, outcome: Result<(), &str>, _elapsed: Duration) {
        let result = match outcome {
            Ok(()) => "ok".to_string(),
            Err(code) => code.to_string(),
        };
        self.ecs_calls
            .get_or_create(&CallLabels {
                action: action.into(),
                result,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_gauge_follows_objects_without_double_counting() {
        let metrics = Metrics::default();
        metrics.set_in_flight("ImageCopy", "a", Some("cn-shanghai"));
        metrics.set_in_flight("ImageCopy", "a", Some("cn-shanghai"));
        metrics.set_in_flight("ImageCopy", "b", Some("cn-shanghai"));
        metrics.set_in_flight("ImageImport", "c", Some("cn-shanghai"));
        metrics.set_in_flight("ImageCopy", "a", None);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"ecs_image_operator_tasks_in_flight{kind="ImageCopy",region="cn-shanghai"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ecs_image_operator_tasks_in_flight{kind="ImageImport",region="cn-shanghai"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn ecs_calls_are_counted_by_action_and_result() {
        let metrics = Metrics::default();
        metrics.observe("CopyImage", "cn-hangzhou", Ok(()), Duration::ZERO);
        metrics.observe(
            "CopyImage",
            "cn-hangzhou",
            Err("Throttling.User"),
            Duration::ZERO,
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"ecs_image_operator_ecs_calls_total{action="CopyImage",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"result="Throttling.User"} 1"#), "{text}");
    }
}
