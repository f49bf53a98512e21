//! The Kubernetes source of the gateway (`sluice gateway --kube`): what the API server holds,
//! turned into the same inputs the file source produces, and KIngress status written back.
//!
//! - [`resource`]: the KIngress as a kube resource (`networking.internal.knative.dev/v1alpha1`,
//!   `ingresses`, namespaced) and the lenient decoding of what the API server returns;
//! - [`cache`]: [`KubeCache`], the objects the watchers keep, implementing
//!   [`Lookup`](crate::lookup::Lookup) so translation reads it directly;
//! - [`source`]: [`KubeSource`], kube-runtime watchers on KIngress (our class only), Service,
//!   EndpointSlice and Secret merged into one stream of [`KubeEvent`]s;
//! - [`status`]: the KIngress status Knative expects ([`desired_status`]) and the server-side
//!   apply that writes it ([`patch_status`], [`StatusWriter`]);
//! - [`events`]: Kubernetes Events on a KIngress ([`EventPublisher`]);
//! - [`lease`]: Lease-based leader election ([`LeaderElector`](lease::LeaderElector)) for
//!   components that run several replicas;
//! - [`rbac`]: the API access all of this needs ([`PERMISSIONS`], mirrored by the ClusterRole in
//!   `deploy/ingress/`);
//! - [`error`]: [`KubeError`] and the retry policy ([`error_policy`]).
//!
//! How the gateway core uses it (objects also come with the events, for a core that keeps its
//! own store, as the file source's does):
//!
//! ```no_run
//! # async fn run(client: ::kube::Client) {
//! use sluice_serving::kube::{KubeEvent, KubeSource, LoadBalancers, Readiness, SourceConfig, StatusWriter};
//!
//! let mut source = KubeSource::new(client.clone(), &SourceConfig::default());
//! let status = StatusWriter::new(client, LoadBalancers::default());
//! while let Some(event) = source.next().await {
//!     match event {
//!         Ok(KubeEvent::Synced) => { /* translate everything, then start serving xDS */ }
//!         Ok(KubeEvent::IngressApplied(ingress)) => {
//!             // translate_ingress(&ingress, source.cache()) …, push; once Envoy ACKed and the
//!             // probe returned its hash, write Ready — off the event loop (StatusWriter: Clone):
//!             let status = status.clone();
//!             tokio::spawn(async move { status.update(&ingress, &Readiness::Ready).await });
//!         }
//!         Ok(other) => { /* re-translate what `other` touches (see KubeEvent) */ }
//!         Err(error) => tracing::warn!(%error, "kube source"), // the watch retries by itself
//!     }
//! }
//! # }
//! ```

pub mod cache;
pub mod controller;
pub mod error;
pub mod events;
pub mod lease;
pub mod rbac;
pub mod resource;
pub mod runtime;
pub mod source;
pub mod status;

pub use cache::{KubeCache, ObjectKey, service_of_slice};
pub use error::{KubeError, error_policy};
pub use events::{EventPublisher, EventType};
pub use rbac::{PERMISSIONS, Permission, SYSTEM_NAMESPACE_PERMISSIONS};
pub use resource::{INGRESS_PLURAL, decode_ingress, ingress_api_resource};
pub use source::{KubeEvent, KubeSource, Scope, SourceConfig};
pub use status::{
    FIELD_MANAGER, LoadBalancers, PatchOutcome, Readiness, StatusWriter, desired_status,
    patch_status,
};
