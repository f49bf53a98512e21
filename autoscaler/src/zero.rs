//! The scale-to-zero rule: when a decision of 0 instances may really remove
//! the last instance (upstream `handleScaleToZero` in the KPA reconciler),
//! as a pure state machine over an injected clock.
//!
//! A revision is *active* while it wants instances. When the decider first
//! asks for 0:
//! 1. an active revision keeps one instance until it has been active for a
//!    whole stable window (a revision woken by one request is not dropped on
//!    the next tick);
//! 2. it then turns *inactive*; the decider has put the activator in the
//!    path (desired 0), and the runtime reports back once Envoy serves that
//!    (`activator_in_path`);
//! 3. the last instance goes when the activator has been in the path, with
//!    the revision inactive, for `scale-to-zero-grace-period`, and the
//!    revision has been inactive for `scale-to-zero-pod-retention-period`.
//!
//! Upstream also lets an SKS that was already proxying for the grace period
//! skip step 3's wait; Sluice always measures the grace from the later of
//! "inactive" and "activator in path", so the last instance never goes
//! before Envoy has routed to the activator for the whole grace period.
//! With `enable-scale-to-zero: false` the revision keeps one instance (as
//! upstream, even one that is at 0).

use std::time::Duration;

use tokio::time::Instant;

use crate::revision::RevisionScaling;

/// Why [`ScaleToZero::decide`] answered as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroReason {
    /// The decider wants instances; passed through.
    Active,
    /// `enable-scale-to-zero` is false: one instance stays.
    Disabled,
    /// Idle, but not yet active for a whole stable window.
    StableWindow,
    /// Idle and inactive; waiting for the activator to be in the path.
    AwaitingActivator,
    /// Waiting out `scale-to-zero-grace-period` with the activator in path.
    GracePeriod,
    /// Waiting out `scale-to-zero-pod-retention-period`.
    PodRetention,
    /// The last instance may go.
    ScaledToZero,
}

/// What to do with the revision's instance count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroVerdict {
    /// The instance count to request.
    pub scale: u32,
    /// Whether the revision is inactive (idle, activator to be in path).
    pub inactive: bool,
    /// Why.
    pub reason: ZeroReason,
    /// When the count can next change without new input (schedule a tick then).
    pub recheck_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active { since: Instant },
    Inactive { since: Instant },
}

/// Scale-to-zero state of one revision.
#[derive(Debug, Clone)]
pub struct ScaleToZero {
    enabled: bool,
    stable_window: Duration,
    grace: Duration,
    retention: Duration,
    phase: Phase,
    in_path_since: Option<Instant>,
}

impl ScaleToZero {
    /// A revision that starts active at `now` (or inactive when its initial
    /// scale is 0).
    pub fn new(spec: &RevisionScaling, now: Instant) -> Self {
        let phase = if spec.initial_scale == 0 {
            Phase::Inactive { since: now }
        } else {
            Phase::Active { since: now }
        };
        Self {
            enabled: spec.enable_scale_to_zero,
            stable_window: spec.stable_window,
            grace: spec.scale_to_zero_grace_period,
            retention: spec.scale_to_zero_pod_retention_period,
            phase,
            in_path_since: None,
        }
    }

    /// Takes new settings; the phase and its timestamps are kept.
    pub fn update(&mut self, spec: &RevisionScaling) {
        self.enabled = spec.enable_scale_to_zero;
        self.stable_window = spec.stable_window;
        self.grace = spec.scale_to_zero_grace_period;
        self.retention = spec.scale_to_zero_pod_retention_period;
    }

    /// Whether the revision is inactive.
    pub fn inactive(&self) -> bool {
        matches!(self.phase, Phase::Inactive { .. })
    }

    /// Turns the decider's `desired` count (bounds already applied) into the
    /// count to request. `current` is the count requested so far (holding
    /// never scales up); `activator_in_path` whether Envoy now routes the
    /// revision through the activator.
    pub fn decide(
        &mut self,
        now: Instant,
        desired: u32,
        current: u32,
        activator_in_path: bool,
    ) -> ZeroVerdict {
        self.in_path_since = if activator_in_path {
            Some(self.in_path_since.unwrap_or(now))
        } else {
            None
        };
        let hold = current.min(1);
        let verdict = |scale, inactive, reason, recheck_at| ZeroVerdict {
            scale,
            inactive,
            reason,
            recheck_at,
        };

        if desired > 0 {
            if let Phase::Inactive { .. } = self.phase {
                self.phase = Phase::Active { since: now };
            }
            return verdict(desired, false, ZeroReason::Active, None);
        }
        if !self.enabled {
            return verdict(1, false, ZeroReason::Disabled, None);
        }
        let inactive_since = match self.phase {
            Phase::Active { since } => {
                // `None` here and below: so far ahead that it never arrives.
                let until = since.checked_add(self.stable_window);
                if until.is_none_or(|until| now < until) {
                    return verdict(hold, false, ZeroReason::StableWindow, until);
                }
                self.phase = Phase::Inactive { since: now };
                now
            }
            Phase::Inactive { since } => since,
        };
        let Some(in_path_since) = self.in_path_since else {
            return verdict(hold, true, ZeroReason::AwaitingActivator, None);
        };
        let grace_until = inactive_since.max(in_path_since).checked_add(self.grace);
        let retain_until = inactive_since.checked_add(self.retention);
        let not_yet = |until: Option<Instant>| until.is_none_or(|until| now < until);
        if not_yet(grace_until) {
            let recheck = grace_until.zip(retain_until).map(|(g, r)| g.max(r));
            return verdict(hold, true, ZeroReason::GracePeriod, recheck);
        }
        if not_yet(retain_until) {
            return verdict(hold, true, ZeroReason::PodRetention, retain_until);
        }
        verdict(0, true, ZeroReason::ScaledToZero, None)
    }
}

#[cfg(test)]
mod tests;
