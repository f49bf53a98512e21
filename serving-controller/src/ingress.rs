//! The Knative Ingress (KIngress), `networking.internal.knative.dev/v1alpha1` `Ingress`, as
//! knative/networking defines it (`pkg/apis/networking/v1alpha1/ingress_types.go`).
//!
//! Field order, names and `omitempty` behaviour follow the Go struct tags exactly: the
//! serialized spec is what [`crate::hash::probe_hash`] hashes, so it must be byte-for-byte what
//! Go's `encoding/json` produces.
//!
//! Unknown fields are ignored, as Go's decoder (and so net-kourier) ignores them: KIngresses are
//! written by a controller, not users, and a newer Knative may add fields — its KIngress is
//! served, not rejected whole. (They are not part of the probe hash either: Go's hash of the
//! spec only sees the fields it knows.)

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod validation;

pub use validation::{FieldError, describe, validate};

/// `apiVersion` of a KIngress.
pub const API_VERSION: &str = "networking.internal.knative.dev/v1alpha1";
/// `kind` of a KIngress.
pub const KIND: &str = "Ingress";
/// The annotation naming the ingress class that owns a KIngress.
pub const INGRESS_CLASS_ANNOTATION: &str = "networking.knative.dev/ingress.class";
/// Sluice's ingress class (the value `config-network`'s `ingress-class` is set to).
pub const SLUICE_INGRESS_CLASS: &str = "sluice.ingress.networking.knative.dev";

/// Condition type: the KIngress is ready (both of the below).
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the network programming for the KIngress is done.
pub const CONDITION_NETWORK_CONFIGURED: &str = "NetworkConfigured";
/// Condition type: the load balancer (every gateway) serves the KIngress.
pub const CONDITION_LOAD_BALANCER_READY: &str = "LoadBalancerReady";

/// A KIngress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// `networking.internal.knative.dev/v1alpha1`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// `Ingress`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The desired state.
    #[serde(default)]
    pub spec: IngressSpec,
    /// The observed state (written by the controller).
    #[serde(default, skip_serializing_if = "IngressStatus::is_empty")]
    pub status: IngressStatus,
}

fn default_api_version() -> String {
    API_VERSION.to_string()
}

fn default_kind() -> String {
    KIND.to_string()
}

impl Default for Ingress {
    fn default() -> Self {
        Self {
            api_version: default_api_version(),
            kind: default_kind(),
            metadata: ObjectMeta::default(),
            spec: IngressSpec::default(),
            status: IngressStatus::default(),
        }
    }
}

/// The namespace and name of a KIngress: how it is referred to in names and messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IngressKey {
    /// Namespace (empty if unset).
    pub namespace: String,
    /// Name (empty if unset).
    pub name: String,
}

impl IngressKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for IngressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Ingress {
    /// The Services its splits name (under Knative, the Revisions it sends traffic to).
    pub fn split_services(&self) -> std::collections::BTreeSet<String> {
        self.spec
            .rules
            .iter()
            .flat_map(|r| r.http.iter().flat_map(|h| &h.paths))
            .flat_map(|p| &p.splits)
            .map(|s| s.service_name.clone())
            .collect()
    }

    /// Namespace and name.
    pub fn key(&self) -> IngressKey {
        IngressKey::new(
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// The ingress class annotation, if any.
    pub fn class(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(INGRESS_CLASS_ANNOTATION)
            .map(String::as_str)
    }

    /// Applies Knative's defaulting (`ingress_defaults.go`), as the webhook does on admission:
    /// a rule without visibility becomes `ExternalIP`; a path with a single split without a
    /// percent sends it 100%.
    pub fn set_defaults(&mut self) {
        for rule in &mut self.spec.rules {
            if rule.visibility.is_none() {
                rule.visibility = Some(Visibility::ExternalIP);
            }
            if let Some(http) = &mut rule.http {
                for path in &mut http.paths {
                    if let [only] = path.splits.as_mut_slice()
                        && only.percent == 0
                    {
                        only.percent = 100;
                    }
                }
            }
        }
    }

    /// Releases the spare capacity of its lists (deserialising grows them by doubling: a
    /// one-rule, two-split KIngress held four of each). Meant for KIngresses kept for long —
    /// a gateway holds every one of its class.
    pub fn shrink_to_fit(&mut self) {
        let spec = &mut self.spec;
        spec.tls.shrink_to_fit();
        for t in &mut spec.tls {
            t.hosts.shrink_to_fit();
        }
        spec.rules.shrink_to_fit();
        for rule in &mut spec.rules {
            rule.hosts.shrink_to_fit();
            if let Some(http) = &mut rule.http {
                http.paths.shrink_to_fit();
                for path in &mut http.paths {
                    path.splits.shrink_to_fit();
                }
            }
        }
        self.status.conditions.shrink_to_fit();
    }
}

/// Whether a KIngress belongs to Sluice (its class annotation names Sluice's class). Objects of
/// any other class, or none, are never translated nor status-patched.
pub fn is_ours(ingress: &Ingress) -> bool {
    ingress.class() == Some(SLUICE_INGRESS_CLASS)
}

/// `spec`: what the user wants.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// TLS termination: SNI hosts and the Secret holding their certificate.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls: Vec<IngressTls>,
    /// Host rules.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rules: Vec<IngressRule>,
    /// Whether plain HTTP is served or redirected to HTTPS (unset = `Enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_option: Option<HttpOption>,
}

/// `spec.httpOption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpOption {
    /// Plain HTTP is served.
    Enabled,
    /// Plain HTTP on the external listener is answered with a 301 to `https`.
    Redirected,
}

