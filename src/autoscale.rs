//! The autoscaler of both run modes: one [`RevisionAutoscaler`] per active Revision (the KPA's
//! decider and scale-to-zero rule, or the HPA class; forecasts for predictive Revisions;
//! scheduled bounds; reserved instances), fed a [`Stat`] every second (and `/proc` usage for
//! the HPA class), deciding how many standard and reserved instances run and whether Envoy
//! sends the Revision's traffic through the activator.
//!
//! No I/O: [`Autoscaling::tick`] takes the time (monotonic and wall clock), what runs and
//! whether the gateway already routes through the activator, and answers with a [`Decision`];
//! the caller — `up::Loop`, which starts or stops processes and reprograms Envoy, or
//! `sluice autoscaler --kube` ([`crate::autoscaler`]), which scales Deployments — carries it
//! out. Time is injected: the tests step it by hand.
//!
//! Where the numbers come from under `sluice up` (see `up::metrics`): while the activator is in the path it
//! measures every request of the Revision (time-averaged concurrency, as upstream's activator
//! reports it); on the direct path Envoy's per-cluster `upstream_rq_active` +
//! `upstream_rq_pending_active` gauges are sampled from its admin interface several times a
//! second. Both see every request without an extra hop in front of the app (no queue-proxy).
//! The HPA class reads CPU and memory of the Revision's processes from `/proc`
//! (`up::usage`).

pub mod history;
mod view;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use sluice_autoscaler::{
    AnnotationError, AnnotationErrors, Config, History, Plan, Policy, Reserve, RevisionAutoscaler,
    RevisionScaling, Running, Stat, Usage,
};
use sluice_serving::serving::Key;
use tokio::time::Instant;

pub use view::{ForecastView, ScalingView, StepsView};

/// What to do with one Revision after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Standard instances the runtime should run.
    pub scale: u32,
    /// Reserved instances the runtime should run.
    pub reserved: u32,
    /// Whether the reserved instances get requests (else they finish what they hold).
    pub reserved_serving: bool,
    /// Whether Envoy should route the Revision through the activator.
    pub in_path: bool,
}

/// One Revision's autoscaler.
#[derive(Debug)]
struct Scaled {
    annotations: BTreeMap<String, String>,
    container_concurrency: u32,
    auto: RevisionAutoscaler,
    /// Invalid annotations beyond the KPA's (reported, treated as absent).
    problems: Vec<AnnotationError>,
    /// How long its instances took to become ready, last seen.
    observed_start: Option<Duration>,
}

/// Every active Revision's autoscaler, with the `config-autoscaler` in force.
#[derive(Debug, Default)]
pub struct Autoscaling {
    config: Config,
    revisions: BTreeMap<Key, Scaled>,
}

/// The metric a Revision's history is kept in (`concurrency`, `rps`, `cpu`, `memory`).
fn history_metric(auto: &RevisionAutoscaler) -> &'static str {
    match auto.policy().hpa {
        Some(h) => h.metric.as_str(),
        None => auto.spec().metric.as_str(),
    }
}

