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
//! Which Revisions run: those the Routes send traffic to (named by `revisionName`, or the
//! latest ready one of a named Configuration), those in a served or waiting KIngress, and each
//! Configuration's latest created Revision (so it can become Ready) — one instance each, or
//! `autoscaling.knative.dev/min-scale` when higher. The others are stopped.
//!
//! No failed request while traffic moves: a new KIngress that sends traffic to a Revision that
//! is not yet running is held back (the previous one keeps serving) until that Revision has a
//! ready instance.
//!
//! Bad input never costs served traffic: an object that fails Knative's validation is reported
//! with its file, object and field, and the last good version stays in effect; a Route whose
//! traffic cannot be resolved (an unknown or failed Revision) keeps its previous KIngress and
//! says why in its status.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Service as KubeService};
use sluice_serving::FieldError;
use sluice_serving::ingress::Ingress;
use sluice_serving::serving::{
    Configuration, ConfigurationOutcome, Key, Readiness, ReadinessReport, Revision, Route,
    RouteOutcome, Service, ServingConfig, ServingObjects, ServingState, admit_configuration,
    admit_route, admit_service, make_configuration, make_route, reconcile_configuration,
    reconcile_route,
};

use crate::gateway::documents::{Kind, Object, ObjectKey, Problem};
use crate::gateway::source::Change;
use crate::runtime::RevisionSpec as ProcessSpec;
use inputs::{readmit, shadow_problem, update_input};
use objects::{configuration_label, min_scale, revision_timeout, split_revisions};
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

    /// Routes every Revision's traffic through the activator at `addr` unless
    /// [`Self::set_direct`] takes it out of the path.
    pub fn with_activator(mut self, addr: SocketAddr) -> Self {
        self.activator = Some(addr);
        self
    }

    /// The serving configuration in effect.
    pub fn config(&self) -> &ServingConfig {
        &self.cfg
    }

    /// `config-autoscaler` in force (defaults when absent or invalid).
    pub fn autoscaler_config(&self) -> &sluice_autoscaler::Config {
        &self.autoscaler_cfg
    }

    /// Whether Envoy sends the Revision's traffic through the activator.
    pub fn via_activator(&self, revision: &Key) -> bool {
        self.activator.is_some() && !self.direct.contains(revision)
    }

    /// Whether some Revision is served without the activator.
    pub fn any_direct(&self) -> bool {
        !self.direct.is_empty()
    }

    /// The autoscaler's path decision: straight to the instances (`direct`) or through the
    /// activator. The Revision's Service (its per-instance limit) and Endpoints follow.
    pub fn set_direct(&mut self, revision: &Key, direct: bool) {
        let changed = if direct {
            self.direct.insert(revision.clone())
        } else {
            self.direct.remove(revision)
        };
        if changed {
            self.dirty_path.insert(revision.clone());
        }
    }

    /// The persisted state.
    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// A Knative object or a `knative-serving` ConfigMap was created or changed in `file`, or
    /// (`None`) deleted. Other kinds are not the controller's (the caller hands them to the
    /// gateway).
    pub fn object_changed(&mut self, key: &ObjectKey, object: Option<Object>, file: &Path) {
        let k = Key::new(&key.namespace, &key.name);
        match (key.kind, object) {
            (Kind::KnativeService, Some(Object::KnativeService(s))) => {
                let admitted = admit_service(&s, &self.cfg);
                update_input(&mut self.services, k.clone(), file, *s, admitted);
                self.service_touched(&k);
            }
            (Kind::KnativeService, _) => {
                self.services.remove(&k);
                self.service_touched(&k);
            }
            (Kind::Configuration, Some(Object::Configuration(c))) => {
                let admitted = admit_configuration(&c, &self.cfg);
                update_input(&mut self.configurations, k.clone(), file, *c, admitted);
                self.dirty_configs.insert(k);
            }
            (Kind::Configuration, _) => {
                self.configurations.remove(&k);
                self.dirty_configs.insert(k);
            }
            (Kind::Route, Some(Object::Route(r))) => {
                let admitted = admit_route(&r);
                update_input(&mut self.routes, k.clone(), file, *r, admitted);
                self.dirty_routes.insert(k);
            }
            (Kind::Route, _) => {
                self.routes.remove(&k);
                self.dirty_routes.insert(k);
            }
            (Kind::ConfigMap, object) => {
                if key.namespace != sluice_serving::serving::config::SYSTEM_NAMESPACE {
                    return;
                }
                match object {
                    Some(Object::ConfigMap(cm)) => {
                        self.config_maps
                            .insert(key.name.clone(), (file.to_path_buf(), *cm));
                    }
                    _ => {
                        self.config_maps.remove(&key.name);
                    }
                }
                self.rebuild_config();
            }
            _ => {}
        }
    }

    fn service_touched(&mut self, k: &Key) {
        self.dirty_configs.insert(k.clone());
        self.dirty_routes.insert(k.clone());
    }

    /// Re-reads the ConfigMaps; on a change everything is admitted and reconciled again.
    fn rebuild_config(&mut self) {
        let mut cfg = ServingConfig::default();
        self.config_error = None;
        self.autoscaler_cfg = sluice_autoscaler::Config::default();
        for (name, (file, cm)) in &self.config_maps {
            let empty = BTreeMap::new();
            let data = cm.data.as_ref().unwrap_or(&empty);
            if name == sluice_autoscaler::CONFIG_NAME {
                match sluice_autoscaler::Config::from_map(data) {
                    Ok(c) => self.autoscaler_cfg = c,
                    Err(e) => {
                        self.config_error = Some(Problem {
                            file: file.clone(),
                            object: Some(format!("ConfigMap knative-serving/{name}")),
                            field: None,
                            message: format!("{e}; the defaults are used instead"),
                        });
                    }
                }
                continue;
            }
            if let Err(e) = cfg.apply(name, data) {
                self.config_error = Some(Problem {
                    file: file.clone(),
                    object: Some(format!("ConfigMap knative-serving/{name}")),
                    field: None,
                    message: format!("{e}; the defaults are used instead"),
                });
            }
        }
        if let Some(domain) = &self.domain_override {
            cfg.domain = sluice_serving::serving::DomainConfig::single(domain);
        }
        if cfg == self.cfg {
            return;
        }
        self.cfg = cfg;
        // Admission depends on config-defaults: admit every object again.
        let cfg = self.cfg.clone();
        for (key, input) in &mut self.services {
            readmit(key, input, |s| admit_service(s, &cfg));
        }
        for (key, input) in &mut self.configurations {
            readmit(key, input, |c| admit_configuration(c, &cfg));
        }
        for (key, input) in &mut self.routes {
            readmit(key, input, admit_route);
        }
        let keys: Vec<Key> = self
            .services
            .keys()
            .chain(self.configurations.keys())
            .chain(self.config_outcomes.keys())
            .cloned()
            .collect();
        self.dirty_configs.extend(keys);
        let keys: Vec<Key> = self
            .services
            .keys()
            .chain(self.routes.keys())
            .chain(self.route_outcomes.keys())
            .cloned()
            .collect();
        self.dirty_routes.extend(keys);
    }

    /// What the runtime reports for a Revision now.
    pub fn runtime_changed(&mut self, revision: &Key, report: RuntimeReport) {
        if self.runtime.get(revision) == Some(&report) {
            return;
        }
        let readiness_changed = self.readiness.get(revision) != Some(&report.readiness);
        self.readiness
            .insert(revision.clone(), report.readiness.clone());
        let ready_changed = self
            .runtime
            .get(revision)
            .is_none_or(|r| r.ready != report.ready);
        self.runtime.insert(revision.clone(), report);
        if readiness_changed && let Some(config) = self.configuration_of(revision) {
            self.dirty_configs.insert(config);
        }
        if ready_changed {
            // Endpoints, and KIngresses waiting for this Revision.
            let waiting: Vec<Key> = self
                .pending
                .iter()
                .filter(|(_, (_, revs))| revs.contains(&revision.name))
                .map(|(k, _)| k.clone())
                .collect();
            self.dirty_routes.extend(waiting);
            self.dirty_endpoints.insert(revision.clone());
        }
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
        out.state_changed = std::mem::take(&mut self.state_changed);
        out
    }

    fn update_shadowed(&mut self) {
        self.shadowed.clear();
        for (k, c) in &self.configurations {
            if self.services.contains_key(k) {
                self.shadowed
                    .insert(k.clone(), shadow_problem(&c.file, Kind::Configuration, k));
            }
        }
        for (k, r) in &self.routes {
            if self.services.contains_key(k) {
                self.shadowed
                    .insert(k.clone(), shadow_problem(&r.file, Kind::Route, k));
            }
        }
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

    /// The Revision's Service and (empty until instances are ready) Endpoints for the gateway.
    fn revision_service(&mut self, revision: &Revision, out: &mut Output) {
        let key = revision.key();
        let svc = make_revision_service(revision, &self.cfg, !self.via_activator(&key));
        if self.revision_services.get(&key) != Some(&svc) {
            out.gateway.push((
                object_key(Kind::Service, &key),
                Some(Object::Service(Box::new(svc.clone()))),
            ));
            self.revision_services.insert(key.clone(), svc);
            self.dirty_endpoints.insert(key);
            self.dirty_scale = true;
        }
    }

    fn revision_gone(&mut self, key: &Key, out: &mut Output) {
        self.catalog.revisions.remove(key);
        if self.revision_services.remove(key).is_some() {
            out.gateway.push((object_key(Kind::Service, key), None));
        }
        if self.revision_endpoints.remove(key).is_some() {
            out.gateway.push((object_key(Kind::Endpoints, key), None));
        }
        self.desired.remove(key);
        self.direct.remove(key);
        self.runtime.remove(key);
        self.readiness.remove(key);
        out.remove.push(key.clone());
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

    /// Which Revisions run, and how many instances.
    fn scale(&mut self, out: &mut Output) {
        // Reachable: some Route sends (or is about to send) traffic to it.
        let mut active: BTreeSet<Key> = BTreeSet::new();
        let mut latest: BTreeSet<Key> = BTreeSet::new();
        for outcome in self.config_outcomes.values() {
            let st = &outcome.configuration.status;
            if !st.latest_created_revision_name.is_empty() {
                latest.insert(Key::new(
                    outcome.configuration.namespace(),
                    &st.latest_created_revision_name,
                ));
            }
        }
        for (key, outcome) in &self.route_outcomes {
            for t in &outcome.route.spec.traffic {
                let name = if !t.revision_name.is_empty() {
                    t.revision_name.clone()
                } else if let Some(c) = self
                    .config_outcomes
                    .get(&Key::new(&key.namespace, &t.configuration_name))
                {
                    let st = &c.configuration.status;
                    if st.latest_ready_revision_name.is_empty() {
                        st.latest_created_revision_name.clone()
                    } else {
                        st.latest_ready_revision_name.clone()
                    }
                } else {
                    continue;
                };
                active.insert(Key::new(&key.namespace, &name));
            }
        }
        for (key, ingress) in self
            .served
            .iter()
            .chain(self.pending.iter().map(|(k, (i, _))| (k, i)))
        {
            for r in split_revisions(ingress) {
                active.insert(Key::new(&key.namespace, &r));
            }
        }
        let mut changed = Vec::new();
        for (key, revision) in &self.catalog.revisions {
            let min = min_scale(revision);
            let is_active = active.contains(key) || latest.contains(key);
            let want = if is_active { min.max(1) } else { min };
            let ask = (want, is_active, active.contains(key));
            if self.desired.get(key) != Some(&ask) {
                changed.push((key.clone(), ask));
            }
        }
        for (key, ask) in changed {
            self.desired.insert(key.clone(), ask);
            if let Some(revision) = self.catalog.revisions.get(&key) {
                let (instances, active, reachable) = ask;
                out.run.push(Run {
                    spec: process_spec(revision, &self.cfg),
                    instances,
                    active,
                    reachable,
                    annotations: revision.metadata.annotations.clone().unwrap_or_default(),
                    timeout: std::time::Duration::from_secs(
                        u64::try_from(revision_timeout(revision, &self.cfg)).unwrap_or(0),
                    ),
                    h2c: revision.spec.is_h2c(),
                });
            }
        }
    }

    /// Endpoints for the Revisions whose ready instances changed.
    fn endpoints(&mut self, out: &mut Output) {
        for key in std::mem::take(&mut self.dirty_endpoints) {
            let Some(revision) = self.catalog.revisions.get(&key) else {
                continue;
            };
            let ready = match &self.activator {
                Some(addr) if !self.direct.contains(&key) => std::slice::from_ref(addr),
                _ => self
                    .runtime
                    .get(&key)
                    .map(|r| r.ready.as_slice())
                    .unwrap_or_default(),
            };
            let endpoints = make_endpoints(revision, ready);
            if self.revision_endpoints.get(&key) != Some(&endpoints) {
                out.gateway.push((
                    object_key(Kind::Endpoints, &key),
                    Some(Object::Endpoints(Box::new(endpoints.clone()))),
                ));
                self.revision_endpoints.insert(key, endpoints);
            }
        }
    }

    /// Whether a Revision can take traffic now: it has a ready instance, or it was Ready and
    /// the activator (which wakes it and holds requests meanwhile) is in its path.
    fn can_answer(&self, revision: &Key) -> bool {
        let Some(rt) = self.runtime.get(revision) else {
            return false;
        };
        !rt.ready.is_empty() || (self.via_activator(revision) && rt.readiness == Readiness::Ready)
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

    /// Every input problem: files' objects that fail validation, ConfigMaps that do not
    /// parse, objects shadowed by a Service of the same name.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self.config_error.iter().cloned().collect();
        let mut add = |kind: Kind, key: &Key, file: &Path, errors: &[FieldError]| {
            for e in errors {
                let fields = if e.paths.is_empty() {
                    None
                } else {
                    Some(e.paths.join(", "))
                };
                out.push(Problem {
                    file: file.to_path_buf(),
                    object: Some(format!("{kind} {}/{}", key.namespace, key.name)),
                    field: fields,
                    message: e.message.clone(),
                });
            }
        };
        for (k, s) in &self.services {
            if let Some(errors) = &s.rejected {
                add(Kind::KnativeService, k, &s.file, errors);
            }
        }
        for (k, c) in &self.configurations {
            if let Some(errors) = &c.rejected {
                add(Kind::Configuration, k, &c.file, errors);
            }
        }
        for (k, r) in &self.routes {
            if let Some(errors) = &r.rejected {
                add(Kind::Route, k, &r.file, errors);
            }
        }
        out.extend(self.shadowed.values().cloned());
        out
    }
}

fn object_key(kind: Kind, key: &Key) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

mod inputs;
mod objects;
#[cfg(test)]
mod tests;
mod view;
