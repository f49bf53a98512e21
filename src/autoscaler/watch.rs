//! What `sluice autoscaler --kube` watches, and its events applied to the [`Core`]: Revisions,
//! their Deployments, `config-autoscaler`, the private Services' EndpointSlices and the
//! activator's, each with kube-runtime's re-list semantics ([`Relist`]).

use ::kube::Client;
use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_serving::kube::controller::decode::{api_resource, decode};
use sluice_serving::kube::runtime::REVISION_LABEL;
use sluice_serving::lookup::SERVICE_NAME_LABEL;
use sluice_serving::serving::config::SYSTEM_NAMESPACE;
use sluice_serving::serving::{Key, Revision};
use tokio::time::Instant;

use super::core::{Core, revision_of_deployment};
use crate::relist::Relist;

/// One change from the watches.
pub enum Change {
    /// A Revision.
    Revision(Box<Event<DynamicObject>>),
    /// A Revision's Deployment.
    Deployment(Box<Event<Deployment>>),
    /// `config-autoscaler`.
    Config(Box<Event<ConfigMap>>),
    /// A private Service's (0) or the activator's (1) EndpointSlices.
    Slice(usize, Box<Event<EndpointSlice>>),
}

fn watch<K, F>(api: Api<K>, config: watcher::Config, wrap: F) -> BoxStream<'static, Change>
where
    K: ::kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Event<K>) -> Change + Send + Copy + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |e| async move { e.ok().map(wrap) })
        .boxed()
}

/// Every watch, merged (the activator's slices are those of Service `activator`).
pub fn changes(client: &Client, activator: &Key) -> BoxStream<'static, Change> {
    futures::stream::select_all([
        watch(
            Api::<DynamicObject>::all_with(client.clone(), &api_resource::<Revision>()),
            watcher::Config::default(),
            |e| Change::Revision(Box::new(e)),
        ),
        watch(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels(REVISION_LABEL),
            |e| Change::Deployment(Box::new(e)),
        ),
        watch(
            Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", sluice_autoscaler::CONFIG_NAME)),
            |e| Change::Config(Box::new(e)),
        ),
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(REVISION_LABEL),
            |e| Change::Slice(0, Box::new(e)),
        ),
        watch(
            Api::<EndpointSlice>::namespaced(client.clone(), &activator.namespace),
            watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", activator.name)),
            |e| Change::Slice(1, Box::new(e)),
        ),
    ])
    .boxed()
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    Key::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The watches' progress, applying their events to the core.
#[derive(Debug, Default)]
pub struct Watched {
    revisions: Relist,
    deployments: Relist,
    slices: [Relist; 2],
    /// `config-autoscaler` seen in the list under way; whether a list completed.
    config_seen: bool,
    config_listed: bool,
    /// Why `config-autoscaler` was refused, while it is.
    pub config_error: Option<String>,
}

impl Watched {
    /// Whether every watch has listed once (nothing is decided before).
    pub fn synced(&self) -> bool {
        self.revisions.listed()
            && self.deployments.listed()
            && self.slices.iter().all(Relist::listed)
            && self.config_listed
    }

    /// Applies one change.
    pub fn apply(&mut self, core: &mut Core, change: Change) {
        match change {
            Change::Revision(event) => self.revision(core, *event),
            Change::Deployment(event) => self.deployment(core, *event),
            Change::Slice(i, event) => self.slice(core, i, *event),
            Change::Config(event) => self.config(core, *event),
        }
    }

    fn revision(&mut self, core: &mut Core, event: Event<DynamicObject>) {
        match event {
            Event::Init => self.revisions.init(),
            Event::InitApply(o) | Event::Apply(o) => {
                let observed = decode::<Revision>(o);
                self.revisions.applied(observed.object.key());
                if observed.error.is_none() {
                    core.revision(Instant::now(), observed.object);
                }
            }
            Event::Delete(o) => {
                let key = decode::<Revision>(o).object.key();
                self.revisions.deleted(&key);
                core.revision_gone(&key);
            }
            Event::InitDone => {
                for gone in self.revisions.init_done() {
                    core.revision_gone(&gone);
                }
            }
        }
    }

    fn deployment(&mut self, core: &mut Core, event: Event<Deployment>) {
        match event {
            Event::Init => self.deployments.init(),
            Event::InitApply(d) | Event::Apply(d) => {
                if let Some(revision) = core.deployment(&d) {
                    self.deployments.applied(revision);
                }
            }
            Event::Delete(d) => {
                if let Some(revision) = revision_of_deployment(&d) {
                    self.deployments.deleted(&revision);
                    core.deployment_gone(&revision);
                }
            }
            Event::InitDone => {
                for gone in self.deployments.init_done() {
                    core.deployment_gone(&gone);
                }
            }
        }
    }

    fn slice(&mut self, core: &mut Core, i: usize, event: Event<EndpointSlice>) {
        let relist = &mut self.slices[i];
        match event {
            Event::Init => relist.init(),
            Event::InitApply(slice) | Event::Apply(slice) => {
                let key = key_of(&slice.metadata);
                if core.endpoints.observe(&slice) {
                    relist.applied(key);
                } else {
                    // Not (or no longer) a slice to read.
                    core.endpoints.gone(&key.namespace, &key.name);
                    relist.deleted(&key);
                }
            }
            Event::Delete(slice) => {
                let key = key_of(&slice.metadata);
                core.endpoints.gone(&key.namespace, &key.name);
                relist.deleted(&key);
            }
            Event::InitDone => {
                for gone in relist.init_done() {
                    core.endpoints.gone(&gone.namespace, &gone.name);
                }
            }
        }
    }

    fn config(&mut self, core: &mut Core, event: Event<ConfigMap>) {
        let ours =
            |cm: &ConfigMap| cm.metadata.name.as_deref() == Some(sluice_autoscaler::CONFIG_NAME);
        match event {
            Event::Init => self.config_seen = false,
            Event::InitApply(cm) | Event::Apply(cm) if ours(&cm) => {
                self.config_seen = true;
                let data = cm.data.unwrap_or_default();
                match sluice_autoscaler::Config::from_map(&data) {
                    Ok(c) => {
                        self.config_error = None;
                        core.set_config(c);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "config-autoscaler rejected; the defaults are used instead");
                        self.config_error = Some(format!(
                            "ConfigMap knative-serving/config-autoscaler: {e}; the defaults are used instead"
                        ));
                        core.set_config(sluice_autoscaler::Config::default());
                    }
                }
            }
            Event::InitApply(_) | Event::Apply(_) => {}
            Event::Delete(cm) => {
                if ours(&cm) {
                    self.config_error = None;
                    core.set_config(sluice_autoscaler::Config::default());
                }
            }
            Event::InitDone => {
                if !self.config_seen {
                    self.config_error = None;
                    core.set_config(sluice_autoscaler::Config::default());
                }
                self.config_listed = true;
            }
        }
    }
}
