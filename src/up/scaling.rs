//! `sluice up`'s scaling edge: the controller's [`Run`]s, the activator and the autoscaler
//! ([`Autoscaling`]) wired to the process runtime and the gateway.
//!
//! - Every Revision the controller runs is registered with the in-process activator
//!   (`containerConcurrency`, timeout, h2c) and its ready instances are handed to it.
//! - Active Revisions (routed, or their Configuration's latest) are scaled by the KPA: every
//!   second ([`TICK`]) each gets one [`Stat`] — the activator's time-averaged concurrency
//!   while it is in the path, Envoy's sampled gauges (see [`super::metrics`]) when it is not —
//!   and a decision: the instance count goes to the runtime, the path to the controller (which
//!   points the Revision's Endpoints at the activator or at the instances).
//! - A request that waits at zero pokes the autoscaler: the Revision is decided at once.
//! - Inactive Revisions are stopped (`min-scale` holds only while a Route reaches them, as
//!   upstream).
//!
//! "Envoy routes through the activator" (which the last instance waits for before it goes) is
//! the path the gateway was given on the previous tick: the gateway pushes an Endpoints change
//! within milliseconds, a tick is a second, and the grace period (30 s by default) is counted
//! from then.

use std::collections::HashMap;
use std::time::Duration;

use sluice_activator::RevisionConfig;
use sluice_autoscaler::{RevisionKey, Stat};
use sluice_serving::serving::Key;
use tokio::time::Instant;

use super::controller::Run;
use super::lock;
use super::serving_loop::Loop;
use crate::runtime::RuntimeError;

/// How often every active Revision is decided (one metric bucket).
pub const TICK: Duration = Duration::from_secs(1);

fn revision_key(key: &Key) -> RevisionKey {
    RevisionKey::new(&key.namespace, &key.name)
}

impl Loop {
    /// Carries out the controller's [`Run`]s; returns the Revisions the runtime refused.
    pub(super) async fn apply_runs(&mut self, runs: Vec<Run>) -> Vec<(Key, RuntimeError)> {
        let now = Instant::now();
        let mut refused = Vec::new();
        for run in runs {
            let key = Key::new(&run.spec.namespace, &run.spec.revision);
            self.activator.set_revision(
                revision_key(&key),
                RevisionConfig {
                    container_concurrency: run.spec.container_concurrency,
                    timeout: run.timeout,
                    h2c: run.h2c,
                },
            );
            let tracked = run.active
                && match self.autoscaling.track(
                    now,
                    &key,
                    &run.annotations,
                    run.spec.container_concurrency,
                    run.reachable,
                ) {
                    Ok(()) => true,
                    Err(e) => {
                        // Admission checked them already; this is a config-autoscaler clash.
                        tracing::warn!(revision = %key, error = %e, "autoscaling annotations refused; running the revision unscaled");
                        false
                    }
                };
            let spec = run.spec.clone();
            let instances = if tracked {
                self.runs.insert(key.clone(), run);
                let via = lock(&self.controller).via_activator(&key);
                let ready = self.ready_count(&key);
                self.autoscaling
                    .tick(now, &key, ready, via)
                    .map_or(1, |d| d.scale)
            } else {
                self.autoscaling.forget(&key);
                self.runs.remove(&key);
                if run.active { run.instances } else { 0 }
            };
            if let Err(e) = self.scale_to(&key, spec, instances).await {
                refused.push((key, e));
            }
        }
        self.publish_views();
        refused
    }

    /// A Revision is gone: forget it everywhere.
    pub(super) fn forget_revision(&mut self, key: &Key) {
        self.autoscaling.forget(key);
        self.runs.remove(key);
        self.requested.remove(key);
        self.activator.remove_revision(&revision_key(key));
    }

