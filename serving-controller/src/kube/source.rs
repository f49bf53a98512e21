//! Watches on the API server, merged into one stream of changes for the gateway core.
//!
//! [`KubeSource`] runs kube-runtime [`watcher`]s (list, then watch; re-list when the watch
//! expires; exponential backoff on errors) on:
//! - KIngresses, cluster-wide or in the configured namespaces. A label selector cannot match an
//!   annotation, so the class filter is applied here: objects of another class (or none) are
//!   dropped before they are even decoded, and one that stops being ours is reported deleted;
//! - Services, EndpointSlices (tied to their Service by label `kubernetes.io/service-name`) and
//!   Secrets, each with its own [`Scope`]. Cached Secrets keep only `tls.crt`, `tls.key` and
//!   `ca.crt`; every cached object drops `managedFields` and the `kubectl apply` annotation.
//!
//! Only the Secrets something names are kept whole (see [`secrets`]).
//!
//! Endpoints objects are not watched: see [`KubeCache`]'s `Lookup::endpoints`.

mod secrets;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use ::kube::{Client, Resource};
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

use super::KubeError;
use super::cache::{Change, KubeCache, ObjectKey, Store, service_of_slice};
use super::resource::{decode_or_stub, ingress_api_resource, is_ours_meta, key_of, strip_meta};
use crate::ingress::{Ingress, IngressKey};

/// The KIngress resource, as named in errors and RBAC.
pub const INGRESSES: &str = "ingresses.networking.internal.knative.dev";
/// The Service resource, as named in errors and RBAC.
pub const SERVICES: &str = "services";
/// The EndpointSlice resource, as named in errors and RBAC.
pub const ENDPOINT_SLICES: &str = "endpointslices.discovery.k8s.io";
/// The Secret resource, as named in errors and RBAC.
pub const SECRETS: &str = "secrets";

/// The ConfigMap resource, as named in errors and RBAC.
pub const CONFIG_MAPS: &str = "configmaps";

/// The Secret keys kept in the cache (a TLS certificate, its key and a CA bundle).
pub const SECRET_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// Which objects of one kind are watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The namespaces to watch, one watch each; empty watches all namespaces with one watch.
    pub namespaces: Vec<String>,
    /// A label selector (`app=web,tier!=cache`) the API server applies; `None` selects all.
    pub label_selector: Option<String>,
}

impl Scope {
    /// Every object of the kind, cluster-wide.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only objects in these namespaces.
    pub fn namespaces<I: IntoIterator<Item = S>, S: Into<String>>(namespaces: I) -> Self {
        Self {
            namespaces: namespaces.into_iter().map(Into::into).collect(),
            label_selector: None,
        }
    }

    /// The same scope, restricted to objects matching a label selector.
    pub fn with_labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// The watched namespaces, deduplicated; `[None]` for all.
    fn targets(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            return vec![None];
        }
        let set: BTreeSet<&String> = self.namespaces.iter().collect();
        set.into_iter().cloned().map(Some).collect()
    }

    fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        match &self.label_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }
}

/// What the Kubernetes source watches. The default watches everything cluster-wide, which is
/// what a KIngress may refer to (its splits name Services, and its TLS Secrets, in any
/// namespace), and the ConfigMaps of Knative's system namespace (`config-kourier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// KIngresses (the class filter always applies on top).
    pub ingresses: Scope,
    /// Services.
    pub services: Scope,
    /// EndpointSlices.
    pub endpoint_slices: Scope,
    /// Secrets (e.g. `Scope::all().with_labels(...)` when certificates carry a label).
    pub secrets: Scope,
    /// Secrets the gateway's own configuration names (a default certificate, the internal
    /// listener's): always kept, whether a KIngress names them or not.
    pub pinned_secrets: Vec<ObjectKey>,
    /// ConfigMaps (the gateway reads `config-kourier`).
    pub config_maps: Scope,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            ingresses: Scope::all(),
            services: Scope::all(),
            endpoint_slices: Scope::all(),
            secrets: Scope::all(),
            pinned_secrets: Vec::new(),
            config_maps: Scope::namespaces([crate::kourier::SYSTEM_NAMESPACE]),
        }
    }
}

