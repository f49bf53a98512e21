//! Whether Envoy should send a revision's traffic through the activator
//! ("proxy" mode) or straight to its instances ("serve" mode), with
//! hysteresis so the choice does not flip-flop (upstream serving#11926).
//!
//! Upstream switches to proxy whenever the desired scale is 0 or the excess
//! burst capacity (EBC) is negative, and back to serve on the very next tick
//! where EBC ≥ 0: with load hovering at the boundary every 2 s tick can
//! reprogram the data path. Sluice's rule is asymmetric:
//!
//! * **Into the path at once** when the desired scale is 0, no instance is
//!   ready, or EBC < 0. Protection against a burst must not wait.
//! * **Out of the path only after a hold**: desired > 0, at least one ready
//!   instance and EBC ≥ 0 must have held at *every* decision for `hold`
//!   (default: the revision's panic window, 6 s by default). EBC is computed
//!   from panic-window concurrency, so the hold asks for one whole averaging
//!   horizon of surplus, not one lucky tick. Any short tick restarts the hold.
//!
//! So a revision oscillating around EBC = 0 stays behind the activator, and
//! the number of serve→proxy switches is at most one per `hold`.
//! `target-burst-capacity: -1` keeps EBC at -1, so the activator never
//! leaves the path; `0` keeps EBC at 0, so it leaves once instances are ready.

use std::time::Duration;

use tokio::time::Instant;

/// The activator-in-path decision for one revision.
#[derive(Debug, Clone)]
pub struct ActivatorPath {
    in_path: bool,
    /// Since when every decision has allowed serving directly.
    surplus_since: Option<Instant>,
    hold: Duration,
}

impl ActivatorPath {
    /// Starts in the path: a new revision proves its capacity before Envoy
    /// sends traffic to it directly.
    pub fn new(hold: Duration) -> Self {
        Self {
            in_path: true,
            surplus_since: None,
            hold,
        }
    }

    /// Whether the activator is (to be) in the path.
    pub fn in_path(&self) -> bool {
        self.in_path
    }

    /// How long a surplus must last before the activator leaves the path.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Changes the hold; a running hold keeps its start.
    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold;
    }

    /// Feeds one scaling decision; returns whether the activator is in the path.
    pub fn update(
        &mut self,
        now: Instant,
        desired: u32,
        ready: u32,
        excess_burst_capacity: i32,
    ) -> bool {
        let short = desired == 0 || ready == 0 || excess_burst_capacity < 0;
        if short {
            self.in_path = true;
            self.surplus_since = None;
        } else if self.in_path {
            let since = *self.surplus_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.hold {
                self.in_path = false;
                self.surplus_since = None;
            }
        }
        self.in_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOLD: Duration = Duration::from_secs(6);
    const TICK: Duration = Duration::from_secs(2);

    #[test]
    fn enters_at_once_and_leaves_after_a_hold_of_surplus() {
        let t0 = Instant::now();
        let mut p = ActivatorPath::new(HOLD);
        assert!(p.in_path());
        assert!(p.update(t0, 3, 3, 10));
        assert!(p.update(t0 + Duration::from_secs(5), 3, 3, 10));
        assert!(!p.update(t0 + Duration::from_secs(6), 3, 3, 10));
        // One short tick puts it straight back.
        assert!(p.update(t0 + Duration::from_secs(8), 3, 3, -1));
    }

    #[test]
    fn zero_desired_or_no_ready_instance_means_activator() {
        let t0 = Instant::now();
        let mut p = ActivatorPath::new(Duration::ZERO);
        assert!(!p.update(t0, 1, 1, 0));
        assert!(p.update(t0, 0, 1, 5));
        assert!(!p.update(t0, 1, 1, 0));
        assert!(p.update(t0, 1, 0, 5));
    }

    #[test]
    fn oscillating_capacity_does_not_flip_flop() {
        let t0 = Instant::now();
        let mut p = ActivatorPath::new(HOLD);
        let mut switches = 0;
        let mut last = p.in_path();
        for i in 0..100u32 {
            let ebc = if i % 2 == 0 { 1 } else { -1 };
            let now = p.update(t0 + TICK * i, 5, 5, ebc);
            switches += u32::from(now != last);
            last = now;
        }
        assert_eq!(switches, 0, "stayed behind the activator");
        assert!(p.in_path());
    }

    proptest! {
        #[test]
        fn at_most_one_switch_out_per_hold(
            ebcs in proptest::collection::vec(-3i32..3, 1..300),
            hold_secs in 1u64..20,
        ) {
            let hold = Duration::from_secs(hold_secs);
            let t0 = Instant::now();
            let mut p = ActivatorPath::new(hold);
            let mut outs: Vec<Instant> = Vec::new();
            let mut entered = t0;
            let mut was = true;
            for (i, ebc) in ebcs.iter().enumerate() {
                let now = t0 + TICK * u32::try_from(i).unwrap_or(u32::MAX);
                let is = p.update(now, 2, 2, *ebc);
                // In whenever short, at once.
                if *ebc < 0 {
                    prop_assert!(is);
                }
                if was && !is {
                    // Left only after `hold` of surplus since it last entered.
                    prop_assert!(now.duration_since(entered) >= hold);
                    outs.push(now);
                }
                if !was && is {
                    entered = now;
                }
                if is && *ebc < 0 {
                    entered = now;
                }
                was = is;
            }
            for pair in outs.windows(2) {
                prop_assert!(pair[1].duration_since(pair[0]) >= hold);
            }
        }
    }
}
