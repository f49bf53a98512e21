//! The KPA autoscaler under `sluice up`: one [`Decider`] and one [`ScaleToZero`] per active
//! Revision, fed a [`Stat`] every second, deciding how many instances the process runtime runs
//! and whether Envoy sends the Revision's traffic through the activator.
//!
//! No I/O: [`Autoscaling::tick`] takes the time, the ready instance count and whether the
//! gateway already routes through the activator, and answers with a [`Decision`]; the caller
//! (`up::Loop`) starts or stops processes and reprograms Envoy. Time is injected
//! (`tokio::time::Instant`): the tests step it by hand.
//!
//! Where the numbers come from (see `up::metrics`): while the activator is in the path it
//! measures every request of the Revision (time-averaged concurrency, as upstream's activator
//! reports it); on the direct path Envoy's per-cluster `upstream_rq_active` +
//! `upstream_rq_pending_active` gauges are sampled from its admin interface several times a
//! second. Both see every request without an extra hop in front of the app (no queue-proxy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_autoscaler::{
    AnnotationErrors, Config, Decider, RevisionScaling, ScaleToZero, Stat, ZeroReason,
};
use sluice_serving::serving::Key;
use tokio::time::Instant;

/// What to do with one Revision after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Instances the runtime should run.
    pub scale: u32,
    /// Whether Envoy should route the Revision through the activator.
    pub in_path: bool,
}

/// What `sluice status` shows of a Revision's scaling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingView {
    /// Instances asked of the runtime.
    pub desired: u32,
    /// `activator` or `direct`: where Envoy sends the Revision's traffic.
    pub path: String,
    /// Observed stable-window concurrency (or RPS).
    pub observed: f64,
    /// Whether the decider panics.
    pub panic: bool,
    /// Why the count is what it is (`active`, `grace-period`, `scaled-to-zero`, …).
    pub reason: String,
}

/// One Revision's autoscaler.
#[derive(Debug)]
struct Scaled {
    annotations: BTreeMap<String, String>,
    container_concurrency: u32,
    decider: Decider,
    zero: ScaleToZero,
    reachable: bool,
    /// Instances asked of the runtime.
    requested: u32,
    /// The last decision's path.
    in_path: bool,
    reason: ZeroReason,
    observed: f64,
}

/// Every active Revision's autoscaler, with the `config-autoscaler` in force.
#[derive(Debug, Default)]
pub struct Autoscaling {
    config: Config,
    revisions: BTreeMap<Key, Scaled>,
}

