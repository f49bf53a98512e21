//! One reconcile of what the events since the last one touched ([`Core::reconcile`]): each
//! pass takes its dirty keys and may make other keys dirty, until nothing is left.
//!
//! - Configurations → Revisions ([`reconcile_configuration`] against the rebuilt
//!   [`ServingState`](crate::serving::ServingState)): a new Revision is created in the API;
//!   the Configuration's status is written.
//! - Revisions → the runtime (once per Revision and process: [`Action::RunRevision`]) and their
//!   status from their EndpointSlices.
//! - Routes → KIngress ([`reconcile_route`]): applied when it differs from the one in the API;
//!   the KIngress status the gateway wrote counts only for the spec it was written for. A Route
//!   whose traffic cannot be resolved leaves its KIngress alone and says why in its status.
//! - Services → their Configuration and Route (applied when they differ), status from theirs.
//!
//! An object that does not decode or fails Knative's validation gets `Ready=False`
//! (`InvalidSpec`) naming the field; what it produced before stays in the API untouched.

use std::collections::BTreeMap;

use super::action::Action;
use super::core::{Core, Run};
use super::decode::{Observed, ServingObject};
use super::health::{Unhealthy, revision_health};
use super::hpa::revision_hpa;
use super::rebuild::TEMPLATE_HASH_ANNOTATION;
use super::status::{
    KnativeStatus, REASON_DEPLOYMENT_FAILED, REASON_INVALID_SPEC, rejected_patch, revision_status,
    status_patch,
};
use super::watch::ObjectKind;
use crate::FieldError;
use crate::ingress::describe;
use crate::kube::runtime::{deployment_name, revision_endpoints};
use crate::serving::conditions::{FALSE, condition};
use crate::serving::{
    ConfigurationOutcome, Key, Readiness, Revision, admit_configuration, reconcile_configuration,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub mod gc;
mod route;
mod service;

/// Passes after which a reconcile stops even if keys are still dirty (they are kept for the
/// next one): a guard against a cycle, which would be a bug.
const MAX_PASSES: usize = 16;

impl Core {
    /// Runs what the events since the last call touched; `now` (RFC 3339, seconds) stamps
    /// changed conditions. Nothing before the first sync.
    pub fn reconcile(&mut self, now: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.is_synced() {
            return out;
        }
        let mut settled = false;
        for _ in 0..MAX_PASSES {
            if self.dirty_configs.is_empty()
                && self.dirty_revisions.is_empty()
                && self.dirty_routes.is_empty()
                && self.dirty_services.is_empty()
            {
                settled = true;
                break;
            }
            if !self.dirty_routes.is_empty() || !self.dirty_configs.is_empty() {
                self.gc_due = true;
            }
            for key in std::mem::take(&mut self.dirty_configs) {
                self.configuration_pass(&key, now, &mut out);
            }
            for key in std::mem::take(&mut self.dirty_revisions) {
                self.revision_pass(&key, now, &mut out);
            }
            for key in std::mem::take(&mut self.dirty_routes) {
                self.route_pass(&key, now, &mut out);
            }
            for key in std::mem::take(&mut self.dirty_services) {
                self.service_pass(&key, now, &mut out);
            }
        }
        if !settled {
            tracing::warn!("reconcile did not settle; continuing on the next event");
        }
        if std::mem::take(&mut self.gc_due) {
            self.collect_garbage(now, &mut out);
        }
        latest_only(out)
    }

    fn configuration_pass(&mut self, key: &Key, now: &str, out: &mut Vec<Action>) {
        let problem = format!("Configuration {key}");
        let Some(observed) = self.configurations.get(key) else {
            self.problems.remove(&problem);
            if let Some(old) = self.config_outcomes.remove(key) {
                self.catalog.configurations.remove(key);
                for r in &old.revisions {
                    self.catalog.revisions.remove(&r.key());
                }
                self.dirty_routes_naming(key, &old);
            }
            return;
        };
        let cfg = &self.cfg;
        let Some(config) = admit_or_reject(
            &mut self.problems,
            problem,
            ObjectKind::Configuration,
            key,
            observed,
            &observed.object.status,
            |c| admit_configuration(c, cfg),
            now,
            out,
        ) else {
            return;
        };
        let outcome = reconcile_configuration(&config, &mut self.state, &self.readiness);
        if let Some(name) = &outcome.created
            && let Some(record) = self
                .state
                .configuration(key)
                .and_then(|c| c.revisions.get(name))
        {
            tracing::info!(configuration = %key, revision = %name, "creating Revision");
            let mut revision = record.revision.clone();
            revision
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(
                    TEMPLATE_HASH_ANNOTATION.into(),
                    record.template_hash.clone(),
                );
            out.push(Action::CreateRevision {
                configuration: key.clone(),
                revision: Box::new(revision),
            });
            out.push(event(
                "Configuration",
                key,
                &observed.object.metadata,
                false,
                "Created",
                format!("Created Revision {name:?}"),
            ));
        }
        out.extend(status_patch(
            ObjectKind::Configuration,
            key,
            outcome.configuration.status.clone(),
            &observed.object.status,
            now,
        ));
        let previous = self.config_outcomes.get(key);
        if previous == Some(&outcome) {
            return;
        }
        if let Some(previous) = previous {
            for r in &previous.revisions {
                self.catalog.revisions.remove(&r.key());
            }
        }
        self.catalog.add_outcome(&outcome);
        self.dirty_routes_naming(key, &outcome);
        self.dirty_services.insert(key.clone());
        self.config_outcomes.insert(key.clone(), outcome);
    }

    /// Marks the Routes that name a Configuration or one of its Revisions.
    fn dirty_routes_naming(&mut self, key: &Key, outcome: &ConfigurationOutcome) {
        let names: Vec<&str> = outcome
            .revisions
            .iter()
            .map(Revision::name)
            .chain([key.name.as_str()])
            .collect();
        let naming = self.routes.iter().filter(|(k, route)| {
            k.namespace == key.namespace
                && route.object.spec.traffic.iter().any(|t| {
                    names.contains(&t.revision_name.as_str())
                        || names.contains(&t.configuration_name.as_str())
                })
        });
        let keys: Vec<Key> = naming.map(|(k, _)| k.clone()).collect();
        self.dirty_routes.extend(keys);
    }

    fn revision_pass(&mut self, key: &Key, now: &str, out: &mut Vec<Action>) {
        let problem = format!("Revision {key}");
        let Some(observed) = self.revisions.get(key) else {
            return;
        };
        let revision = &observed.object;
        let mut unhealthy = None;
        let readiness = if let Some(error) = &observed.error {
            self.problems.insert(problem, error.clone());
            Readiness::Failed {
                reason: REASON_INVALID_SPEC.into(),
                message: error.clone(),
            }
        } else {
            match self.runs.get(key) {
                None => {
                    out.push(Action::RunRevision {
                        revision: Box::new(revision.clone()),
                        initial_scale: initial_scale(revision, &self.autoscaler),
                        runtime: self.runtime.clone(),
                    });
                    self.runs.insert(key.clone(), Run::Requested);
                    self.pod_readiness(revision, &mut unhealthy)
                }
                Some(Run::Failed { message }) => {
                    self.problems.insert(problem, message.clone());
                    Readiness::Failed {
                        reason: REASON_DEPLOYMENT_FAILED.into(),
                        message: message.clone(),
                    }
                }
                Some(run) => {
                    if *run == Run::Running
                        && let Some(hpa) = revision_hpa(revision, &self.autoscaler)
                        && self.hpas.get(key) != Some(&hpa)
                    {
                        out.push(Action::ApplyHpa {
                            revision: key.clone(),
                            hpa: Box::new(hpa),
                        });
                    }
                    self.pod_readiness(revision, &mut unhealthy)
                }
            }
        };
        let mut status = revision_status(revision, &readiness);
        if let Some(u) = unhealthy {
            status
                .conditions
                .push(condition(u.condition, FALSE, &u.reason, &u.message));
            status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        out.extend(status_patch(
            ObjectKind::Revision,
            key,
            status,
            &revision.status,
            now,
        ));
        if self.readiness.get(key) != Some(&readiness) {
            if let Readiness::Failed { reason, message } = &readiness {
                out.push(event(
                    "Revision",
                    key,
                    &revision.metadata,
                    true,
                    reason,
                    message.clone(),
                ));
            }
            if let Some(config) = super::rebuild::configuration_of(revision) {
                self.dirty_configs.insert(config);
            }
            self.readiness.insert(key.clone(), readiness);
        }
    }

    /// Ready with a ready endpoint; else failed when its pods say why they do not come up
    /// ([`revision_health`], the failed condition left in `unhealthy`); else pending.
    fn pod_readiness(&self, revision: &Revision, unhealthy: &mut Option<Unhealthy>) -> Readiness {
        let readiness = self.endpoint_readiness(revision);
        if readiness == Readiness::Ready {
            return readiness;
        }
        let key = revision.key();
        let deployment = Key::new(key.namespace.clone(), deployment_name(&key.name));
        let Some(deployment) = self.deployments.get(&deployment) else {
            return readiness;
        };
        let pods: Vec<&Pod> = self
            .pods_by_revision
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .collect();
        match revision_health(deployment, &pods) {
            Some(u) => {
                let failed = Readiness::Failed {
                    reason: u.reason.clone(),
                    message: u.message.clone(),
                };
                *unhealthy = Some(u);
                failed
            }
            None => readiness,
        }
    }

    fn endpoint_readiness(&self, revision: &Revision) -> Readiness {
        let slices = self
            .slices_by_revision
            .get(&revision.key())
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k).cloned())
            .collect();
        revision_endpoints(revision, slices).readiness()
    }
}