impl Autoscaling {
    /// No Revision yet, `config` in force.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            revisions: BTreeMap::new(),
        }
    }

    /// Takes a new `config-autoscaler`: every Revision's settings are resolved again (a
    /// Revision whose annotations no longer pass keeps its settings).
    pub fn set_config(&mut self, config: Config) {
        if config == self.config {
            return;
        }
        self.config = config;
        let now = Instant::now();
        for s in self.revisions.values_mut() {
            if let Ok(spec) =
                RevisionScaling::resolve(&self.config, &s.annotations, s.container_concurrency)
            {
                let (policy, problems) = Policy::parse(&s.annotations, &self.config);
                s.auto.update(spec, policy, now);
                s.problems = problems;
            }
        }
    }

    /// Starts scaling a Revision, or takes its new settings. `reachable`: some Route sends it
    /// traffic (else `min-scale`, windows, forecasts and reserved instances do not hold and it
    /// may go to zero quickly, as upstream). `history`: a predictive Revision's persisted
    /// history and the metric it is in (used only when the Revision is new here and scales on
    /// that metric). Invalid `autoscaling.knative.dev/*` annotations refuse the Revision;
    /// invalid annotations beyond them are kept as [`Self::problems`] and treated as absent.
    pub fn track(
        &mut self,
        now: Instant,
        key: &Key,
        annotations: &BTreeMap<String, String>,
        container_concurrency: u32,
        reachable: bool,
        history: Option<(String, History)>,
    ) -> Result<(), AnnotationErrors> {
        let spec = RevisionScaling::resolve(&self.config, annotations, container_concurrency)?;
        let (policy, problems) = Policy::parse(annotations, &self.config);
        match self.revisions.get_mut(key) {
            Some(s) => {
                if s.annotations != *annotations || s.container_concurrency != container_concurrency
                {
                    s.auto.update(spec, policy, now);
                    s.annotations = annotations.clone();
                    s.container_concurrency = container_concurrency;
                    s.problems = problems;
                }
                s.auto.set_reachable(reachable);
            }
            None => {
                let mut auto = RevisionAutoscaler::new(spec, policy, now, None);
                if let Some((metric, h)) = history
                    && metric == history_metric(&auto)
                {
                    auto = RevisionAutoscaler::new(
                        auto.spec().clone(),
                        auto.policy().clone(),
                        now,
                        Some(h),
                    );
                }
                auto.set_reachable(reachable);
                self.revisions.insert(
                    key.clone(),
                    Scaled {
                        annotations: annotations.clone(),
                        container_concurrency,
                        auto,
                        problems,
                        observed_start: None,
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

    /// Invalid annotations beyond the KPA's of a Revision (reported, treated as absent).
    pub fn problems(&self, key: &Key) -> &[AnnotationError] {
        self.revisions.get(key).map_or(&[], |s| &s.problems)
    }

    /// Records one second's request figures for a Revision.
    pub fn record(&mut self, now: Instant, wall: Timestamp, key: &Key, stat: Stat) {
        if let Some(s) = self.revisions.get_mut(key) {
            s.auto.record(now, wall, stat);
        }
    }

    /// Records one measurement of CPU or memory for an HPA-class Revision.
    pub fn record_usage(&mut self, wall: Timestamp, key: &Key, usage: Usage) {
        if let Some(s) = self.revisions.get_mut(key) {
            s.auto.record_usage(wall, usage);
        }
    }

    /// The HPA metric (`cpu` or `memory`) of an HPA-class Revision.
    pub fn hpa_metric(&self, key: &Key) -> Option<sluice_autoscaler::HpaMetric> {
        self.revisions.get(key)?.auto.policy().hpa.map(|h| h.metric)
    }

    /// How long the Revision's instances take to become ready (the default look-ahead of a
    /// forecast adds 30 s to it).
    pub fn set_observed_start(&mut self, key: &Key, start: Duration) {
        if let Some(s) = self.revisions.get_mut(key) {
            s.observed_start = Some(start);
        }
    }

    /// The reserved-instance settings of a Revision, when enabled.
    pub fn reserve(&self, key: &Key) -> Option<&Reserve> {
        self.revisions.get(key)?.auto.policy().reserve.as_ref()
    }

    /// Whether the Revision's reserved instances get requests (per the last decision).
    pub fn reserved_serving(&self, key: &Key) -> bool {
        self.revisions
            .get(key)
            .and_then(|s| s.auto.last())
            .is_some_and(|p| p.reserved_serving && p.reserved > 0)
    }

    /// The predictive Revisions' histories and the metric each is in.
    pub fn histories(&self) -> impl Iterator<Item = (&Key, &'static str, &History)> {
        self.revisions
            .iter()
            .filter_map(|(k, s)| Some((k, history_metric(&s.auto), s.auto.history()?)))
    }

    /// Decides a Revision at `now` (`wall`: the wall-clock time, for windows and history),
    /// given what the runtime runs and whether Envoy already routes it through the activator.
    /// `None` for an unknown Revision.
    pub fn tick(
        &mut self,
        now: Instant,
        wall: Timestamp,
        key: &Key,
        running: Running,
        routed_via_activator: bool,
    ) -> Option<Decision> {
        let s = self.revisions.get_mut(key)?;
        let plan: Plan = s
            .auto
            .decide(now, wall, running, routed_via_activator, s.observed_start);
        Some(Decision {
            scale: plan.standard,
            reserved: plan.reserved,
            reserved_serving: plan.reserved_serving,
            in_path: plan.activator_in_path,
        })
    }

    /// What `sluice status` shows for a Revision.
    pub fn view(&self, key: &Key) -> Option<ScalingView> {
        let s = self.revisions.get(key)?;
        Some(view::of(&s.auto, s.observed_start))
    }
}

#[cfg(test)]
mod tests;
