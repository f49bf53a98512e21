//! The objects the watchers keep: KIngresses of our class, Services, EndpointSlices (indexed by
//! their Service) and Secrets — read by translation through [`Lookup`].
//!
//! Why not kube-runtime's `reflector::Store`: [`Lookup`] hands out borrowed objects and needs
//! the EndpointSlices of one Service without scanning all of them (a 10k-Service cluster has at
//! least 10k slices), and the gateway core wants to know exactly what changed — including the
//! objects that vanished while a watch was re-listing. [`KubeCache`] applies watcher events
//! with the same semantics as the reflector (a re-list is buffered from `Init` to `InitDone`
//! and then swapped in) and reports each change. It is owned by [`super::KubeSource`] and read
//! between events, so no lock is taken anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ::kube::Resource;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::resource::key_of;
use crate::ingress::{Ingress, IngressKey};
use crate::lookup::{Lookup, SERVICE_NAME_LABEL};

/// Namespace and name of any namespaced object (the same shape as a KIngress key).
pub type ObjectKey = IngressKey;

/// What applying an event did to one object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change<T> {
    /// Created or changed; `old` is the previous version, if any.
    Applied {
        /// The previous version.
        old: Option<Arc<T>>,
        /// The current version.
        new: Arc<T>,
    },
    /// Gone; the last known version.
    Deleted(Arc<T>),
}

/// A re-list in progress on one watch stream.
#[derive(Debug)]
struct Relist<T> {
    /// The namespace the stream watches (`None`: all), i.e. which keys the re-list replaces.
    namespace: Option<String>,
    /// What has been listed so far.
    objects: BTreeMap<ObjectKey, Arc<T>>,
}

/// Objects of one kind by namespace and name.
#[derive(Debug)]
pub(crate) struct Store<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
    relists: HashMap<usize, Relist<T>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relists: HashMap::new(),
        }
    }
}

/// Whether two versions are the same object state: equal `resourceVersion`s (when both have
/// one; objects without one are always taken as changed).
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    matches!((&a.resource_version, &b.resource_version), (Some(x), Some(y)) if x == y)
}

impl<T: Resource> Store<T> {
    /// The object with this key.
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<&Arc<T>> {
        self.objects.get(key)
    }

    /// Every object, by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<T>)> {
        self.objects.iter()
    }

    /// Number of objects.
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Adds or replaces an object; `None` when the same version is already there.
    pub(crate) fn upsert(&mut self, object: Arc<T>) -> Option<Change<T>> {
        let key = key_of(object.meta());
        match self.objects.get(&key) {
            Some(old) if same_version(old.meta(), object.meta()) => None,
            _ => {
                let old = self.objects.insert(key, Arc::clone(&object));
                Some(Change::Applied { old, new: object })
            }
        }
    }

    /// Replaces the object under the same key without reporting a change (a kept Secret cut
    /// down to its stub, or filled from a GET).
    pub(crate) fn replace_quietly(&mut self, object: Arc<T>) {
        self.objects.insert(key_of(object.meta()), object);
    }

    /// Removes an object; `None` when it was not there.
    pub(crate) fn remove(&mut self, key: &ObjectKey) -> Option<Change<T>> {
        self.objects.remove(key).map(Change::Deleted)
    }

    /// Starts a re-list on `stream`, which watches `namespace` (`None`: all namespaces).
    pub(crate) fn begin_relist(&mut self, stream: usize, namespace: Option<String>) {
        self.relists.insert(
            stream,
            Relist {
                namespace,
                objects: BTreeMap::new(),
            },
        );
    }

    /// Whether a re-list is in progress on `stream`.
    pub(crate) fn relist_active(&self, stream: usize) -> bool {
        self.relists.contains_key(&stream)
    }

    /// An object listed by a re-list on `stream`. Without a re-list in progress (which the
    /// watcher never does) it is applied at once.
    pub(crate) fn relist_add(&mut self, stream: usize, object: Arc<T>) -> Option<Change<T>> {
        match self.relists.get_mut(&stream) {
            Some(relist) => {
                relist.objects.insert(key_of(object.meta()), object);
                None
            }
            None => self.upsert(object),
        }
    }

    /// Keeps the current version of `key` through the re-list on `stream` (used when the
    /// listed version is unusable and the last good one should stay).
    pub(crate) fn relist_keep(&mut self, stream: usize, key: &ObjectKey) {
        if let (Some(relist), Some(current)) =
            (self.relists.get_mut(&stream), self.objects.get(key))
        {
            relist.objects.insert(key.clone(), Arc::clone(current));
        }
    }

    /// Ends the re-list on `stream`: what was listed replaces what the stream's namespace held.
    /// Returns every object created, changed or gone.
    pub(crate) fn end_relist(&mut self, stream: usize) -> Vec<Change<T>> {
        let Some(relist) = self.relists.remove(&stream) else {
            return Vec::new();
        };
        let in_scope = |key: &ObjectKey| {
            relist
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == key.namespace)
        };
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|key| in_scope(key) && !relist.objects.contains_key(*key))
            .cloned()
            .collect();
        let mut changes: Vec<Change<T>> = gone.iter().filter_map(|k| self.remove(k)).collect();
        for object in relist.objects.into_values() {
            changes.extend(self.upsert(object));
        }
        changes
    }
}

