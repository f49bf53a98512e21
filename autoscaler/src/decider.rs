//! The KPA decider: from recorded stats to a desired instance count, the
//! revision's excess burst capacity and whether the activator is in the path.
//!
//! One [`Decider`] per revision; pure and deterministic over an injected
//! clock (`tokio::time::Instant`, so paused-time tests drive it). The runtime
//! calls [`Decider::record`] for every stat (each source once a second) and
//! [`Decider::scale`] on every tick (2 s upstream) and on a poke.
//!
//! The steps of [`Decider::scale`] follow upstream's
//! `pkg/autoscaler/scaling/autoscaler.go`, then the bounds of the KPA
//! reconciler (`min-scale`, `max-scale`, `initial-scale`):
//! 1. `stable`/`panic` = window averages of the metric; desired =
//!    `ceil(value / target)` for each;
//! 2. both clamped to `[floor(ready / max-scale-down-rate),
//!    ceil(ready × max-scale-up-rate)]` (ready counted as at least 1; no
//!    lower clamp while unreachable);
//! 3. `activation-scale` raises a non-zero count to at least itself;
//! 4. panic starts when `panic desired / ready ≥ panic threshold` and ends
//!    once a whole stable window has passed without that; in panic the count
//!    is the larger of both and never decreases;
//! 5. `scale-down-delay`: the maximum over the delay window;
//! 6. excess burst capacity = `floor(ready × total capacity − TBC − panic
//!    value)` (0 when TBC is 0, -1 when TBC is -1);
//! 7. bounds; before the revision first reached `initial-scale` ready
//!    instances, at least that many. [`Decider::scale_with`] leaves the bounds
//!    to the caller ([`crate::combine`]: forecast, scheduled window, clamp).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use crate::annotations::Metric;
use crate::path::ActivatorPath;
use crate::revision::RevisionScaling;
use crate::window::{AverageWindow, MaxWindow};

/// One report for a revision, covering one second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    /// Time-averaged requests in flight over the second (∫c dt / t).
    pub concurrency: f64,
    /// Requests that arrived during the second.
    pub requests: f64,
}

/// The outcome of one [`Decider::scale`] tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleResult {
    /// False when there is no data to decide on yet (the autoscaler just
    /// started and nothing was recorded); then keep the current scale.
    pub valid: bool,
    /// Instances wanted, bounds applied, before the scale-to-zero rule
    /// ([`crate::ScaleToZero`]); -1 when not valid.
    pub desired: i32,
    /// The KPA's own figure before the bounds (`initial-scale` applied); -1 when not valid.
    pub reactive: i32,
    /// Spare capacity beyond the target burst capacity; negative means the
    /// revision cannot absorb a burst of TBC requests on its own.
    pub excess_burst_capacity: i32,
    /// Whether the decider is in panic mode.
    pub panic: bool,
    /// Observed stable-window value of the metric.
    pub observed_stable: f64,
    /// Observed panic-window value of the metric.
    pub observed_panic: f64,
    /// Whether the activator should be in the path (with hysteresis, see [`ActivatorPath`]).
    pub activator_in_path: bool,
}

impl ScaleResult {
    /// The desired count, if the result is valid.
    pub fn desired_scale(&self) -> Option<u32> {
        if self.valid {
            u32::try_from(self.desired).ok()
        } else {
            None
        }
    }
}

/// The KPA decider of one revision.
#[derive(Debug, Clone)]
pub struct Decider {
    spec: RevisionScaling,
    /// Window times are measured from here.
    origin: Instant,
    stable: AverageWindow,
    panic: AverageWindow,
    /// Last tick at which the panic threshold was crossed (upstream `panicTime`).
    panic_time: Option<Instant>,
    max_panic_pods: i32,
    delay: Option<MaxWindow>,
    path: ActivatorPath,
    reachable: bool,
    /// Whether the revision has reached `initial-scale` ready instances once.
    initialized: bool,
    last: Option<ScaleResult>,
}