/// One change the gateway core acts on. Each carries the object (the last known state for a
/// deletion), so a core that keeps its own store applies it as is; the same objects are in
/// [`KubeSource::cache`] (already updated) for a core that reads that instead.
#[derive(Debug)]
pub enum KubeEvent {
    /// Every watch has listed once: the cache holds the whole cluster state. Sent once. The
    /// events before it are the initial fill: translate then, and start serving xDS after this.
    Synced,
    /// A KIngress of our class was created or changed (or became ours).
    IngressApplied(Arc<Ingress>),
    /// A KIngress of our class was deleted, or is no longer of our class.
    IngressDeleted(IngressKey),
    /// A KIngress of our class that does not decode. The previous version, if any, stays in the
    /// cache and keeps being served; `ingress` carries the new metadata and status (its spec is
    /// empty) so that a failure condition can be written.
    IngressRejected {
        /// Metadata and status of the rejected object.
        ingress: Arc<Ingress>,
        /// Why ([`KubeError::Decode`]).
        error: KubeError,
    },
    /// A Service was created or changed.
    ServiceApplied(Arc<Service>),
    /// A Service was deleted (its last known state).
    ServiceDeleted(Arc<Service>),
    /// An EndpointSlice was created or changed; its Service is [`service_of_slice`].
    EndpointSliceApplied(Arc<EndpointSlice>),
    /// An EndpointSlice was deleted (its last known state).
    EndpointSliceDeleted(Arc<EndpointSlice>),
    /// A Secret was created or changed (only [`SECRET_KEYS`] are kept in its data).
    SecretApplied(Arc<Secret>),
    /// A Secret was deleted (its last known state).
    SecretDeleted(Arc<Secret>),
    /// A ConfigMap was created or changed.
    ConfigMapApplied(Arc<ConfigMap>),
    /// A ConfigMap was deleted (its last known state).
    ConfigMapDeleted(Arc<ConfigMap>),
}

impl KubeEvent {
    /// The Service this event concerns (a Service, or the Service of an EndpointSlice): what a
    /// consumer reading [`KubeSource::cache`] re-translates the KIngresses of. (An
    /// EndpointSlice keeps the Service label it was created with, so one key suffices.)
    pub fn service_key(&self) -> Option<ObjectKey> {
        match self {
            KubeEvent::ServiceApplied(s) | KubeEvent::ServiceDeleted(s) => {
                Some(key_of(&s.metadata))
            }
            KubeEvent::EndpointSliceApplied(s) | KubeEvent::EndpointSliceDeleted(s) => {
                service_of_slice(s)
            }
            _ => None,
        }
    }
}

/// A watch event of one kind (what the merged stream carries).
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived: each item is moved into the cache (behind an Arc) at once"
)]
enum Item {
    Ingress(watcher::Result<Event<DynamicObject>>),
    Service(watcher::Result<Event<Service>>),
    EndpointSlice(watcher::Result<Event<EndpointSlice>>),
    Secret(watcher::Result<Event<Secret>>),
    ConfigMap(watcher::Result<Event<ConfigMap>>),
    /// The answer to a GET of a Secret that became named while held as a stub.
    SecretFetched(ObjectKey, Result<Option<Secret>, ::kube::Error>),
}

/// One watch stream: its namespace and whether it has listed once.
struct StreamInfo {
    namespace: Option<String>,
    listed: bool,
}

/// The Kubernetes source: owns the watches and the [`KubeCache`] they fill.
///
/// Drive it with [`KubeSource::next`] and read [`KubeSource::cache`] between events (both on
/// the same task: no locks). Dropping it stops every watch.
pub struct KubeSource {
    streams: SelectAll<BoxStream<'static, (usize, Item)>>,
    info: Vec<StreamInfo>,
    unlisted: usize,
    synced: bool,
    cache: KubeCache,
    pending: VecDeque<KubeEvent>,
    /// For GETs of Secrets.
    client: Client,
    /// Which Secrets are named (see [`secrets`]).
    wanted: secrets::Wanted,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("watches", &self.info.len())
            .field("synced", &self.synced)
            .field("cache", &self.cache.counts())
            .finish_non_exhaustive()
    }
}

fn strip_secret(secret: &mut Secret) {
    strip_meta(&mut secret.metadata);
    secret.string_data = None;
    if let Some(data) = &mut secret.data {
        data.retain(|key, _| SECRET_KEYS.contains(&key.as_str()));
    }
}

