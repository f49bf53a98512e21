//! What translation reads besides the KIngress itself: Kubernetes Services, their endpoints
//! (EndpointSlices or Endpoints) and Secrets. Passed in, so translation stays pure; sources
//! (the file directory, kube reflectors) implement [`Lookup`] over their stores.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Annotation on a Service: the request timeout, in whole seconds, of routes to it (the
/// maximum over a route's splits). `sluice up` sets it on each Revision's Service from the
/// Revision's `timeoutSeconds`; a gateway user may set it on any Service. Absent or invalid:
/// no timeout.
pub const TIMEOUT_ANNOTATION: &str = "sluice.knative.dev/timeout-seconds";

/// Annotation on a Service: the longest, in whole seconds, a response from it may go without
/// a byte (Knative's `idleTimeoutSeconds`), Envoy's route `idle_timeout` (the maximum over a
/// route's splits when all of them have one; otherwise the listener's stream idle timeout
/// applies). `sluice controller --kube` sets it on each Revision's public Service.
pub const IDLE_TIMEOUT_ANNOTATION: &str = "sluice.knative.dev/idle-timeout-seconds";

/// Label on an EndpointSlice that `sluice autoscaler --kube` writes for a Revision's public
/// Service: `serve` (it names the Revision's pods) or `proxy` (it names the activators).
pub const MODE_LABEL: &str = "sluice.knative.dev/mode";
/// [`MODE_LABEL`] in proxy mode.
pub const MODE_PROXY: &str = "proxy";
/// [`MODE_LABEL`] in serve mode.
pub const MODE_SERVE: &str = "serve";

/// Whether a slice names activators ([`MODE_LABEL`] `proxy`).
pub fn is_proxied(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MODE_LABEL))
        .is_some_and(|m| m == MODE_PROXY)
}

/// Annotation on a Service: the most requests one of its endpoints serves at once
/// (Knative's `containerConcurrency`; absent, 0 or invalid: unlimited). Envoy then opens at
/// most that many HTTP/1.1 connections to each endpoint (for h2c: one connection carrying at
/// most that many streams) and queues the rest, so no instance ever sees more — the direct
/// path's stand-in for Knative's queue-proxy. `sluice up` sets it on each Revision's Service.
pub const CONCURRENCY_ANNOTATION: &str = "sluice.knative.dev/container-concurrency";

/// The longest timeout Envoy accepts (a protobuf `Duration`'s range, 10,000 years).
pub const MAX_TIMEOUT_SECONDS: u64 = 315_576_000_000;

/// The per-endpoint request limit a Service's [`CONCURRENCY_ANNOTATION`] sets, if any.
pub fn endpoint_concurrency(service: &Service) -> Option<u32> {
    let v = service
        .metadata
        .annotations
        .as_ref()?
        .get(CONCURRENCY_ANNOTATION)?;
    v.trim().parse::<u32>().ok().filter(|n| *n > 0)
}

