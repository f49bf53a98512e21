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
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use super::next_nonce;
use super::stream::Common;
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

pub(crate) struct Stream {
    c: Common<DiscoveryResponse>,
    types: BTreeMap<String, TypeState>,
}

impl super::stream::Variant for Stream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const MODE: Mode = Mode::Sotw;

    fn node(req: &Self::Req) -> Option<&Node> {
        req.node.as_ref()
    }

    fn new(c: Common<Self::Resp>) -> Self {
        Self {
            c,
            types: BTreeMap::new(),
        }
    }

    fn common(&mut self) -> &mut Common<Self::Resp> {
        &mut self.c
    }

    fn on_request(&mut self, req: Self::Req) -> Result<(), Status> {
        Stream::on_request(self, req)
    }

    async fn sync(&mut self) -> Result<(), String> {
        Stream::sync(self).await
    }
}

impl Stream {
    fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        if req.type_url.is_empty() {
            return Err(Status::invalid_argument(
                "DiscoveryRequest without type_url on an ADS stream",
            ));
        }
        let type_url = req.type_url.clone();
        self.c.watch(&type_url);
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
                    Some(_) => self.c.held.rejected(&type_url),
                    None => self.c.held.replace(&type_url, &answered.resources),
                }
                match &req.error_detail {
                    Some(err) => {
                        tracing::warn!(
                            type_url = short_name(&type_url),
                            version = answered.version,
                            error = err.message,
                            "Envoy rejected (NACK)"
                        );
                        self.c.shared.nodes.nacked(
                            &self.c.node.id,
                            Mode::Sotw,
                            answered,
                            err.message.clone(),
                        )
                    }
                    None => self
                        .c
                        .shared
                        .nodes
                        .acked(&self.c.node.id, Mode::Sotw, answered),
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
            self.c
                .shared
                .nodes
                .subscribed(&self.c.node.id, &type_url, st.wildcard, &st.names);
        }
        Ok(())
    }

    /// Sends every type that is due, clusters before what uses them; removed
    /// clusters linger in an interim response until the types that referred
    /// to them were sent.
    async fn sync(&mut self) -> Result<(), String> {
        let snap = self.c.shared.cache.snapshot(&self.c.group);
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
                .all(|r| self.c.held.ready(r, &snap, &subscribed))
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
            resources: chosen.values().map(|r| r.body()).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = resp.encoded_len();
        tracing::info_span!(
            "xds_push",
            node = %self.c.node.id,
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
        self.c.shared.nodes.pushed(
            &self.c.node.id,
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
        self.c.send(resp).await
    }
}
