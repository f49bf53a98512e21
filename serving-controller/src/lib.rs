//! Knative Serving API types, reconcilers and the KIngress → Envoy translation (see DESIGN.md).
//!
//! The gateway core is pure and deterministic:
//! - [`ingress`]: the `networking.internal.knative.dev/v1alpha1` Ingress (KIngress) type, its
//!   class check, Knative's defaulting and Knative's validation (same messages and field paths);
//! - [`hash`]: Knative's readiness-probe hash of a KIngress;
//! - [`conflict`]: which KIngress wins a host claimed by several;
//! - [`lookup`]: what translation needs to know about Services, endpoints and Secrets;
//! - [`kourier`]: net-kourier's `config-kourier` ConfigMap (the gateway's options);
//! - [`translate`]: one KIngress → its Envoy pieces, and all pieces → the gateway's resources
//!   (listeners, scoped routes, route configurations, clusters, endpoints, secrets).
//!
//! At the edge, [`kube`] is the Kubernetes source: watchers filling a [`Lookup`] cache and the
//! KIngress status writer.

pub mod conflict;
pub mod hash;
pub mod ingress;
pub mod kourier;
pub mod kube;
pub mod lookup;
pub mod serving;
pub mod translate;

pub use conflict::{DomainConflict, resolve_conflicts};
pub use hash::probe_hash;
pub use ingress::{FieldError, Ingress, IngressKey, is_ours, validate};
pub use lookup::{Lookup, Objects};
pub use translate::{GatewayConfig, IngressResources, TranslateError, assemble, translate_ingress};
