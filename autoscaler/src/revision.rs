//! The effective scaling spec of one revision: `config-autoscaler` defaults,
//! overridden by the revision's annotations, plus its `containerConcurrency`.
//!
//! Mirrors upstream's `MakeDecider`, `ResolveMetricTarget`, `MakeMetric`
//! (panic window), `GetInitialScale` and `PodAutoscaler.ScaleBounds`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::annotations::{AnnotationErrors, Metric, ScalingAnnotations};
use crate::config::{BUCKET_SIZE, Config, KPA_CLASS, TARGET_MIN};
use crate::window::Aggregation;

/// Everything the decider and the scale-to-zero rule need about one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionScaling {
    /// Autoscaler class; Sluice runs only [`KPA_CLASS`] (see [`Self::is_kpa`]).
    pub class: String,
    /// What the revision scales on.
    pub metric: Metric,
    /// How the metric windows average.
    pub aggregation: Aggregation,
    /// The revision's `containerConcurrency` (0 = unlimited).
    pub container_concurrency: u32,
    /// Per-instance total capacity: `containerConcurrency` if > 0, else the
    /// cluster default (100 concurrent, or 200 RPS); the `target` annotation
    /// replaces it, capped at `containerConcurrency` for concurrency.
    pub total_value: f64,
    /// Per-instance target: `total_value` × utilisation (at least 0.01).
    pub target_value: f64,
    /// Utilisation as a fraction (0.7 = 70 %).
    pub target_utilization: f64,
    /// Target burst capacity (-1 = activator always in path, 0 = only at zero).
    pub target_burst_capacity: f64,
    /// The stable window.
    pub stable_window: Duration,
    /// The panic window: a percentage of the stable window, rounded to whole
    /// seconds, at least one.
    pub panic_window: Duration,
    /// Panic threshold as a ratio (2.0 = 200 %).
    pub panic_threshold: f64,
    /// Most instances per tick relative to ready ones (×).
    pub max_scale_up_rate: f64,
    /// Ready instances divided by this is the fewest a tick may leave.
    pub max_scale_down_rate: f64,
    /// Lower bound while the revision is reachable.
    pub min_scale: u32,
    /// Upper bound (0 = unlimited).
    pub max_scale: u32,
    /// Instances to reach once before the autoscaler takes over.
    pub initial_scale: u32,
    /// The fewest instances to wake to from zero (1 = no effect).
    pub activation_scale: u32,
    /// How long a lower count must hold before it is applied.
    pub scale_down_delay: Duration,
    /// Whether the revision may go to zero at all (cluster-wide).
    pub enable_scale_to_zero: bool,
    /// How long the activator must be in the path before the last instance goes.
    pub scale_to_zero_grace_period: Duration,
    /// How long the last instance stays after the revision went idle.
    pub scale_to_zero_pod_retention_period: Duration,
    /// Concurrent requests one activator accepts (subsetting hint).
    pub activator_capacity: f64,
}

impl RevisionScaling {
    /// Validates the revision's annotations and combines them with `config`.
    pub fn resolve(
        config: &Config,
        annotations: &BTreeMap<String, String>,
        container_concurrency: u32,
    ) -> Result<Self, AnnotationErrors> {
        let parsed = ScalingAnnotations::parse(annotations, config)?;
        Ok(Self::from_parts(config, &parsed, container_concurrency))
    }

