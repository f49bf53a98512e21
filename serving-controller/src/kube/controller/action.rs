//! What the core asks of the API server ([`Action`]), and what became of it ([`Feedback`]).

use super::watch::{ObjectKind, Watched};
use crate::ingress::Ingress;
use crate::serving::{Configuration, Key, Revision, Route};

/// One write the controller asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Server-side apply of a Service's Configuration.
    ApplyConfiguration(Box<Configuration>),
    /// Server-side apply of a Service's Route.
    ApplyRoute(Box<Route>),
    /// Create a Revision of a Configuration.
    CreateRevision {
        /// The Configuration.
        configuration: Key,
        /// The Revision to create.
        revision: Box<Revision>,
    },
    /// Run a Revision: its Deployment (at the current replica count if it exists, else
    /// `initial_scale`) and Service.
    RunRevision {
        /// The Revision, as the API server holds it.
        revision: Box<Revision>,
        /// Replicas of a new Deployment.
        initial_scale: u32,
        /// How it becomes a Deployment (with `config-deployment`'s progress deadline).
        runtime: crate::kube::runtime::RuntimeConfig,
    },
    /// Server-side apply of an HPA-class Revision's HorizontalPodAutoscaler
    /// ([`super::hpa`]).
    ApplyHpa {
        /// The Revision.
        revision: Key,
        /// Its HorizontalPodAutoscaler.
        hpa: Box<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    },
    /// Server-side apply of a Route's KIngress.
    ApplyIngress(Box<Ingress>),
    /// Server-side apply of a Route's placeholder Services ([`super::placeholder`]), and
    /// deletion of those it no longer has (a removed tag's).
    ApplyPlaceholders {
        /// The Route.
        route: Key,
        /// Every placeholder Service the Route has now.
        services: Vec<k8s_openapi::api::core::v1::Service>,
        /// Names of placeholder Services applied before that the Route no longer has.
        stale: Vec<String>,
    },
    /// Sets a Revision's routing state (label) and when it changed (annotation), with a JSON
    /// merge patch of those two keys.
    LabelRevision {
        /// The Revision.
        revision: Key,
        /// Its new state.
        state: crate::serving::state::RoutingState,
        /// Now (RFC 3339).
        modified: String,
    },
    /// Deletes a Revision `config-gc` collects (its Deployment and Service go with it).
    DeleteRevision(Key),
    /// Publishes an Event (best effort: a failure is logged, not retried).
    Event(Box<EventSpec>),
    /// Server-side apply of an object's `status`.
    PatchStatus {
        /// The object's kind (one of the four serving kinds).
        kind: ObjectKind,
        /// The object.
        key: Key,
        /// The whole status.
        status: serde_json::Value,
    },
}

/// An Event the controller publishes (`events.k8s.io/v1`), so `kubectl describe` shows what
/// it did and why an object is not Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// The object it is about (`serving.knative.dev/v1`).
    pub kind: &'static str,
    /// Its namespace and name.
    pub key: Key,
    /// Its UID.
    pub uid: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason (`Created`, `ExitCode1`, …).
    pub reason: String,
    /// What happened.
    pub note: String,
}

/// What became of an [`Action`].
#[derive(Debug, Clone)]
pub enum Feedback {
    /// The API server answered with this object (a write's result).
    Observed(Watched),
    /// Creating a Revision failed: it is forgotten, and the Configuration tried again later.
    RevisionNotCreated {
        /// The Configuration.
        configuration: Key,
    },
    /// The Revision's Deployment and Service are applied.
    RevisionRunning(Key),
    /// A Route's placeholder Services are applied (and the stale ones deleted).
    PlaceholdersApplied {
        /// The Route.
        route: Key,
        /// What was applied.
        services: Vec<k8s_openapi::api::core::v1::Service>,
    },
    /// A Revision's HorizontalPodAutoscaler is applied.
    HpaApplied {
        /// The Revision.
        revision: Key,
        /// What was applied.
        hpa: Box<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    },
    /// The object is gone (deleted by the controller, or already).
    Gone(ObjectKind, Key),
    /// Deleting a collected Revision failed: it may be collected again later.
    RevisionNotDeleted(Key),
    /// Running the Revision failed. `retry`: try again later; otherwise the Revision is
    /// failed with `message` (it names the field).
    RevisionNotRunning {
        /// The Revision.
        revision: Key,
        /// Whether to try again.
        retry: bool,
        /// What went wrong.
        message: String,
    },
}

impl Action {
    /// The action's name in metrics: `apply_ingress`, `patch_status`, …
    pub fn name(&self) -> &'static str {
        match self {
            Action::ApplyConfiguration(_) => "apply_configuration",
            Action::ApplyRoute(_) => "apply_route",
            Action::CreateRevision { .. } => "create_revision",
            Action::RunRevision { .. } => "run_revision",
            Action::ApplyIngress(_) => "apply_ingress",
            Action::ApplyPlaceholders { .. } => "apply_placeholders",
            Action::ApplyHpa { .. } => "apply_hpa",
            Action::LabelRevision { .. } => "label_revision",
            Action::DeleteRevision(_) => "delete_revision",
            Action::Event(_) => "event",
            Action::PatchStatus { .. } => "patch_status",
        }
    }

    /// What it writes, for messages: `apply KIngress default/hello`.
    pub fn describe(&self) -> String {
        match self {
            Action::ApplyConfiguration(c) => format!("apply Configuration {}", c.key()),
            Action::ApplyRoute(r) => format!("apply Route {}", r.key()),
            Action::CreateRevision {
                configuration,
                revision,
            } => format!(
                "create Revision {} of Configuration {configuration}",
                revision.name()
            ),
            Action::RunRevision { revision, .. } => format!("run Revision {}", revision.key()),
            Action::ApplyIngress(i) => format!(
                "apply KIngress {}/{}",
                i.metadata.namespace.as_deref().unwrap_or_default(),
                i.metadata.name.as_deref().unwrap_or_default()
            ),
            Action::ApplyPlaceholders { route, .. } => {
                format!("apply the placeholder Services of Route {route}")
            }
            Action::ApplyHpa { revision, .. } => {
                format!("apply the HorizontalPodAutoscaler of Revision {revision}")
            }
            Action::LabelRevision {
                revision, state, ..
            } => format!("label Revision {revision} routing state {state:?}"),
            Action::DeleteRevision(key) => format!("delete Revision {key} (config-gc)"),
            Action::Event(e) => format!("event {} on {} {}", e.reason, e.kind, e.key),
            Action::PatchStatus { kind, key, .. } => format!("patch the status of {kind:?} {key}"),
        }
    }
}
