//! The activator: a per-revision throttling proxy for scale-from-zero (see
//! DESIGN.md and KNATIVE-FACTS.md, "Activator").
//!
//! Envoy routes a revision's traffic here while the revision is at zero or
//! short of burst capacity. For each request the activator:
//!
//! 1. names the revision from `Knative-Serving-Revision` /
//!    `Knative-Serving-Namespace` (unknown → 404);
//! 2. counts it in the revision's concurrency ([`ConcurrencyAccumulator`]);
//! 3. waits in the revision's bounded queue for a slot on a ready instance
//!    ([`Throttler`]; per-instance [`Breaker`]s of `containerConcurrency`,
//!    instances picked by [`Balancer`]; new instances get traffic once they
//!    accept a TCP connection, probed every 200 ms); the first request at
//!    zero pokes the autoscaler;
//! 4. forwards it (HTTP/1.1, or h2 prior knowledge for h2c revisions;
//!    websocket upgrades tunnelled) with `K-Proxy-Request: activator`,
//!    streaming both bodies;
//! 5. on failure answers with one [`rescue`] response: 404, 503 (queue full,
//!    no capacity in time), 504 (timeout) or 502 (upstream failure).
//!
//! The [`Reporter`] streams each second's figures to the autoscaler over gRPC
//! (`sluice.autoscaler.v1.Stats`); [`Activator::register_metrics`] exposes
//! Prometheus metrics; [`Activator::serve`] drains on shutdown.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use sluice_activator::*;
//! let (activator, pokes) = Activator::new(ActivatorConfig::default());
//! let key = RevisionKey::new("default", "hello-00001");
//! activator.set_revision(key.clone(), RevisionConfig { container_concurrency: 1, ..Default::default() });
//! activator.update_instances(&key, &["127.0.0.1:8080".parse().unwrap()]).unwrap();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8012").await?;
//! let reporter = Reporter::new(ReporterConfig::new("http://127.0.0.1:8013", "activator-0"))
//!     .expect("valid endpoint");
//! tokio::spawn(reporter.run(activator.clone(), pokes, std::future::pending()));
//! activator.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod activator;
mod body;
mod breaker;
mod error;
mod lb;
mod metrics;
mod probe;
mod proxy;
mod reporter;
mod revision;
mod server;
pub mod share;
mod stats;
mod throttler;
mod trace;

pub use activator::{Activator, ActivatorConfig, RevisionReport};
pub use body::Body;
pub use breaker::Breaker;
pub use error::{BoxError, Error, QueueScope, rescue};
pub use lb::{Balancer, Policy};
pub use reporter::{Reporter, ReporterConfig, ReporterError, ReporterStats};
pub use revision::{
    DEFAULT_TIMEOUT, NAMESPACE_HEADER, PROXY_HEADER, PROXY_HEADER_VALUE, REVISION_HEADER,
    RevisionConfig, RevisionKey,
};
pub use stats::{ConcurrencyAccumulator, PeriodStat};
pub use throttler::{Permit, RevisionThrottleStats, Throttler, ThrottlerConfig, ThrottlerStats};
