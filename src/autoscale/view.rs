//! What `sluice status` shows of a Revision's scaling: the decision, each step's figure, the
//! forecast against what is observed, reserved against standard instances.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_autoscaler::{PlanReason, RevisionAutoscaler, ZeroReason};

/// What `sluice status` shows of a Revision's scaling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingView {
    /// Standard instances asked of the runtime.
    pub desired: u32,
    /// `activator` or `direct`: where Envoy sends the Revision's traffic.
    pub path: String,
    /// Observed demand: stable-window concurrency (or RPS); for the HPA class the usage per
    /// instance (percent of a core, or MiB).
    pub observed: f64,
    /// Whether the KPA panics.
    pub panic: bool,
    /// Why the count is what it is (`active`, `grace-period`, `scaled-to-zero`, `hpa`, …).
    pub reason: String,
    /// `kpa` or `hpa`.
    #[serde(default)]
    pub class: String,
    /// What it scales on: `concurrency`, `rps`, `cpu` or `memory`.
    #[serde(default)]
    pub metric: String,
    /// Reserved instances asked of the runtime.
    #[serde(default)]
    pub reserved: u32,
    /// Whether the reserved instances get requests.
    #[serde(default)]
    pub reserved_serving: bool,
    /// `knative.aliyun.com/reserve-instance-type`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_type: Option<String>,
    /// Each step's figure of the last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepsView>,
    /// The forecast (predictive Revisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastView>,
}

/// Each step of one decision: reactive → forecast → window → bounds → clamped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepsView {
    /// The KPA's (or HPA's) figure.
    pub reactive: u32,
    /// The forecast in instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<u32>,
    /// The reactive figure raised to the forecast.
    pub raised: u32,
    /// The scheduled window in force: `#index cron (time zone)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The least instances in force.
    pub min: u32,
    /// The most instances in force (0 = unlimited).
    pub max: u32,
    /// Clamped by the bounds.
    pub clamped: u32,
}

/// A predictive Revision's forecast against what is observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForecastView {
    /// The demand provisioned for (seasonal + margin), in the metric's units.
    pub value: f64,
    /// The seasonal figure over the look-ahead window.
    pub seasonal: f64,
    /// The error quantile added.
    pub margin: f64,
    /// The demand observed this minute so far.
    pub actual: f64,
    /// The look-ahead, in seconds.
    pub lookahead_s: f64,
    /// Minutes of history kept.
    pub history_minutes: usize,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The view of one Revision's autoscaler.
pub(super) fn of(auto: &RevisionAutoscaler, observed_start: Option<Duration>) -> ScalingView {
    let policy = auto.policy();
    let plan = auto.last();
    let reason = match plan.map(|p| p.reason) {
        None => "starting",
        Some(PlanReason::Hpa) => "hpa",
        Some(PlanReason::NoData) => "no-data",
        Some(PlanReason::Kpa(r)) => zero_reason(r, auto.reachable()),
    };
    let reason = match plan {
        Some(p) if p.standard == 0 && p.reserved > 0 => "reserved",
        // Idle, the last standard instance waits for the reserved one to be ready.
        Some(p) if p.reserved > 0 && !p.reserved_serving && reason == "scaled-to-zero" => {
            "reserved-starting"
        }
        _ => reason,
    };
    let steps = plan.and_then(|p| p.steps).map(|s| StepsView {
        reactive: s.reactive,
        forecast: s.forecast,
        raised: s.raised,
        window: s.bounds.window.and_then(|i| {
            let sched = policy.schedule.as_ref()?;
            let w = sched.windows.get(i)?;
            Some(format!("#{i} {} ({})", w.cron, sched.timezone))
        }),
        min: s.bounds.min,
        max: s.bounds.max,
        clamped: s.clamped,
    });
    let forecast = policy.predictive.and_then(|p| {
        let history = auto.history()?;
        let f = plan.and_then(|p| p.forecast);
        Some(ForecastView {
            value: round2(f.map_or(0.0, |f| f.value)),
            seasonal: round2(f.map_or(0.0, |f| f.seasonal)),
            margin: round2(f.map_or(0.0, |f| f.margin)),
            actual: round2(history.current().map_or(0.0, |(_, v)| v)),
            lookahead_s: p.lookahead(observed_start).as_secs_f64(),
            history_minutes: history.len(),
        })
    });
    ScalingView {
        desired: plan.map_or(0, |p| p.standard),
        path: if plan.is_none_or(|p| p.activator_in_path) {
            "activator"
        } else {
            "direct"
        }
        .into(),
        observed: round2(plan.map_or(0.0, |p| p.observed)),
        panic: plan.is_some_and(|p| p.panic),
        reason: reason.into(),
        class: if auto.is_hpa() { "hpa" } else { "kpa" }.into(),
        metric: match policy.hpa {
            Some(h) => h.metric.as_str(),
            None => auto.spec().metric.as_str(),
        }
        .into(),
        reserved: plan.map_or(0, |p| p.reserved),
        reserved_serving: plan.is_some_and(|p| p.reserved_serving && p.reserved > 0),
        reserve_type: policy
            .reserve
            .as_ref()
            .and_then(|r| r.instance_type.clone()),
        steps,
        forecast,
    }
}

fn zero_reason(reason: ZeroReason, reachable: bool) -> &'static str {
    match reason {
        ZeroReason::Active if !reachable => "unreachable",
        ZeroReason::Active => "active",
        ZeroReason::Disabled => "scale-to-zero-disabled",
        ZeroReason::StableWindow => "stable-window",
        ZeroReason::AwaitingActivator => "awaiting-activator",
        ZeroReason::GracePeriod => "grace-period",
        ZeroReason::PodRetention => "pod-retention",
        ZeroReason::ScaledToZero => "scaled-to-zero",
    }
}
