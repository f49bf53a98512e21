//! State-of-the-World ADS streams.
//!
//! Per type the stream remembers the subscription, the last version sent and
//! its nonce. A request whose nonce is not the latest one sent for its type is
//! stale and ignored (xDS protocol, "ACK/NACK and resource type instance
//! version"). A response is sent when the type is first requested, when the
//! subscribed names change, or when the cache's version of the type moves —
//! never again for a version Envoy NACKed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{Shared, next_nonce};
use crate::cache::Snapshot;
use crate::nodes::{Answered, Mode, Sent};
use crate::resource::{CLUSTER, Resource, is_wildcard_type, push_rank, short_name};

struct Pending {
    version: String,
    resources: Vec<(String, String, u64)>,
    at: Instant,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// The cache version of the last *complete* response sent.
    sent_version: Option<u64>,
    /// Resources in the last response (to linger removed clusters).
    sent: BTreeMap<String, Arc<Resource>>,
    last_nonce: Option<String>,
    pending: HashMap<String, Pending>,
    /// Send even if the version did not move (first request, names changed).
    force: bool,
    /// Cache version for which an interim (lingering) CDS response was sent.
    interim_for: Option<u64>,
}

struct Stream {
    shared: Shared,
    held: super::held::Held,
    node: Node,
    group: String,
    types: BTreeMap<String, TypeState>,
    watches: StreamMap<String, WatchStream<u64>>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

pub(crate) async fn run(
    shared: Shared,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    // The first request names the node.
    let first = match requests.next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "SotW stream failed before its first request");
            return;
        }
        None => return,
    };
    let Some(node) = first.node.clone() else {
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first DiscoveryRequest on a stream must carry `node`",
            )))
            .await;
        return;
    };
    let group = (shared.grouping)(&node);
    shared.nodes.connected_stream(&node, &group, Mode::Sotw);
    let span = tracing::info_span!("ads", node = %node.id, mode = "sotw");
    let mut s = Stream {
        shared,
        held: Default::default(),
        node,
        group,
        types: BTreeMap::new(),
        watches: StreamMap::new(),
        tx,
    };
    let stopping = super::shutting_down(s.shared.shutdown.clone());
    tokio::pin!(stopping);
    let reason = async {
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take()
                && let Err(status) = s.on_request(req)
            {
                let msg = status.message().to_string();
                let _ = s.tx.send(Err(status)).await;
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
                Some(_) = s.watches.next() => {}
                () = &mut stopping => return "server shutting down".to_string(),
            }
        }
    }
    .instrument(span)
    .await;
    tracing::debug!(node = %s.node.id, %reason, "SotW stream ended");
    s.shared
        .nodes
        .disconnected_stream(&s.node.id, Mode::Sotw, &reason);
}

impl Stream {
    fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        if req.type_url.is_empty() {
            return Err(Status::invalid_argument(
                "DiscoveryRequest without type_url on an ADS stream",
            ));
        }
        let type_url = req.type_url.clone();
        if !self.types.contains_key(&type_url) {
            self.watches.insert(
                type_url.clone(),
                WatchStream::new(self.shared.cache.watch(&self.group, &type_url)),
            );
        }
        let first_request = !self.types.contains_key(&type_url);
        let st = self.types.entry(type_url.clone()).or_default();

