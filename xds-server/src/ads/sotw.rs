//! State-of-the-World ADS streams.
//!
//! Per type the stream remembers the subscription, the last version sent and
//! its nonce. A request whose nonce is not the latest one sent for its type is
//! stale and ignored (xDS protocol, "ACK/NACK and resource type instance
//! version"). A response is sent when the type is first requested, when the
//! subscribed names change, or when the cache's version of the type moves —
//! never again for a version Envoy NACKed. Removed clusters linger until nothing
//! the client holds can name them (see `order`).

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
use super::{limits, order};
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
    /// The last response kept resources gone from the snapshot (clusters the client may still
    /// route to): a clean one follows once nothing can.
    lingering: bool,
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
        self.c.check_type(&req.type_url)?;
        self.c
            .shared
            .nodes
            .request_size(&req.type_url, req.encoded_len());
        self.c
            .check_names(&req.type_url, req.resource_names.len(), "subscribes to")?;
        let type_url = req.type_url.clone();
        self.c.watch(&type_url);
        let first_request = !self.types.contains_key(&type_url);
        if first_request && !req.version_info.is_empty() {
            // It held a configuration before this stream (from us or an earlier server).
            self.c.reconnect.holding = true;
        }
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
                            error = %crate::truncate(&err.message, 1000),
                            "Envoy rejected (NACK)"
                        );
                        self.c.shared.nodes.nacked(
                            self.c.stream,
                            &self.c.node.id,
                            Mode::Sotw,
                            answered,
                            crate::truncate(&err.message, 4096).into_owned(),
                            Vec::new(),
                        )
                    }
                    None => self.c.shared.nodes.acked(
                        self.c.stream,
                        &self.c.node.id,
                        Mode::Sotw,
                        answered,
                    ),
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
                .subscribed(self.c.stream, &type_url, st.wildcard, &st.names);
        }
        Ok(())
    }

    /// Sends every type that is due, clusters before what uses them. A cluster response keeps
    /// the clusters the client may still route to (those it was sent before and, when it came
    /// back holding an older configuration, those removed lately) while any type that may name
    /// them is not up to date; once nothing can, a clean response drops them.
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
        due.sort_by_key(|t| push_rank(t));
        // Routes wait until Envoy holds the clusters they name (see `held`).
        let subscribed: Vec<&str> = self.types.keys().map(String::as_str).collect();
        let ready: Vec<String> = due
            .into_iter()
            .filter(|t| {
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
            })
            .collect();
        for t in &ready {
            let keep_old = self.removals_blocked(&snap, t);
            self.send(&snap, t, keep_old).await?;
        }
        if self.types.get(CLUSTER).is_some_and(|st| st.lingering)
            && !self.removals_blocked(&snap, CLUSTER)
        {
            self.send(&snap, CLUSTER, false).await?;
        }
        Ok(())
    }

    /// Whether resources of `type_url` must not go away yet: a type that may name them is not
    /// up to date on this client (not sent at the current version, held back, still holding
    /// old resources itself) or, for a client that came back holding configuration, not asked
    /// for yet.
    fn removals_blocked(&self, snap: &Snapshot, type_url: &str) -> bool {
        let mut unsettled: BTreeSet<&str> = self
            .c
            .reconnect
            .unrequested(|t| self.types.contains_key(t))
            .into_iter()
            .collect();
        unsettled.extend(self.c.held.rejected_types());
        for (t, st) in &self.types {
            if st.force || st.lingering || st.sent_version != Some(snap.of_type(t).version) {
                unsettled.insert(t);
            }
        }
        order::blocked_removals(&unsettled).contains(type_url)
    }

    /// Sends the current resources of `type_url`; with `keep_old`, clusters the client may
    /// still route to stay in the response (see [`Self::sync`]).
    async fn send(
        &mut self,
        snap: &Snapshot,
        type_url: &str,
        keep_old: bool,
    ) -> Result<(), String> {
        let removed_lately = if keep_old && type_url == CLUSTER && self.c.reconnect.holding {
            self.c.shared.cache.recently_removed(&self.c.group, CLUSTER)
        } else {
            BTreeMap::new()
        };
        let Some(st) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let ts = snap.of_type(type_url);
        let mut chosen: BTreeMap<String, Arc<Resource>> = if st.wildcard {
            ts.resources
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect()
        } else {
            st.names
                .iter()
                .filter_map(|n| ts.resources.get(n).map(|r| (n.clone(), r.clone())))
                .collect()
        };
        let mut lingering = false;
        if keep_old && type_url == CLUSTER {
            for (n, r) in st.sent.iter().chain(removed_lately.iter()) {
                if !chosen.contains_key(n) {
                    chosen.insert(n.clone(), r.clone());
                    lingering = true;
                }
            }
        }
        let version = if lingering {
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
        .in_scope(|| tracing::debug!(lingering, "push"));
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
        limits::bound_pending(&mut st.pending, |p| p.at);
        st.last_nonce = Some(nonce.clone());
        st.sent_version = Some(ts.version);
        st.force = false;
        st.lingering = lingering;
        let names: Vec<String> = chosen.keys().cloned().collect();
        st.sent = chosen;
        self.c.shared.nodes.pushed(
            self.c.stream,
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
