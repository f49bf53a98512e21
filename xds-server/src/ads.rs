//! The Aggregated Discovery Service: one gRPC service, two stream variants
//! ([`sotw`] and [`delta`]), sharing the cache, the node registry and how
//! nodes map to snapshot groups.

pub(crate) mod delta;
mod held;
pub(crate) mod limits;
mod order;
mod quarantine;
pub(crate) mod sotw;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::SnapshotCache;
use crate::nodes::Nodes;

/// Whether resources of `type_url` can be named by others (clusters by routes, and so on):
/// those must outlive every reference a client may still hold.
pub(crate) fn is_referenced_type(type_url: &str) -> bool {
    !order::referrers(type_url).is_empty()
}

/// Maps a node to the snapshot group it is served from.
pub type Grouping = Arc<dyn Fn(&Node) -> String + Send + Sync>;

/// Every node is its own group (keyed by node id).
pub fn group_by_node_id() -> Grouping {
    Arc::new(|n: &Node| n.id.clone())
}

/// Every node is served the same group.
pub fn single_group(name: impl Into<String>) -> Grouping {
    let name = name.into();
    Arc::new(move |_: &Node| name.clone())
}

/// What every stream needs.
#[derive(Clone)]
pub(crate) struct Shared {
    pub cache: SnapshotCache,
    pub nodes: Nodes,
    pub grouping: Grouping,
    /// Turns true when the server shuts down: streams end so that graceful
    /// shutdown does not wait forever on long-lived ADS streams.
    pub shutdown: watch::Receiver<bool>,
}

/// Resolves once `rx` turns true (or its sender is gone).
pub(crate) async fn shutting_down(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A fresh nonce, unique within this process.
pub(crate) fn next_nonce() -> String {
    format!("{:x}", NONCE.fetch_add(1, Ordering::Relaxed) + 1)
}

/// The ADS gRPC service (SotW and Delta on one port).
#[derive(Clone)]
pub struct AdsService {
    shared: Shared,
}

impl std::fmt::Debug for AdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService").finish_non_exhaustive()
    }
}

impl AdsService {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Buffered responses per stream: a slow Envoy back-pressures its own stream
/// only.
const RESPONSE_BUFFER: usize = 16;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        tokio::spawn(stream::run::<sotw::Stream>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        tokio::spawn(stream::run::<delta::Stream>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
