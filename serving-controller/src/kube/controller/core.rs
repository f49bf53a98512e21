//! The controller's core: what the watches showed, the [`ServingState`] rebuilt from the
//! Revision objects, and what each event makes due. No I/O: events in
//! ([`Core::observe`], [`Core::feedback`]), [`Action`](super::Action)s out ([`Core::reconcile`], in
//! `reconcile.rs`).
//!
//! **The API is the state.** Which Revisions exist, their generation numbers and the template
//! each was created from are read back from the Revision objects (labels
//! `serving.knative.dev/configuration` and `serving.knative.dev/configurationGeneration`,
//! annotation [`TEMPLATE_HASH_ANNOTATION`](super::TEMPLATE_HASH_ANNOTATION)). Nothing is
//! reconciled before every watch has listed once, so a restart never creates a second `-00001`
//! (see `rebuild.rs`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::action::Feedback;
use super::decode::Observed;
use super::rebuild::configuration_of;
use super::watch::{ObjectKind, WatchEvent, Watched};
use crate::ingress::Ingress;
use crate::kube::runtime::RuntimeConfig;
use crate::lookup::SERVICE_NAME_LABEL;
use crate::serving::{
    Configuration, ConfigurationOutcome, DomainConfig, Key, ReadinessReport, Revision, Route,
    RouteOutcome, Service, ServingConfig, ServingObjects, ServingState,
};

/// Where running a Revision stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Run {
    /// Asked for in this reconcile.
    Requested,
    /// Applied.
    Running,
    /// Failed in a way that may pass: asked again when the backoff requeues the Revision.
    Retrying,
    /// Cannot run (the message names the field).
    Failed { message: String },
}

/// The controller's knowledge of the cluster.
#[derive(Debug, Default)]
pub struct Core {
    pub(super) domain_override: Option<String>,
    pub(super) cfg: ServingConfig,
    /// `config-autoscaler` (initial scale of new Revisions).
    pub(super) autoscaler: sluice_autoscaler::Config,
    /// How Revisions become Deployments: the flags' over `config-deployment`.
    pub(super) base_runtime: RuntimeConfig,
    pub(super) runtime: RuntimeConfig,
    pub(super) config_maps: BTreeMap<String, ConfigMap>,
    pub(super) config_error: Option<String>,
    pub(super) services: BTreeMap<Key, Observed<Service>>,
    pub(super) configurations: BTreeMap<Key, Observed<Configuration>>,
    pub(super) routes: BTreeMap<Key, Observed<Route>>,
    pub(super) revisions: BTreeMap<Key, Observed<Revision>>,
    /// Revision names per Configuration.
    pub(super) revisions_by_config: BTreeMap<Key, BTreeSet<String>>,
    pub(super) ingresses: BTreeMap<Key, Ingress>,
    pub(super) slices: BTreeMap<Key, EndpointSlice>,
    /// EndpointSlice keys per Revision (their `kubernetes.io/service-name`).
    pub(super) slices_by_revision: BTreeMap<Key, BTreeSet<Key>>,
    /// Revisions' Deployments and pods (metadata and status), and which Revision each is of.
    pub(super) deployments: BTreeMap<Key, Deployment>,
    pub(super) pods: BTreeMap<Key, Pod>,
    pub(super) pods_by_revision: BTreeMap<Key, BTreeSet<Key>>,
    pub(super) state: ServingState,
    pub(super) catalog: ServingObjects,
    pub(super) config_outcomes: BTreeMap<Key, ConfigurationOutcome>,
    pub(super) route_outcomes: BTreeMap<Key, RouteOutcome>,
    /// HorizontalPodAutoscalers applied per HPA-class Revision (by this process).
    pub(super) hpas: BTreeMap<Key, k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// Placeholder Services applied per Route (by this process).
    pub(super) placeholders: BTreeMap<Key, Vec<k8s_openapi::api::core::v1::Service>>,
    pub(super) readiness: ReadinessReport,
    pub(super) runs: BTreeMap<Key, Run>,
    /// Objects failing validation or decoding: `Kind ns/name` → message.
    pub(super) problems: BTreeMap<String, String>,
    relisting: BTreeMap<ObjectKind, BTreeSet<Key>>,
    listed: BTreeSet<ObjectKind>,
    synced: bool,
    pub(super) dirty_services: BTreeSet<Key>,
    pub(super) dirty_configs: BTreeSet<Key>,
    pub(super) dirty_revisions: BTreeSet<Key>,
    pub(super) dirty_routes: BTreeSet<Key>,
    /// Routing states and `config-gc` to be looked at after this reconcile's passes.
    pub(super) gc_due: bool,
    /// Revisions being deleted by the collector.
    pub(super) deleting: BTreeSet<Key>,
}

