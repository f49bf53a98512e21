//! The public side of Knative's serverless-service design, kept by `sluice autoscaler --kube`:
//! each Revision's public Service (what KIngress splits name) has no selector, and its
//! EndpointSlice `{revision}-sluice` is written here —
//!
//! - **serve mode**: the ready pods of the Revision's private Service (`{revision}-private`,
//!   whose slices Kubernetes keeps), on their port;
//! - **proxy mode**: the ready pods of the activator Service (`--activator-service`, by
//!   default `knative-serving/sluice-activator`), on theirs — while the Revision is at zero or
//!   short of burst capacity (the KPA's decision), and only when an activator pod is ready.
//!
//! A Revision with a `containerConcurrency` is always in proxy mode (while an activator is
//! ready): only the activators hold requests to a pod's capacity — Envoy's per-host limits
//! cannot add up across gateway replicas. Its slice then names
//! `min(activators, max(1, pods × containerConcurrency))` of them, picked by rendezvous
//! hashing of the Revision (stable while the activators stay), so each of them has at least
//! one request's share of a pod ([`sluice_activator::share`]); other Revisions get every
//! activator. The slice's [`MODE_LABEL`] says which mode it is in.
//!
//! The gateway only follows EndpointSlices, so it needs no special case. The port keeps the
//! public Service's port name (`http`, or `http2` for h2c), so the gateway matches it. A slice
//! is written only when it differs from the one written last (server-side apply).

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sluice_serving::kube::runtime::{REVISION_LABEL, private_service_name};
use sluice_serving::lookup::SERVICE_NAME_LABEL;
use sluice_serving::serving::Key;
use sluice_serving::serving::names::child_name;

/// Label naming who manages an EndpointSlice (Kubernetes').
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of it.
pub const MANAGED_BY: &str = "sluice-autoscaler.knative.dev";

/// The public slice's mode label (the activators read the proxy-mode slices to know which of
/// them are in a Revision's path; the gateway leaves the idle timeout to them meanwhile).
pub use sluice_serving::lookup::{MODE_LABEL, MODE_PROXY, MODE_SERVE};

/// Where a Revision's public Service sends its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// To its ready pods.
    Serve,
    /// To the activator.
    Proxy,
}

/// The ready addresses and port of one Service's slices.
#[derive(Debug, Clone, Default, PartialEq)]
struct Backends {
    port: Option<EndpointPort>,
    address_type: String,
    ready: Vec<String>,
}

/// The EndpointSlices the autoscaler reads (private Services' and the activator's) and what it
/// wrote.
#[derive(Debug)]
pub struct Endpoints {
    activator: Key,
    /// Slices by whose pods they hold (`Some(revision)`: its private Service's; `None`: the
    /// activator's), so a tick looks at each Revision's own slices only.
    by_owner: BTreeMap<Option<Key>, BTreeMap<Key, Backends>>,
    /// Each slice's owner.
    owner_of: BTreeMap<Key, Option<Key>>,
    written: BTreeMap<Key, (Mode, EndpointSlice)>,
}