impl Decider {
    /// A decider for a revision with `ready` instances at `now`.
    ///
    /// As upstream, a decider that starts with more than one ready instance
    /// (an autoscaler restart) starts in panic mode, so missing history does
    /// not scale the revision down before a stable window of data exists.
    pub fn new(spec: RevisionScaling, now: Instant, ready: u32) -> Self {
        let stable = AverageWindow::new(spec.stable_window, spec.aggregation);
        let panic = AverageWindow::new(spec.panic_window, spec.aggregation);
        let delay = delay_window(spec.scale_down_delay);
        let path = ActivatorPath::new(spec.panic_window);
        let initialized = ready >= spec.initial_scale;
        let (panic_time, max_panic_pods) = if ready > 1 {
            (Some(now), count(f64::from(ready)))
        } else {
            (None, 0)
        };
        Self {
            spec,
            origin: now,
            stable,
            panic,
            panic_time,
            max_panic_pods,
            delay,
            path,
            reachable: true,
            initialized,
            last: None,
        }
    }

    /// The spec in force.
    pub fn spec(&self) -> &RevisionScaling {
        &self.spec
    }

    /// Takes a new spec (annotations or `config-autoscaler` changed), keeping
    /// the recorded data; a changed `scale-down-delay` starts its window anew.
    pub fn update(&mut self, spec: RevisionScaling) {
        if spec.aggregation != self.stable.aggregation() {
            self.stable = AverageWindow::new(spec.stable_window, spec.aggregation);
            self.panic = AverageWindow::new(spec.panic_window, spec.aggregation);
        } else {
            self.stable.resize(spec.stable_window);
            self.panic.resize(spec.panic_window);
        }
        if spec.scale_down_delay != self.spec.scale_down_delay {
            self.delay = delay_window(spec.scale_down_delay);
        }
        self.path.set_hold(spec.panic_window);
        self.spec = spec;
    }

    /// Whether any route sends traffic to the revision (default true). An
    /// unreachable revision may drop to 0 in one tick and ignores `min-scale`.
    pub fn set_reachable(&mut self, reachable: bool) {
        self.reachable = reachable;
    }

    /// Marks the revision as having reached its initial scale before (e.g.
    /// restored after a restart), so `initial-scale` no longer applies.
    pub fn mark_initialized(&mut self) {
        self.initialized = true;
    }

    /// Records one stat at `now`. Reports in the same second add up.
    pub fn record(&mut self, now: Instant, stat: Stat) {
        let value = match self.spec.metric {
            Metric::Concurrency => stat.concurrency,
            Metric::Rps => stat.requests,
        };
        let at = self.since_origin(now);
        self.stable.record(at, value);
        self.panic.record(at, value);
    }

    /// Whether `stat` should trigger an immediate tick: the last decision was
    /// 0 instances and the stat shows traffic (upstream's activator poke).
    pub fn wants_poke(&self, stat: &Stat) -> bool {
        let traffic = stat.concurrency > 0.0 || stat.requests > 0.0;
        traffic && self.last.is_some_and(|r| r.valid && r.desired == 0)
    }

    /// Whether the activator is in the path, as of the last valid tick.
    pub fn activator_in_path(&self) -> bool {
        self.path.in_path()
    }

