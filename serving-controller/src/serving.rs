//! Knative Serving's API (`serving.knative.dev/v1`) and its reconcilers, as pure functions.
//!
//! The pipeline one pass of a controller runs (the caller does the I/O and persists
//! [`ServingState`]):
//!
//! 1. Admission, as Knative's webhook: [`admit_service`], [`admit_configuration`],
//!    [`admit_route`] default then validate, returning Knative's [`FieldError`]s.
//! 2. Service → Configuration + Route: [`make_configuration`], [`make_route`].
//! 3. Configuration → Revisions: [`reconcile_configuration`] creates a Revision when the
//!    template changed, recorded in the [`ServingState`], with readiness from the runtime's
//!    [`ReadinessReport`].
//! 4. Route → KIngress: [`reconcile_route`] resolves traffic against a [`Catalog`] of
//!    reconciled Configurations and Revisions and produces the KIngress
//!    ([`crate::ingress::Ingress`], class `sluice.ingress.networking.knative.dev`) plus the
//!    revision timeouts the gateway's [`crate::Lookup::upstream_timeout`] needs.
//! 5. Statuses: [`service_status`] from the Configuration's and Route's.
//!
//! Knative's ConfigMaps (`config-domain`, `config-network`, `config-features`,
//! `config-defaults`) are read into a [`ServingConfig`].
//!
//! [`FieldError`]: crate::ingress::FieldError

pub mod catalog;
pub mod conditions;
pub mod config;
pub mod configuration;
pub mod defaults;
pub mod domains;
pub mod gc;
pub mod kingress;
pub mod names;
pub mod pod;
pub mod route;
pub mod service;
pub mod state;
pub mod traffic;
pub mod types;
pub mod validation;

pub use catalog::{Catalog, ServingObjects};
pub use config::{ConfigError, DomainConfig, ServingConfig};
pub use configuration::{
    ConfigurationError, ConfigurationOutcome, Readiness, ReadinessReport, reconcile_configuration,
    template_hash,
};
pub use kingress::{TargetHosts, make_ingress, revision_timeouts, target_hosts};
pub use pod::{Container, RevisionSpec};
pub use route::{RouteError, RouteOutcome, reconcile_route, rejected_status};
pub use service::{make_configuration, make_route, service_status};
pub use state::ServingState;
pub use traffic::{TargetError, TrafficConfig, build_traffic};
pub use types::{
    Configuration, HasConditions, Key, Revision, RevisionTemplateSpec, Route, Service,
    TrafficTarget,
};
pub use validation::{
    admit_configuration, admit_route, admit_service, validate_configuration, validate_route,
    validate_service,
};

/// Prefix of Knative Serving's own labels (users may not set others under it).
pub const GROUP_PREFIX: &str = "serving.knative.dev/";
/// Label: the Service owning a Configuration / Route / Revision.
pub const SERVICE_LABEL: &str = "serving.knative.dev/service";
/// Label: the owning Service's UID.
pub const SERVICE_UID_LABEL: &str = "serving.knative.dev/serviceUID";
/// Label: the Configuration owning a Revision.
pub const CONFIGURATION_LABEL: &str = "serving.knative.dev/configuration";
/// Label: the owning Configuration's UID.
pub const CONFIG_UID_LABEL: &str = "serving.knative.dev/configurationUID";
/// Label: the generation number a Revision was created at.
pub const CONFIGURATION_GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";
/// Label: the Route a KIngress belongs to.
pub const ROUTE_LABEL: &str = "serving.knative.dev/route";
/// Label: the namespace of the Route a KIngress belongs to.
pub const ROUTE_NAMESPACE_LABEL: &str = "serving.knative.dev/routeNamespace";
/// Label: a Service or Route visible only inside the cluster.
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";
/// The only value [`VISIBILITY_LABEL`] may have.
pub const VISIBILITY_CLUSTER_LOCAL: &str = "cluster-local";
/// kubectl's copy of the applied object, never propagated to children.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Header each split appends: the Revision.
pub const REVISION_HEADER: &str = "Knative-Serving-Revision";
/// Header each split appends: the Revision's namespace.
pub const NAMESPACE_HEADER: &str = "Knative-Serving-Namespace";
/// Header selecting a tag on the main host (tag header routing).
pub const TAG_HEADER: &str = "Knative-Serving-Tag";
/// Header the default path appends when tag header routing is on.
pub const DEFAULT_ROUTE_HEADER: &str = "Knative-Serving-Default-Route";
