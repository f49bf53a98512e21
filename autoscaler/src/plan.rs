//! The whole decision of one Revision, as any runtime makes it (`sluice up`'s process runtime
//! today, the Kubernetes autoscaler later): [`RevisionAutoscaler`] owns the reactive
//! autoscaler of the Revision's class (the KPA's [`Decider`] and [`ScaleToZero`], or the
//! [`HpaDecider`]), its [`Forecaster`] and its [`Policy`], and turns one tick's inputs into a
//! [`Plan`]: standard and reserved instances, the activator path, and every step's figure.
//!
//! The order (see [`crate::combine`]): reactive → raised to the forecast → scheduled bounds →
//! clamped → the scale-to-zero rule → at idle, the reserved floor instead of zero
//! ([`crate::reserve_step`]). Pure: the caller passes the monotonic time (`Instant`, which
//! paused-time tests control), the wall-clock time (`Timestamp`, for windows and history) and
//! what its runtime reports.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::annotations::Metric;
use crate::combine::{Steps, combine};
use crate::decider::{Decider, Stat};
use crate::hpa::{HpaDecider, Usage};
use crate::policy::Policy;
use crate::predict::{Forecast, Forecaster, History};
use crate::reserve::{Running, reserve_step};
use crate::revision::RevisionScaling;
use crate::schedule::WindowInForce;
use crate::zero::{ScaleToZero, ZeroReason};

/// Why the standard count is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanReason {
    /// The KPA's scale-to-zero rule (`Active` while it wants instances).
    Kpa(ZeroReason),
    /// The KPA has no data yet (an autoscaler restart): the count is kept.
    NoData,
    /// The HPA class decided.
    Hpa,
}

/// One tick's outcome for a Revision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Standard instances to run.
    pub standard: u32,
    /// Reserved instances to run.
    pub reserved: u32,
    /// Whether the reserved instances get requests.
    pub reserved_serving: bool,
    /// Whether Envoy should route the Revision through the activator.
    pub activator_in_path: bool,
    /// Each step's figure (`None` while the KPA has no data).
    pub steps: Option<Steps>,
    /// The forecast (predictive Revisions, once a day of history exists).
    pub forecast: Option<Forecast>,
    /// The window in force.
    pub window: Option<WindowInForce>,
    /// Why.
    pub reason: PlanReason,
    /// The observed demand: the KPA's stable-window value, or the HPA's usage per instance.
    pub observed: f64,
    /// Whether the KPA panics.
    pub panic: bool,
}

#[derive(Debug, Clone)]
enum Reactive {
    Kpa {
        decider: Box<Decider>,
        zero: ScaleToZero,
    },
    Hpa(HpaDecider),
}

/// The autoscaler of one Revision.
#[derive(Debug, Clone)]
pub struct RevisionAutoscaler {
    spec: RevisionScaling,
    policy: Policy,
    reactive: Reactive,
    forecaster: Option<Forecaster>,
    reachable: bool,
    /// Standard instances decided last.
    requested: u32,
    last: Option<Plan>,
}

impl RevisionAutoscaler {
    /// A new Revision's autoscaler at `now`; `history` restores a predictive Revision's
    /// history (ignored for others).
    pub fn new(
        spec: RevisionScaling,
        policy: Policy,
        now: Instant,
        history: Option<History>,
    ) -> Self {
        let reactive = reactive_for(&spec, &policy, now);
        let forecaster = policy
            .predictive
            .map(|_| Forecaster::new(history.unwrap_or_default()));
        Self {
            spec,
            policy,
            reactive,
            forecaster,
            reachable: true,
            requested: 0,
            last: None,
        }
    }

    /// Takes new settings; recorded data, history and phase are kept (a change of class starts
    /// that class afresh).
    pub fn update(&mut self, spec: RevisionScaling, policy: Policy, now: Instant) {
        let class_changed = matches!(self.reactive, Reactive::Hpa(_)) != policy.hpa.is_some();
        if class_changed {
            self.reactive = reactive_for(&spec, &policy, now);
        } else {
            match &mut self.reactive {
                Reactive::Kpa { decider, zero } => {
                    zero.update(&spec);
                    decider.update(spec.clone());
                }
                Reactive::Hpa(h) => {
                    if let Some(hpa) = policy.hpa {
                        h.update(hpa);
                    }
                }
            }
        }
        match (&self.forecaster, policy.predictive) {
            (None, Some(_)) => self.forecaster = Some(Forecaster::default()),
            (Some(_), None) => self.forecaster = None,
            _ => {}
        }
        self.spec = spec;
        self.policy = policy;
    }