        if !req.response_nonce.is_empty() && st.last_nonce.is_some() {
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                tracing::trace!(type_url, nonce = req.response_nonce, "stale nonce, ignored");
                return Ok(());
            }
            let nonce = req.response_nonce.clone();
            if let Some(p) = st.pending.remove(&nonce) {
                let answered = Answered {
                    type_url: type_url.clone(),
                    version: p.version,
                    nonce,
                    resources: p.resources,
                    removed: Vec::new(),
                    full_state: true,
                    latency: p.at.elapsed(),
                };
                match &req.error_detail {
                    Some(_) => self.held.rejected(&type_url),
                    None => self.held.replace(&type_url, &answered.resources),
                }
                match &req.error_detail {
                    Some(err) => {
                        tracing::warn!(
                            type_url = short_name(&type_url),
                            version = answered.version,
                            error = err.message,
                            "Envoy rejected (NACK)"
                        );
                        self.shared.nodes.nacked(
                            &self.node.id,
                            Mode::Sotw,
                            answered,
                            err.message.clone(),
                        )
                    }
                    None => self.shared.nodes.acked(&self.node.id, Mode::Sotw, answered),
                }
            }
            st.pending.clear();
        }

        let names: BTreeSet<String> = req
            .resource_names
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let wildcard = is_wildcard_type(&type_url)
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"));
        if first_request || names != st.names || wildcard != st.wildcard {
            st.force = true;
            st.names = names;
            st.wildcard = wildcard;
            self.shared
                .nodes
                .subscribed(&self.node.id, &type_url, st.wildcard, &st.names);
        }
        Ok(())
    }

    /// Sends every type that is due, clusters before what uses them; removed
    /// clusters linger in an interim response until the types that referred
    /// to them were sent.
    async fn sync(&mut self) -> Result<(), String> {
        let snap = self.shared.cache.snapshot(&self.group);
        if snap.generation == 0 {
            return Ok(());
        }
        let mut due: Vec<String> = self
            .types
            .iter()
            .filter(|(t, st)| st.force || st.sent_version != Some(snap.of_type(t).version))
            .map(|(t, _)| t.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by_key(|t| push_rank(t));
        // Routes wait until Envoy holds the clusters they name (see `held`).
        let subscribed: Vec<&str> = self.types.keys().map(String::as_str).collect();
        let (ready, waiting): (Vec<String>, Vec<String>) = due.iter().cloned().partition(|t| {
            let st = &self.types[t];
            let ts = snap.of_type(t);
            let chosen: Vec<_> = if st.wildcard {
                ts.resources.values().collect()
            } else {
                st.names
                    .iter()
                    .filter_map(|n| ts.resources.get(n))
                    .collect()
            };
            chosen
                .iter()
                .all(|r| self.held.ready(r, &snap, &subscribed))
        });
        // Clusters that go away linger (an interim CDS response with old and
        // new) until every type that may still refer to them was sent.
        let cluster_version = snap.of_type(CLUSTER).version;
        let linger = due.iter().any(|t| t == CLUSTER)
            && due.iter().any(|t| push_rank(t) > push_rank(CLUSTER))
            && self
                .types
                .get(CLUSTER)
                .is_some_and(|st| st.sent.keys().any(|n| snap.get(CLUSTER, n).is_none()));
        if linger && self.types[CLUSTER].interim_for != Some(cluster_version) {
            self.send(&snap, CLUSTER, true).await?;
        }
        for t in &ready {
            if linger && t == CLUSTER {
                continue;
            }
            self.send(&snap, t, false).await?;
        }
        if linger && waiting.is_empty() {
            self.send(&snap, CLUSTER, false).await?;
        }
        Ok(())
    }

    async fn send(&mut self, snap: &Snapshot, type_url: &str, interim: bool) -> Result<(), String> {
        let Some(st) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let ts = snap.of_type(type_url);
        let mut chosen: BTreeMap<String, Arc<Resource>> = if st.wildcard {
            (*ts.resources).clone()
        } else {
            st.names
                .iter()
                .filter_map(|n| ts.resources.get(n).map(|r| (n.clone(), r.clone())))
                .collect()
        };
        if interim {
            for (n, r) in &st.sent {
                chosen.entry(n.clone()).or_insert_with(|| r.clone());
            }
        }
        let version = if interim {
            format!("{}-linger", ts.version)
        } else {
            ts.version.to_string()
        };
        let nonce = next_nonce();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: chosen.values().map(|r| r.body().clone()).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = resp.encoded_len();
        tracing::info_span!(
            "xds_push",
            node = %self.node.id,
            r#type = short_name(type_url),
            version,
            resources = chosen.len(),
            bytes
        )
        .in_scope(|| tracing::debug!(interim, "push"));
        st.pending.insert(
            nonce.clone(),
            Pending {
                version: version.clone(),
                resources: chosen
                    .values()
                    .map(|r| {
                        (
                            r.name().to_string(),
                            r.version().to_string(),
                            r.generation(),
                        )
                    })
                    .collect(),
                at: Instant::now(),
            },
        );
        st.last_nonce = Some(nonce.clone());
        if interim {
            st.interim_for = Some(ts.version);
        } else {
            st.sent_version = Some(ts.version);
            st.force = false;
        }
        let names: Vec<String> = chosen.keys().cloned().collect();
        st.sent = chosen;
        self.shared.nodes.pushed(
            &self.node.id,
            Mode::Sotw,
            type_url,
            Sent {
                version,
                nonce,
                names,
                at: SystemTime::now(),
            },
            bytes,
        );
        self.tx
            .send(Ok(resp))
            .await
            .map_err(|_| "client went away".to_string())
    }
}