impl KubeSource {
    /// Starts watching as `config` says. Nothing is sent until [`KubeSource::next`] is polled.
    pub fn new(client: Client, config: &SourceConfig) -> Self {
        let mut source = Self {
            streams: SelectAll::new(),
            info: Vec::new(),
            unlisted: 0,
            synced: false,
            cache: KubeCache::new(),
            pending: VecDeque::new(),
            client: client.clone(),
            wanted: secrets::Wanted::default(),
        };
        source.wanted.pin(config.pinned_secrets.iter().cloned());
        let ar = ingress_api_resource();
        for ns in config.ingresses.targets() {
            let api = match &ns {
                Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                None => Api::<DynamicObject>::all_with(client.clone(), &ar),
            };
            let stream = watch(api, config.ingresses.watcher_config());
            source.add(ns, stream.map(Item::Ingress));
        }
        for ns in config.services.targets() {
            let stream = watch(
                api::<Service>(&client, &ns),
                config.services.watcher_config(),
            )
            .modify(|s: &mut Service| strip_meta(&mut s.metadata));
            source.add(ns, stream.map(Item::Service));
        }
        for ns in config.endpoint_slices.targets() {
            let api = api::<EndpointSlice>(&client, &ns);
            let stream = watch(api, config.endpoint_slices.watcher_config())
                .modify(|s: &mut EndpointSlice| strip_meta(&mut s.metadata));
            source.add(ns, stream.map(Item::EndpointSlice));
        }
        for ns in config.secrets.targets() {
            let stream = watch(api::<Secret>(&client, &ns), config.secrets.watcher_config())
                .modify(strip_secret);
            source.add(ns, stream.map(Item::Secret));
        }
        for ns in config.config_maps.targets() {
            let stream = watch(
                api::<ConfigMap>(&client, &ns),
                config.config_maps.watcher_config(),
            )
            .modify(|c: &mut ConfigMap| strip_meta(&mut c.metadata));
            source.add(ns, stream.map(Item::ConfigMap));
        }
        source
    }

    fn add(
        &mut self,
        namespace: Option<String>,
        stream: impl Stream<Item = Item> + Send + 'static,
    ) {
        let index = self.info.len();
        self.info.push(StreamInfo {
            namespace,
            listed: false,
        });
        self.unlisted += 1;
        self.streams
            .push(stream.map(move |item| (index, item)).boxed());
    }

    /// The objects watched so far (complete once [`KubeEvent::Synced`] was returned).
    pub fn cache(&self) -> &KubeCache {
        &self.cache
    }

    /// Whether every watch has listed once.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The next change. Errors are reported as they happen (and logged by the caller); the
    /// failed watch retries by itself with an exponential backoff, so keep calling. `None` only
    /// when nothing is watched.
    ///
    /// Cancel-safe: usable as a branch of `tokio::select!` (no event is lost when the future is
    /// dropped).
    pub async fn next(&mut self) -> Option<Result<KubeEvent, KubeError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let (stream, item) = self.streams.next().await?;
            if let Err(error) = self.handle(stream, item) {
                tracing::debug!(%error, "watch failed; retrying with backoff");
                return Some(Err(error));
            }
        }
    }

    fn handle(&mut self, stream: usize, item: Item) -> Result<(), KubeError> {
        // The watched namespace (for a re-list); borrowed alongside the cache.
        let namespace = self.info.get(stream).and_then(|i| i.namespace.as_deref());
        let listed = match item {
            Item::Ingress(event) => {
                let event = event.map_err(|source| KubeError::Watch {
                    resource: INGRESSES,
                    source: Box::new(source),
                })?;
                let from = self.pending.len();
                let listed = ingress_event(
                    &mut self.cache.ingresses,
                    &mut self.pending,
                    stream,
                    namespace,
                    event,
                );
                self.follow_ingress_events(from);
                listed
            }
            Item::Service(event) => {
                let event = event.map_err(|source| KubeError::Watch {
                    resource: SERVICES,
                    source: Box::new(source),
                })?;
                let (changes, listed) = apply(&mut self.cache.services, stream, namespace, event);
                self.pending
                    .extend(changes.into_iter().map(|change| match change {
                        Change::Applied { new, .. } => KubeEvent::ServiceApplied(new),
                        Change::Deleted(old) => KubeEvent::ServiceDeleted(old),
                    }));
                listed
            }
            Item::EndpointSlice(event) => {
                let event = event.map_err(|source| KubeError::Watch {
                    resource: ENDPOINT_SLICES,
                    source: Box::new(source),
                })?;
                let (changes, listed) =
                    apply(&mut self.cache.endpoint_slices, stream, namespace, event);
                for change in changes {
                    self.cache.index_slice_change(&change);
                    self.pending.push_back(match change {
                        Change::Applied { new, .. } => KubeEvent::EndpointSliceApplied(new),
                        Change::Deleted(old) => KubeEvent::EndpointSliceDeleted(old),
                    });
                }
                listed
            }
            Item::Secret(event) => {
                let event = event.map_err(|source| KubeError::Watch {
                    resource: SECRETS,
                    source: Box::new(source),
                })?;
                let (changes, listed) = apply(&mut self.cache.secrets, stream, namespace, event);
                // Before the first sync they are all kept (handed on at the sync).
                self.follow_secret_changes(changes);
                listed
            }
            Item::ConfigMap(event) => {
                let event = event.map_err(|source| KubeError::Watch {
                    resource: CONFIG_MAPS,
                    source: Box::new(source),
                })?;
                let (changes, listed) =
                    apply(&mut self.cache.config_maps, stream, namespace, event);
                self.pending
                    .extend(changes.into_iter().map(|change| match change {
                        Change::Applied { new, .. } => KubeEvent::ConfigMapApplied(new),
                        Change::Deleted(old) => KubeEvent::ConfigMapDeleted(old),
                    }));
                listed
            }
            Item::SecretFetched(key, result) => {
                self.fetched(key, result)?;
                false
            }
        };
        if listed
            && let Some(info) = self.info.get_mut(stream)
            && !info.listed
        {
            info.listed = true;
            self.unlisted -= 1;
            if self.unlisted == 0 && !self.synced {
                self.synced = true;
                self.secrets_at_sync();
                tracing::info!(cache = ?self.cache.counts(), "kube source synced");
                self.pending.push_back(KubeEvent::Synced);
            }
        }
        Ok(())
    }
}