/// `spec.rules[].visibility` and `spec.tls[].visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Visibility {
    /// Served on the external and the internal gateway (the default).
    ExternalIP,
    /// Served on the internal gateway only.
    ClusterLocal,
}

/// `spec.tls[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// SNI names this certificate serves.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// Name of the Secret with `tls.crt` and `tls.key`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    /// Namespace of that Secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_namespace: String,
    /// Which gateway terminates it (unset = `ExternalIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
}

impl IngressTls {
    /// The effective visibility (`ExternalIP` when unset).
    pub fn visibility(&self) -> Visibility {
        self.visibility.unwrap_or(Visibility::ExternalIP)
    }
}

/// `spec.rules[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Exact host names (`Host` / `:authority`, any port). None: the rule catches every host
    /// no other rule serves ([`CATCH_ALL_HOST`]), as in Kourier.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<String>,
    /// Which gateways serve the rule (unset = `ExternalIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// The paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

/// The host a rule without hosts serves: every host no other rule serves (Kourier's `*`).
pub const CATCH_ALL_HOST: &str = "*";

/// The host readiness probes a catch-all rule with: under `.invalid` (RFC 2606), so no
/// KIngress can serve it and the request falls to the catch-all.
pub const CATCH_ALL_PROBE_HOST: &str = "catch-all.sluice.invalid";

impl IngressRule {
    /// The hosts the rule serves: its own, or [`CATCH_ALL_HOST`] when it lists none.
    pub fn served_hosts(&self) -> Vec<&str> {
        if self.hosts.is_empty() {
            vec![CATCH_ALL_HOST]
        } else {
            self.hosts.iter().map(String::as_str).collect()
        }
    }

    /// Whether the rule lists no host (and so catches every host no other rule serves).
    pub fn is_catch_all(&self) -> bool {
        self.hosts.is_empty()
    }
}

impl IngressRule {
    /// The effective visibility (`ExternalIP` when unset).
    pub fn visibility(&self) -> Visibility {
        self.visibility.unwrap_or(Visibility::ExternalIP)
    }
}

/// `spec.rules[].http`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressRuleValue {
    /// The paths (not `omitempty` in Go: an absent list is `null`).
    #[serde(
        default,
        deserialize_with = "nullable",
        serialize_with = "null_if_empty"
    )]
    pub paths: Vec<HttpIngressPath>,
}

/// `spec.rules[].http.paths[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressPath {
    /// A literal path prefix (empty = `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Replaces the `Host` sent upstream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rewrite_host: String,
    /// Exact header matches, all of which must hold.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, HeaderMatch>,
    /// The weighted backends (not `omitempty` in Go).
    #[serde(
        default,
        deserialize_with = "nullable",
        serialize_with = "null_if_empty"
    )]
    pub splits: Vec<IngressBackendSplit>,
    /// Headers set on every request of this path.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub append_headers: BTreeMap<String, String>,
}

impl HttpIngressPath {
    /// The prefix to match (`/` when empty).
    pub fn prefix(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

/// `spec.rules[].http.paths[].headers[name]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The exact value.
    #[serde(default)]
    pub exact: String,
}

/// `spec.rules[].http.paths[].splits[]` (Go inlines `IngressBackend` first).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressBackendSplit {
    /// Namespace of the Kubernetes Service.
    #[serde(default)]
    pub service_namespace: String,
    /// Name of the Kubernetes Service.
    #[serde(default)]
    pub service_name: String,
    /// The Service port, by number or name.
    #[serde(default)]
    pub service_port: IntOrString,
    /// Share of the traffic, 0–100.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub percent: i64,
    /// Headers set on requests sent to this split.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub append_headers: BTreeMap<String, String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `status`: written by the controller.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressStatus {
    /// The generation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (`Ready`, `NetworkConfigured`, `LoadBalancerReady`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<Condition>,
    /// Free-form status annotations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The external gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_load_balancer: Option<LoadBalancerStatus>,
    /// The internal gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_load_balancer: Option<LoadBalancerStatus>,
}

impl IngressStatus {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A Knative condition (`knative.dev/pkg/apis.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `NetworkConfigured`, `LoadBalancerReady`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// `Error` (empty), `Warning` or `Info`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity: String,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// CamelCase reason, e.g. `DomainConflict`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `status.publicLoadBalancer` / `status.privateLoadBalancer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    /// The gateway's entry points.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ingress: Vec<LoadBalancerIngressStatus>,
}

/// One entry point of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngressStatus {
    /// An IP address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// A DNS name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// The cluster-local DNS name of the gateway's Service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain_internal: String,
    /// Reachable only through a mesh.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_only: bool,
}

/// Accepts `null` for a defaulted field, as Go does for slices and maps.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go marshals a nil slice without `omitempty` as `null`. A list absent from the input decodes
/// as nil in Go, so empty serializes as `null` (an explicit `[]` is indistinguishable here; it
/// only occurs in objects validation rejects anyway).
fn null_if_empty<S, T>(v: &[T], s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

#[cfg(test)]
mod tests;