/// The timeout a [`TIMEOUT_ANNOTATION`] value sets: `Err` says why it is not one (not a whole
/// number of seconds, or beyond [`MAX_TIMEOUT_SECONDS`]) — it is then treated as absent.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    let secs: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of seconds"))?;
    if secs > MAX_TIMEOUT_SECONDS {
        return Err(format!(
            "{secs} s is beyond Envoy's longest timeout ({MAX_TIMEOUT_SECONDS} s)"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// Sluice's annotations on a Service that are set but invalid, with why: the annotation, and
/// a message. Invalid values are treated as absent; callers report these as input problems.
pub fn annotation_problems(service: &Service) -> Vec<(&'static str, String)> {
    let Some(a) = service.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for annotation in [TIMEOUT_ANNOTATION, IDLE_TIMEOUT_ANNOTATION] {
        if let Some(v) = a.get(annotation)
            && let Err(e) = parse_timeout(v)
        {
            out.push((annotation, format!("{e}; ignored (no timeout)")));
        }
    }
    if let Some(v) = a.get(CONCURRENCY_ANNOTATION)
        && v.trim().parse::<u32>().is_err()
    {
        out.push((
            CONCURRENCY_ANNOTATION,
            format!(
                "{:?} is not a whole number from 0 to {}; ignored (no limit)",
                crate::translate::shown(v),
                u32::MAX
            ),
        ));
    }
    out
}

/// Read access to the objects a KIngress refers to.
pub trait Lookup {
    /// A Service by namespace and name (borrowed, or rebuilt from a compact form: see
    /// [`ServiceInfo`]).
    fn service(&self, namespace: &str, name: &str) -> Option<Cow<'_, Service>>;

    /// The EndpointSlices of a Service (label `kubernetes.io/service-name`). When there is at
    /// least one, they win over the Service's Endpoints object.
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Cow<'_, EndpointSlice>>;

    /// The Endpoints object of a Service (used only when it has no EndpointSlices).
    fn endpoints(&self, namespace: &str, service: &str) -> Option<&Endpoints>;

    /// A Secret by namespace and name.
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret>;

    /// The request timeout of the revision behind a Service, when known (by default its
    /// [`TIMEOUT_ANNOTATION`]). A route's timeout is the maximum over its splits; with none
    /// known the route has no timeout (`0s`).
    fn upstream_timeout(&self, namespace: &str, service: &str) -> Option<Duration> {
        annotated_seconds(&*self.service(namespace, service)?, TIMEOUT_ANNOTATION)
    }

    /// The idle timeout of the revision behind a Service, when known (its
    /// [`IDLE_TIMEOUT_ANNOTATION`]) and it is served directly. While its slices name the
    /// activators ([`MODE_LABEL`] `proxy`) the activator enforces it: Envoy's route idle
    /// timeout would also run while the activator holds the request for a pod (a 408 before
    /// any pod saw it).
    fn upstream_idle_timeout(&self, namespace: &str, service: &str) -> Option<Duration> {
        if self
            .endpoint_slices(namespace, service)
            .iter()
            .any(|s| is_proxied(s))
        {
            return None;
        }
        annotated_seconds(&*self.service(namespace, service)?, IDLE_TIMEOUT_ANNOTATION)
            .filter(|t| !t.is_zero())
    }
}

/// A Service's annotation read as [`parse_timeout`] does (invalid: absent).
fn annotated_seconds(service: &Service, annotation: &str) -> Option<Duration> {
    parse_timeout(service.metadata.annotations.as_ref()?.get(annotation)?).ok()
}

type Key = (String, String);

/// A simple in-memory [`Lookup`]: objects keyed by namespace and name. Services and
/// EndpointSlices are held in compact forms ([`ServiceInfo`], [`SliceInfo`]); Endpoints and
/// Secrets are boxed (a B-tree node holds eleven values inline and is often half full, and the
/// k8s structs are 0.4–0.8 KB each: at 10k KIngresses that slack was tens of megabytes).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Services, in the compact form translation reads.
    pub services: BTreeMap<Key, ServiceInfo>,
    /// EndpointSlices by (namespace, slice name), each with the Service it belongs to; change
    /// them with [`Objects::add_endpoint_slice`] / [`Objects::remove_endpoint_slice`] so the
    /// per-Service index stays right.
    endpoint_slices: BTreeMap<Key, (Option<String>, SliceInfo)>,
    /// (namespace, Service) → names of its EndpointSlices, sorted: a lookup costs the
    /// Service's slices, not every slice of the namespace.
    slices_by_service: BTreeMap<Key, Vec<String>>,
    /// Endpoints by (namespace, service name).
    pub endpoints: BTreeMap<Key, Box<Endpoints>>,
    /// Secrets.
    pub secrets: BTreeMap<Key, Box<Secret>>,
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

    /// Adds or replaces a Service (stored as a [`ServiceInfo`]).
    pub fn add_service(&mut self, s: Service) -> &mut Self {
        self.services
            .insert(key_of(&s.metadata), ServiceInfo::new(s));
        self
    }

    /// Adds or replaces an EndpointSlice.
    pub fn add_endpoint_slice(&mut self, s: EndpointSlice) -> &mut Self {
        let key = key_of(&s.metadata);
        self.remove_endpoint_slice(&key.0, &key.1);
        let service = slice_service(&s);
        if let Some(service) = &service {
            let names = self
                .slices_by_service
                .entry((key.0.clone(), service.clone()))
                .or_default();
            if let Err(at) = names.binary_search(&key.1) {
                names.insert(at, key.1.clone());
            }
        }
        self.endpoint_slices
            .insert(key, (service, SliceInfo::new(s)));
        self
    }

    /// Removes an EndpointSlice by namespace and slice name; returns the name of the Service
    /// it belonged to (`Some(None)`: a slice without the service-name label).
    pub fn remove_endpoint_slice(&mut self, namespace: &str, name: &str) -> Option<Option<String>> {
        let (service, _) = self
            .endpoint_slices
            .remove(&(namespace.to_string(), name.to_string()))?;
        if let Some(service) = &service {
            let k = (namespace.to_string(), service.clone());
            if let Some(set) = self.slices_by_service.get_mut(&k) {
                if let Ok(at) = set.binary_search_by(|n| n.as_str().cmp(name)) {
                    set.remove(at);
                }
                if set.is_empty() {
                    self.slices_by_service.remove(&k);
                }
            }
        }
        Some(service)
    }

    /// Adds or replaces an Endpoints object.
    pub fn add_endpoints(&mut self, e: Endpoints) -> &mut Self {
        self.endpoints.insert(key_of(&e.metadata), Box::new(e));
        self
    }

    /// Adds or replaces a Secret.
    pub fn add_secret(&mut self, s: Secret) -> &mut Self {
        self.secrets.insert(key_of(&s.metadata), Box::new(s));
        self
    }
}

fn get<'a, T>(map: &'a BTreeMap<Key, Box<T>>, namespace: &str, name: &str) -> Option<&'a T> {
    map.get(&(namespace.to_string(), name.to_string()))
        .map(|b| &**b)
}

