//! The controller's watches, merged into one stream of [`WatchEvent`]s.
//!
//! kube-runtime [`watcher`]s (list, then watch; re-list when the watch expires; exponential
//! backoff on errors), one cluster-wide watch per kind:
//! - the four `serving.knative.dev/v1` kinds, as [`DynamicObject`]s decoded one by one
//!   ([`decode`]);
//! - KIngresses of Sluice's class (the class is an annotation, so it is filtered here; others are
//!   never decoded), whose status the gateway writes;
//! - EndpointSlices labelled `serving.knative.dev/revision` (the Kubernetes EndpointSlice
//!   controller copies a Service's labels to its slices, and every Revision's Service carries
//!   that label): the Revisions' readiness;
//! - Deployments and pods labelled `serving.knative.dev/revision` (metadata and status only):
//!   why a Revision's pods do not come up ([`super::health`]);
//! - ConfigMaps in `knative-serving` (`config-domain`, `config-network`, `config-defaults`,
//!   `config-features`).
//!
//! A re-list is reported as [`WatchEvent::Init`], the objects, then [`WatchEvent::InitDone`]:
//! the consumer drops what the new list no longer holds.

use ::kube::Client;
use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ControllerError;
use super::decode::{Observed, ServingObject, api_resource, decode, key_of};
use crate::ingress::Ingress;
use crate::kube::resource::{decode_or_stub, ingress_api_resource, is_ours_meta, strip_meta};
use crate::kube::runtime::REVISION_LABEL;
use crate::serving::config::SYSTEM_NAMESPACE;
use crate::serving::{Configuration, Key, Revision, Route, Service};

/// The kinds the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `services.serving.knative.dev`.
    Service,
    /// `configurations.serving.knative.dev`.
    Configuration,
    /// `revisions.serving.knative.dev`.
    Revision,
    /// `routes.serving.knative.dev`.
    Route,
    /// `ingresses.networking.internal.knative.dev` of Sluice's class.
    Ingress,
    /// `endpointslices.discovery.k8s.io` of Revisions' Services.
    EndpointSlice,
    /// `configmaps` in `knative-serving`.
    ConfigMap,
    /// `deployments.apps` of Revisions: their progress.
    Deployment,
    /// `pods` of Revisions: why they do not come up.
    Pod,
}

impl ObjectKind {
    /// Every watched kind.
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Service,
        ObjectKind::Configuration,
        ObjectKind::Revision,
        ObjectKind::Route,
        ObjectKind::Ingress,
        ObjectKind::EndpointSlice,
        ObjectKind::ConfigMap,
        ObjectKind::Deployment,
        ObjectKind::Pod,
    ];

    /// The resource, as named in errors and RBAC.
    pub fn resource(self) -> &'static str {
        match self {
            ObjectKind::Service => "services.serving.knative.dev",
            ObjectKind::Configuration => "configurations.serving.knative.dev",
            ObjectKind::Revision => "revisions.serving.knative.dev",
            ObjectKind::Route => "routes.serving.knative.dev",
            ObjectKind::Ingress => "ingresses.networking.internal.knative.dev",
            ObjectKind::EndpointSlice => "endpointslices.discovery.k8s.io",
            ObjectKind::ConfigMap => "configmaps",
            ObjectKind::Deployment => "deployments.apps",
            ObjectKind::Pod => "pods",
        }
    }
}

/// One watched object, decoded.
#[derive(Debug, Clone)]
pub enum Watched {
    /// A Knative Service.
    Service(Box<Observed<Service>>),
    /// A Configuration.
    Configuration(Box<Observed<Configuration>>),
    /// A Revision.
    Revision(Box<Observed<Revision>>),
    /// A Route.
    Route(Box<Observed<Route>>),
    /// A KIngress of Sluice's class (a stub with an empty spec when it does not decode: the
    /// controller then applies its own spec over it).
    Ingress(Box<Ingress>),
    /// An EndpointSlice of a Revision's Service.
    EndpointSlice(Box<EndpointSlice>),
    /// A ConfigMap in `knative-serving`.
    ConfigMap(Box<ConfigMap>),
    /// A Revision's Deployment (metadata and status only).
    Deployment(Box<Deployment>),
    /// A Revision's pod (metadata and status only).
    Pod(Box<Pod>),
}

impl Watched {
    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Watched::Service(_) => ObjectKind::Service,
            Watched::Configuration(_) => ObjectKind::Configuration,
            Watched::Revision(_) => ObjectKind::Revision,
            Watched::Route(_) => ObjectKind::Route,
            Watched::Ingress(_) => ObjectKind::Ingress,
            Watched::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Watched::ConfigMap(_) => ObjectKind::ConfigMap,
            Watched::Deployment(_) => ObjectKind::Deployment,
            Watched::Pod(_) => ObjectKind::Pod,
        }
    }

    /// Namespace and name.
    pub fn key(&self) -> Key {
        match self {
            Watched::Service(o) => o.key(),
            Watched::Configuration(o) => o.key(),
            Watched::Revision(o) => o.key(),
            Watched::Route(o) => o.key(),
            Watched::Ingress(i) => key_of(&i.metadata),
            Watched::EndpointSlice(s) => key_of(&s.metadata),
            Watched::ConfigMap(c) => key_of(&c.metadata),
            Watched::Deployment(d) => key_of(&d.metadata),
            Watched::Pod(p) => key_of(&p.metadata),
        }
    }
}

