//! A generic Envoy xDS control plane.
//!
//! - [`SnapshotCache`]: per node group, versioned resources; whole snapshots or
//!   incremental [`Update`]s, checked for consistency before they are served;
//!   watchers woken per type.
//! - [`XdsServer`]: one gRPC server carrying ADS (State-of-the-World and Delta),
//!   Envoy's CSDS, Sluice's snapshot debug service and server reflection (v1
//!   and v1alpha, so `grpcurl` works).
//! - [`Nodes`]: what every node was sent, ACKed and NACKed; readiness queries
//!   ("has node X ACKed resource R at generation ≥ g").
//!
//! It knows nothing of Knative.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_xds::{Resource, SnapshotCache, XdsServer, single_group};
//! use envoy_types::pb::envoy::config::cluster::v3::Cluster;
//!
//! let cache = SnapshotCache::new();
//! let cluster = Cluster { name: "backend".into(), ..Default::default() };
//! cache.set_snapshot("gateway", [Resource::new("backend", &cluster)])?;
//! let server = XdsServer::new(cache, single_group("gateway"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:18000").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod ads;
pub mod builders;
pub mod cache;
pub mod consistency;
mod csds;
mod debug;
pub mod metrics;
pub mod nodes;
pub mod redact;
pub mod resource;
mod status;

use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use sluice_proto::xds::v1::snapshot_debug_server::SnapshotDebugServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use ads::limits::truncate;
pub use ads::{AdsService, Grouping, group_by_node_id, single_group};
pub use cache::{Applied, CacheError, Snapshot, SnapshotCache, TypeSnapshot, Update};
pub use csds::CsdsService;
pub use debug::{DebugService, node_status};
pub use metrics::Metrics;
pub use nodes::{Event, EventKind, Mode, NodeState, Nodes};
pub use resource::{Resource, ResourceError};
pub use status::{SyncState, sync_state};

/// gRPC service names this server answers, advertised over reflection.
pub const SERVICE_NAMES: [&str; 3] = [
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "envoy.service.status.v3.ClientStatusDiscoveryService",
    "sluice.xds.v1.SnapshotDebug",
];

/// Largest request accepted. The largest an Envoy sends is a reconnecting Delta client's first
/// request of a type: it lists every resource it holds with its version. Measured at 10k
/// KIngresses (20k clusters, 20k assignments, 10k route configurations):
/// `sluice_xds_largest_request_bytes` peaks at 1.24 MB (endpoints; scoped routes 1.14 MB,
/// clusters 0.88 MB, routes 0.52 MB: the soak benchmark in BENCHMARKS.md). 16 MiB leaves 13×
/// headroom — 100k KIngresses (about 12 MB) still fit — and bounds what one request of a
/// stranger can make the server decode.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Why the server could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection descriptors did not load (a build problem).
    #[error("gRPC reflection descriptors do not load: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("xDS gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// TLS for the gRPC server, in PEM: its certificate chain and private key, and optionally the
/// CA that clients' certificates must chain to. With a client CA the server requires mutual
/// TLS: a client without a certificate from that CA is refused during the handshake, before
/// any request is read.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// The CA client certificates must chain to (mutual TLS), if any.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &redact::REDACTED)
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

/// The xDS gRPC server: ADS, CSDS, snapshot debug and reflection on one port.
#[derive(Clone)]
pub struct XdsServer {
    cache: SnapshotCache,
    nodes: Nodes,
    grouping: Grouping,
    extra_services: Vec<String>,
    stop: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    tls: Option<ServerTls>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("cache", &self.cache)
            .field("extra_services", &self.extra_services)
            .finish_non_exhaustive()
    }
}

impl XdsServer {
    /// A server for `cache`, mapping nodes to groups with `grouping`, with
    /// metrics kept unregistered (see [`XdsServer::with_metrics`]).
    pub fn new(cache: SnapshotCache, grouping: Grouping) -> Self {
        Self::with_metrics(cache, grouping, Metrics::default())
    }

    /// A server reporting to `metrics` (from [`Metrics::register`]).
    pub fn with_metrics(cache: SnapshotCache, grouping: Grouping, metrics: Metrics) -> Self {
        Self {
            cache,
            nodes: Nodes::new(metrics),
            grouping,
            extra_services: Vec::new(),
            stop: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            tls: None,
        }
    }

    /// Serves over TLS (mutual TLS when `tls` names a client CA).
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The node registry (readiness queries, events).
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The cache being served.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// The ADS service, for callers that assemble their own tonic server.
    pub fn ads_service(&self) -> AdsService {
        AdsService::new(ads::Shared {
            cache: self.cache.clone(),
            nodes: self.nodes.clone(),
            grouping: self.grouping.clone(),
            shutdown: self.stop.subscribe(),
        })
    }

    /// Ends every open stream (ADS, CSDS, debug watch) so that a graceful
    /// shutdown of the gRPC server completes. [`XdsServer::serve`] calls this
    /// when its shutdown future resolves.
    pub fn shutdown_streams(&self) {
        self.stop.send_replace(true);
    }

    /// All services as tonic routes (ADS, CSDS, debug, reflection v1 + v1alpha).
    /// `extra` services added by the caller are advertised by reflection too
    /// when their names are passed to [`XdsServer::advertise`].
    pub fn routes(&self) -> Result<tonic::service::Routes, ServeError> {
        let names = SERVICE_NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(self.extra_services.iter().cloned());
        let reflection = || {
            names.clone().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(sluice_proto::ENVOY_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(sluice_proto::SLUICE_DESCRIPTOR_SET),
                |b, n| b.with_service_name(n),
            )
        };
        let v1 = reflection()
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()?;
        let v1alpha = reflection()
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()?;
        let mut routes = tonic::service::Routes::default();
        routes = routes
            .add_service(
                AggregatedDiscoveryServiceServer::new(self.ads_service())
                    .max_decoding_message_size(MAX_REQUEST_BYTES)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(ClientStatusDiscoveryServiceServer::new(CsdsService::new(
                self.cache.clone(),
                self.nodes.clone(),
                self.stop.subscribe(),
            )))
            .add_service(SnapshotDebugServer::new(DebugService::new(
                self.cache.clone(),
                self.nodes.clone(),
                self.stop.subscribe(),
            )))
            .add_service(v1)
            .add_service(v1alpha);
        Ok(routes)
    }

    /// Advertise an extra gRPC service (one the caller adds to [`Self::routes`])
    /// over reflection. Its descriptors must be in Envoy's or Sluice's set.
    pub fn advertise(mut self, service_name: impl Into<String>) -> Self {
        self.extra_services.push(service_name.into());
        self
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let routes = self.routes()?;
        let stop = self.stop.clone();
        let shutdown = async move {
            shutdown.await;
            stop.send_replace(true);
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            let mut cfg = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
            );
            if let Some(ca) = &tls.client_ca_pem {
                cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder.tls_config(cfg)?;
        }
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }
}