    /// The KPA spec in force.
    pub fn spec(&self) -> &RevisionScaling {
        &self.spec
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the Revision is scaled by the HPA class.
    pub fn is_hpa(&self) -> bool {
        matches!(self.reactive, Reactive::Hpa(_))
    }

    /// Whether a Route sends the Revision traffic (default true); `min-scale`, windows,
    /// forecasts and reserved instances hold only then.
    pub fn set_reachable(&mut self, reachable: bool) {
        self.reachable = reachable;
        if let Reactive::Kpa { decider, .. } = &mut self.reactive {
            decider.set_reachable(reachable);
        }
    }

    /// Whether a Route sends the Revision traffic.
    pub fn reachable(&self) -> bool {
        self.reachable
    }

    /// The predictive history (predictive Revisions only).
    pub fn history(&self) -> Option<&History> {
        self.forecaster.as_ref().map(Forecaster::history)
    }

    /// The last plan.
    pub fn last(&self) -> Option<&Plan> {
        self.last.as_ref()
    }

    /// Records one second of request figures (the KPA's input; the history's for a
    /// predictive KPA Revision).
    pub fn record(&mut self, now: Instant, wall: Timestamp, stat: Stat) {
        if let Reactive::Kpa { decider, .. } = &mut self.reactive {
            decider.record(now, stat);
            if let Some(f) = &mut self.forecaster {
                let value = match self.spec.metric {
                    Metric::Concurrency => stat.concurrency,
                    Metric::Rps => stat.requests,
                };
                f.record(wall, value);
            }
        }
    }

    /// Records one measurement of CPU or memory (the HPA's input, and its history).
    pub fn record_usage(&mut self, wall: Timestamp, usage: Usage) {
        if let Reactive::Hpa(h) = &mut self.reactive {
            h.record(usage);
            if let Some(f) = &mut self.forecaster {
                f.record(wall, usage.total);
            }
        }
    }

    /// Whether a stat should trigger an immediate decision (traffic after a decision of 0).
    pub fn wants_poke(&self, stat: &Stat) -> bool {
        match &self.reactive {
            Reactive::Kpa { decider, .. } => decider.wants_poke(stat),
            Reactive::Hpa(_) => false,
        }
    }

    /// Decides at `now` / `wall`. `running`: what the runtime runs (its `standard_requested`
    /// is ignored: the autoscaler remembers what it asked). `routed_via_activator`: whether
    /// Envoy routes through the activator now. `observed_start`: how long the Revision's
    /// instances take to become ready (for the default look-ahead).
    pub fn decide(
        &mut self,
        now: Instant,
        wall: Timestamp,
        running: Running,
        routed_via_activator: bool,
        observed_start: Option<Duration>,
    ) -> Plan {
        let reachable = self.reachable;
        let target = self.target();
        let forecast = match (&mut self.forecaster, self.policy.predictive) {
            (Some(f), Some(p)) if reachable => {
                f.forecast(wall, p.lookahead(observed_start), p.quantile)
            }
            _ => None,
        };
        let forecast_instances = forecast.map(|f| instances(f.value, target));
        let window = self.policy.schedule.as_ref().and_then(|s| s.in_force(wall));
        let own = (self.spec.min_scale, self.spec.max_scale);
        let mut steps = None;
        let (standard, in_path, reason, observed, panic) = match &mut self.reactive {
            Reactive::Kpa { decider, zero } => {
                let result = decider.scale_with(now, running.standard_ready, |reactive| {
                    let s = combine(reactive, forecast_instances, own, window, reachable, 0);
                    steps = Some(s);
                    s.clamped
                });
                let (standard, reason) = match result.desired_scale() {
                    Some(desired) => {
                        let v = zero.decide(now, desired, self.requested, routed_via_activator);
                        (v.scale, PlanReason::Kpa(v.reason))
                    }
                    None => (self.requested, PlanReason::NoData),
                };
                let observed = result.observed_stable;
                (
                    standard,
                    result.activator_in_path,
                    reason,
                    observed,
                    result.panic,
                )
            }
            Reactive::Hpa(h) => {
                let r = h.decide(now, self.requested);
                let s = combine(r.desired, forecast_instances, own, window, reachable, 1);
                steps = Some(s);
                let in_path = running.standard_ready == 0;
                (
                    s.clamped,
                    in_path,
                    PlanReason::Hpa,
                    r.per_instance.unwrap_or(0.0),
                    false,
                )
            }
        };
        let floor = match &self.policy.reserve {
            Some(r) if reachable => r.replicas,
            _ => 0,
        };
        let verdict = reserve_step(
            floor,
            standard,
            Running {
                standard_requested: self.requested,
                ..running
            },
        );
        self.requested = verdict.standard;
        let plan = Plan {
            standard: verdict.standard,
            reserved: verdict.reserved,
            reserved_serving: verdict.serving,
            activator_in_path: in_path,
            steps,
            forecast,
            window,
            reason,
            observed,
            panic,
        };
        self.last = Some(plan);
        plan
    }

    /// The per-instance target of the metric forecasts are in.
    fn target(&self) -> f64 {
        match &self.reactive {
            Reactive::Kpa { .. } => self.spec.target_value,
            Reactive::Hpa(h) => h.spec().target,
        }
    }
}

fn reactive_for(spec: &RevisionScaling, policy: &Policy, now: Instant) -> Reactive {
    match policy.hpa {
        Some(hpa) => Reactive::Hpa(HpaDecider::new(hpa)),
        None => Reactive::Kpa {
            decider: Box::new(Decider::new(spec.clone(), now, 0)),
            zero: ScaleToZero::new(spec, now),
        },
    }
}

/// Demand in instances: `ceil(value / target)`, 0 for no demand.
fn instances(value: f64, target: f64) -> u32 {
    if value.is_nan() || target.is_nan() || value <= 0.0 || target <= 0.0 {
        return 0;
    }
    (value / target).ceil().min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests;
