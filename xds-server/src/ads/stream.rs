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
use super::order::Reconnect;
use crate::nodes::Mode;

/// The state every stream has, whatever its variant.
pub(crate) struct Common<Resp> {
    pub shared: Shared,
    /// What the client holds, as its ACKs tell (gates routes on warm clusters).
    pub held: Held,
    /// Whether the client came back holding configuration (gates removals, see `order`).
    pub reconnect: Reconnect,
    pub node: Node,
    /// This stream's id in the node registry.
    pub stream: u64,
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

/// Longest node id accepted (Envoy's are host or pod names).
const MAX_NODE_ID: usize = 256;
/// Longest cluster name and user agent kept.
const MAX_NODE_FIELD: usize = 128;

/// What is kept of the node a client introduces itself as: its id (checked), cluster and user
/// agent (shortened). Metadata, extensions and the rest are not kept: any client can send them,
/// as large as the message limit allows.
fn kept_node(node: &Node) -> Result<Node, Status> {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    if node.id.is_empty() {
        return Err(Status::invalid_argument("the node has an empty id"));
    }
    if node.id.len() > MAX_NODE_ID || node.id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "node id {:?} is not accepted: at most {MAX_NODE_ID} bytes, no control characters",
            super::limits::truncate(&node.id, 64)
        )));
    }
    let short = |s: &str| super::limits::truncate(s, MAX_NODE_FIELD).into_owned();
    Ok(Node {
        id: node.id.clone(),
        cluster: short(&node.cluster),
        user_agent_name: short(&node.user_agent_name),
        user_agent_version_type: match &node.user_agent_version_type {
            Some(UserAgentVersionType::UserAgentVersion(v)) => {
                Some(UserAgentVersionType::UserAgentVersion(short(v)))
            }
            Some(UserAgentVersionType::UserAgentBuildVersion(b)) => {
                Some(UserAgentVersionType::UserAgentBuildVersion(
                    envoy_types::pb::envoy::config::core::v3::BuildVersion {
                        version: b.version,
                        metadata: None,
                    },
                ))
            }
            None => None,
        },
        ..Default::default()
    })
}

/// Sleeps until `at`, or forever when there is nothing to wake for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
    let node = match V::node(&first).map(kept_node) {
        Some(Ok(node)) => node,
        Some(Err(status)) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
        None => {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first request on an ADS stream must carry `node`",
                )))
                .await;
            return;
        }
    };
    let group = (shared.grouping)(&node);
    let stream = shared.nodes.connected_stream(&node, &group, V::MODE);
    let span = tracing::info_span!("ads", node = %node.id, mode);
    let stopping = super::shutting_down(shared.shutdown.clone());
    let mut s = V::new(Common {
        shared,
        held: Held::default(),
        reconnect: Reconnect::new(),
        node,
        stream,
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
            // A reconnected client's grace period ending may release removals.
            let wake = s.common().reconnect.pending_until();
            tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(r)) => next = Some(r),
                    Some(Err(e)) => return format!("stream error: {e}"),
                    None => return "stream closed by client".to_string(),
                },
                Some(_) = s.common().watches.next() => {}
                () = sleep_until(wake) => {}
                () = &mut stopping => return "server shutting down".to_string(),
            }
        }
    }
    .instrument(span)
    .await;
    let c = s.common();
    tracing::debug!(node = %c.node.id, %reason, mode, "ADS stream ended");
    c.shared.nodes.disconnected_stream(c.stream, &reason);
    c.watches.clear();
    c.shared.cache.release(&c.group);
}
