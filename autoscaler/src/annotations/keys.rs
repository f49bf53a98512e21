//! The `autoscaling.knative.dev/*` annotation keys the KPA reads.

use std::collections::BTreeMap;

/// An annotation and the legacy spelling upstream still accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationKey {
    /// The current key, e.g. `autoscaling.knative.dev/min-scale`.
    pub name: &'static str,
    /// The older camelCase key, e.g. `autoscaling.knative.dev/minScale`.
    pub legacy: Option<&'static str>,
}

impl AnnotationKey {
    const fn new(name: &'static str, legacy: Option<&'static str>) -> Self {
        Self { name, legacy }
    }

    /// The key that is present (current name first) and its value.
    pub fn get<'a>(&self, annotations: &'a BTreeMap<String, String>) -> Option<(&'a str, &'a str)> {
        std::iter::once(self.name)
            .chain(self.legacy)
            .find_map(|k| annotations.get_key_value(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `autoscaling.knative.dev/class`.
pub const CLASS: AnnotationKey = AnnotationKey::new("autoscaling.knative.dev/class", None);
/// `autoscaling.knative.dev/metric`: `concurrency` or `rps` for the KPA.
pub const METRIC: AnnotationKey = AnnotationKey::new("autoscaling.knative.dev/metric", None);
/// `autoscaling.knative.dev/target`: per-instance capacity override.
pub const TARGET: AnnotationKey = AnnotationKey::new("autoscaling.knative.dev/target", None);
/// `autoscaling.knative.dev/target-utilization-percentage`.
pub const TARGET_UTILIZATION_PERCENTAGE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/target-utilization-percentage",
    Some("autoscaling.knative.dev/targetUtilizationPercentage"),
);
/// `autoscaling.knative.dev/target-burst-capacity`.
pub const TARGET_BURST_CAPACITY: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/target-burst-capacity",
    Some("autoscaling.knative.dev/targetBurstCapacity"),
);
/// `autoscaling.knative.dev/window`: the stable window.
pub const WINDOW: AnnotationKey = AnnotationKey::new("autoscaling.knative.dev/window", None);
/// `autoscaling.knative.dev/panic-window-percentage`.
pub const PANIC_WINDOW_PERCENTAGE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/panic-window-percentage",
    Some("autoscaling.knative.dev/panicWindowPercentage"),
);
/// `autoscaling.knative.dev/panic-threshold-percentage`.
pub const PANIC_THRESHOLD_PERCENTAGE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/panic-threshold-percentage",
    Some("autoscaling.knative.dev/panicThresholdPercentage"),
);
/// `autoscaling.knative.dev/min-scale`.
pub const MIN_SCALE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/min-scale",
    Some("autoscaling.knative.dev/minScale"),
);
/// `autoscaling.knative.dev/max-scale`.
pub const MAX_SCALE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/max-scale",
    Some("autoscaling.knative.dev/maxScale"),
);
/// `autoscaling.knative.dev/initial-scale`.
pub const INITIAL_SCALE: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/initial-scale",
    Some("autoscaling.knative.dev/initialScale"),
);
/// `autoscaling.knative.dev/activation-scale`: the least instances to wake to.
pub const ACTIVATION_SCALE: AnnotationKey =
    AnnotationKey::new("autoscaling.knative.dev/activation-scale", None);
/// `autoscaling.knative.dev/scale-down-delay`.
pub const SCALE_DOWN_DELAY: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/scale-down-delay",
    Some("autoscaling.knative.dev/scaleDownDelay"),
);
/// `autoscaling.knative.dev/scale-to-zero-pod-retention-period`.
pub const SCALE_TO_ZERO_POD_RETENTION_PERIOD: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
    Some("autoscaling.knative.dev/scaleToZeroPodRetentionPeriod"),
);
/// `autoscaling.knative.dev/metric-aggregation-algorithm`.
pub const METRIC_AGGREGATION_ALGORITHM: AnnotationKey = AnnotationKey::new(
    "autoscaling.knative.dev/metric-aggregation-algorithm",
    Some("autoscaling.knative.dev/metricAggregationAlgorithm"),
);
