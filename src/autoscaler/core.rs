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
//! - **No scale to zero yet.** Scaling to zero needs the activator in the path to catch the
//!   next request; on a cluster that path does not exist yet, so a decision of 0 is held at 1
//!   (as an HPA never goes below one). `min-scale` above 1 and `max-scale` hold as decided.
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

/// The autoscaler's knowledge and decisions.
#[derive(Debug, Default)]
pub struct Core {
    scaling: Autoscaling,
    config: Config,
    /// KPA-class Revisions (annotations checked by [`Autoscaling::track`]).
    revisions: BTreeMap<Key, Revision>,
    /// Deployments by Revision.
    deployments: BTreeMap<Key, Replicas>,
    /// Revisions refused (invalid annotations): key → why.
    pub problems: BTreeMap<Key, String>,
}

fn u32_of(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

impl Core {
    /// Takes `config-autoscaler` (already parsed; the defaults when absent or invalid).
    pub fn set_config(&mut self, config: Config) {
        self.scaling.set_config(config.clone());
        self.config = config;
    }

    /// A Revision was listed, created or changed.
    pub fn revision(&mut self, now: Instant, revision: Revision) {
        let key = revision.key();
        let annotations = revision.metadata.annotations.clone().unwrap_or_default();
        let class = annotations
            .get("autoscaling.knative.dev/class")
            .map_or(self.config.pod_autoscaler_class.as_str(), String::as_str);
        if class == HPA_CLASS {
            self.revision_gone(&key);
            return;
        }
        let reachable = revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ROUTING_STATE_LABEL))
            .is_some_and(|s| s == "active");
        let cc = u32::try_from(revision.spec.container_concurrency.unwrap_or(0)).unwrap_or(0);
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
        self.scaling.forget(key);
        self.revisions.remove(key);
        self.problems.remove(key);
    }

    /// A Revision's Deployment was listed, created or changed (`None`: not a Revision's).
    pub fn deployment(&mut self, deployment: &Deployment) -> Option<Key> {
        let revision = deployment
            .metadata
            .labels
            .as_ref()?
            .get(REVISION_LABEL)?
            .clone();
        let key = Key::new(
            deployment.metadata.namespace.clone().unwrap_or_default(),
            revision,
        );
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

    /// Revisions scaled here.
    pub fn tracked(&self) -> usize {
        self.revisions.len()
    }

    /// One second: records `stats` and decides every Revision with a Deployment.
    pub fn tick(
        &mut self,
        now: Instant,
        wall: Timestamp,
        stats: &HashMap<Key, Stat>,
    ) -> Vec<ScaleTo> {
        let mut out = Vec::new();
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
            let Some(decision) = self.scaling.tick(now, wall, &key, running, false) else {
                continue;
            };
            // No activator path on the cluster yet: never below one.
            let to = decision.scale.max(1);
            if to != replicas.wanted {
                out.push(ScaleTo {
                    revision: key,
                    from: replicas.wanted,
                    to,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