/// The actions without those a later pass of the same reconcile superseded (a status or an
/// object computed again once more was known: only the last one is written).
fn latest_only(actions: Vec<Action>) -> Vec<Action> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Action> = actions
        .into_iter()
        .rev()
        .filter(|action| {
            let id = match action {
                Action::ApplyConfiguration(c) => {
                    ("configuration", ObjectKind::Configuration, c.key())
                }
                Action::ApplyRoute(r) => ("route", ObjectKind::Route, r.key()),
                Action::ApplyIngress(i) => (
                    "ingress",
                    ObjectKind::Ingress,
                    Key::new(
                        i.metadata.namespace.clone().unwrap_or_default(),
                        i.metadata.name.clone().unwrap_or_default(),
                    ),
                ),
                Action::PatchStatus { kind, key, .. } => ("status", *kind, key.clone()),
                Action::ApplyPlaceholders { route, .. } => {
                    ("placeholders", ObjectKind::Route, route.clone())
                }
                Action::LabelRevision { revision, .. } => {
                    ("label", ObjectKind::Revision, revision.clone())
                }
                Action::ApplyHpa { revision, .. } => {
                    ("hpa", ObjectKind::Revision, revision.clone())
                }
                Action::CreateRevision { .. }
                | Action::RunRevision { .. }
                | Action::DeleteRevision(_)
                | Action::Event(_) => return true,
            };
            seen.insert(id)
        })
        .collect();
    out.reverse();
    out
}