    /// Whether the decider is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic_time.is_some()
    }

    /// The last result of [`Self::scale`].
    pub fn last_result(&self) -> Option<ScaleResult> {
        self.last
    }

    /// Decides the revision's scale at `now`, given `ready` instances.
    pub fn scale(&mut self, now: Instant, ready: u32) -> ScaleResult {
        let (min, max) = self.spec.scale_bounds(self.reachable);
        self.scale_with(now, ready, |desired| {
            let x = desired.max(min);
            if max != 0 { x.min(max) } else { x }
        })
    }

    /// [`Self::scale`] with the last step, the bounds, left to `bound`: it gets the KPA's own
    /// figure (`initial-scale` applied) and returns the count to decide on (see
    /// [`crate::combine`], which also raises it to a forecast and applies scheduled bounds).
    /// The activator path follows the count `bound` returns.
    pub fn scale_with(
        &mut self,
        now: Instant,
        ready: u32,
        bound: impl FnOnce(u32) -> u32,
    ) -> ScaleResult {
        if ready >= self.spec.initial_scale {
            self.initialized = true;
        }
        let at = self.since_origin(now);
        // With nothing recorded yet, the first stable window of a decider
        // whose revision is past its initial scale is "no data" (an
        // autoscaler restart: keep the current scale). After that, or once
        // data has aged out of the window, silence means no traffic and the
        // averages are 0. (Inside the window a trailing silence is unknown,
        // not zero — see `AverageWindow::average` — so sources should report
        // zeros for revisions with instances to make the decline gradual.)
        // A new revision goes to its initial scale without waiting for data.
        let have_data = self.stable.has_data() || at >= self.spec.stable_window;
        if !have_data && self.initialized {
            let r = ScaleResult {
                valid: false,
                desired: -1,
                reactive: -1,
                excess_burst_capacity: -1,
                panic: self.in_panic(),
                observed_stable: 0.0,
                observed_panic: 0.0,
                activator_in_path: self.path.in_path(),
            };
            self.last = Some(r);
            return r;
        }
        let observed_stable = self.stable.average(at);
        let observed_panic = self.panic.average(at);
        let spec = &self.spec;

        let ready_f = f64::from(ready.max(1));
        let max_up = (spec.max_scale_up_rate * ready_f).ceil();
        let max_down = if self.reachable {
            (ready_f / spec.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let dspc = (observed_stable / spec.target_value).ceil();
        let dppc = (observed_panic / spec.target_value).ceil();
        let mut desired_stable = count(dspc.max(max_down).min(max_up));
        let mut desired_panic = count(dppc.max(max_down).min(max_up));
        let activation = count(f64::from(spec.activation_scale));
        if activation > 1 {
            if dspc > 0.0 && activation > desired_stable {
                desired_stable = activation;
            }
            if dppc > 0.0 && activation > desired_panic {
                desired_panic = activation;
            }
        }

        let over_threshold = dppc / ready_f >= spec.panic_threshold;
        match self.panic_time {
            None if over_threshold => {
                info!(
                    ready,
                    observed_panic,
                    target = spec.target_value,
                    "panicking"
                );
                self.panic_time = Some(now);
            }
            Some(_) if over_threshold => self.panic_time = Some(now),
            Some(t)
                if t.checked_add(spec.stable_window)
                    .is_some_and(|end| end < now) =>
            {
                info!(ready, observed_stable, "un-panicking");
                self.panic_time = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }

        let mut desired = desired_stable;
        if self.panic_time.is_some() {
            // Provision for the larger of the two; never decrease in panic.
            desired = desired.max(desired_panic);
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
        }

        if let Some(delay) = &mut self.delay {
            delay.record(at, desired);
            desired = delay.current();
        }

        let tbc = spec.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0
        } else if tbc > 0.0 {
            count_signed((f64::from(ready) * spec.total_value - tbc - observed_panic).floor())
        } else {
            -1
        };

        let mut bounded = desired.unsigned_abs();
        if !self.initialized {
            bounded = bounded.max(spec.initial_scale);
        }
        let reactive = bounded;
        let bounded = bound(bounded);
        let activator_in_path = self.path.update(now, bounded, ready, excess_burst_capacity);

        debug!(
            metric = spec.metric.as_str(),
            observed_stable,
            observed_panic,
            target = spec.target_value,
            ready,
            desired_stable,
            desired_panic,
            desired = bounded,
            excess_burst_capacity,
            activator_in_path,
            panic = self.panic_time.is_some(),
            "scale decision"
        );
        let r = ScaleResult {
            valid: true,
            desired: count(f64::from(bounded)),
            reactive: count(f64::from(reactive)),
            excess_burst_capacity,
            panic: self.panic_time.is_some(),
            observed_stable,
            observed_panic,
            activator_in_path,
        };
        self.last = Some(r);
        r
    }

    fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}

fn delay_window(delay: Duration) -> Option<MaxWindow> {
    (!delay.is_zero()).then(|| MaxWindow::new(delay))
}

/// A non-negative instance count from a float (NaN → 0, saturating).
fn count(v: f64) -> i32 {
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

/// A signed count from a float (NaN → -1, saturating).
fn count_signed(v: f64) -> i32 {
    if v.is_nan() {
        -1
    } else {
        v.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    }
}

#[cfg(test)]
mod tests;