/// One change.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A (re-)list of the kind starts.
    Init(ObjectKind),
    /// An object was listed, created or changed.
    Applied(Watched),
    /// An object was deleted (or stopped being ours: a KIngress of another class).
    Deleted(ObjectKind, Key),
    /// The (re-)list of the kind is complete: objects not listed since [`WatchEvent::Init`]
    /// are gone.
    InitDone(ObjectKind),
}

type Item = Result<Vec<WatchEvent>, ControllerError>;

/// All of the controller's watches. Dropping it stops them.
pub struct Watches {
    streams: SelectAll<BoxStream<'static, Item>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Watches {
    /// Starts every watch (nothing is requested until [`Watches::next`] is polled).
    pub fn new(client: &Client) -> Self {
        let mut streams = SelectAll::new();
        streams.push(serving::<Service>(
            client,
            ObjectKind::Service,
            Watched::Service,
        ));
        streams.push(serving::<Configuration>(
            client,
            ObjectKind::Configuration,
            Watched::Configuration,
        ));
        streams.push(serving::<Revision>(
            client,
            ObjectKind::Revision,
            Watched::Revision,
        ));
        streams.push(serving::<Route>(client, ObjectKind::Route, Watched::Route));
        let ingresses = Api::<DynamicObject>::all_with(client.clone(), &ingress_api_resource());
        streams.push(convert(
            ObjectKind::Ingress,
            watcher::watcher(ingresses, watcher::Config::default()).default_backoff(),
            |object| {
                if !is_ours_meta(&object.metadata) {
                    // Not ours (or no longer): never decoded.
                    return Err(key_of(&object.metadata));
                }
                let mut object = object;
                strip_meta(&mut object.metadata);
                let ingress = decode_or_stub(object).unwrap_or_else(|failed| failed.0);
                Ok(Watched::Ingress(Box::new(ingress)))
            },
        ));
        let slices = Api::<EndpointSlice>::all(client.clone());
        streams.push(convert(
            ObjectKind::EndpointSlice,
            watcher::watcher(slices, watcher::Config::default().labels(REVISION_LABEL))
                .default_backoff(),
            |mut slice: EndpointSlice| {
                strip_meta(&mut slice.metadata);
                Ok(Watched::EndpointSlice(Box::new(slice)))
            },
        ));
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE);
        streams.push(convert(
            ObjectKind::ConfigMap,
            watcher::watcher(config_maps, watcher::Config::default()).default_backoff(),
            |mut cm: ConfigMap| {
                strip_meta(&mut cm.metadata);
                Ok(Watched::ConfigMap(Box::new(cm)))
            },
        ));
        let deployments = Api::<Deployment>::all(client.clone());
        streams.push(convert(
            ObjectKind::Deployment,
            watcher::watcher(
                deployments,
                watcher::Config::default().labels(REVISION_LABEL),
            )
            .default_backoff(),
            |mut d: Deployment| {
                strip_meta(&mut d.metadata);
                // The replica count wanted is all the spec that is needed.
                d.spec.template = Default::default();
                Ok(Watched::Deployment(Box::new(d)))
            },
        ));
        let pods = Api::<Pod>::all(client.clone());
        streams.push(convert(
            ObjectKind::Pod,
            watcher::watcher(pods, watcher::Config::default().labels(REVISION_LABEL))
                .default_backoff(),
            |mut p: Pod| {
                strip_meta(&mut p.metadata);
                p.spec = None;
                Ok(Watched::Pod(Box::new(p)))
            },
        ));
        Self { streams }
    }

    /// The next changes (one watch event's worth). Errors are reported as they happen; the
    /// failed watch retries by itself with backoff. Cancel-safe.
    pub async fn next(&mut self) -> Option<Item> {
        self.streams.next().await
    }
}

fn serving<T: ServingObject>(
    client: &Client,
    kind: ObjectKind,
    wrap: fn(Box<Observed<T>>) -> Watched,
) -> BoxStream<'static, Item> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &api_resource::<T>());
    convert(
        kind,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
        move |object| Ok(wrap(Box::new(decode::<T>(object)))),
    )
}

/// Maps a watcher's events; `to_watched` returns `Err(key)` for an object that is not ours
/// (reported as deleted outside a list, skipped within one).
fn convert<K, F>(
    kind: ObjectKind,
    stream: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    to_watched: F,
) -> BoxStream<'static, Item>
where
    K: ::kube::Resource + Send + 'static,
    F: Fn(K) -> Result<Watched, Key> + Send + 'static,
{
    stream
        .map(move |event| {
            let event = event.map_err(|source| ControllerError::Watch {
                resource: kind.resource(),
                source: Box::new(source),
            })?;
            Ok(match event {
                Event::Init => vec![WatchEvent::Init(kind)],
                Event::InitDone => vec![WatchEvent::InitDone(kind)],
                Event::InitApply(object) => match to_watched(object) {
                    Ok(watched) => vec![WatchEvent::Applied(watched)],
                    Err(_) => Vec::new(),
                },
                Event::Apply(object) => match to_watched(object) {
                    Ok(watched) => vec![WatchEvent::Applied(watched)],
                    Err(key) => vec![WatchEvent::Deleted(kind, key)],
                },
                Event::Delete(object) => vec![WatchEvent::Deleted(kind, key_of(object.meta()))],
            })
        })
        .boxed()
}