/// An Event about a serving object.
pub(super) fn event(
    kind: &'static str,
    key: &Key,
    meta: &ObjectMeta,
    warning: bool,
    reason: &str,
    note: String,
) -> Action {
    Action::Event(Box::new(super::action::EventSpec {
        kind,
        key: key.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
        warning,
        reason: reason.to_string(),
        note,
    }))
}

/// Replicas of a new Revision's Deployment: `autoscaling.knative.dev/initial-scale`, else
/// `config-autoscaler`'s `initial-scale` (1 by default; 0 only where
/// `allow-zero-initial-scale` is on), at least `min-scale`. Invalid annotations count as
/// absent (the Revision's own validation names them).
pub fn initial_scale(revision: &Revision, config: &sluice_autoscaler::Config) -> u32 {
    let annotations = revision.metadata.annotations.clone().unwrap_or_default();
    let (own, min) = match sluice_autoscaler::ScalingAnnotations::parse(&annotations, config) {
        Ok(a) => (a.initial_scale, a.min_scale.unwrap_or(0)),
        Err(_) => (None, 0),
    };
    own.unwrap_or(config.initial_scale).max(min)
}

/// Whether `current` carries everything `desired` sets: its labels and annotations (others
/// may add more) and exactly its owner references.
pub(super) fn meta_shows(current: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let subset = |want: &Option<std::collections::BTreeMap<String, String>>,
                  have: &Option<std::collections::BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    subset(&desired.labels, &current.labels)
        && subset(&desired.annotations, &current.annotations)
        && current.owner_references == desired.owner_references
}

/// The admitted version of an observed object, or `None` when it does not decode or fails
/// Knative's validation: then its status says so (`InvalidSpec`, naming the field) and the
/// problem is recorded under `problem`; an admitted object clears it.
#[allow(clippy::too_many_arguments)] // one call per kind; a struct would only rename them
pub(super) fn admit_or_reject<T: ServingObject, S: KnativeStatus>(
    problems: &mut BTreeMap<String, String>,
    problem: String,
    kind: ObjectKind,
    key: &Key,
    observed: &Observed<T>,
    status: &S,
    admit: impl FnOnce(&T) -> Result<T, Vec<FieldError>>,
    now: &str,
    out: &mut Vec<Action>,
) -> Option<T> {
    let admitted = match &observed.error {
        Some(e) => Err(e.clone()),
        None => admit(&observed.object).map_err(|e| describe(&e)),
    };
    match admitted {
        Ok(object) => {
            problems.remove(&problem);
            Some(object)
        }
        Err(message) => {
            out.extend(rejected_patch(
                kind,
                key,
                observed.object.meta().generation,
                status,
                &message,
                now,
            ));
            problems.insert(problem, message);
            None
        }
    }
}