/// The objects the Kubernetes source keeps. Read it through [`Lookup`] (for translation) and
/// [`KubeCache::ingresses`].
#[derive(Debug, Default)]
pub struct KubeCache {
    pub(crate) ingresses: Store<Ingress>,
    pub(crate) services: Store<Service>,
    pub(crate) endpoint_slices: Store<EndpointSlice>,
    /// Slice names by the Service they belong to (label `kubernetes.io/service-name`).
    slices_by_service: BTreeMap<ObjectKey, BTreeSet<String>>,
    pub(crate) secrets: Store<Secret>,
    pub(crate) config_maps: Store<k8s_openapi::api::core::v1::ConfigMap>,
}

/// The Service an EndpointSlice belongs to (label `kubernetes.io/service-name`), if labelled.
pub fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectKey> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        service.clone(),
    ))
}

impl KubeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A KIngress of our class by key.
    pub fn ingress(&self, key: &IngressKey) -> Option<&Arc<Ingress>> {
        self.ingresses.get(key)
    }

    /// Every KIngress of our class, ordered by namespace and name.
    pub fn ingresses(&self) -> impl Iterator<Item = &Arc<Ingress>> {
        self.ingresses.iter().map(|(_, ingress)| ingress)
    }

    /// How many KIngresses, Services, EndpointSlices and Secrets are cached (for `/status`).
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        [
            ("ingresses", self.ingresses.len()),
            ("services", self.services.len()),
            ("endpointslices", self.endpoint_slices.len()),
            ("secrets", self.secrets.len()),
            ("configmaps", self.config_maps.len()),
        ]
    }

    /// Keeps the slice index in step with an EndpointSlice change; returns the Services whose
    /// endpoints changed (one, or two when a slice moved between Services).
    pub(crate) fn index_slice_change(&mut self, change: &Change<EndpointSlice>) -> Vec<ObjectKey> {
        let (old, new) = match change {
            Change::Applied { old, new } => (old.as_deref(), Some(&**new)),
            Change::Deleted(old) => (Some(&**old), None),
        };
        let mut services = Vec::new();
        if let Some(old) = old
            && let Some(service) = service_of_slice(old)
        {
            let name = old.metadata.name.clone().unwrap_or_default();
            if let Some(names) = self.slices_by_service.get_mut(&service) {
                names.remove(&name);
                if names.is_empty() {
                    self.slices_by_service.remove(&service);
                }
            }
            services.push(service);
        }
        if let Some(new) = new
            && let Some(service) = service_of_slice(new)
        {
            let name = new.metadata.name.clone().unwrap_or_default();
            self.slices_by_service
                .entry(service.clone())
                .or_default()
                .insert(name);
            if !services.contains(&service) {
                services.push(service);
            }
        }
        services
    }
}

