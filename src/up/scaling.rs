//! `sluice up`'s scaling edge: the controller's [`Run`]s, the activator and the autoscaler
//! ([`Autoscaling`]) wired to the process runtime and the gateway.
//!
//! - Every Revision the controller runs is registered with the in-process activator
//!   (`containerConcurrency`, timeout, h2c) and its routable instances are handed to it.
//! - Active Revisions (routed, or their Configuration's latest) are scaled: every second
//!   ([`TICK`]) each gets one [`Stat`] — the activator's time-averaged concurrency while it is
//!   in the path, Envoy's sampled gauges (see [`super::metrics`]) when it is not — or, for the
//!   HPA class, the CPU and memory of its processes (see [`super::usage`]), and a decision:
//!   standard and reserved instance counts go to the runtime, the path to the controller
//!   (which points the Revision's Endpoints at the activator or at the instances).
//! - A request that waits at zero pokes the autoscaler: the Revision is decided at once.
//! - Inactive Revisions are stopped (`min-scale` holds only while a Route reaches them, as
//!   upstream).
//! - Reserved instances are routable while the decision says they serve (at idle, and until
//!   a standard instance is ready); then they leave the routing set, and stop once the
//!   activator shows they hold no request (at most the Revision's timeout later).
//! - Predictive Revisions' histories are written to the state directory once a minute and at
//!   shutdown ([`crate::autoscale::history`]).
//!
//! "Envoy routes through the activator" (which the last instance waits for before it goes) is
//! the path the gateway was given on the previous tick: the gateway pushes an Endpoints change
//! within milliseconds, a tick is a second, and the grace period (30 s by default) is counted
//! from then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use jiff::Timestamp;
use sluice_activator::RevisionConfig;
use sluice_autoscaler::predict::{PREDICTIVE, minute_of};
use sluice_autoscaler::{HpaMetric, RevisionKey, Running, Stat, Usage};
use sluice_serving::serving::Key;
use tokio::time::Instant;

use super::controller::Run;
use super::lock;
use super::serving_loop::Loop;
use crate::autoscale::{Decision, history};
use crate::gateway::documents::Problem;
use crate::runtime::{InstanceState, InstanceStatus, ReservedSpec, RuntimeError};

/// How often every active Revision is decided (one metric bucket).
pub const TICK: Duration = Duration::from_secs(1);

pub(super) fn revision_key(key: &Key) -> RevisionKey {
    RevisionKey::new(&key.namespace, &key.name)
}

/// What the runtime runs of a Revision, as the autoscaler counts it.
fn running_of(instances: &[InstanceStatus]) -> Running {
    let count = |f: &dyn Fn(&InstanceStatus) -> bool| {
        u32::try_from(instances.iter().filter(|i| f(i)).count()).unwrap_or(u32::MAX)
    };
    Running {
        standard_requested: 0,
        standard_ready: count(&|i| !i.reserved && i.ready),
        reserved_running: count(&|i| i.reserved && i.state != InstanceState::Stopping),
        reserved_ready: count(&|i| i.reserved && i.ready),
    }
}

