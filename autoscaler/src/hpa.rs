//! The HPA class (`autoscaling.knative.dev/class: hpa.autoscaling.knative.dev`) as Kubernetes'
//! HorizontalPodAutoscaler computes it, for runtimes that measure CPU and memory themselves
//! (`sluice up` reads `/proc`).
//!
//! * Metric `cpu` (default): `target` is percent of one CPU core per instance (80 = 0.8 core;
//!   default 80, Kubernetes' own default). Metric `memory`: `target` is MiB per instance;
//!   without a `target` Knative creates an HPA without metrics, which Kubernetes runs at 80 %
//!   CPU — so does this.
//! * The replica count follows `replica_calculator.go`: `ceil(ready × usage / target)`,
//!   unchanged within a 10 % tolerance; instances asked for but not ready count as using
//!   nothing when scaling up and exactly the target when scaling down.
//! * Stabilisation as `stabilizeRecommendationWithBehaviors`: the count is at least the
//!   smallest recommendation of the scale-up window (0 s: scale up at once) and at most the
//!   largest of the scale-down window (300 s); `autoscaling.knative.dev/window` sets both, as
//!   Knative's HPA reconciler does. Kubernetes' rate policies (+100 % or +4 pods per 15 s) are
//!   not applied: a tick here is one second and decisions are capped by `max-scale`.
//! * Never fewer than one instance (no scale to zero, as upstream).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::annotations::{AnnotationError, METRIC, ScalingAnnotations};

/// The HPA's default tolerance: usage within 10 % of the target changes nothing.
pub const TOLERANCE: f64 = 0.1;
/// Kubernetes' default scale-down stabilisation window.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
/// The default CPU target, percent of one core per instance.
pub const DEFAULT_CPU_TARGET: f64 = 80.0;

/// What an HPA-class Revision scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaMetric {
    /// CPU, in percent of one core per instance.
    Cpu,
    /// Resident memory, in MiB per instance.
    Memory,
}

impl HpaMetric {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            HpaMetric::Cpu => "cpu",
            HpaMetric::Memory => "memory",
        }
    }
}

/// An HPA-class Revision's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaSpec {
    /// What it scales on.
    pub metric: HpaMetric,
    /// The per-instance target (percent of a core, or MiB).
    pub target: f64,
    /// How long a higher recommendation must hold before scaling up.
    pub scale_up_window: Duration,
    /// How long a lower recommendation must hold before scaling down.
    pub scale_down_window: Duration,
}

impl HpaSpec {
    /// The settings of an HPA-class Revision from its validated `autoscaling.knative.dev/*`
    /// annotations and the raw `metric` value; a metric other than `cpu`/`memory` (custom
    /// metrics need a metrics server) is reported in `errors` and read as `cpu`.
    pub fn resolve(
        annotations: &BTreeMap<String, String>,
        scaling: &ScalingAnnotations,
        errors: &mut Vec<AnnotationError>,
    ) -> HpaSpec {
        let metric = match METRIC.get(annotations).map(|(_, v)| v) {
            None | Some("cpu") => HpaMetric::Cpu,
            Some("memory") => HpaMetric::Memory,
            Some(other) => {
                errors.push(AnnotationError::Invalid {
                    key: METRIC.name.to_owned(),
                    message: format!(
                        "the HPA class under sluice up measures \"cpu\" or \"memory\", not {other:?}"
                    ),
                });
                HpaMetric::Cpu
            }
        };
        let (metric, target) = match (metric, scaling.target) {
            (m, Some(t)) => (m, t),
            // Knative makes an HPA without metrics; Kubernetes then targets 80 % CPU.
            (_, None) => (HpaMetric::Cpu, DEFAULT_CPU_TARGET),
        };
        let (up, down) = match scaling.window {
            Some(w) => (w, w),
            None => (Duration::ZERO, SCALE_DOWN_WINDOW),
        };
        HpaSpec {
            metric,
            target,
            scale_up_window: up,
            scale_down_window: down,
        }
    }
}

/// One measurement of the Revision's ready instances.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Ready instances measured.
    pub ready: u32,
    /// Their usage added up (percent of a core, or MiB).
    pub total: f64,
}

/// What [`HpaDecider::decide`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaResult {
    /// Mean usage per ready instance (`None` without a measurement).
    pub per_instance: Option<f64>,
    /// The count the usage asks for, before stabilisation.
    pub recommendation: u32,
    /// The count after stabilisation (at least 1).
    pub desired: u32,
}

/// The HPA of one Revision.
#[derive(Debug, Clone)]
pub struct HpaDecider {
    spec: HpaSpec,
    usage: Option<Usage>,
    recommendations: VecDeque<(Instant, u32)>,
}

impl HpaDecider {
    /// An HPA with no measurement yet.
    pub fn new(spec: HpaSpec) -> Self {
        Self {
            spec,
            usage: None,
            recommendations: VecDeque::new(),
        }
    }

    /// The settings in force.
    pub fn spec(&self) -> &HpaSpec {
        &self.spec
    }

    /// Takes new settings, keeping the recommendations made so far.
    pub fn update(&mut self, spec: HpaSpec) {
        self.spec = spec;
    }

    /// The latest measurement (it replaces the one before).
    pub fn record(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// Decides at `now` with `current` instances asked for.
    pub fn decide(&mut self, now: Instant, current: u32) -> HpaResult {
        let current = current.max(1);
        let (per_instance, recommendation) = match self.usage {
            Some(u) if u.ready > 0 && u.total.is_finite() => (
                Some(u.total / f64::from(u.ready)),
                recommend(u, current, self.spec.target).max(1),
            ),
            _ => (None, current),
        };
        // Stabilisation over the recommendations of the windows.
        let keep = self.spec.scale_up_window.max(self.spec.scale_down_window);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > keep)
        {
            self.recommendations.pop_front();
        }
        let since = |t: &Instant| now.saturating_duration_since(*t);
        let (up_window, down_window) = (self.spec.scale_up_window, self.spec.scale_down_window);
        let up = self
            .recommendations
            .iter()
            .filter(|(t, _)| since(t) < up_window)
            .map(|(_, r)| *r)
            .fold(recommendation, u32::min);
        let down = self
            .recommendations
            .iter()
            .filter(|(t, _)| since(t) < down_window)
            .map(|(_, r)| *r)
            .fold(recommendation, u32::max);
        let desired = current.max(up).min(down).max(1);
        self.recommendations.push_back((now, recommendation));
        HpaResult {
            per_instance,
            recommendation,
            desired,
        }
    }
}

/// `ceil(ready × usage / target)` with Kubernetes' tolerance and its rule for instances that
/// are asked for but not measured.
fn recommend(u: Usage, current: u32, target: f64) -> u32 {
    let ready = f64::from(u.ready);
    let ratio = u.total / ready / target;
    let missing = current.saturating_sub(u.ready);
    if missing == 0 {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return current;
        }
        return to_count((ratio * ready).ceil());
    }
    let all = f64::from(current);
    let new_ratio = if ratio > 1.0 {
        u.total / (all * target)
    } else {
        (u.total + f64::from(missing) * target) / (all * target)
    };
    let flipped = (ratio > 1.0) != (new_ratio > 1.0);
    if flipped || (new_ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    to_count((new_ratio * all).ceil())
}

fn to_count(v: f64) -> u32 {
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests;