impl Autoscaling {
    /// No Revision yet, `config` in force.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            revisions: BTreeMap::new(),
        }
    }

    /// Takes a new `config-autoscaler`: every Revision's spec is resolved again (a Revision
    /// whose annotations no longer pass keeps its spec).
    pub fn set_config(&mut self, config: Config) {
        if config == self.config {
            return;
        }
        self.config = config;
        for s in self.revisions.values_mut() {
            if let Ok(spec) =
                RevisionScaling::resolve(&self.config, &s.annotations, s.container_concurrency)
            {
                s.zero.update(&spec);
                s.decider.update(spec);
            }
        }
    }

    /// Starts scaling a Revision, or takes its new settings. `reachable`: some Route sends it
    /// traffic (else `min-scale` does not hold and it may go to zero quickly, as upstream).
    pub fn track(
        &mut self,
        now: Instant,
        key: &Key,
        annotations: &BTreeMap<String, String>,
        container_concurrency: u32,
        reachable: bool,
    ) -> Result<(), AnnotationErrors> {
        let spec = RevisionScaling::resolve(&self.config, annotations, container_concurrency)?;
        match self.revisions.get_mut(key) {
            Some(s) => {
                if s.annotations != *annotations || s.container_concurrency != container_concurrency
                {
                    s.zero.update(&spec);
                    s.decider.update(spec);
                    s.annotations = annotations.clone();
                    s.container_concurrency = container_concurrency;
                }
                s.reachable = reachable;
                s.decider.set_reachable(reachable);
            }
            None => {
                let mut decider = Decider::new(spec.clone(), now, 0);
                decider.set_reachable(reachable);
                self.revisions.insert(
                    key.clone(),
                    Scaled {
                        annotations: annotations.clone(),
                        container_concurrency,
                        zero: ScaleToZero::new(&spec, now),
                        decider,
                        reachable,
                        requested: 0,
                        in_path: true,
                        reason: ZeroReason::Active,
                        observed: 0.0,
                    },
                );
            }
        }
        Ok(())
    }

    /// Stops scaling a Revision (it is stopped or gone).
    pub fn forget(&mut self, key: &Key) {
        self.revisions.remove(key);
    }

    /// Whether the Revision is scaled here.
    pub fn tracks(&self, key: &Key) -> bool {
        self.revisions.contains_key(key)
    }

    /// The Revisions scaled here.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.revisions.keys()
    }

    /// Records one second's figures for a Revision.
    pub fn record(&mut self, now: Instant, key: &Key, stat: Stat) {
        if let Some(s) = self.revisions.get_mut(key) {
            s.decider.record(now, stat);
        }
    }

    /// Decides a Revision's scale and path at `now`, given its `ready` instances and whether
    /// Envoy already routes it through the activator. `None` for an unknown Revision.
    pub fn tick(
        &mut self,
        now: Instant,
        key: &Key,
        ready: u32,
        routed_via_activator: bool,
    ) -> Option<Decision> {
        let s = self.revisions.get_mut(key)?;
        let result = s.decider.scale(now, ready);
        s.observed = result.observed_stable;
        s.in_path = result.activator_in_path;
        if let Some(desired) = result.desired_scale() {
            let verdict = s
                .zero
                .decide(now, desired, s.requested, routed_via_activator);
            s.requested = verdict.scale;
            s.reason = verdict.reason;
        }
        Some(Decision {
            scale: s.requested,
            in_path: s.in_path,
        })
    }

    /// What `sluice status` shows for a Revision.
    pub fn view(&self, key: &Key) -> Option<ScalingView> {
        let s = self.revisions.get(key)?;
        Some(ScalingView {
            desired: s.requested,
            path: if s.in_path { "activator" } else { "direct" }.into(),
            observed: (s.observed * 100.0).round() / 100.0,
            panic: s.decider.in_panic(),
            reason: reason_name(s.reason, s.reachable).into(),
        })
    }
}