    /// Combines already validated annotations with `config`.
    pub fn from_parts(config: &Config, a: &ScalingAnnotations, container_concurrency: u32) -> Self {
        let metric = a.metric.unwrap_or_default();
        let cc = f64::from(container_concurrency);
        let (mut total, mut utilization) = match metric {
            Metric::Rps => (config.rps_target_default, config.target_utilization),
            Metric::Concurrency if container_concurrency > 0 => {
                (cc, config.container_concurrency_target_fraction)
            }
            Metric::Concurrency => (
                config.container_concurrency_target_default,
                config.container_concurrency_target_fraction,
            ),
        };
        if let Some(target) = a.target {
            total = if metric == Metric::Concurrency && container_concurrency > 0 {
                target.min(cc)
            } else {
                target
            };
        }
        if let Some(pct) = a.target_utilization_percentage {
            utilization = pct / 100.0;
        }
        let stable_window = a.window.unwrap_or(config.stable_window);
        let panic_pct = a
            .panic_window_percentage
            .unwrap_or(config.panic_window_percentage);
        let initial_scale = match a.initial_scale {
            Some(0) if !config.allow_zero_initial_scale => config.initial_scale,
            Some(i) => i,
            None => config.initial_scale,
        };
        Self {
            class: a
                .class
                .clone()
                .unwrap_or_else(|| config.pod_autoscaler_class.clone()),
            metric,
            aggregation: a.aggregation.unwrap_or_default(),
            container_concurrency,
            total_value: total,
            target_value: (total * utilization).max(TARGET_MIN),
            target_utilization: utilization,
            target_burst_capacity: a
                .target_burst_capacity
                .unwrap_or(config.target_burst_capacity),
            stable_window,
            panic_window: panic_window(stable_window, panic_pct),
            panic_threshold: a
                .panic_threshold_percentage
                .unwrap_or(config.panic_threshold_percentage)
                / 100.0,
            max_scale_up_rate: config.max_scale_up_rate,
            max_scale_down_rate: config.max_scale_down_rate,
            min_scale: a.min_scale.unwrap_or(config.min_scale),
            max_scale: a.max_scale.unwrap_or(config.max_scale),
            initial_scale,
            activation_scale: a.activation_scale.unwrap_or(1),
            scale_down_delay: a.scale_down_delay.unwrap_or(config.scale_down_delay),
            enable_scale_to_zero: config.enable_scale_to_zero,
            scale_to_zero_grace_period: config.scale_to_zero_grace_period,
            scale_to_zero_pod_retention_period: a
                .scale_to_zero_pod_retention_period
                .unwrap_or(config.scale_to_zero_pod_retention_period),
            activator_capacity: config.activator_capacity,
        }
    }

    /// Whether this revision is the KPA's to scale.
    pub fn is_kpa(&self) -> bool {
        self.class == KPA_CLASS
    }

    /// `(min, max)` instances; `min-scale` holds only while a route reaches
    /// the revision (as upstream), `max` 0 means unlimited.
    pub fn scale_bounds(&self, reachable: bool) -> (u32, u32) {
        (if reachable { self.min_scale } else { 0 }, self.max_scale)
    }

    /// Clamps `desired` into [`Self::scale_bounds`].
    pub fn apply_bounds(&self, desired: u32, reachable: bool) -> u32 {
        let (min, max) = self.scale_bounds(reachable);
        let x = desired.max(min);
        if max != 0 { x.min(max) } else { x }
    }
}

