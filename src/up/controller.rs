//! `sluice up`'s serving controller: Knative objects from files in, gateway objects and
//! runtime decisions out. No I/O: the caller feeds it file changes and what the process runtime
//! reports, and carries out its [`Output`].
//!
//! One pass ([`Controller::reconcile`]) runs only what the last events touched:
//! Services → Configuration + Route, Configurations → Revisions
//! ([`reconcile_configuration`]), Routes → KIngresses ([`reconcile_route`]). Every Revision gets
//! a Kubernetes-shaped Service (port 80, named `http2` for h2c apps, its timeout as
//! [`TIMEOUT_ANNOTATION`]) and an Endpoints object listing its ready instances, one subset per
//! instance (each has its own loopback port); the gateway turns those into a cluster and its
//! EDS.
//!
//! Which Revisions run ([`Run`], `running.rs`): those the Routes send traffic to (named by
//! `revisionName`, or the latest ready one of a named Configuration), those in a served or
//! waiting KIngress — these are *reachable* — and each Configuration's latest created Revision
//! (so it can become Ready); the autoscaler decides their instance count. The others are
//! stopped. With an activator ([`Controller::with_activator`]), a Revision's Endpoints are the
//! activator's address unless the autoscaler took it out of the path
//! ([`Controller::set_direct`]); only on the direct path does its Service carry the
//! `containerConcurrency` limit for Envoy.
//!
//! No failed request while traffic moves: a new KIngress that sends traffic to a Revision that
//! cannot answer yet (no ready instance, and not a Ready one at zero behind the activator) is
//! held back (the previous one keeps serving) until it can.
//!
//! Bad input never costs served traffic: an object that fails Knative's validation is reported
//! with its file, object and field, and the last good version stays in effect; a Route whose
//! traffic cannot be resolved (an unknown or failed Revision) keeps its previous KIngress and
//! says why in its status.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Service as KubeService};
use sluice_serving::FieldError;
use sluice_serving::ingress::Ingress;
use sluice_serving::serving::{
    Configuration, ConfigurationOutcome, Key, Readiness, ReadinessReport, Revision, Route,
    RouteOutcome, Service, ServingConfig, ServingObjects, ServingState, make_configuration,
    make_route, reconcile_configuration, reconcile_route,
};

use crate::gateway::documents::{Kind, Object, ObjectKey, Problem};
use crate::gateway::source::Change;
use crate::runtime::RevisionSpec as ProcessSpec;
use objects::{configuration_label, split_revisions};
pub use objects::{make_endpoints, make_revision_service, process_spec};
pub use view::{IngressReport, RevisionRow, RouteRow, ServiceRow, TrafficRow};

/// What one pass asks of the caller.
#[derive(Debug, Default)]
pub struct Output {
    /// Objects for the gateway (KIngresses, Revision Services and Endpoints).
    pub gateway: Vec<Change>,
    /// Revisions whose running changed: start, scale or stop them.
    pub run: Vec<Run>,
    /// Revisions gone for good: stop and forget them.
    pub remove: Vec<Key>,
    /// The persisted state changed: write it.
    pub state_changed: bool,
}

/// An object read from a file: the last version that passed validation, and the current
/// rejection if the newest one did not.
#[derive(Debug, Clone)]
struct Input<T> {
    file: PathBuf,
    /// The last admitted version (defaulted, namespace set), with a synthetic uid and
    /// generation.
    good: Option<T>,
    generation: i64,
    rejected: Option<Vec<FieldError>>,
}