/// Applies a KIngress watch event to `store`, queueing the resulting events; returns whether
/// the event ended a list.
fn ingress_event(
    store: &mut Store<Ingress>,
    pending: &mut VecDeque<KubeEvent>,
    stream: usize,
    namespace: Option<&str>,
    event: Event<DynamicObject>,
) -> bool {
    let mut changes = Vec::new();
    let mut listed = false;
    match event {
        Event::Init => store.begin_relist(stream, namespace.map(str::to_string)),
        Event::InitApply(object) | Event::Apply(object) if !is_ours_meta(&object.metadata) => {
            // Not ours: never decoded. Gone from a re-list by not being added; on a live
            // change it may have just stopped being ours.
            if !store.relist_active(stream) {
                changes.extend(store.remove(&key_of(&object.metadata)));
            }
        }
        Event::InitApply(mut object) | Event::Apply(mut object) => {
            strip_meta(&mut object.metadata);
            match decode_or_stub(object) {
                Ok(ingress) => changes.extend(store.relist_add(stream, Arc::new(ingress))),
                Err(failed) => {
                    let (stub, error) = *failed;
                    tracing::warn!(%error, "KIngress rejected; its last good version keeps serving");
                    store.relist_keep(stream, &stub.key());
                    pending.push_back(KubeEvent::IngressRejected {
                        ingress: Arc::new(stub),
                        error,
                    });
                }
            }
        }
        Event::Delete(object) => changes.extend(store.remove(&key_of(&object.metadata))),
        Event::InitDone => {
            changes = store.end_relist(stream);
            listed = true;
        }
    }
    pending.extend(changes.into_iter().map(|change| match change {
        Change::Applied { new, .. } => KubeEvent::IngressApplied(new),
        Change::Deleted(old) => KubeEvent::IngressDeleted(old.key()),
    }));
    listed
}

/// An `Api` for all namespaces or one.
fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A kube-runtime watcher with the default backoff (0.8 s doubling to 30 s, jittered, reset
/// after 2 min of health), so a failing API server is not hammered.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}

/// Applies a watch event of a plain kind to its store; returns the changes and whether the
/// event ended a list.
fn apply<K: Resource>(
    store: &mut Store<K>,
    stream: usize,
    namespace: Option<&str>,
    event: Event<K>,
) -> (Vec<Change<K>>, bool) {
    match event {
        Event::Init => {
            store.begin_relist(stream, namespace.map(str::to_string));
            (Vec::new(), false)
        }
        Event::InitApply(object) => (
            store
                .relist_add(stream, Arc::new(object))
                .into_iter()
                .collect(),
            false,
        ),
        Event::Apply(object) => (store.upsert(Arc::new(object)).into_iter().collect(), false),
        Event::Delete(object) => (
            store.remove(&key_of(object.meta())).into_iter().collect(),
            false,
        ),
        Event::InitDone => (store.end_relist(stream), true),
    }
}