impl Core {
    /// An empty core; `domain` overrides `config-domain`.
    pub fn new(domain: Option<String>) -> Self {
        Self::with_runtime(domain, RuntimeConfig::default())
    }

    /// [`Core::new`], Revisions becoming Deployments with `runtime` unless `config-deployment`
    /// says otherwise.
    pub fn with_runtime(domain: Option<String>, runtime: RuntimeConfig) -> Self {
        let mut core = Core {
            domain_override: domain,
            base_runtime: runtime,
            ..Core::default()
        };
        core.rebuild_config();
        core
    }

    /// Whether every watch has listed once (nothing is reconciled before).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The serving configuration in force.
    pub fn config(&self) -> &ServingConfig {
        &self.cfg
    }

    /// The Revisions known per Configuration (rebuilt from the API).
    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// A watch event.
    pub fn observe(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Init(kind) => {
                self.relisting.insert(kind, BTreeSet::new());
            }
            WatchEvent::Applied(watched) => {
                if let Some(seen) = self.relisting.get_mut(&watched.kind()) {
                    seen.insert(watched.key());
                }
                self.applied(watched);
            }
            WatchEvent::Deleted(kind, key) => self.deleted(kind, &key),
            WatchEvent::InitDone(kind) => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                for key in self.keys(kind) {
                    if !seen.contains(&key) {
                        self.deleted(kind, &key);
                    }
                }
                self.listed.insert(kind);
                if !self.synced && ObjectKind::ALL.iter().all(|k| self.listed.contains(k)) {
                    self.synced = true;
                    self.rebuild_state();
                    self.dirty_everything();
                }
            }
        }
    }

    /// What became of an [`Action`](super::Action).
    pub fn feedback(&mut self, feedback: Feedback) {
        match feedback {
            Feedback::Observed(watched) => self.applied(watched),
            Feedback::RevisionNotCreated { configuration } => {
                // Forgotten; created again when the backoff requeues the Configuration.
                self.rebuild_entry(&configuration);
            }
            Feedback::RevisionRunning(key) => {
                self.runs.insert(key.clone(), Run::Running);
                self.dirty_revisions.insert(key);
            }
            Feedback::Gone(kind, key) => self.deleted(kind, &key),
            Feedback::HpaApplied { revision, hpa } => {
                self.hpas.insert(revision, *hpa);
            }
            Feedback::RevisionNotDeleted(key) => {
                self.deleting.remove(&key);
            }
            Feedback::PlaceholdersApplied { route, services } => {
                self.placeholders.insert(route, services);
            }
            Feedback::RevisionNotRunning {
                revision,
                retry,
                message,
            } => {
                if retry {
                    self.runs.insert(revision, Run::Retrying);
                } else {
                    self.runs.insert(revision.clone(), Run::Failed { message });
                    self.dirty_revisions.insert(revision);
                }
            }
        }
    }

    /// Everything is reconciled again (this replica just became the leader: what another
    /// leader wrote meanwhile is compared afresh).
    pub fn resync(&mut self) {
        if self.synced {
            self.dirty_everything();
            self.gc_due = true;
        }
    }

    /// Time passed: routing states and `config-gc` are looked at in the next reconcile.
    pub fn tick(&mut self) {
        self.gc_due = true;
    }

    /// Marks an object to be reconciled again (after a failed write).
    pub fn requeue(&mut self, kind: ObjectKind, key: Key) {
        match kind {
            ObjectKind::Service => self.dirty_services.insert(key),
            ObjectKind::Configuration => self.dirty_configs.insert(key),
            ObjectKind::Revision => {
                if self.runs.get(&key) == Some(&Run::Retrying) {
                    self.runs.remove(&key);
                }
                self.dirty_revisions.insert(key)
            }
            ObjectKind::Route | ObjectKind::Ingress => self.dirty_routes.insert(key),
            ObjectKind::EndpointSlice
            | ObjectKind::ConfigMap
            | ObjectKind::Deployment
            | ObjectKind::Pod => false,
        };
    }

    fn keys(&self, kind: ObjectKind) -> Vec<Key> {
        match kind {
            ObjectKind::Service => self.services.keys().cloned().collect(),
            ObjectKind::Configuration => self.configurations.keys().cloned().collect(),
            ObjectKind::Revision => self.revisions.keys().cloned().collect(),
            ObjectKind::Route => self.routes.keys().cloned().collect(),
            ObjectKind::Ingress => self.ingresses.keys().cloned().collect(),
            ObjectKind::EndpointSlice => self.slices.keys().cloned().collect(),
            ObjectKind::Deployment => self.deployments.keys().cloned().collect(),
            ObjectKind::Pod => self.pods.keys().cloned().collect(),
            ObjectKind::ConfigMap => self
                .config_maps
                .keys()
                .map(|n| Key::new(crate::serving::config::SYSTEM_NAMESPACE, n))
                .collect(),
        }
    }

    fn applied(&mut self, watched: Watched) {
        let key = watched.key();
        match watched {
            Watched::Service(o) => {
                self.services.insert(key.clone(), *o);
                self.dirty_services.insert(key);
            }
            Watched::Configuration(o) => {
                let uid = o.object.metadata.uid.clone();
                let replaced = self.configurations.insert(key.clone(), *o);
                if self.synced && replaced.is_none_or(|old| old.object.metadata.uid != uid) {
                    // A new Configuration of this name: only its own Revisions count.
                    self.rebuild_entry(&key);
                }
                self.dirty_configs.insert(key.clone());
                self.dirty_services.insert(key);
            }
            Watched::Route(o) => {
                self.routes.insert(key.clone(), *o);
                self.dirty_routes.insert(key.clone());
                self.dirty_services.insert(key);
            }
            Watched::Revision(o) => {
                let config = configuration_of(&o.object);
                if let Some(config) = &config {
                    self.revisions_by_config
                        .entry(config.clone())
                        .or_default()
                        .insert(key.name.clone());
                }
                self.revisions.insert(key.clone(), *o);
                if let Some(config) = config
                    && self.synced
                {
                    self.rebuild_entry(&config);
                    self.dirty_configs.insert(config);
                }
                self.dirty_revisions.insert(key);
            }
            Watched::Ingress(i) => {
                self.ingresses.insert(key.clone(), *i);
                self.dirty_routes.insert(key);
            }
            Watched::EndpointSlice(s) => {
                if let Some(revision) = revision_of_slice(&s) {
                    self.slices_by_revision
                        .entry(revision.clone())
                        .or_default()
                        .insert(key.clone());
                    self.dirty_revisions.insert(revision);
                }
                self.slices.insert(key, *s);
            }
            Watched::ConfigMap(cm) => {
                self.config_maps.insert(key.name, *cm);
                self.rebuild_config();
            }
            Watched::Deployment(d) => {
                if let Some(revision) = revision_label(&d.metadata) {
                    self.dirty_revisions.insert(revision);
                }
                self.deployments.insert(key, *d);
            }
            Watched::Pod(p) => {
                if let Some(revision) = revision_label(&p.metadata) {
                    self.pods_by_revision
                        .entry(revision.clone())
                        .or_default()
                        .insert(key.clone());
                    self.dirty_revisions.insert(revision);
                }
                self.pods.insert(key, *p);
            }
        }
    }

    fn deleted(&mut self, kind: ObjectKind, key: &Key) {
        match kind {
            ObjectKind::Service => {
                self.services.remove(key);
                self.problems.remove(&format!("Service {key}"));
            }
            ObjectKind::Configuration => {
                self.configurations.remove(key);
                self.dirty_configs.insert(key.clone());
                self.dirty_services.insert(key.clone());
            }
            ObjectKind::Route => {
                self.routes.remove(key);
                self.dirty_routes.insert(key.clone());
                self.dirty_services.insert(key.clone());
            }
            ObjectKind::Revision => {
                self.deleting.remove(key);
                self.hpas.remove(key);
                let Some(old) = self.revisions.remove(key) else {
                    return;
                };
                self.runs.remove(key);
                self.readiness.remove(key);
                self.problems.remove(&format!("Revision {key}"));
                if let Some(config) = configuration_of(&old.object) {
                    if let Some(names) = self.revisions_by_config.get_mut(&config) {
                        names.remove(&key.name);
                    }
                    if self.synced {
                        self.rebuild_entry(&config);
                    }
                    self.dirty_configs.insert(config);
                }
            }
            ObjectKind::Ingress => {
                self.ingresses.remove(key);
                self.dirty_routes.insert(key.clone());
            }
            ObjectKind::EndpointSlice => {
                if let Some(old) = self.slices.remove(key)
                    && let Some(revision) = revision_of_slice(&old)
                {
                    if let Some(keys) = self.slices_by_revision.get_mut(&revision) {
                        keys.remove(key);
                    }
                    self.dirty_revisions.insert(revision);
                }
            }
            ObjectKind::ConfigMap => {
                self.config_maps.remove(&key.name);
                self.rebuild_config();
            }
            ObjectKind::Deployment => {
                if let Some(old) = self.deployments.remove(key)
                    && let Some(revision) = revision_label(&old.metadata)
                {
                    self.dirty_revisions.insert(revision);
                }
            }
            ObjectKind::Pod => {
                if let Some(old) = self.pods.remove(key)
                    && let Some(revision) = revision_label(&old.metadata)
                {
                    if let Some(keys) = self.pods_by_revision.get_mut(&revision) {
                        keys.remove(key);
                        if keys.is_empty() {
                            self.pods_by_revision.remove(&revision);
                        }
                    }
                    self.dirty_revisions.insert(revision);
                }
            }
        }
    }

    /// Re-reads the ConfigMaps; on a change everything is reconciled again.
    fn rebuild_config(&mut self) {
        let mut cfg = ServingConfig::default();
        self.config_error = None;
        for (name, cm) in &self.config_maps {
            let empty = BTreeMap::new();
            if let Err(e) = cfg.apply(name, cm.data.as_ref().unwrap_or(&empty)) {
                tracing::warn!(error = %e, "ConfigMap rejected; the defaults are used instead");
                self.config_error = Some(format!(
                    "ConfigMap knative-serving/{name}: {e}; the defaults are used instead"
                ));
            }
        }
        if let Some(domain) = &self.domain_override {
            cfg.domain = DomainConfig::single(domain);
        }
        let settings = super::settings::settings(&self.config_maps, &self.base_runtime, &cfg);
        for (name, e) in &settings.errors {
            tracing::warn!(error = %e, "ConfigMap {name} rejected; the defaults are used instead");
            self.config_error = Some(format!(
                "ConfigMap knative-serving/{name}: {e}; the defaults are used instead"
            ));
        }
        // New Revisions' Deployments follow; running ones keep theirs (as upstream, a
        // Deployment is made again only when its Revision is).
        self.autoscaler = settings.autoscaler;
        self.runtime = settings.runtime;
        if cfg != self.cfg {
            self.cfg = cfg;
            if self.synced {
                self.dirty_everything();
            }
        }
    }

    fn dirty_everything(&mut self) {
        self.dirty_services.extend(self.services.keys().cloned());
        self.dirty_configs
            .extend(self.configurations.keys().cloned());
        self.dirty_configs
            .extend(self.config_outcomes.keys().cloned());
        self.dirty_revisions.extend(self.revisions.keys().cloned());
        self.dirty_routes.extend(self.routes.keys().cloned());
        self.dirty_routes
            .extend(self.route_outcomes.keys().cloned());
    }
}