    /// Asks the runtime for `instances` of the Revision (only when that changes).
    async fn scale_to(
        &mut self,
        key: &Key,
        spec: crate::runtime::RevisionSpec,
        instances: u32,
    ) -> Result<(), RuntimeError> {
        let same_spec = self.runtime.spec(&revision_key(key)).as_ref() == Some(&spec);
        if same_spec && self.requested.get(key) == Some(&instances) {
            return Ok(());
        }
        if self.requested.get(key) != Some(&instances) {
            tracing::info!(revision = %key, instances, "scaling");
        }
        self.runtime.ensure(spec, instances).await?;
        self.requested.insert(key.clone(), instances);
        Ok(())
    }

    fn ready_count(&self, key: &Key) -> u32 {
        u32::try_from(self.runtime.ready_addrs(&revision_key(key)).len()).unwrap_or(u32::MAX)
    }

    /// One autoscaler tick over every active Revision; returns whether a path changed (the
    /// gateway's Endpoints are due).
    pub(super) async fn tick(&mut self) -> bool {
        let now = Instant::now();
        let mut stats: HashMap<Key, Stat> = self
            .activator
            .collect_stats(now)
            .into_iter()
            .map(|r| {
                let key = Key::new(&r.revision.namespace, &r.revision.name);
                let stat = Stat {
                    concurrency: r.stat.concurrency,
                    requests: r.stat.requests as f64,
                };
                (key, stat)
            })
            .collect();
        let envoy = {
            let mut sampler = lock(&self.envoy_stats);
            sampler.set_wanted(lock(&self.controller).any_direct());
            sampler.take()
        };
        let keys: Vec<Key> = self.autoscaling.keys().cloned().collect();
        let mut path_changed = false;
        for key in keys {
            let via = lock(&self.controller).via_activator(&key);
            let mut stat = stats.remove(&key).unwrap_or_default();
            if !via && let Some(direct) = envoy.get(&key) {
                // Envoy sends the Revision's requests straight to its instances: its gauges
                // count them (through the activator they would count the same requests again).
                stat.concurrency += direct.concurrency;
                stat.requests += direct.requests;
            }
            self.autoscaling.record(now, &key, stat);
            path_changed |= self.decide(now, &key, via).await;
        }
        self.publish_views();
        path_changed
    }

    /// The activator holds a request for a Revision with no ready instance: decide it now.
    pub(super) async fn poked(&mut self, key: RevisionKey) -> bool {
        let key = Key::new(&key.namespace, &key.name);
        if !self.autoscaling.tracks(&key) || self.requested.get(&key).is_some_and(|n| *n > 0) {
            // Already waking (or not ours): the next tick sees the load.
            return false;
        }
        let now = Instant::now();
        let waiting = self.activator.in_flight(&revision_key(&key)).max(1);
        self.autoscaling.record(
            now,
            &key,
            Stat {
                concurrency: waiting as f64,
                requests: waiting as f64,
            },
        );
        let via = lock(&self.controller).via_activator(&key);
        let changed = self.decide(now, &key, via).await;
        self.publish_views();
        changed
    }

    /// Decides one Revision and carries the decision out; returns whether its path changed.
    async fn decide(&mut self, now: Instant, key: &Key, via: bool) -> bool {
        let ready = self.ready_count(key);
        let Some(decision) = self.autoscaling.tick(now, key, ready, via) else {
            return false;
        };
        if let Some(run) = self.runs.get(key) {
            let spec = run.spec.clone();
            if let Err(e) = self.scale_to(key, spec, decision.scale).await {
                tracing::warn!(revision = %key, error = %e, "cannot scale the revision");
            }
        }
        let mut c = lock(&self.controller);
        let was_direct = !c.via_activator(key);
        let direct = !decision.in_path;
        if was_direct != direct {
            tracing::info!(revision = %key, path = if direct { "direct" } else { "activator" }, "data path");
            c.set_direct(key, direct);
            return true;
        }
        false
    }

    /// Refreshes what `sluice status` shows of each Revision's scaling.
    fn publish_views(&self) {
        let views = self
            .autoscaling
            .keys()
            .filter_map(|k| Some((k.clone(), self.autoscaling.view(k)?)))
            .collect();
        *lock(&self.scaling_views) = views;
    }
}
