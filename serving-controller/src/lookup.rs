//! What translation reads besides the KIngress itself: Kubernetes Services, their endpoints
//! (EndpointSlices or Endpoints) and Secrets. Passed in, so translation stays pure; sources
//! (the file directory, kube reflectors) implement [`Lookup`] over their stores.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Read access to the objects a KIngress refers to.
pub trait Lookup {
    /// A Service by namespace and name.
    fn service(&self, namespace: &str, name: &str) -> Option<&Service>;

    /// The EndpointSlices of a Service (label `kubernetes.io/service-name`). When there is at
    /// least one, they win over the Service's Endpoints object.
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<&EndpointSlice>;

    /// The Endpoints object of a Service (used only when it has no EndpointSlices).
    fn endpoints(&self, namespace: &str, service: &str) -> Option<&Endpoints>;

    /// A Secret by namespace and name.
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret>;

    /// The request timeout of the revision behind a Service, when known. A route's timeout is
    /// the maximum over its splits; with none known the route has no timeout (`0s`).
    fn upstream_timeout(&self, _namespace: &str, _service: &str) -> Option<Duration> {
        None
    }
}

type Key = (String, String);

/// A simple in-memory [`Lookup`]: objects keyed by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Services.
    pub services: BTreeMap<Key, Service>,
    /// EndpointSlices by (namespace, slice name).
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// Endpoints by (namespace, service name).
    pub endpoints: BTreeMap<Key, Endpoints>,
    /// Secrets.
    pub secrets: BTreeMap<Key, Secret>,
    /// Known upstream timeouts by (namespace, service name).
    pub timeouts: BTreeMap<Key, Duration>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Objects {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Service.
    pub fn add_service(&mut self, s: Service) -> &mut Self {
        self.services.insert(key_of(&s.metadata), s);
        self
    }

    /// Adds or replaces an EndpointSlice.
    pub fn add_endpoint_slice(&mut self, s: EndpointSlice) -> &mut Self {
        self.endpoint_slices.insert(key_of(&s.metadata), s);
        self
    }

    /// Adds or replaces an Endpoints object.
    pub fn add_endpoints(&mut self, e: Endpoints) -> &mut Self {
        self.endpoints.insert(key_of(&e.metadata), e);
        self
    }

    /// Adds or replaces a Secret.
    pub fn add_secret(&mut self, s: Secret) -> &mut Self {
        self.secrets.insert(key_of(&s.metadata), s);
        self
    }
}

fn get<'a, T>(map: &'a BTreeMap<Key, T>, namespace: &str, name: &str) -> Option<&'a T> {
    map.get(&(namespace.to_string(), name.to_string()))
}

impl Lookup for Objects {
    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        get(&self.services, namespace, name)
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<&EndpointSlice> {
        let start = (namespace.to_string(), String::new());
        self.endpoint_slices
            .range(start..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, s)| s)
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == service)
            })
            .collect()
    }

    fn endpoints(&self, namespace: &str, service: &str) -> Option<&Endpoints> {
        get(&self.endpoints, namespace, service)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        get(&self.secrets, namespace, name)
    }

    fn upstream_timeout(&self, namespace: &str, service: &str) -> Option<Duration> {
        get(&self.timeouts, namespace, service).copied()
    }
}