/// A Revision to run, or to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// How its processes run.
    pub spec: ProcessSpec,
    /// Instances without autoscaling: 1 (or `min-scale` when higher) for an active Revision,
    /// else `min-scale` (0 = stop them, keep the spec).
    pub instances: u32,
    /// Whether it is active: some Route sends it traffic, or it is its Configuration's latest
    /// created Revision (the autoscaler scales active Revisions; the others are stopped).
    pub active: bool,
    /// Whether some Route sends it traffic (`min-scale` holds only then).
    pub reachable: bool,
    /// Its annotations (`autoscaling.knative.dev/*`).
    pub annotations: BTreeMap<String, String>,
    /// `timeoutSeconds` (the activator's deadline for the response to start).
    pub timeout: std::time::Duration,
    /// `responseStartTimeoutSeconds` (the activator's deadline for it, from forwarding).
    pub response_start_timeout: Option<std::time::Duration>,
    /// `idleTimeoutSeconds` (the activator cuts a response silent for that long).
    pub idle_timeout: Option<std::time::Duration>,
    /// It speaks h2c (the activator forwards with HTTP/2 prior knowledge).
    pub h2c: bool,
}

/// What the runtime reports about one Revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeReport {
    /// Ready instances' addresses, sorted.
    pub ready: Vec<SocketAddr>,
    /// Readiness for the Revision's status.
    pub readiness: Readiness,
}

/// The serving controller's state.
#[derive(Debug)]
pub struct Controller {
    domain_override: Option<String>,
    cfg: ServingConfig,
    config_maps: BTreeMap<String, (PathBuf, ConfigMap)>,
    config_error: Option<Problem>,
    services: BTreeMap<Key, Input<Service>>,
    configurations: BTreeMap<Key, Input<Configuration>>,
    routes: BTreeMap<Key, Input<Route>>,
    /// Objects named twice (a Configuration or Route with a Service's name): ignored.
    shadowed: BTreeMap<Key, Problem>,
    state: ServingState,
    catalog: ServingObjects,
    config_outcomes: BTreeMap<Key, ConfigurationOutcome>,
    route_outcomes: BTreeMap<Key, RouteOutcome>,
    /// KIngress served per Route (stamped with a generation).
    served: BTreeMap<Key, Ingress>,
    /// KIngress waiting for its Revisions to start, and which.
    pending: BTreeMap<Key, (Ingress, Vec<String>)>,
    next_generation: i64,
    runtime: BTreeMap<Key, RuntimeReport>,
    readiness: ReadinessReport,
    /// Revisions whose Service was handed to the gateway, with it.
    revision_services: BTreeMap<Key, KubeService>,
    /// Revision → the Endpoints handed to the gateway.
    revision_endpoints: BTreeMap<Key, Endpoints>,
    /// Revision → what was asked of the runtime (instances, active, reachable).
    desired: BTreeMap<Key, (u32, bool, bool)>,
    /// Where Envoy sends Revisions' traffic through the activator (`sluice up` with
    /// autoscaling); `None`: always straight to the instances.
    activator: Option<SocketAddr>,
    /// Revisions the autoscaler took out of the activator's path (the rest go through it).
    direct: BTreeSet<Key>,
    /// `config-autoscaler` in force.
    autoscaler_cfg: sluice_autoscaler::Config,
    dirty_configs: BTreeSet<Key>,
    dirty_routes: BTreeSet<Key>,
    /// Something changed that may change which Revisions run.
    dirty_scale: bool,
    /// Revisions whose ready instances changed (their Endpoints are due).
    dirty_endpoints: BTreeSet<Key>,
    /// Revisions whose path changed (their Service and Endpoints are due).
    dirty_path: BTreeSet<Key>,
    state_changed: bool,
}

impl Controller {
    /// A controller starting from a persisted state; `domain` overrides `config-domain`.
    pub fn new(state: ServingState, domain: Option<String>) -> Self {
        let mut c = Controller {
            domain_override: domain,
            cfg: ServingConfig::default(),
            config_maps: BTreeMap::new(),
            config_error: None,
            services: BTreeMap::new(),
            configurations: BTreeMap::new(),
            routes: BTreeMap::new(),
            shadowed: BTreeMap::new(),
            state,
            catalog: ServingObjects::new(),
            config_outcomes: BTreeMap::new(),
            route_outcomes: BTreeMap::new(),
            served: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_generation: 1,
            runtime: BTreeMap::new(),
            readiness: ReadinessReport::new(),
            revision_services: BTreeMap::new(),
            revision_endpoints: BTreeMap::new(),
            desired: BTreeMap::new(),
            activator: None,
            direct: BTreeSet::new(),
            autoscaler_cfg: sluice_autoscaler::Config::default(),
            dirty_configs: BTreeSet::new(),
            dirty_routes: BTreeSet::new(),
            dirty_scale: true,
            dirty_endpoints: BTreeSet::new(),
            dirty_path: BTreeSet::new(),
            state_changed: false,
        };
        c.rebuild_config();
        // Configurations in the state but in no file any more are cleaned up on the first pass.
        for k in c.state.configurations.keys() {
            if let Some((ns, name)) = k.split_once('/') {
                c.dirty_configs.insert(Key::new(ns, name));
            }
        }
        c
    }

