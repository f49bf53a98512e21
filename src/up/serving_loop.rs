//! `sluice up`'s event loop: file changes, runtime changes, autoscaler ticks and pokes in;
//! gateway inputs, process starts and stops, and state writes out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sluice_serving::serving::{Key, Readiness};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::controller::{Controller, Run, RuntimeReport};
use super::metrics::{self, EnvoySampler, EnvoyStats};
use super::{STATE_WRITE_DELAY, lock, save_state};
use crate::autoscale::{Autoscaling, ScalingView};
use crate::gateway::documents::{Kind, Problem};
use crate::gateway::source::{FileSource, Input};
use crate::runtime::{InstanceState, InstanceStatus, ProcessRuntime};
use sluice_activator::Activator;

/// The controller's event loop: file changes and runtime changes in; gateway inputs, process
/// starts and stops, and state writes out.
pub(super) struct Loop {
    pub(super) controller: Arc<Mutex<Controller>>,
    pub(super) runtime: ProcessRuntime,
    pub(super) state_dir: PathBuf,
    pub(super) problems: Arc<Mutex<Vec<Problem>>>,
    pub(super) tx: mpsc::Sender<Vec<Input>>,
    pub(super) files: FileSource,
    /// Revisions the runtime refused to run, and why.
    pub(super) spec_errors: BTreeMap<Key, String>,
    /// Revisions that had a ready instance once (they stay Ready at zero instances).
    pub(super) ever_ready: BTreeSet<Key>,
    /// Routes whose URL was printed.
    pub(super) announced: BTreeSet<Key>,
    pub(super) external_http: SocketAddr,
    /// When the state must be written (None: it is up to date).
    pub(super) state_due: Option<Instant>,
    /// The KPA of every active Revision.
    pub(super) autoscaling: Autoscaling,
    /// The in-process activator.
    pub(super) activator: Activator,
    /// Revisions whose requests wait at zero.
    pub(super) pokes: mpsc::Receiver<sluice_autoscaler::RevisionKey>,
    /// The last [`Run`] of each autoscaled Revision.
    pub(super) runs: BTreeMap<Key, Run>,
    /// Instances asked of the runtime per Revision.
    pub(super) requested: BTreeMap<Key, u32>,
    /// Envoy's per-Revision figures, sampled in the background.
    pub(super) envoy_stats: Arc<Mutex<EnvoySampler>>,
    /// What `sluice status` shows of each Revision's scaling.
    pub(super) scaling_views: Arc<Mutex<BTreeMap<Key, ScalingView>>>,
    /// Revisions whose `autoscaling.knative.dev/*` annotations were refused (run unscaled).
    pub(super) refused_annotations: BTreeMap<Key, sluice_autoscaler::AnnotationErrors>,
    /// Revisions whose reserved instances stopped serving, and since when.
    pub(super) retiring: BTreeMap<Key, Instant>,
    /// The reserved-instance settings last given to the runtime per Revision.
    pub(super) reserved_specs: BTreeMap<Key, crate::runtime::ReservedSpec>,
    /// CPU and memory of HPA-class Revisions' processes.
    pub(super) usage: super::usage::UsageSampler,
    /// The minute predictive histories were last written in.
    pub(super) history_minute: i64,
}

