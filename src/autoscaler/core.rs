//! What `sluice autoscaler --kube` decides, without I/O: the Revisions and their Deployments
//! as the watches show them, one [`Autoscaling`] over them, and each second's figures in;
//! the Deployments to scale out.
//!
//! - **Which Revisions.** Every KPA-class Revision (HPA-class ones have Kubernetes' own
//!   HorizontalPodAutoscaler, which the controller applies) that has a Deployment. Reachable
//!   (so `min-scale`, windows and forecasts hold) while its routing state, kept on the Revision
//!   by the controller, is `active`.
//! - **Figures.** Each revision's concurrency on the direct path, from every gateway Envoy
//!   ([`EnvoySink`](sluice_autoscaler::envoy_sink::EnvoySink)). A second without a figure
//!   records nothing (an Envoy not streaming is not an idle revision).
//! - **Serve or proxy** ([`Endpoints`]): each Revision's public EndpointSlice is its ready
//!   pods, or the activator's while the KPA puts the activator in the path (at zero, or short
//!   of burst capacity). The decision is told the path last written.
//! - **Scale to zero only behind the activator.** A decision of 0 is carried out only once the
//!   public slice points at a ready activator (make-before-break: the next request waits
//!   there, pokes the autoscaler and is counted by Envoy) and once this process has decided
//!   the Revision for a whole stable window (a new Revision, a restarted or newly elected
//!   autoscaler has no history: it must not read its silence as idleness); otherwise it is
//!   held at 1.
//! - **Ready** is the Deployment's `readyReplicas`; **wanted** its `spec.replicas`. A scale is
//!   asked for only when the decision differs from what the Deployment wants.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use sluice_autoscaler::{Config, HPA_CLASS, Running, Stat};
use sluice_serving::kube::controller::reconcile::gc::ROUTING_STATE_LABEL;
use sluice_serving::kube::runtime::REVISION_LABEL;
use sluice_serving::serving::{Key, Revision};
use tokio::time::Instant;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{Endpoints, Mode};
use crate::autoscale::Autoscaling;

/// A Revision's Deployment as far as scaling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replicas {
    /// `spec.replicas`.
    pub wanted: u32,
    /// `status.readyReplicas`.
    pub ready: u32,
}

/// One scale to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTo {
    /// The Revision.
    pub revision: Key,
    /// What its Deployment wants now.
    pub from: u32,
    /// What it should want.
    pub to: u32,
}

/// What one tick asks for: public slices first, then scales.
#[derive(Debug, Default)]
pub struct Tick {
    /// Public EndpointSlices to write (server-side apply), with the mode each puts its Revision in.
    pub slices: Vec<(Key, Mode, EndpointSlice)>,
    /// Deployments to scale.
    pub scales: Vec<ScaleTo>,
}

/// The autoscaler's knowledge and decisions.
#[derive(Debug)]
pub struct Core {
    scaling: Autoscaling,
    config: Config,
    /// Private Services' and the activator's slices, and the public slices written.
    pub endpoints: Endpoints,
    /// Every Revision's UID (the owner of its public slice), HPA class included.
    uids: BTreeMap<Key, String>,
    /// Whether the KPA last put each Revision's activator in the path.
    in_path: BTreeMap<Key, bool>,
    /// Every Revision's `containerConcurrency` (> 0 keeps it behind the activators).
    concurrency: BTreeMap<Key, u32>,
    /// When this process started deciding each Revision.
    deciding_since: BTreeMap<Key, Instant>,
    /// KPA-class Revisions (annotations checked by [`Autoscaling::track`]).
    revisions: BTreeMap<Key, Revision>,
    /// Deployments by Revision.
    deployments: BTreeMap<Key, Replicas>,
    /// Revisions refused (invalid annotations): key → why.
    pub problems: BTreeMap<Key, String>,
}

/// The Revision a Deployment runs: its `serving.knative.dev/revision` label.
pub fn revision_of_deployment(deployment: &Deployment) -> Option<Key> {
    let revision = deployment.metadata.labels.as_ref()?.get(REVISION_LABEL)?;
    Some(Key::new(
        deployment.metadata.namespace.clone().unwrap_or_default(),
        revision,
    ))
}

