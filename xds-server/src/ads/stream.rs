//! What SotW and Delta streams share: reading the node from the first
//! request, registering it, the request/watch/shutdown loop, and reporting
//! the disconnect. Each variant supplies how to take a request and how to
//! bring the client up to date ([`Variant`]).

use std::future::Future;

use envoy_types::pb::envoy::config::core::v3::Node;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::Shared;
use super::held::Held;
use crate::nodes::Mode;

/// The state every stream has, whatever its variant.
pub(crate) struct Common<Resp> {
    pub shared: Shared,
    /// What the client holds, as its ACKs tell (gates routes on warm clusters).
    pub held: Held,
    pub node: Node,
    /// The snapshot group the node is served from.
    pub group: String,
    /// One cache watch per type the client asked for.
    pub watches: StreamMap<String, WatchStream<u64>>,
    pub tx: mpsc::Sender<Result<Resp, Status>>,
}

impl<Resp> Common<Resp> {
    /// Starts watching `type_url` in the node's group (once per type).
    pub fn watch(&mut self, type_url: &str) {
        if !self.watches.contains_key(type_url) {
            self.watches.insert(
                type_url.to_string(),
                WatchStream::new(self.shared.cache.watch(&self.group, type_url)),
            );
        }
    }

    /// Sends a response; fails when the client went away.
    pub async fn send(&self, resp: Resp) -> Result<(), String> {
        self.tx
            .send(Ok(resp))
            .await
            .map_err(|_| "client went away".to_string())
    }
}

/// One xDS protocol variant.
pub(crate) trait Variant: Sized + Send {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const MODE: Mode;

    /// The node a request names (the first request of a stream must).
    fn node(req: &Self::Req) -> Option<&Node>;
    /// A new stream.
    fn new(common: Common<Self::Resp>) -> Self;
    /// The shared part.
    fn common(&mut self) -> &mut Common<Self::Resp>;
    /// Takes one request: ACK/NACK bookkeeping and subscription changes.
    fn on_request(&mut self, req: Self::Req) -> Result<(), Status>;
    /// Sends whatever the client lacks.
    fn sync(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Drives one ADS stream of variant `V` until the client leaves, an error
/// ends it or the server shuts down.
pub(crate) async fn run<V: Variant>(
    shared: Shared,
    mut requests: Streaming<V::Req>,
    tx: mpsc::Sender<Result<V::Resp, Status>>,
) {
    let mode = V::MODE.as_str();
    let first = match requests.next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::debug!(error = %e, mode, "ADS stream failed before its first request");
            return;
        }
        None => return,
    };
    let Some(node) = V::node(&first).cloned() else {
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first request on an ADS stream must carry `node`",
            )))
            .await;
        return;
    };
    let group = (shared.grouping)(&node);
    shared.nodes.connected_stream(&node, &group, V::MODE);
    let span = tracing::info_span!("ads", node = %node.id, mode);
    let stopping = super::shutting_down(shared.shutdown.clone());
    let mut s = V::new(Common {
        shared,
        held: Held::default(),
        node,
        group,
        watches: StreamMap::new(),
        tx,
    });
    tokio::pin!(stopping);
    let reason = async {
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take()
                && let Err(status) = s.on_request(req)
            {
                let msg = status.message().to_string();
                let _ = s.common().tx.send(Err(status)).await;
                return msg;
            }
            if let Err(reason) = s.sync().await {
                return reason;
            }
            tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(r)) => next = Some(r),
                    Some(Err(e)) => return format!("stream error: {e}"),
                    None => return "stream closed by client".to_string(),
                },
                Some(_) = s.common().watches.next() => {}
                () = &mut stopping => return "server shutting down".to_string(),
            }
        }
    }
    .instrument(span)
    .await;
    let c = s.common();
    tracing::debug!(node = %c.node.id, %reason, mode, "ADS stream ended");
    c.shared
        .nodes
        .disconnected_stream(&c.node.id, V::MODE, &reason);
}