fn ready_addresses(slice: &EndpointSlice) -> Vec<String> {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

impl Endpoints {
    /// Reading the activator's pods from the slices of Service `activator` (namespace/name).
    pub fn new(activator: Key) -> Self {
        Self {
            activator,
            by_owner: BTreeMap::new(),
            owner_of: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    /// A slice was listed, created or changed; `true` when it is one of ours to read.
    pub fn observe(&mut self, slice: &EndpointSlice) -> bool {
        let meta = &slice.metadata;
        let key = Key::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let labels = meta.labels.clone().unwrap_or_default();
        let service = labels.get(SERVICE_NAME_LABEL).cloned().unwrap_or_default();
        let owner = match labels.get(REVISION_LABEL) {
            Some(r) if service == private_service_name(r) => Some(Key::new(&key.namespace, r)),
            _ if key.namespace == self.activator.namespace && service == self.activator.name => {
                None
            }
            _ => return false,
        };
        let backends = Backends {
            port: slice.ports.iter().flatten().next().cloned(),
            address_type: slice.address_type.clone(),
            ready: ready_addresses(slice),
        };
        if self.owner_of.get(&key).is_some_and(|o| *o != owner) {
            self.gone(&key.namespace, &key.name);
        }
        self.owner_of.insert(key.clone(), owner.clone());
        self.by_owner
            .entry(owner)
            .or_default()
            .insert(key, backends);
        true
    }

    /// A slice was deleted.
    pub fn gone(&mut self, namespace: &str, name: &str) {
        let key = Key::new(namespace, name);
        let Some(owner) = self.owner_of.remove(&key) else {
            return;
        };
        if let Some(slices) = self.by_owner.get_mut(&owner) {
            slices.remove(&key);
            if slices.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// Forgets a deleted Revision's written slice (it went with its Revision).
    pub fn revision_gone(&mut self, revision: &Key) {
        self.written.remove(revision);
    }

    fn backends(&self, owner: Option<&Key>) -> Backends {
        let mut out = Backends::default();
        let slices = self.by_owner.get(&owner.cloned());
        for b in slices.into_iter().flat_map(BTreeMap::values) {
            if out.port.is_none() {
                out.port.clone_from(&b.port);
                out.address_type.clone_from(&b.address_type);
            }
            out.ready.extend(b.ready.iter().cloned());
        }
        out.ready.sort();
        out.ready.dedup();
        out
    }

    /// Whether an activator pod is ready (proxy mode and scale to zero need one).
    pub fn activator_ready(&self) -> bool {
        !self.backends(None).ready.is_empty()
    }

    /// The mode last written for a Revision.
    pub fn mode(&self, revision: &Key) -> Option<Mode> {
        self.written.get(revision).map(|(m, _)| *m)
    }

    /// Forgets every slice written: another replica may have written since (this one lost
    /// the Lease and took it back), so the next tick writes each again.
    pub fn forget_written(&mut self) {
        self.written.clear();
    }

    /// Records a slice written.
    pub fn written(&mut self, revision: Key, mode: Mode, slice: EndpointSlice) {
        self.written.insert(revision, (mode, slice));
    }

    /// Revisions whose private Service has slices.
    pub fn revisions(&self) -> Vec<Key> {
        self.by_owner.keys().flatten().cloned().collect()
    }

    /// The public slice a Revision should have (`owner`: the Revision's UID), and the mode it
    /// is in; `None` when it is already written, or the private Service's port is not known yet.
    ///
    /// `container_concurrency` > 0 keeps the Revision behind the activators (see the module
    /// docs).
    pub fn due(
        &self,
        revision: &Key,
        owner: Option<&str>,
        in_path: bool,
        container_concurrency: u32,
    ) -> Option<(Mode, EndpointSlice)> {
        let own = self.backends(Some(revision));
        let port = own.port.clone()?;
        let mut activator = self.backends(None);
        let in_path = in_path || container_concurrency > 0;
        let (mode, backends) = if in_path && !activator.ready.is_empty() {
            if container_concurrency > 0 {
                let pods = u64::try_from(own.ready.len()).unwrap_or(u64::MAX);
                let room = pods.saturating_mul(u64::from(container_concurrency)).max(1);
                let k = usize::try_from(room).unwrap_or(usize::MAX);
                activator.ready = pick(revision, activator.ready, k);
            }
            (Mode::Proxy, activator)
        } else {
            (Mode::Serve, own)
        };
        let port = EndpointPort {
            port: backends.port.as_ref().and_then(|p| p.port).or(port.port),
            ..port
        };
        let slice = public_slice(revision, owner, mode, &backends, port);
        match self.written.get(revision) {
            Some((m, s)) if *m == mode && *s == slice => None,
            _ => Some((mode, slice)),
        }
    }
}

/// The `k` of `addresses` a Revision's traffic goes to, by rendezvous hashing: each address
/// scored by a hash of (Revision, address), the highest `k` kept (sorted by address). Adding
/// or removing one address moves only the Revisions it wins or held.
fn pick(revision: &Key, mut addresses: Vec<String>, k: usize) -> Vec<String> {
    if addresses.len() <= k {
        return addresses;
    }
    let score = |a: &str| {
        // FNV-1a: stable across processes and releases, so a new leader picks the same.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in revision
            .namespace
            .bytes()
            .chain([b'/'])
            .chain(revision.name.bytes())
            .chain([b'/'])
            .chain(a.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    addresses.sort_by_cached_key(|a| std::cmp::Reverse(score(a)));
    addresses.truncate(k);
    addresses.sort();
    addresses
}

/// The name of a Revision's public slice: `{revision}-sluice`.
pub fn public_slice_name(revision: &str) -> String {
    child_name(revision, "-sluice")
}

fn public_slice(
    revision: &Key,
    owner: Option<&str>,
    mode: Mode,
    backends: &Backends,
    port: EndpointPort,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(public_slice_name(&revision.name)),
            namespace: Some(revision.namespace.clone()),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), revision.name.clone()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (REVISION_LABEL.to_string(), revision.name.clone()),
                (
                    MODE_LABEL.to_string(),
                    match mode {
                        Mode::Serve => MODE_SERVE,
                        Mode::Proxy => MODE_PROXY,
                    }
                    .to_string(),
                ),
            ])),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    api_version: "serving.knative.dev/v1".into(),
                    kind: "Revision".into(),
                    name: revision.name.clone(),
                    uid: uid.to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        address_type: if backends.address_type.is_empty() {
            "IPv4".into()
        } else {
            backends.address_type.clone()
        },
        endpoints: Some(
            backends
                .ready
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(vec![port]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(
        name: &str,
        service: &str,
        revision: Option<&str>,
        port: i32,
        ready: &[&str],
    ) -> EndpointSlice {
        let mut labels = json!({"kubernetes.io/service-name": service});
        if let Some(r) = revision {
            labels["serving.knative.dev/revision"] = json!(r);
        }
        let ns = if revision.is_some() {
            "default"
        } else {
            "knative-serving"
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": ready.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
                .chain([json!({"addresses": ["10.9.9.9"], "conditions": {"ready": false}})])
                .collect::<Vec<_>>()
        }))
        .expect("a slice")
    }

    fn hello() -> Key {
        Key::new("default", "hello-00001")
    }

    #[test]
    fn serve_mode_mirrors_the_ready_pods_and_proxy_mode_the_activator() {
        let mut e = Endpoints::new(Key::new("knative-serving", "sluice-activator"));
        assert!(e.observe(&slice(
            "p1",
            "hello-00001-private",
            Some("hello-00001"),
            8080,
            &["10.0.0.7"]
        )));
        assert!(e.observe(&slice("a1", "sluice-activator", None, 8012, &["10.1.0.2"])));
        // The public slice itself is not read back.
        assert!(!e.observe(&slice(
            "hello-00001-sluice",
            "hello-00001",
            Some("hello-00001"),
            8080,
            &[]
        )));
        assert_eq!(e.revisions(), [hello()]);

        let (mode, s) = e.due(&hello(), Some("uid"), false, 0).expect("due");
        assert_eq!(mode, Mode::Serve);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["metadata"]["name"], "hello-00001-sluice");
        assert_eq!(
            json["metadata"]["labels"]["kubernetes.io/service-name"],
            "hello-00001"
        );
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid");
        assert_eq!(
            json["endpoints"],
            json!([{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}])
        );
        assert_eq!(
            json["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        e.written(hello(), mode, s);
        assert!(
            e.due(&hello(), Some("uid"), false, 0).is_none(),
            "written already"
        );

        let (mode, s) = e.due(&hello(), Some("uid"), true, 0).expect("due");
        assert_eq!(mode, Mode::Proxy);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["endpoints"][0]["addresses"], json!(["10.1.0.2"]));
        assert_eq!(
            json["ports"][0],
            json!({"name": "http", "port": 8012, "protocol": "TCP"}),
            "the Service's port name, the activator's port"
        );
    }

    #[test]
    fn without_a_ready_activator_the_revision_stays_served() {
        let mut e = Endpoints::new(Key::new("knative-serving", "sluice-activator"));
        e.observe(&slice(
            "p1",
            "hello-00001-private",
            Some("hello-00001"),
            8080,
            &[],
        ));
        assert!(!e.activator_ready());
        let (mode, s) = e.due(&hello(), None, true, 0).expect("due");
        assert_eq!(mode, Mode::Serve);
        assert!(s.endpoints.unwrap_or_default().is_empty());
    }

    #[test]
    fn a_container_concurrency_keeps_the_revision_behind_enough_activators() {
        let mut e = Endpoints::new(Key::new("knative-serving", "sluice-activator"));
        let activators = ["10.1.0.1", "10.1.0.2", "10.1.0.3"];
        e.observe(&slice("a1", "sluice-activator", None, 8012, &activators));
        let pods = |e: &mut Endpoints, ready: &[&str]| {
            e.observe(&slice(
                "p1",
                "hello-00001-private",
                Some("hello-00001"),
                8080,
                ready,
            ));
        };
        let named = |s: &EndpointSlice| -> Vec<String> {
            s.endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect()
        };
        // At zero and with one pod of cc 1: one activator holds every request (a second one
        // would have no share of the pod).
        pods(&mut e, &[]);
        let (mode, at_zero) = e.due(&hello(), None, false, 1).expect("due");
        assert_eq!(mode, Mode::Proxy, "cc > 0: the activator stays in the path");
        assert_eq!(
            at_zero.metadata.labels.as_ref().unwrap()[MODE_LABEL],
            MODE_PROXY
        );
        assert_eq!(named(&at_zero).len(), 1);
        pods(&mut e, &["10.0.0.7"]);
        let (_, one) = e.due(&hello(), None, false, 1).expect("due");
        assert_eq!(named(&one), named(&at_zero), "the same one: stable picks");
        // Two pods of cc 1: two activators, the first one among them.
        pods(&mut e, &["10.0.0.7", "10.0.0.8"]);
        let (_, two) = e.due(&hello(), None, false, 1).expect("due");
        assert_eq!(named(&two).len(), 2);
        assert!(named(&two).contains(&named(&one)[0]));
        // Room for every activator: all three.
        let (_, all) = e.due(&hello(), None, false, 2).expect("due");
        assert_eq!(named(&all), activators);
        // Another Revision may be given another activator (picks spread Revisions).
        let firsts: std::collections::BTreeSet<Vec<String>> = (0..20)
            .map(|i| pick(&Key::new("default", format!("r{i}")), named(&all), 1))
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
        // cc 0 in serve mode: the pods, labelled so.
        let (mode, served) = e.due(&hello(), None, false, 0).expect("due");
        assert_eq!(mode, Mode::Serve);
        assert_eq!(
            served.metadata.labels.as_ref().unwrap()[MODE_LABEL],
            MODE_SERVE
        );
    }
}