/// The Revision a Deployment or pod belongs to: its `serving.knative.dev/revision` label.
fn revision_label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Key> {
    let revision = meta
        .labels
        .as_ref()?
        .get(crate::kube::runtime::REVISION_LABEL)?;
    Some(Key::new(
        meta.namespace.clone().unwrap_or_default(),
        revision,
    ))
}

/// The Revision an EndpointSlice belongs to: that of its private Service
/// (`kubernetes.io/service-name={revision}-private`, labelled with the Revision by the
/// EndpointSlice controller from the Service's labels). The public Service's slices (written
/// by the autoscaler) are not the pods and do not count.
fn revision_of_slice(slice: &EndpointSlice) -> Option<Key> {
    let labels = slice.metadata.labels.as_ref()?;
    let revision = labels.get(crate::kube::runtime::REVISION_LABEL)?;
    let service = labels.get(SERVICE_NAME_LABEL)?;
    (*service == crate::kube::runtime::private_service_name(revision)).then(|| {
        Key::new(
            slice.metadata.namespace.clone().unwrap_or_default(),
            revision,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(name: &str, key: &str, value: &str) -> WatchEvent {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("knative-serving".into());
        cm.data = Some([(key.to_string(), value.to_string())].into());
        WatchEvent::Applied(Watched::ConfigMap(Box::new(cm)))
    }

    #[test]
    fn the_domain_flag_wins_over_config_domain_and_bad_config_maps_are_problems() {
        let mut core = Core::new(Some("flag.example".into()));
        core.observe(config_map("config-domain", "other.example", ""));
        assert_eq!(core.config().domain, DomainConfig::single("flag.example"));
        core.observe(config_map("config-network", "domain-template", "{{.Name}}"));
        let problems = core.problems();
        let message = problems
            .get("ConfigMap knative-serving")
            .expect("a problem");
        assert!(message.contains("config-network") && message.contains("domain-template"));
        core.observe(WatchEvent::Deleted(
            ObjectKind::ConfigMap,
            Key::new("knative-serving", "config-network"),
        ));
        assert!(core.problems().is_empty());
    }
}