impl Loop {
    pub(super) async fn run(
        mut self,
        scanned: Vec<(PathBuf, String)>,
        mut watch: crate::files::DirWatch,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut changes = self.runtime.subscribe();
        let mut ticks = tokio::time::interval(super::scaling::TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inputs = Vec::new();
        for (path, text) in &scanned {
            let c = self.files.file_changed(path, text);
            self.route(c, &mut inputs);
        }
        tracing::info!(files = scanned.len(), "directory scanned");
        self.pass(inputs, true).await;
        loop {
            let mut inputs = Vec::new();
            let due = self.state_due;
            tokio::select! {
                batch = watch.changes.recv() => {
                    let Some(batch) = batch else { break };
                    tracing::debug!(files = batch.len(), "file changes");
                    for change in &batch {
                        let c = self.files.apply(change);
                        self.route(c, &mut inputs);
                    }
                }
                change = changes.recv() => match change {
                    Ok(c) => self.refresh(&[Key::new(&c.revision.namespace, &c.revision.name)]),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let all = lock(&self.controller).revisions();
                        self.refresh(&all);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = sleep_until(due) => {
                    self.write_state();
                    continue;
                }
                _ = ticks.tick() => {
                    let collected = lock(&self.controller)
                        .collect_garbage(jiff::Timestamp::now().as_second());
                    if !self.tick().await && !collected {
                        continue;
                    }
                }
                Some(key) = self.pokes.recv() => {
                    if !self.poked(key).await {
                        continue;
                    }
                }
                () = stopped(&mut stop) => break,
            }
            self.pass(inputs, false).await;
        }
        if self.state_due.is_some() {
            self.write_state();
        }
        self.save_histories(jiff::Timestamp::now(), true);
    }

    /// Hands Knative objects and ConfigMaps to the controller (with the file defining them;
    /// a deleted one has none), everything else to the gateway — `config-kourier` too (it
    /// configures the gateway, not the serving controller).
    fn route(&mut self, changes: Vec<crate::gateway::source::Change>, inputs: &mut Vec<Input>) {
        let mut c = lock(&self.controller);
        for (key, object) in changes {
            let gateway_config =
                key.kind == Kind::ConfigMap && key.name == sluice_serving::kourier::CONFIG_KOURIER;
            if !gateway_config && (key.kind.is_serving() || key.kind == Kind::ConfigMap) {
                let file = self.files.file_of(&key).unwrap_or(Path::new(""));
                c.object_changed(&key, object, file);
            } else {
                inputs.push(Input::Change((key, object)));
            }
        }
    }

    /// Re-reads what the runtime says about `revisions`.
    pub(super) fn refresh(&mut self, revisions: &[Key]) {
        let mut c = lock(&self.controller);
        for key in revisions {
            let rk = sluice_autoscaler::RevisionKey::new(&key.namespace, &key.name);
            let instances = self.runtime.instances(&rk);
            let ready = self.routable(key, &instances);
            if self.activator.revision(&rk).is_some()
                && let Err(e) = self.activator.update_instances(&rk, &ready)
            {
                tracing::debug!(revision = %key, error = %e, "activator instances");
            }
            if !ready.is_empty() {
                self.ever_ready.insert(key.clone());
            }
            let readiness = readiness_of(
                key,
                &instances,
                self.spec_errors.get(key),
                self.ever_ready.contains(key),
            );
            c.runtime_changed(key, RuntimeReport { ready, readiness });
        }
    }

    /// Reconciles until nothing changes, carrying out each pass's output; `initial` marks the
    /// first pass (after it the gateway may publish).
    async fn pass(&mut self, mut inputs: Vec<Input>, initial: bool) {
        let started = std::time::Instant::now();
        // A refused spec feeds back as a failed Revision: a second pass settles it.
        for _ in 0..3 {
            let out = lock(&self.controller).reconcile();
            inputs.extend(out.gateway.into_iter().map(Input::Change));
            if out.state_changed {
                self.state_due
                    .get_or_insert(Instant::now() + STATE_WRITE_DELAY);
            }
            self.autoscaling
                .set_config(lock(&self.controller).autoscaler_config().clone());
            for key in out.remove {
                self.forget_revision(&key);
                self.spec_errors.remove(&key);
                self.ever_ready.remove(&key);
                let runtime = self.runtime.clone();
                let rk = sluice_autoscaler::RevisionKey::new(&key.namespace, &key.name);
                tokio::spawn(async move { runtime.remove(&rk).await });
            }
            let keys: Vec<Key> = out
                .run
                .iter()
                .map(|r| Key::new(&r.spec.namespace, &r.spec.revision))
                .collect();
            let mut refused = Vec::new();
            for (key, e) in self.apply_runs(out.run).await {
                tracing::warn!(revision = %key, error = %e, "cannot run the revision");
                self.spec_errors.insert(key.clone(), e.to_string());
                refused.push(key);
            }
            for key in keys {
                if !refused.contains(&key) {
                    self.spec_errors.remove(&key);
                }
            }
            if refused.is_empty() {
                break;
            }
            self.refresh(&refused);
        }
        if initial {
            inputs.push(Input::Synced);
        }
        {
            let c = lock(&self.controller);
            let mut problems = self.files.problems();
            problems.extend(c.problems());
            drop(c);
            problems.extend(self.scaling_problems());
            *lock(&self.problems) = problems;
        }
        tracing::debug!(
            inputs = inputs.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "serving pass"
        );
        // Even an empty batch: the gateway refreshes its problems from it.
        if self.tx.send(inputs).await.is_err() {
            return;
        }
        self.announce();
    }

    /// Prints each Route's URL once it is first served.
    fn announce(&mut self) {
        let c = lock(&self.controller);
        for (key, url) in c.served_urls() {
            if self.announced.insert(key.clone()) {
                let host = url
                    .split_once("://")
                    .map_or(url.as_str(), |(_, h)| h)
                    .to_string();
                eprintln!(
                    "sluice up: {}/{} is served at {url}\n  try: curl -H 'Host: {host}' http://{}/",
                    key.namespace, key.name, self.external_http
                );
            }
        }
        self.announced.retain(|k| c.is_served(k));
    }

    fn write_state(&mut self) {
        self.state_due = None;
        let state = lock(&self.controller).state().clone();
        if let Err(e) = save_state(&self.state_dir, &state) {
            tracing::error!(dir = %self.state_dir.display(), error = %e, "cannot write the state; created revisions may be forgotten on restart");
        }
    }
}

/// Samples Envoy's per-Revision gauges every [`metrics::SAMPLE_INTERVAL`] until `stop`.
pub(super) async fn sample_envoy(
    stats: EnvoyStats,
    into: Arc<Mutex<EnvoySampler>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(metrics::SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !lock(&into).wanted() {
            continue;
        }
        match stats.read().await {
            Ok(samples) => lock(&into).add(&samples),
            Err(e) => tracing::trace!(error = %e, "Envoy stats"),
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A Revision's readiness from its instances: Ready with a ready instance (or once it had one:
/// a Revision stays Ready when it runs no instance, as upstream at zero scale); Failed when the
/// runtime refused it or its instances crash before ever becoming ready; else Pending.
fn readiness_of(
    key: &Key,
    instances: &[InstanceStatus],
    spec_error: Option<&String>,
    ever_ready: bool,
) -> Readiness {
    if let Some(e) = spec_error {
        return Readiness::Failed {
            reason: "ContainerMissing".into(),
            message: e.clone(),
        };
    }
    if ever_ready || instances.iter().any(|i| i.ready) {
        return Readiness::Ready;
    }
    let crashed = instances
        .iter()
        .find(|i| matches!(i.state, InstanceState::Crashed { .. }));
    match crashed {
        Some(i) => {
            let what = match (&i.last_error, &i.last_exit) {
                (Some(e), _) => format!("could not start: {e}"),
                (None, Some(exit)) => format!("exited ({exit})"),
                (None, None) => "exited".into(),
            };
            Readiness::Failed {
                reason: if i.last_error.is_some() {
                    "StartFailed".into()
                } else {
                    "ExitCode".into()
                },
                message: format!(
                    "instance {} {what}; restarted {} time(s); see `sluice logs {} -n {}`",
                    i.name, i.restarts, key.name, key.namespace
                ),
            }
        }
        None => Readiness::Pending,
    }
}

/// Completes once `stop` turns true (its guard is not held: the caller stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
