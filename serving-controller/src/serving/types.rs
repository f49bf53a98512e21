//! The `serving.knative.dev/v1` objects: Service, Configuration, Revision, Route
//! (knative/serving `pkg/apis/serving/v1/*_types.go`).
//!
//! Decoding follows Knative's webhook, which decodes with `DisallowUnknownFields`: an unknown
//! field at the top level or anywhere under `spec` is rejected with serde's message naming it.
//! `status` is written by controllers and decoded leniently. Optional Go pointers are `Option`,
//! `omitempty` slices and maps are skipped when empty.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::pod::RevisionSpec;
use crate::ingress::Condition;

/// `apiVersion` of every object here.
pub const API_VERSION: &str = "serving.knative.dev/v1";

macro_rules! object {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// `serving.knative.dev/v1`.
            #[serde(default = "api_version")]
            pub api_version: String,
            #[doc = concat!("`", $kind, "` (empty when decoded without one).")]
            #[serde(default)]
            pub kind: String,
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The desired state.
            #[serde(default)]
            pub spec: $spec,
            /// The observed state (written by the controller).
            #[serde(default, skip_serializing_if = "is_default")]
            pub status: $status,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    api_version: api_version(),
                    kind: $kind.to_string(),
                    metadata: ObjectMeta::default(),
                    spec: Default::default(),
                    status: Default::default(),
                }
            }
        }

        impl $name {
            /// `kind` of this object type.
            pub const KIND: &'static str = $kind;

            /// Namespace (empty if unset).
            pub fn namespace(&self) -> &str {
                self.metadata.namespace.as_deref().unwrap_or_default()
            }

            /// Name (empty if unset).
            pub fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or_default()
            }

            /// Namespace and name.
            pub fn key(&self) -> Key {
                Key::new(self.namespace(), self.name())
            }
        }
    };
}

fn api_version() -> String {
    API_VERSION.to_string()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    v == &T::default()
}

object!(
    /// A Knative Service: a Configuration and a Route under one name.
    Service, "Service", ServiceSpec, ServiceStatus
);
object!(
    /// A Configuration: the template stamping out Revisions.
    Configuration, "Configuration", ConfigurationSpec, ConfigurationStatus
);
object!(
    /// A Revision: an immutable snapshot of a Configuration's template.
    Revision, "Revision", RevisionSpec, RevisionStatus
);
object!(
    /// A Route: traffic split over Revisions, exposed on host names.
    Route, "Route", RouteSpec, RouteStatus
);

/// The namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Key {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `Service.spec`: Go inlines `ConfigurationSpec` and `RouteSpec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The template Revisions are created from.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
    /// The traffic split (defaulted to 100% to the latest ready Revision).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `Configuration.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigurationSpec {
    /// The template Revisions are created from.
    #[serde(default)]
    pub template: RevisionTemplateSpec,
}

/// `Route.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// The traffic split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `spec.template`: what a Revision is created from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionTemplateSpec {
    /// `name` (the Revision's own name, optional), `labels` and `annotations`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub metadata: ObjectMeta,
    /// The Revision spec.
    #[serde(default)]
    pub spec: RevisionSpec,
}

/// One entry of `traffic` (spec or status).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    /// Exposes this target on its own host (`{tag}-{route}.{ns}.{domain}`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// A fixed Revision.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision_name: String,
    /// A Configuration whose latest ready Revision gets the traffic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub configuration_name: String,
    /// Whether the target floats to the latest ready Revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    /// Share of the traffic (0–100; unset = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// The tag's URL (status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// duck `Addressable`: where the object is reachable inside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addressable {
    /// The URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `Route.status` (duck `Status` + `RouteStatusFields`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `AllTrafficAssigned`, `IngressReady`, `CertificateProvisioned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The main URL (`http://{name}.{ns}.{domain}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The cluster-local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// The resolved traffic: every entry names a Revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `Configuration.status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The newest Revision that became ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_ready_revision_name: String,
    /// The newest Revision created from the template.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_created_revision_name: String,
}

/// `Service.status`: its own conditions plus its Configuration's and Route's fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ConfigurationsReady`, `RoutesReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// From the Configuration.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_ready_revision_name: String,
    /// From the Configuration.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_created_revision_name: String,
    /// From the Route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// From the Route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// From the Route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `Revision.status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (from the runtime's readiness report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Kubernetes Service fronting the Revision (its own name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Accessors shared by objects with Knative conditions.
pub trait HasConditions {
    /// The conditions.
    fn conditions(&self) -> &[Condition];

    /// The condition of a type, if set.
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }

    /// `True`, `False` or `Unknown` (unset = `Unknown`) of a condition.
    fn condition_status(&self, type_: &str) -> &str {
        self.condition(type_)
            .map_or("Unknown", |c| c.status.as_str())
    }
}

macro_rules! has_conditions {
    ($($t:ty),*) => {$(
        impl HasConditions for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
        }
    )*};
}

has_conditions!(
    RouteStatus,
    ConfigurationStatus,
    ServiceStatus,
    RevisionStatus
);