/// `stable × pct / 100`, rounded half away from zero to whole seconds, at
/// least one bucket.
fn panic_window(stable: Duration, pct: f64) -> Duration {
    let nanos = (stable.as_nanos() as f64 * pct / 100.0) as u64;
    let secs = nanos / 1_000_000_000 + u64::from(nanos % 1_000_000_000 >= 500_000_000);
    Duration::from_secs(secs).max(BUCKET_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn resolve(pairs: &[(&str, &str)], cc: u32) -> RevisionScaling {
        RevisionScaling::resolve(&Config::default(), &anns(pairs), cc).unwrap()
    }

    #[test]
    fn defaults_give_target_70_of_100() {
        let s = resolve(&[], 0);
        assert!(s.is_kpa());
        assert_eq!(s.metric, Metric::Concurrency);
        assert_eq!(s.total_value, 100.0);
        assert!((s.target_value - 70.0).abs() < 1e-9);
        assert_eq!(s.target_burst_capacity, 211.0);
        assert_eq!(s.stable_window, Duration::from_secs(60));
        assert_eq!(s.panic_window, Duration::from_secs(6));
        assert_eq!(s.panic_threshold, 2.0);
        assert_eq!(
            (
                s.min_scale,
                s.max_scale,
                s.initial_scale,
                s.activation_scale
            ),
            (0, 0, 1, 1)
        );
        assert_eq!(s.scale_to_zero_grace_period, Duration::from_secs(30));
    }

    #[test]
    fn container_concurrency_is_the_capacity() {
        let s = resolve(&[], 10);
        assert_eq!(s.total_value, 10.0);
        assert!((s.target_value - 7.0).abs() < 1e-9);
    }

    #[test]
    fn target_annotation_is_capped_at_container_concurrency() {
        let s = resolve(&[("autoscaling.knative.dev/target", "50")], 10);
        assert_eq!(s.total_value, 10.0);
        let s = resolve(&[("autoscaling.knative.dev/target", "5")], 10);
        assert_eq!(s.total_value, 5.0);
        assert!((s.target_value - 3.5).abs() < 1e-9);
        // Unlimited concurrency: the annotation is the capacity.
        let s = resolve(&[("autoscaling.knative.dev/target", "50")], 0);
        assert_eq!(s.total_value, 50.0);
    }

    #[test]
    fn utilization_annotation_overrides_config() {
        let s = resolve(
            &[(
                "autoscaling.knative.dev/target-utilization-percentage",
                "50",
            )],
            10,
        );
        assert!((s.target_value - 5.0).abs() < 1e-9);
    }

    #[test]
    fn rps_uses_its_own_default_and_no_cap() {
        let s = resolve(&[("autoscaling.knative.dev/metric", "rps")], 10);
        assert_eq!(s.metric, Metric::Rps);
        assert_eq!(s.total_value, 200.0);
        assert!((s.target_value - 140.0).abs() < 1e-9);
        let s = resolve(
            &[
                ("autoscaling.knative.dev/metric", "rps"),
                ("autoscaling.knative.dev/target", "50"),
            ],
            10,
        );
        assert_eq!(s.total_value, 50.0);
    }

    #[test]
    fn target_never_drops_below_the_minimum() {
        let s = resolve(
            &[
                ("autoscaling.knative.dev/target", "0.01"),
                ("autoscaling.knative.dev/target-utilization-percentage", "1"),
            ],
            0,
        );
        assert_eq!(s.target_value, TARGET_MIN);
    }

    #[test]
    fn panic_window_is_rounded_to_whole_seconds_and_at_least_one() {
        assert_eq!(
            panic_window(Duration::from_secs(60), 10.0),
            Duration::from_secs(6)
        );
        assert_eq!(
            panic_window(Duration::from_secs(6), 10.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            panic_window(Duration::from_secs(25), 10.0),
            Duration::from_secs(3)
        );
        assert_eq!(
            panic_window(Duration::from_secs(35), 10.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            panic_window(Duration::from_secs(6), 1.0),
            Duration::from_secs(1)
        );
        let s = resolve(
            &[
                ("autoscaling.knative.dev/window", "2m"),
                ("autoscaling.knative.dev/panic-window-percentage", "25"),
            ],
            0,
        );
        assert_eq!(s.panic_window, Duration::from_secs(30));
    }

    #[test]
    fn annotations_override_config_defaults() {
        let config = Config {
            min_scale: 1,
            max_scale: 9,
            scale_down_delay: Duration::from_secs(5),
            ..Config::default()
        };
        let s = RevisionScaling::resolve(
            &config,
            &anns(&[
                ("autoscaling.knative.dev/minScale", "2"),
                ("autoscaling.knative.dev/initial-scale", "3"),
                ("autoscaling.knative.dev/activation-scale", "4"),
                ("autoscaling.knative.dev/scale-down-delay", "10s"),
                (
                    "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
                    "1m",
                ),
                ("autoscaling.knative.dev/target-burst-capacity", "-1"),
                ("autoscaling.knative.dev/panic-threshold-percentage", "150"),
                (
                    "autoscaling.knative.dev/metric-aggregation-algorithm",
                    "weighted-exponential",
                ),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(
            (
                s.min_scale,
                s.max_scale,
                s.initial_scale,
                s.activation_scale
            ),
            (2, 9, 3, 4)
        );
        assert_eq!(s.scale_down_delay, Duration::from_secs(10));
        assert_eq!(
            s.scale_to_zero_pod_retention_period,
            Duration::from_secs(60)
        );
        assert_eq!(s.target_burst_capacity, -1.0);
        assert_eq!(s.panic_threshold, 1.5);
        assert_eq!(s.aggregation, Aggregation::WeightedExponential);
    }

    #[test]
    fn zero_initial_scale_needs_the_cluster_to_allow_it() {
        let config = Config {
            allow_zero_initial_scale: true,
            ..Config::default()
        };
        let s = RevisionScaling::resolve(
            &config,
            &anns(&[("autoscaling.knative.dev/initial-scale", "0")]),
            0,
        )
        .unwrap();
        assert_eq!(s.initial_scale, 0);
        let parsed = ScalingAnnotations {
            initial_scale: Some(0),
            ..Default::default()
        };
        assert_eq!(
            RevisionScaling::from_parts(&Config::default(), &parsed, 0).initial_scale,
            1
        );
    }

    #[test]
    fn bounds_apply_min_only_while_reachable() {
        let s = resolve(
            &[
                ("autoscaling.knative.dev/min-scale", "2"),
                ("autoscaling.knative.dev/max-scale", "5"),
            ],
            0,
        );
        assert_eq!(s.apply_bounds(0, true), 2);
        assert_eq!(s.apply_bounds(0, false), 0);
        assert_eq!(s.apply_bounds(9, true), 5);
        assert_eq!(s.apply_bounds(3, true), 3);
        assert_eq!(resolve(&[], 0).apply_bounds(1_000_000, true), 1_000_000);
    }

    #[test]
    fn other_classes_are_recognised_as_not_ours() {
        let s = resolve(
            &[(
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            )],
            0,
        );
        assert!(!s.is_kpa());
    }
}
