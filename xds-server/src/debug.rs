//! Sluice's snapshot debug service (`sluice.xds.v1.SnapshotDebug`): nodes,
//! their snapshots with per-resource versions and ACK state, and a live feed
//! of pushes, ACKs and NACKs.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use sluice_proto::xds::v1::{
    self as pb, AckState, GetSnapshotRequest, GetSnapshotResponse, ListNodesRequest,
    ListNodesResponse, WatchRequest, XdsEvent, snapshot_debug_server::SnapshotDebug,
    xds_event::Kind,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::cache::SnapshotCache;
use crate::nodes::{Event, EventKind, Mode, NodeState, Nodes};
use crate::resource::type_url_from_short;
use crate::status::{SyncState, node_resources, sync_state, timestamp};

/// The snapshot debug gRPC service.
#[derive(Clone, Debug)]
pub struct DebugService {
    cache: SnapshotCache,
    nodes: Nodes,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl DebugService {
    pub(crate) fn new(
        cache: SnapshotCache,
        nodes: Nodes,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            nodes,
            shutdown,
        }
    }
}

fn mode(m: Mode) -> pb::XdsMode {
    match m {
        Mode::Sotw => pb::XdsMode::Sotw,
        Mode::Delta => pb::XdsMode::Delta,
    }
}

/// The wire form of a node's state.
pub fn node_status(n: &NodeState) -> pb::NodeStatus {
    pb::NodeStatus {
        node_id: n.node.id.clone(),
        cluster: n.node.cluster.clone(),
        user_agent: format!("{} {}", n.node.user_agent_name, user_agent_version(n)),
        group: n.group.clone(),
        connected: n.connected,
        mode: mode(n.mode) as i32,
        connected_since: Some(timestamp(n.connected_since)),
        stream: n.stream,
        disconnected_at: n.disconnected.as_ref().map(|(at, _)| timestamp(*at)),
        disconnect_reason: n
            .disconnected
            .as_ref()
            .map(|(_, why)| why.clone())
            .unwrap_or_default(),
        types: n
            .types
            .iter()
            .map(|(t, s)| pb::TypeStatus {
                type_url: t.clone(),
                sent_version: s
                    .sent
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
                sent_nonce: s.sent.as_ref().map(|s| s.nonce.clone()).unwrap_or_default(),
                sent_names: s.sent.as_ref().map(|s| s.names.clone()).unwrap_or_default(),
                sent_at: s.sent.as_ref().map(|s| timestamp(s.at)),
                acked_version: s.acked_version.clone().unwrap_or_default(),
                acked_at: s.acked_at.map(timestamp),
                last_nack: s.last_nack.as_ref().map(|n| pb::Nack {
                    version: n.version.clone(),
                    nonce: n.nonce.clone(),
                    error: n.error.clone(),
                    at: Some(timestamp(n.at)),
                }),
                subscribed: s.subscribed.iter().cloned().collect(),
                wildcard: s.wildcard,
            })
            .collect(),
    }
}

/// The stream of node `id` to show: stream `stream` if given, else its newest open stream, else
/// its most recently closed one.
fn pick(all: &[NodeState], id: &str, stream: u64) -> Result<NodeState, Status> {
    let mut of_node = all.iter().filter(|n| n.id() == id);
    let found = if stream != 0 {
        of_node.find(|n| n.stream == stream)
    } else {
        of_node.max_by_key(|n| (n.connected, n.stream))
    };
    found.cloned().ok_or_else(|| match stream {
        0 => Status::not_found(format!("no node {id:?} has connected")),
        s => Status::not_found(format!("node {id:?} has no stream {s}")),
    })
}

fn certificate(c: &crate::redact::CertificateInfo) -> pb::CertificateInfo {
    pb::CertificateInfo {
        subject: c.subject.clone(),
        sans: c.sans.clone(),
        issuer: c.issuer.clone(),
        not_before: c.not_before.map(timestamp),
        not_after: c.not_after.map(timestamp),
        serial: c.serial.clone(),
        error: c.error.clone().unwrap_or_default(),
    }
}

fn user_agent_version(n: &NodeState) -> String {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    match &n.node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    }
    .trim()
    .to_string()
}

fn event(e: Event) -> XdsEvent {
    XdsEvent {
        kind: match e.kind {
            EventKind::Connect => Kind::Connect,
            EventKind::Disconnect => Kind::Disconnect,
            EventKind::Push => Kind::Push,
            EventKind::Ack => Kind::Ack,
            EventKind::Nack => Kind::Nack,
        } as i32,
        at: Some(timestamp(e.at)),
        node_id: e.node_id,
        type_url: e.type_url,
        version: e.version,
        nonce: e.nonce,
        resources: e.resources,
        bytes: e.bytes as u64,
        detail: e.detail,
        latency_us: e.latency.map(|d| d.as_micros() as u64).unwrap_or_default(),
        mode: mode(e.mode) as i32,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SnapshotDebug for DebugService {
    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: self.nodes.list().iter().map(node_status).collect(),
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let all = self.nodes.list();
        let node = if req.node_id.is_empty() {
            let mut ids: Vec<&str> = all.iter().filter(|n| n.connected).map(|n| n.id()).collect();
            ids.dedup();
            let id = match ids.as_slice() {
                [one] => one.to_string(),
                [] => match all.first() {
                    Some(n) => n.id().to_string(),
                    None => return Err(Status::not_found("no Envoy node has connected yet")),
                },
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "several nodes are connected ({}); pick one with --node",
                        ids.join(", ")
                    )));
                }
            };
            pick(&all, &id, req.stream)?
        } else {
            pick(&all, &req.node_id, req.stream)?
        };
        let type_filter = if req.r#type.is_empty() {
            None
        } else {
            Some(type_url_from_short(&req.r#type).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown type {:?}: use clusters, routes, listeners, endpoints, secrets or a type URL",
                    req.r#type
                ))
            })?)
        };
        let snapshot = self.cache.snapshot(&node.group);
        let resources = node_resources(&node, &snapshot, type_filter, true)
            .into_iter()
            .map(|r| {
                let shown = crate::redact::redacted(r);
                pb::SnapshotResource {
                    type_url: r.type_url().to_string(),
                    name: r.name().to_string(),
                    version: r.version().to_string(),
                    generation: r.generation(),
                    ack_state: match sync_state(&node, r) {
                        SyncState::NotSent => AckState::NotSent,
                        SyncState::Sent => AckState::Sent,
                        SyncState::Acked => AckState::Acked,
                        SyncState::Nacked => AckState::Nacked,
                    } as i32,
                    resource: Some(shown.body),
                    redacted: shown.redacted,
                    certificates: shown.certificates.iter().map(certificate).collect(),
                }
            })
            .collect();
        Ok(Response::new(GetSnapshotResponse {
            node: Some(node_status(&node)),
            generation: snapshot.generation,
            resources,
        }))
    }

    type WatchStream = BoxStream<XdsEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let filter = request.into_inner().node_id;
        let rx = self.nodes.events();
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let filter = filter.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(e) if filter.is_empty() || e.node_id == filter => {
                            return Some((Ok(event(e)), rx));
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(n)) => {
                            return Some((
                                Err(Status::resource_exhausted(format!(
                                    "watcher fell behind by {n} events; reconnect"
                                ))),
                                rx,
                            ));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        });
        let stream = stream.take_until(crate::ads::shutting_down(self.shutdown.clone()));
        Ok(Response::new(Box::pin(stream)))
    }
}