impl Lookup for KubeCache {
    fn service(&self, namespace: &str, name: &str) -> Option<std::borrow::Cow<'_, Service>> {
        self.services
            .get(&ObjectKey::new(namespace, name))
            .map(|s| std::borrow::Cow::Borrowed(&**s))
    }

    fn endpoint_slices(
        &self,
        namespace: &str,
        service: &str,
    ) -> Vec<std::borrow::Cow<'_, EndpointSlice>> {
        let Some(names) = self
            .slices_by_service
            .get(&ObjectKey::new(namespace, service))
        else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| {
                self.endpoint_slices
                    .get(&ObjectKey::new(namespace, name.as_str()))
            })
            .map(|s| std::borrow::Cow::Borrowed(&**s))
            .collect()
    }

    /// Always `None`: the Kubernetes source does not watch `Endpoints`. The control plane
    /// mirrors every Endpoints object into EndpointSlices (which win anyway), and the
    /// Endpoints API is deprecated since Kubernetes 1.33.
    fn endpoints(&self, _namespace: &str, _service: &str) -> Option<&Endpoints> {
        None
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets
            .get(&ObjectKey::new(namespace, name))
            .map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, rv: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"metadata":
                {"namespace": ns, "name": name, "resourceVersion": rv}}))
            .expect("service"),
        )
    }

    fn slice(ns: &str, name: &str, svc: &str, rv: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({"addressType": "IPv4", "endpoints": [],
                "metadata": {"namespace": ns, "name": name, "resourceVersion": rv,
                    "labels": {SERVICE_NAME_LABEL: svc}}}))
            .expect("slice"),
        )
    }

    fn names<T: Resource>(changes: &[Change<T>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Applied { old: None, new } => format!("+{}", key_of(new.meta())),
                Change::Applied { new, .. } => format!("~{}", key_of(new.meta())),
                Change::Deleted(old) => format!("-{}", key_of(old.meta())),
            })
            .collect()
    }

    #[test]
    fn upsert_skips_same_resource_version() {
        let mut store = Store::default();
        assert!(store.upsert(service("a", "s", "1")).is_some());
        assert!(store.upsert(service("a", "s", "1")).is_none());
        assert!(matches!(
            store.upsert(service("a", "s", "2")),
            Some(Change::Applied { old: Some(_), .. })
        ));
        assert!(store.remove(&ObjectKey::new("a", "s")).is_some());
        assert!(store.remove(&ObjectKey::new("a", "s")).is_none());
    }

    #[test]
    fn relist_reports_created_changed_and_vanished() {
        let mut store = Store::default();
        store.upsert(service("a", "kept", "1"));
        store.upsert(service("a", "changed", "1"));
        store.upsert(service("a", "gone", "1"));
        store.begin_relist(0, None);
        assert!(store.relist_add(0, service("a", "kept", "1")).is_none());
        store.relist_add(0, service("a", "changed", "2"));
        store.relist_add(0, service("b", "new", "1"));
        let changes = store.end_relist(0);
        assert_eq!(names(&changes), ["-a/gone", "~a/changed", "+b/new"]);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn namespaced_relist_replaces_only_its_namespace() {
        let mut store = Store::default();
        store.upsert(service("a", "x", "1"));
        store.upsert(service("b", "y", "1"));
        store.begin_relist(7, Some("a".into()));
        let changes = store.end_relist(7);
        assert_eq!(names(&changes), ["-a/x"]);
        assert!(store.get(&ObjectKey::new("b", "y")).is_some());
    }

    #[test]
    fn relist_keep_carries_the_last_good_version() {
        let mut store = Store::default();
        store.upsert(service("a", "x", "1"));
        store.begin_relist(0, None);
        store.relist_keep(0, &ObjectKey::new("a", "x"));
        assert!(store.end_relist(0).is_empty());
        assert!(store.get(&ObjectKey::new("a", "x")).is_some());
    }

    #[test]
    fn slices_are_found_by_service_and_follow_relabels() {
        let mut cache = KubeCache::new();
        for s in [
            slice("ns", "web-1", "web", "1"),
            slice("ns", "web-2", "web", "1"),
        ] {
            let change = cache.endpoint_slices.upsert(s).expect("new");
            assert_eq!(
                cache.index_slice_change(&change),
                [ObjectKey::new("ns", "web")]
            );
        }
        let found: Vec<_> = cache
            .endpoint_slices("ns", "web")
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(found, ["web-1", "web-2"]);
        assert!(cache.endpoint_slices("other", "web").is_empty());

        let moved = cache
            .endpoint_slices
            .upsert(slice("ns", "web-2", "api", "2"))
            .expect("changed");
        assert_eq!(
            cache.index_slice_change(&moved),
            [ObjectKey::new("ns", "web"), ObjectKey::new("ns", "api")]
        );
        assert_eq!(cache.endpoint_slices("ns", "web").len(), 1);
        assert_eq!(cache.endpoint_slices("ns", "api").len(), 1);

        let gone = cache
            .endpoint_slices
            .remove(&ObjectKey::new("ns", "web-1"))
            .expect("removed");
        assert_eq!(
            cache.index_slice_change(&gone),
            [ObjectKey::new("ns", "web")]
        );
        assert!(cache.endpoint_slices("ns", "web").is_empty());
    }

    #[test]
    fn lookup_reads_services_and_secrets() {
        let mut cache = KubeCache::new();
        cache.services.upsert(service("ns", "web", "1"));
        assert!(cache.service("ns", "web").is_some());
        assert!(cache.service("ns", "nope").is_none());
        assert!(cache.secret("ns", "web").is_none());
        assert!(cache.endpoints("ns", "web").is_none());
        assert_eq!(cache.counts()[1], ("services", 1));
    }
}