fn reason_name(reason: ZeroReason, reachable: bool) -> &'static str {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config(pairs: &[(&str, &str)]) -> Config {
        let data = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&data).expect("valid config-autoscaler")
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Ticks once a second for `secs` seconds with `concurrency` in flight, the runtime making
    /// every requested instance ready at once and Envoy following every path decision.
    fn run(
        a: &mut Autoscaling,
        key: &Key,
        t: &mut Instant,
        secs: u32,
        concurrency: f64,
    ) -> Decision {
        let mut d = a.tick(*t, key, 0, true).unwrap();
        for _ in 0..secs {
            *t += SEC;
            a.record(
                *t,
                key,
                Stat {
                    concurrency,
                    requests: concurrency,
                },
            );
            d = a.tick(*t, key, d.scale, d.in_path).unwrap();
        }
        d
    }

    #[test]
    fn a_new_revision_starts_one_instance_behind_the_activator() {
        let mut a = Autoscaling::new(Config::default());
        let key = Key::new("default", "hello-00001");
        let now = Instant::now();
        a.track(now, &key, &BTreeMap::new(), 0, true).unwrap();
        let d = a.tick(now, &key, 0, true).unwrap();
        assert_eq!(
            d,
            Decision {
                scale: 1,
                in_path: true
            }
        );
    }

    #[test]
    fn idle_revision_scales_to_zero_after_stable_window_and_grace() {
        let mut a = Autoscaling::new(config(&[
            ("stable-window", "6s"),
            ("scale-to-zero-grace-period", "2s"),
        ]));
        let key = Key::new("default", "hello-00001");
        let mut t = Instant::now();
        a.track(t, &key, &BTreeMap::new(), 0, true).unwrap();
        // Inside the stable window one instance stays.
        let d = run(&mut a, &key, &mut t, 5, 0.0);
        assert_eq!(d.scale, 1);
        assert_eq!(a.view(&key).unwrap().reason, "stable-window");
        // After it and the grace period, zero.
        let d = run(&mut a, &key, &mut t, 10, 0.0);
        assert_eq!(
            d,
            Decision {
                scale: 0,
                in_path: true
            }
        );
        assert_eq!(a.view(&key).unwrap().reason, "scaled-to-zero");
    }

    #[test]
    fn the_last_instance_stays_until_envoy_routes_through_the_activator() {
        let mut a = Autoscaling::new(config(&[
            ("stable-window", "6s"),
            ("scale-to-zero-grace-period", "2s"),
        ]));
        let key = Key::new("default", "hello-00001");
        let mut t = Instant::now();
        a.track(t, &key, &BTreeMap::new(), 0, true).unwrap();
        let mut d = a.tick(t, &key, 0, false).unwrap();
        for _ in 0..30 {
            t += SEC;
            a.record(t, &key, Stat::default());
            // Envoy never confirms the activator path.
            d = a.tick(t, &key, d.scale, false).unwrap();
        }
        assert_eq!(d.scale, 1);
        assert_eq!(a.view(&key).unwrap().reason, "awaiting-activator");
    }

    #[test]
    fn traffic_at_zero_wakes_the_revision_at_once() {
        let mut a = Autoscaling::new(config(&[
            ("stable-window", "6s"),
            ("scale-to-zero-grace-period", "1s"),
        ]));
        let key = Key::new("default", "hello-00001");
        let mut t = Instant::now();
        a.track(t, &key, &BTreeMap::new(), 0, true).unwrap();
        assert_eq!(run(&mut a, &key, &mut t, 20, 0.0).scale, 0);
        // A poke: the activator holds one request.
        a.record(
            t,
            &key,
            Stat {
                concurrency: 1.0,
                requests: 1.0,
            },
        );
        let d = a.tick(t, &key, 0, true).unwrap();
        assert_eq!(d.scale, 1, "woken by the request it holds");
        assert!(d.in_path, "no instance is ready yet");
    }

    #[test]
    fn load_above_the_target_scales_out_and_back_in() {
        // containerConcurrency 10 at 70 %: 7 per instance.
        let mut a = Autoscaling::new(config(&[("stable-window", "6s")]));
        let key = Key::new("default", "hello-00001");
        let mut t = Instant::now();
        a.track(t, &key, &BTreeMap::new(), 10, true).unwrap();
        let d = run(&mut a, &key, &mut t, 12, 28.0);
        assert_eq!(d.scale, 4, "28 in flight / 7 per instance");
        let d = run(&mut a, &key, &mut t, 30, 0.0);
        assert!(d.scale < 4, "scales back in without load: {d:?}");
    }

    #[test]
    fn min_scale_holds_only_while_reachable() {
        let mut a = Autoscaling::new(config(&[
            ("stable-window", "6s"),
            ("scale-to-zero-grace-period", "1s"),
        ]));
        let key = Key::new("default", "hello-00001");
        let ann = annotations(&[("autoscaling.knative.dev/min-scale", "2")]);
        let mut t = Instant::now();
        a.track(t, &key, &ann, 0, true).unwrap();
        assert_eq!(run(&mut a, &key, &mut t, 30, 0.0).scale, 2);
        a.track(t, &key, &ann, 0, false).unwrap();
        assert_eq!(run(&mut a, &key, &mut t, 30, 0.0).scale, 0);
        assert_eq!(a.view(&key).unwrap().reason, "scaled-to-zero");
    }

    #[test]
    fn a_config_change_applies_to_tracked_revisions() {
        let mut a = Autoscaling::new(Config::default());
        let key = Key::new("default", "hello-00001");
        let mut t = Instant::now();
        a.track(t, &key, &BTreeMap::new(), 0, true).unwrap();
        assert_eq!(run(&mut a, &key, &mut t, 20, 0.0).scale, 1, "60 s window");
        a.set_config(config(&[("enable-scale-to-zero", "false")]));
        assert_eq!(run(&mut a, &key, &mut t, 200, 0.0).scale, 1);
        assert_eq!(a.view(&key).unwrap().reason, "scale-to-zero-disabled");
    }

    #[test]
    fn invalid_annotations_are_refused() {
        let mut a = Autoscaling::new(Config::default());
        let key = Key::new("default", "hello-00001");
        let ann = annotations(&[("autoscaling.knative.dev/min-scale", "lots")]);
        let err = a.track(Instant::now(), &key, &ann, 0, true).unwrap_err();
        assert!(err.to_string().contains("min-scale"), "{err}");
        assert!(!a.tracks(&key));
    }
}