    /// The serving configuration in effect.
    pub fn config(&self) -> &ServingConfig {
        &self.cfg
    }

    /// The persisted state.
    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// The Revisions the controller knows (from the state), by key.
    pub fn revisions(&self) -> Vec<Key> {
        self.catalog.revisions.keys().cloned().collect()
    }

    /// The Configuration a Revision belongs to.
    fn configuration_of(&self, revision: &Key) -> Option<Key> {
        let config = configuration_label(self.catalog.revisions.get(revision)?)?;
        Some(Key::new(&revision.namespace, config))
    }

    /// The Configuration in effect under `key`: a Service's, else a standalone one.
    fn effective_configuration(&self, key: &Key) -> Option<Configuration> {
        if let Some(s) = self.services.get(key)
            && let Some(good) = &s.good
        {
            return Some(make_configuration(good));
        }
        self.configurations.get(key)?.good.clone()
    }

    /// The Route in effect under `key`: a Service's, else a standalone one.
    fn effective_route(&self, key: &Key) -> Option<Route> {
        if let Some(s) = self.services.get(key)
            && let Some(good) = &s.good
        {
            return Some(make_route(good));
        }
        self.routes.get(key)?.good.clone()
    }

    /// Runs what the events since the last pass touched.
    pub fn reconcile(&mut self) -> Output {
        let mut out = Output::default();
        self.update_shadowed();
        for key in std::mem::take(&mut self.dirty_configs) {
            self.reconcile_config(&key, &mut out);
        }
        for key in std::mem::take(&mut self.dirty_routes) {
            self.reconcile_one_route(&key, &mut out);
        }
        if std::mem::take(&mut self.dirty_scale) {
            self.scale(&mut out);
        }
        for key in std::mem::take(&mut self.dirty_path) {
            if let Some(revision) = self.catalog.revisions.get(&key).cloned() {
                self.revision_service(&revision, &mut out);
                self.dirty_endpoints.insert(key);
            }
        }
        self.endpoints(&mut out);
        // Knative's labeler: which Revisions the served KIngresses name, and since when.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.update_routing(now);
        out.state_changed = std::mem::take(&mut self.state_changed);
        out
    }

    fn reconcile_config(&mut self, key: &Key, out: &mut Output) {
        let Some(config) = self.effective_configuration(key) else {
            // Gone: its Revisions go with it (owner references, as upstream).
            if let Some(old) = self.config_outcomes.remove(key) {
                for r in &old.revisions {
                    self.revision_gone(&r.key(), out);
                }
                self.catalog.configurations.remove(key);
                self.dirty_routes_naming(key, &old);
            }
            if self.state.remove_configuration(key).is_some() {
                self.state_changed = true;
            }
            self.dirty_scale = true;
            return;
        };
        let outcome = reconcile_configuration(&config, &mut self.state, &self.readiness);
        if outcome.created.is_some() {
            self.state_changed = true;
            tracing::info!(configuration = %key, revision = ?outcome.created, "revision created");
        }
        let prev = self.config_outcomes.get(key);
        let latest_ready_moved = prev.is_none_or(|p| {
            p.configuration.status.latest_ready_revision_name
                != outcome.configuration.status.latest_ready_revision_name
        });
        if latest_ready_moved {
            // `reconcile_configuration` moved it in the state too.
            self.state_changed = true;
        }
        if prev == Some(&outcome) {
            return;
        }
        let old_revisions: Vec<Key> = prev
            .map(|p| p.revisions.iter().map(Revision::key).collect())
            .unwrap_or_default();
        for r in &outcome.revisions {
            self.revision_service(r, out);
        }
        for k in old_revisions {
            if !outcome.revisions.iter().any(|r| r.key() == k) {
                self.revision_gone(&k, out);
            }
        }
        self.catalog.add_outcome(&outcome);
        self.dirty_routes_naming(key, &outcome);
        self.config_outcomes.insert(key.clone(), outcome);
        self.dirty_scale = true;
    }