impl Lookup for Objects {
    fn service(&self, namespace: &str, name: &str) -> Option<Cow<'_, Service>> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| Cow::Owned(s.to_service()))
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Cow<'_, EndpointSlice>> {
        self.slices_by_service
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|name| {
                self.endpoint_slices
                    .get(&(namespace.to_string(), name.clone()))
                    .map(|(_, s)| Cow::Owned(s.to_slice()))
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
        self.timeouts
            .get(&(namespace.to_string(), service.to_string()))
            .copied()
            .or_else(|| {
                let annotations = self
                    .services
                    .get(&(namespace.to_string(), service.to_string()))?
                    .annotations
                    .as_ref()?;
                parse_timeout(annotations.get(TIMEOUT_ANNOTATION)?).ok()
            })
    }

    fn upstream_idle_timeout(&self, namespace: &str, service: &str) -> Option<Duration> {
        let key = (namespace.to_string(), service.to_string());
        let proxied = self
            .slices_by_service
            .get(&key)
            .into_iter()
            .flatten()
            .any(|name| {
                self.endpoint_slices
                    .get(&(namespace.to_string(), name.clone()))
                    .is_some_and(|(_, s)| s.proxied)
            });
        if proxied {
            return None;
        }
        let annotations = self.services.get(&key)?.annotations.as_ref()?;
        parse_timeout(annotations.get(IDLE_TIMEOUT_ANNOTATION)?)
            .ok()
            .filter(|t| !t.is_zero())
    }
}

/// What translation reads of a Service: name, namespace, Sluice's own annotations
/// ([`TIMEOUT_ANNOTATION`], [`CONCURRENCY_ANNOTATION`]), type, external name and ports. Other
/// annotations (kubectl's last-applied copy of the whole object, for one), labels, managed
/// fields and status are dropped, and the rest is held without the ~0.8 KB of mostly empty
/// fields a `Service` struct has: a gateway holds every Service it routes to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    namespace: Option<String>,
    name: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    type_: Option<String>,
    external_name: Option<String>,
    ports: Option<Vec<k8s_openapi::api::core::v1::ServicePort>>,
}

impl ServiceInfo {
    /// The parts of `s` translation reads.
    pub fn new(s: Service) -> Self {
        let annotations = s.metadata.annotations.map(|a| {
            a.into_iter()
                .filter(|(k, _)| k.starts_with("sluice.knative.dev/"))
                .collect::<BTreeMap<_, _>>()
        });
        let (type_, external_name, ports) = match s.spec {
            Some(spec) => (
                spec.type_,
                spec.external_name,
                spec.ports.map(|mut p| {
                    p.shrink_to_fit();
                    p
                }),
            ),
            None => (None, None, None),
        };
        Self {
            namespace: s.metadata.namespace,
            name: s.metadata.name,
            annotations: annotations.filter(|a| !a.is_empty()),
            type_,
            external_name,
            ports,
        }
    }