fn u32_of(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

impl Core {
    /// Nothing known yet; the activator's pods are the slices of Service `activator`.
    pub fn new(activator: Key) -> Self {
        Self {
            scaling: Autoscaling::default(),
            config: Config::default(),
            endpoints: Endpoints::new(activator),
            uids: BTreeMap::new(),
            in_path: BTreeMap::new(),
            concurrency: BTreeMap::new(),
            deciding_since: BTreeMap::new(),
            revisions: BTreeMap::new(),
            deployments: BTreeMap::new(),
            problems: BTreeMap::new(),
        }
    }

    /// Takes `config-autoscaler` (already parsed; the defaults when absent or invalid).
    pub fn set_config(&mut self, config: Config) {
        self.scaling.set_config(config.clone());
        self.config = config;
    }

    /// A Revision was listed, created or changed.
    pub fn revision(&mut self, now: Instant, revision: Revision) {
        let key = revision.key();
        if let Some(uid) = &revision.metadata.uid {
            self.uids.insert(key.clone(), uid.clone());
        }
        let cc = u32::try_from(revision.spec.container_concurrency.unwrap_or(0)).unwrap_or(0);
        self.concurrency.insert(key.clone(), cc);
        let annotations = revision.metadata.annotations.clone().unwrap_or_default();
        let class = annotations
            .get("autoscaling.knative.dev/class")
            .map_or(self.config.pod_autoscaler_class.as_str(), String::as_str);
        if class == HPA_CLASS {
            // Scaled by its HorizontalPodAutoscaler; its public slice is still written here.
            self.stop_scaling(&key);
            return;
        }
        let reachable = revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ROUTING_STATE_LABEL))
            .is_some_and(|s| s == "active");
        match self
            .scaling
            .track(now, &key, &annotations, cc, reachable, None)
        {
            Ok(()) => {
                self.problems.remove(&key);
                self.revisions.insert(key, revision);
            }
            Err(e) => {
                self.problems.insert(key.clone(), e.to_string());
                self.scaling.forget(&key);
                self.revisions.remove(&key);
            }
        }
    }

    /// A Revision was deleted.
    pub fn revision_gone(&mut self, key: &Key) {
        self.uids.remove(key);
        self.concurrency.remove(key);
        self.endpoints.revision_gone(key);
        self.stop_scaling(key);
    }

    /// Forgets what scaling a Revision needs (deleted, or HPA class).
    fn stop_scaling(&mut self, key: &Key) {
        self.in_path.remove(key);
        self.deciding_since.remove(key);
        self.scaling.forget(key);
        self.revisions.remove(key);
        self.problems.remove(key);
    }

    /// A Revision's Deployment was listed, created or changed (`None`: not a Revision's).
    pub fn deployment(&mut self, deployment: &Deployment) -> Option<Key> {
        let key = revision_of_deployment(deployment)?;
        let replicas = Replicas {
            wanted: u32_of(deployment.spec.replicas),
            ready: u32_of(deployment.status.as_ref().and_then(|s| s.ready_replicas)),
        };
        self.deployments.insert(key.clone(), replicas);
        Some(key)
    }

    /// A Revision's Deployment was deleted.
    pub fn deployment_gone(&mut self, revision: &Key) {
        self.deployments.remove(revision);
    }

    /// Records a scale carried out (the watch confirms it later).
    pub fn scaled(&mut self, revision: &Key, to: u32) {
        if let Some(r) = self.deployments.get_mut(revision) {
            r.wanted = to;
        }
    }

    /// A request waits at the activator (its poke): a Revision at zero gets its first pod at
    /// once, without waiting for the next tick's figures (upstream's activator poke).
    pub fn poke(&mut self, revision: &Key) -> Option<ScaleTo> {
        if !self.revisions.contains_key(revision) {
            return None;
        }
        let replicas = self.deployments.get(revision)?;
        (replicas.wanted == 0).then(|| ScaleTo {
            revision: revision.clone(),
            from: 0,
            to: 1,
        })
    }

    /// Whether the Revision exists (of any class).
    pub fn knows(&self, revision: &Key) -> bool {
        self.uids.contains_key(revision) || self.revisions.contains_key(revision)
    }

    /// Revisions scaled here.
    pub fn tracked(&self) -> usize {
        self.revisions.len()
    }

    /// One second: records `stats`, decides every KPA Revision with a Deployment, and says
    /// which public slices and scales are due.
    pub fn tick(&mut self, now: Instant, wall: Timestamp, stats: &HashMap<Key, Stat>) -> Tick {
        let mut out = Tick::default();
        let keys: Vec<Key> = self.revisions.keys().cloned().collect();
        for key in keys {
            let Some(replicas) = self.deployments.get(&key).copied() else {
                continue;
            };
            if let Some(stat) = stats.get(&key) {
                self.scaling.record(now, wall, &key, *stat);
            }
            let running = Running {
                standard_requested: replicas.wanted,
                standard_ready: replicas.ready,
                reserved_running: 0,
                reserved_ready: 0,
            };
            let behind_activator =
                self.endpoints.mode(&key) == Some(Mode::Proxy) && self.endpoints.activator_ready();
            let Some(decision) = self
                .scaling
                .tick(now, wall, &key, running, behind_activator)
            else {
                continue;
            };
            self.in_path.insert(key.clone(), decision.in_path);
            // Zero only once the next request has the activator to wait at, and once this
            // process has seen a whole stable window of the Revision's traffic (a new Revision,
            // or a restarted or newly elected autoscaler, has no history yet).
            let since = *self.deciding_since.entry(key.clone()).or_insert(now);
            let seen_a_window = now.saturating_duration_since(since) >= self.config.stable_window;
            let to = if behind_activator && seen_a_window {
                decision.scale
            } else {
                decision.scale.max(1)
            };
            if to != replicas.wanted {
                out.scales.push(ScaleTo {
                    revision: key,
                    from: replicas.wanted,
                    to,
                });
            }
        }
        for revision in self.endpoints.revisions() {
            let in_path = self.in_path.get(&revision).copied().unwrap_or(false);
            let owner = self.uids.get(&revision).map(String::as_str);
            let cc = self.concurrency.get(&revision).copied().unwrap_or(0);
            if let Some((mode, slice)) = self.endpoints.due(&revision, owner, in_path, cc) {
                out.slices.push((revision, mode, slice));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