    /// Marks the Routes that may name a Configuration or one of its Revisions.
    fn dirty_routes_naming(&mut self, key: &Key, outcome: &ConfigurationOutcome) {
        let names: BTreeSet<&str> = outcome
            .revisions
            .iter()
            .map(|r| r.name())
            .chain([key.name.as_str()])
            .collect();
        let ns = key.namespace.as_str();
        let mut dirty = Vec::new();
        let candidates = self
            .services
            .keys()
            .chain(self.routes.keys())
            .filter(|k| k.namespace == ns);
        for rk in candidates {
            let Some(route) = self.effective_route(rk) else {
                continue;
            };
            let names_it = route.spec.traffic.iter().any(|t| {
                names.contains(t.revision_name.as_str())
                    || names.contains(t.configuration_name.as_str())
            });
            if names_it {
                dirty.push(rk.clone());
            }
        }
        self.dirty_routes.extend(dirty);
    }

    fn reconcile_one_route(&mut self, key: &Key, out: &mut Output) {
        let Some(route) = self.effective_route(key) else {
            self.route_outcomes.remove(key);
            self.pending.remove(key);
            if self.served.remove(key).is_some() {
                out.gateway.push((object_key(Kind::Ingress, key), None));
            }
            self.dirty_scale = true;
            return;
        };
        let outcome = reconcile_route(&route, &self.catalog, &self.cfg, None);
        if let Some(ingress) = &outcome.ingress {
            let mut ingress = ingress.clone();
            let served = self.served.get(key);
            ingress.metadata.generation = served.and_then(|s| s.metadata.generation);
            if served == Some(&ingress) {
                self.pending.remove(key);
            } else {
                // Revisions this KIngress would wake: wait until they can answer.
                let serving_now: BTreeSet<String> = served.map(split_revisions).unwrap_or_default();
                let waiting: Vec<String> = split_revisions(&ingress)
                    .into_iter()
                    .filter(|r| !serving_now.contains(r))
                    .filter(|r| !self.can_answer(&Key::new(&key.namespace, r)))
                    .collect();
                if waiting.is_empty() {
                    ingress.metadata.generation = Some(self.next_generation);
                    self.next_generation += 1;
                    out.gateway.push((
                        object_key(Kind::Ingress, key),
                        Some(Object::Ingress(Box::new(ingress.clone()))),
                    ));
                    self.served.insert(key.clone(), ingress);
                    self.pending.remove(key);
                } else {
                    self.pending.insert(key.clone(), (ingress, waiting));
                }
            }
        } else {
            self.pending.remove(key);
        }
        self.route_outcomes.insert(key.clone(), outcome);
        self.dirty_scale = true;
    }

    /// The Routes a KIngress is served for, with their URL.
    pub fn served_urls(&self) -> Vec<(Key, String)> {
        self.served
            .keys()
            .filter_map(|k| {
                Some((
                    k.clone(),
                    self.route_outcomes.get(k)?.route.status.url.clone()?,
                ))
            })
            .collect()
    }

    /// Whether a KIngress is served for the Route.
    pub fn is_served(&self, key: &Key) -> bool {
        self.served.contains_key(key)
    }
}

fn object_key(kind: Kind, key: &Key) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

mod gc;
mod inputs;
mod objects;
mod running;
#[cfg(test)]
mod tests;
mod view;