    /// A `Service` holding what was kept.
    pub fn to_service(&self) -> Service {
        use k8s_openapi::api::core::v1::ServiceSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        Service {
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                annotations: self.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: self.type_.clone(),
                external_name: self.external_name.clone(),
                ports: self.ports.clone(),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// What translation reads of an EndpointSlice: its name, address type, ports, and each
/// endpoint's addresses and ready condition. Labels, annotations, managed fields, topology and
/// target references are dropped, and the rest is held without the mostly empty fields of the
/// `EndpointSlice` and `Endpoint` structs (~0.8 KB for a one-endpoint slice): a gateway holds
/// every slice of every Service it routes to.
#[derive(Debug, Clone, PartialEq)]
struct SliceInfo {
    namespace: Option<String>,
    name: Option<String>,
    /// [`MODE_LABEL`] was `proxy`.
    proxied: bool,
    address_type: String,
    ports: Option<Vec<k8s_openapi::api::discovery::v1::EndpointPort>>,
    endpoints: Option<Vec<SliceEndpoint>>,
}

/// One endpoint of a [`SliceInfo`]: its addresses and its `ready` condition (`None` when the
/// endpoint has no conditions, `Some(None)` when `ready` is unset).
type SliceEndpoint = (Vec<String>, Option<Option<bool>>);

impl SliceInfo {
    fn new(s: EndpointSlice) -> Self {
        Self {
            proxied: is_proxied(&s),
            namespace: s.metadata.namespace,
            name: s.metadata.name,
            address_type: s.address_type,
            ports: s.ports.map(|mut p| {
                p.shrink_to_fit();
                p
            }),
            endpoints: s.endpoints.map(|eps| {
                eps.into_iter()
                    .map(|mut e| {
                        e.addresses.shrink_to_fit();
                        (e.addresses, e.conditions.map(|c| c.ready))
                    })
                    .collect::<Vec<_>>()
                    // The collect reuses the `Endpoint` buffer, sized for the larger type:
                    // give the spare back.
                    .into_boxed_slice()
                    .into_vec()
            }),
        }
    }

    fn to_slice(&self) -> EndpointSlice {
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        EndpointSlice {
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                labels: self
                    .proxied
                    .then(|| BTreeMap::from([(MODE_LABEL.to_string(), MODE_PROXY.to_string())])),
                ..ObjectMeta::default()
            },
            address_type: self.address_type.clone(),
            ports: self.ports.clone(),
            endpoints: self.endpoints.as_ref().map(|eps| {
                eps.iter()
                    .map(|(addresses, ready)| Endpoint {
                        addresses: addresses.clone(),
                        conditions: ready.map(|ready| EndpointConditions {
                            ready,
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect()
            }),
        }
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(s: &EndpointSlice) -> Option<String> {
    s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(annotation: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("hello-00001".into()),
                namespace: Some("default".into()),
                annotations: annotation
                    .map(|v| BTreeMap::from([(TIMEOUT_ANNOTATION.to_string(), v.to_string())])),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    #[test]
    fn a_services_timeout_annotation_is_its_upstream_timeout() {
        let mut o = Objects::new();
        o.add_service(service(Some("42")));
        assert_eq!(
            o.upstream_timeout("default", "hello-00001"),
            Some(Duration::from_secs(42))
        );
        // A known timeout wins; a bad or missing annotation means none.
        o.timeouts.insert(
            ("default".into(), "hello-00001".into()),
            Duration::from_secs(7),
        );
        assert_eq!(
            o.upstream_timeout("default", "hello-00001"),
            Some(Duration::from_secs(7))
        );
        for bad in [Some("soon"), Some("-1"), None] {
            let mut o = Objects::new();
            o.add_service(service(bad));
            assert_eq!(
                o.upstream_timeout("default", "hello-00001"),
                None,
                "{bad:?}"
            );
        }
    }
}