impl Loop {
    /// Carries out the controller's [`Run`]s; returns the Revisions the runtime refused.
    pub(super) async fn apply_runs(&mut self, runs: Vec<Run>) -> Vec<(Key, RuntimeError)> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut refused = Vec::new();
        for run in runs {
            let key = Key::new(&run.spec.namespace, &run.spec.revision);
            self.activator.set_revision(
                revision_key(&key),
                RevisionConfig {
                    container_concurrency: run.spec.container_concurrency,
                    timeout: run.timeout,
                    response_start_timeout: run.response_start_timeout,
                    idle_timeout: run.idle_timeout,
                    h2c: run.h2c,
                },
            );
            let predictive = run.annotations.get(PREDICTIVE).is_some_and(|v| v == "true");
            let history = (run.active && predictive && !self.autoscaling.tracks(&key))
                .then(|| history::load(&self.state_dir, &key, &run.spec.configuration))
                .flatten();
            let tracked = run.active
                && match self.autoscaling.track(
                    now,
                    &key,
                    &run.annotations,
                    run.spec.container_concurrency,
                    run.reachable,
                    history,
                ) {
                    Ok(()) => {
                        self.refused_annotations.remove(&key);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(revision = %key, error = %e, "invalid autoscaling annotations; running the revision unscaled");
                        self.refused_annotations.insert(key.clone(), e);
                        false
                    }
                };
            let spec = run.spec.clone();
            let instances = if tracked {
                self.runs.insert(key.clone(), run);
                let via = lock(&self.controller).via_activator(&key);
                let instances = self.runtime.instances(&revision_key(&key));
                self.autoscaling
                    .tick(now, wall, &key, running_of(&instances), via)
                    .map_or(1, |d| d.scale)
            } else {
                self.autoscaling.forget(&key);
                self.runs.remove(&key);
                if run.active { run.instances } else { 0 }
            };
            if let Err(e) = self.scale_to(&key, spec, instances).await {
                refused.push((key.clone(), e));
            }
            if !tracked {
                self.stop_reserved(&key).await;
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
        self.retiring.remove(key);
        self.reserved_specs.remove(key);
        self.refused_annotations.remove(key);
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

    /// One autoscaler tick over every active Revision; returns whether the gateway's
    /// Endpoints are due (a path or a routing set changed).
    pub(super) async fn tick(&mut self) -> bool {
        let now = Instant::now();
        let wall = Timestamp::now();
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
        let usage = self.sample_usage(now);
        let keys: Vec<Key> = self.autoscaling.keys().cloned().collect();
        let mut changed = false;
        for key in keys {
            let via = lock(&self.controller).via_activator(&key);
            let mut stat = stats.remove(&key).unwrap_or_default();
            if !via && let Some(direct) = envoy.get(&key) {
                // Envoy sends the Revision's requests straight to its instances: its gauges
                // count them (through the activator they would count the same requests again).
                stat.concurrency += direct.concurrency;
                stat.requests += direct.requests;
            }
            self.autoscaling.record(now, wall, &key, stat);
            if let Some(u) = usage.get(&key) {
                self.autoscaling.record_usage(wall, &key, *u);
            }
            changed |= self.decide(now, wall, &key, via).await;
        }
        self.save_histories(wall, false);
        self.publish_views();
        changed
    }

    /// CPU or memory of each HPA-class Revision's ready standard instances.
    fn sample_usage(&mut self, now: Instant) -> HashMap<Key, Usage> {
        let hpa: Vec<(Key, HpaMetric, Vec<u32>)> = self
            .autoscaling
            .keys()
            .filter_map(|k| {
                let metric = self.autoscaling.hpa_metric(k)?;
                let pids = self
                    .runtime
                    .instances(&revision_key(k))
                    .iter()
                    .filter(|i| i.ready && !i.reserved)
                    .filter_map(|i| i.pid)
                    .collect();
                Some((k.clone(), metric, pids))
            })
            .collect();
        let leaders: Vec<u32> = hpa.iter().flat_map(|(_, _, p)| p.iter().copied()).collect();
        let sampled = self.usage.sample(now, &leaders);
        let mut out = HashMap::new();
        for (key, metric, pids) in hpa {
            let measured: Vec<_> = pids.iter().filter_map(|p| sampled.get(p)).collect();
            if measured.is_empty() {
                continue;
            }
            let total = measured
                .iter()
                .map(|u| match metric {
                    HpaMetric::Cpu => u.cpu_percent,
                    HpaMetric::Memory => u.memory_mib,
                })
                .sum();
            let ready = u32::try_from(measured.len()).unwrap_or(u32::MAX);
            out.insert(key, Usage { ready, total });
        }
        out
    }

    /// The activator holds a request for a Revision with no ready instance: decide it now.
    pub(super) async fn poked(&mut self, key: RevisionKey) -> bool {
        let key = Key::new(&key.namespace, &key.name);
        if !self.autoscaling.tracks(&key) || self.requested.get(&key).is_some_and(|n| *n > 0) {
            // Already waking (or not ours): the next tick sees the load.
            return false;
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let waiting = self.activator.in_flight(&revision_key(&key)).max(1);
        self.autoscaling.record(
            now,
            wall,
            &key,
            Stat {
                concurrency: waiting as f64,
                requests: waiting as f64,
            },
        );
        let via = lock(&self.controller).via_activator(&key);
        let changed = self.decide(now, wall, &key, via).await;
        self.publish_views();
        changed
    }

    /// Decides one Revision and carries the decision out; returns whether its path or its
    /// routing set changed.
    async fn decide(&mut self, now: Instant, wall: Timestamp, key: &Key, via: bool) -> bool {
        let rk = revision_key(key);
        let instances = self.runtime.instances(&rk);
        if let Some(start) = instances
            .iter()
            .filter(|i| !i.reserved)
            .filter_map(|i| i.start_time)
            .max()
        {
            self.autoscaling.set_observed_start(key, start);
        }
        let serving_before = self.autoscaling.reserved_serving(key);
        let running = running_of(&instances);
        let Some(decision) = self.autoscaling.tick(now, wall, key, running, via) else {
            return false;
        };
        if let Some(run) = self.runs.get(key) {
            let spec = run.spec.clone();
            if let Err(e) = self.scale_to(key, spec, decision.scale).await {
                tracing::warn!(revision = %key, error = %e, "cannot scale the revision");
            }
        }
        self.apply_reserved(now, key, &decision, &instances).await;
        let mut changed = false;
        if serving_before != self.autoscaling.reserved_serving(key) {
            tracing::info!(revision = %key, serving = !serving_before, "reserved instances' routing");
            self.refresh(std::slice::from_ref(key));
            changed = true;
        }
        let mut c = lock(&self.controller);
        let was_direct = !c.via_activator(key);
        let direct = !decision.in_path;
        if was_direct != direct {
            tracing::info!(revision = %key, path = if direct { "direct" } else { "activator" }, "data path");
            c.set_direct(key, direct);
            changed = true;
        }
        changed
    }

    /// Starts or stops reserved instances as decided. Instances that no longer serve stop
    /// only once they hold no request (they left the routing set at least one tick ago), or
    /// after the Revision's timeout.
    async fn apply_reserved(
        &mut self,
        now: Instant,
        key: &Key,
        decision: &Decision,
        instances: &[InstanceStatus],
    ) {
        let rk = revision_key(key);
        let spec = ReservedSpec {
            args: self.autoscaling.reserve(key).and_then(|r| r.args.clone()),
        };
        let have = self.runtime.reserved_count(&rk);
        let want = decision.reserved;
        if want < have && !decision.reserved_serving {
            let since = *self.retiring.entry(key.clone()).or_insert(now);
            let timeout = self
                .runs
                .get(key)
                .map_or(Duration::from_secs(300), |r| r.timeout);
            let busy = instances
                .iter()
                .filter(|i| i.reserved)
                .map(|i| self.activator.throttler().in_flight_on(&rk, i.addr))
                .sum::<u32>();
            let waited = now.saturating_duration_since(since);
            if since == now || (busy > 0 && waited < timeout) {
                return;
            }
            tracing::info!(revision = %key, busy, ?waited, "reserved instance handed over; stopping it");
        }
        self.retiring.remove(key);
        if want == have && self.reserved_specs.get(key) == Some(&spec) {
            return;
        }
        if self.runtime.spec(&rk).is_none() {
            return;
        }
        match self.runtime.ensure_reserved(&rk, want, spec.clone()).await {
            Ok(()) => {
                if want != have {
                    tracing::info!(revision = %key, reserved = want, "reserved instances");
                }
                self.reserved_specs.insert(key.clone(), spec);
            }
            Err(e) => tracing::warn!(revision = %key, error = %e, "cannot run reserved instances"),
        }
    }

    /// Stops the reserved instances of a Revision that is no longer scaled.
    async fn stop_reserved(&mut self, key: &Key) {
        let rk = revision_key(key);
        self.retiring.remove(key);
        if self.runtime.reserved_count(&rk) > 0 {
            let spec = self.reserved_specs.remove(key).unwrap_or_default();
            if let Err(e) = self.runtime.ensure_reserved(&rk, 0, spec).await {
                tracing::warn!(revision = %key, error = %e, "cannot stop reserved instances");
            }
        }
    }

    /// The addresses requests may go to: ready standard instances, and ready reserved ones
    /// while they serve and no standard instance is ready (the hand-over is at once, not at
    /// the next decision).
    pub(super) fn routable(&self, key: &Key, instances: &[InstanceStatus]) -> Vec<SocketAddr> {
        let standard_ready = instances.iter().any(|i| i.ready && !i.reserved);
        let serving = self.autoscaling.reserved_serving(key) && !standard_ready;
        let mut ready: Vec<SocketAddr> = instances
            .iter()
            .filter(|i| i.ready && (!i.reserved || serving))
            .map(|i| i.addr)
            .collect();
        ready.sort();
        ready
    }

    /// Writes the predictive histories when a minute has passed (or `force`, at shutdown).
    pub(super) fn save_histories(&mut self, wall: Timestamp, force: bool) {
        let minute = minute_of(wall);
        if !force && minute == self.history_minute {
            return;
        }
        self.history_minute = minute;
        let files: Vec<_> = self
            .autoscaling
            .histories()
            .map(|(key, metric, h)| {
                let configuration = self
                    .runs
                    .get(key)
                    .map_or("", |r| r.spec.configuration.as_str());
                (
                    history::path(&self.state_dir, key, configuration),
                    history::encode(metric, h),
                )
            })
            .collect();
        if files.is_empty() {
            return;
        }
        if force {
            history::write_all(files);
        } else {
            tokio::task::spawn_blocking(move || history::write_all(files));
        }
    }

    /// Invalid scaling annotations, as problems of the Revision in its template's file.
    pub(super) fn scaling_problems(&self) -> Vec<Problem> {
        let c = lock(&self.controller);
        let problem = |key: &Key, e: &sluice_autoscaler::AnnotationError| Problem {
            file: c.revision_file(key).unwrap_or_default(),
            object: Some(format!("Revision {}/{}", key.namespace, key.name)),
            field: Some(format!("metadata.annotations.{}", e.key())),
            message: e.reason(),
        };
        let mut out: Vec<Problem> = self
            .autoscaling
            .keys()
            .flat_map(|k| self.autoscaling.problems(k).iter().map(|e| problem(k, e)))
            .collect();
        for (key, errors) in &self.refused_annotations {
            out.extend(errors.0.iter().map(|e| Problem {
                message: format!("{} (the revision runs unscaled)", e.reason()),
                ..problem(key, e)
            }));
        }
        out
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
