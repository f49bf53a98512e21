//! Incremental (Delta) ADS streams.
//!
//! Per type the stream tracks what the client holds: name → content version,
//! seeded from `initial_resource_versions` when a client reconnects, updated on
//! every response (NACKed content included, so a rejected version is never
//! resent in a loop — only a new version is). Each round sends only resources
//! whose version differs, and removals for resources that went away. When one
//! round touches several types, additions go first in make-before-break order
//! and removals last in the reverse order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use super::held::{Held, Recheck};
use super::next_nonce;
use super::quarantine::Quarantine;
use super::stream::Common;
use super::{limits, order};
use crate::cache::Snapshot;
use crate::nodes::{Answered, Mode, Sent};
use crate::resource::{Resource, is_wildcard_type, push_rank, short_name};

struct Pending {
    version: String,
    resources: Vec<(String, String, u64)>,
    removed: Vec<String>,
    at: Instant,
}

/// Most resources one Delta response carries; a larger change is sent as several.
const MAX_RESOURCES_PER_RESPONSE: usize = 1000;

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the client holds (or was last sent): name → content version.
    /// Versions as [`Resource::version_id`]: a number, not a string per name.
    known: HashMap<String, u64>,
    /// Cache version this type was last diffed against.
    synced: Option<u64>,
    /// Everything must be diffed again (first request, wildcard toggled).
    dirty: bool,
    /// Names subscribed since the last diff: only these need a look when the
    /// cache did not move (Envoy subscribes scopes' routes one by one).
    fresh: BTreeSet<String>,
    /// Names of a large change left for later by flow control (see `sync`), oldest first:
    /// looked at as answers free room, so a cold start's 200k clusters cost one look each
    /// rather than a diff of the whole type per answer.
    backlog: VecDeque<String>,
    /// Resources held back until what they name is usable on the client (routes whose
    /// clusters are warming). Each is looked at again only once one of the names it depends
    /// on was ACKed ([`Held::depends_on`]): during a cold start's 200k cluster ACKs, a route
    /// costs a look per ACK of its own clusters, not one per ACK of anything.
    waiting: BTreeSet<String>,
    /// Dependency name → the waiting resources that depend on it.
    waits_on: HashMap<String, BTreeSet<String>>,
    /// Waiting resource → its dependency names (to unindex it).
    deps_of: HashMap<String, Vec<String>>,
    /// Whether this type was answered at least once on the stream: the
    /// first answer is sent even when empty, so Envoy's initial fetch of a
    /// type with no resources completes at once instead of timing out.
    answered: bool,
    pending: HashMap<String, Pending>,
    /// What Envoy rejected, kept apart (see `quarantine`).
    quarantine: Quarantine,
}

impl TypeState {
    /// Holds `name` back until one of `deps` is ACKed.
    fn wait(&mut self, name: String, deps: Vec<String>) {
        self.unwait(&name);
        for d in &deps {
            self.waits_on
                .entry(d.clone())
                .or_default()
                .insert(name.clone());
        }
        self.deps_of.insert(name.clone(), deps);
        self.waiting.insert(name);
    }

    /// `name` no longer waits.
    fn unwait(&mut self, name: &str) {
        self.waiting.remove(name);
        for d in self.deps_of.remove(name).unwrap_or_default() {
            if let Some(set) = self.waits_on.get_mut(&d) {
                set.remove(name);
                if set.is_empty() {
                    self.waits_on.remove(&d);
                }
            }
        }
    }

    fn clear_waiting(&mut self) {
        self.waiting.clear();
        self.waits_on.clear();
        self.deps_of.clear();
    }

    /// The waiting names to look at again after `recheck`.
    fn rechecking<'a>(&'a self, recheck: &'a Recheck) -> BTreeSet<&'a str> {
        if self.waiting.is_empty() {
            return BTreeSet::new();
        }
        match recheck {
            Recheck::All => self.waiting.iter().map(String::as_str).collect(),
            Recheck::Names(names) => names
                .iter()
                .filter_map(|n| self.waits_on.get(n))
                .flatten()
                .map(String::as_str)
                .collect(),
        }
    }
}

pub(crate) struct Stream {
    c: Common<DeltaDiscoveryResponse>,
    types: BTreeMap<String, TypeState>,
}

/// One type's changes in a round.
struct Diff<'a> {
    type_url: String,
    version: u64,
    upserts: Vec<&'a std::sync::Arc<Resource>>,
    removals: Vec<String>,
}

impl super::stream::Variant for Stream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const MODE: Mode = Mode::Delta;

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
    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        self.c.check_type(&req.type_url)?;
        self.c
            .shared
            .nodes
            .request_size(&req.type_url, req.encoded_len());
        let type_url = req.type_url.clone();
        let first_request = !self.types.contains_key(&type_url);
        let subscribed = self.types.get(&type_url).map_or(0, |t| t.subscribed.len());
        self.c.check_names(
            &type_url,
            subscribed + req.resource_names_subscribe.len(),
            "subscribes to",
        )?;
        if first_request {
            self.c.check_names(
                &type_url,
                req.initial_resource_versions.len(),
                "says it holds",
            )?;
        }
        self.c.watch(&type_url);
        let st = self.types.entry(type_url.clone()).or_default();

        if !req.response_nonce.is_empty() {
            match st.pending.remove(&req.response_nonce) {
                Some(p) => {
                    let answered = Answered {
                        type_url: type_url.clone(),
                        version: p.version,
                        nonce: req.response_nonce.clone(),
                        resources: p.resources,
                        removed: p.removed,
                        full_state: false,
                        latency: p.at.elapsed(),
                    };
                    match &req.error_detail {
                        Some(_) => self.c.held.rejected(&type_url),
                        None => {
                            self.c
                                .held
                                .apply(&type_url, &answered.resources, &answered.removed)
                        }
                    }
                    match &req.error_detail {
                        Some(err) => {
                            // Keep the culprit apart; send the rest again.
                            let (bad, again) =
                                st.quarantine.nacked(&answered.resources, &err.message);
                            for n in &again {
                                st.known.remove(n);
                            }
                            st.synced = None;
                            tracing::warn!(
                                type_url = short_name(&type_url),
                                version = answered.version,
                                error = %crate::truncate(&err.message, 1000),
                                rejected = ?bad,
                                sent_again = again.len(),
                                "Envoy rejected (NACK)"
                            );
                            self.c.shared.nodes.nacked(
                                self.c.stream,
                                &self.c.node.id,
                                Mode::Delta,
                                answered,
                                crate::truncate(&err.message, 4096).into_owned(),
                                bad,
                            )
                        }
                        None => self.c.shared.nodes.acked(
                            self.c.stream,
                            &self.c.node.id,
                            Mode::Delta,
                            answered,
                        ),
                    }
                }
                None => tracing::trace!(type_url, nonce = req.response_nonce, "stale nonce"),
            }
        }

        let changes_subscription =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if first_request {
            st.dirty = true;
        }
        if first_request {
            st.known = req
                .initial_resource_versions
                .iter()
                .map(|(n, v)| (n.clone(), crate::resource::version_id(v)))
                .collect();
            self.c.held.seed(&type_url, &req.initial_resource_versions);
            if !req.initial_resource_versions.is_empty() {
                self.c.reconnect.holding = true;
            }
            self.c
                .shared
                .nodes
                .holds(self.c.stream, &type_url, &req.initial_resource_versions);
            // A reconnecting client that lists what it holds is initialised
            // already: it needs no empty first answer.
            st.answered = !req.initial_resource_versions.is_empty();
            st.wildcard = is_wildcard_type(&type_url) && req.resource_names_subscribe.is_empty();
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                st.wildcard = true;
                st.dirty = true;
            } else {
                st.subscribed.insert(n.clone());
                st.fresh.insert(n.clone());
                // An explicit subscription asks for the resource even if it
                // was sent before (e.g. Envoy re-subscribes a cluster's
                // assignment after the cluster changed).
                if !first_request {
                    st.known.remove(n);
                }
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                st.wildcard = false;
                st.dirty = true;
            } else {
                st.subscribed.remove(n);
                st.fresh.remove(n);
                st.unwait(n);
                st.known.remove(n);
            }
        }
        if changes_subscription || first_request {
            self.c.shared.nodes.subscription_changed(
                self.c.stream,
                &type_url,
                st.wildcard,
                &req.resource_names_subscribe,
                &req.resource_names_unsubscribe,
            );
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), String> {
        let snap = self.c.shared.cache.snapshot(&self.c.group);
        if snap.generation == 0 {
            return Ok(());
        }
        let (mut diffs, held) = self.diff(&snap);
        // Removals wait while something the client may hold can still name what goes: a route
        // held back for clusters not warm yet, or (reconnected) a type not asked for again yet.
        let mut unsettled: BTreeSet<&str> = held.iter().map(String::as_str).collect();
        unsettled.extend(self.c.reconnect.unrequested(|t| self.types.contains_key(t)));
        unsettled.extend(self.c.held.rejected_types());
        let blocked = order::blocked_removals(&unsettled);
        if !blocked.is_empty() {
            for d in diffs.iter_mut() {
                if blocked.contains(d.type_url.as_str()) && !d.removals.is_empty() {
                    d.removals.clear();
                    if let Some(st) = self.types.get_mut(&d.type_url) {
                        st.synced = None;
                    }
                }
            }
            diffs.retain(|d| {
                !d.upserts.is_empty()
                    || !d.removals.is_empty()
                    || self.types.get(&d.type_url).is_some_and(|st| !st.answered)
            });
        }
        if diffs.is_empty() {
            return Ok(());
        }
        diffs.sort_by_key(|d| push_rank(&d.type_url));
        // Removals wait for every addition of the round when several types
        // change together; a lone type sends both in one response.
        let split = diffs.iter().filter(|d| !d.upserts.is_empty()).count() > 0 && diffs.len() > 1;
        let mut later = Vec::new();
        for d in diffs.iter_mut() {
            let removals = if split {
                std::mem::take(&mut d.removals)
            } else {
                Vec::new()
            };
            if !removals.is_empty() {
                later.push((d.type_url.clone(), d.version, removals));
            }
            let first = self.types.get(&d.type_url).is_some_and(|st| !st.answered);
            if !d.upserts.is_empty() || !d.removals.is_empty() || first {
                // A large change (a cold start's 20k clusters) goes out as several responses:
                // each is encoded into one buffer that tonic keeps at its largest size, and
                // Envoy applies and ACKs each on its own. Removals ride with the last.
                let mut rest: &[_] = &d.upserts;
                // Looking for what Envoy rejects: one resource per response.
                let per_response = match self.types.get(&d.type_url) {
                    Some(st) if st.quarantine.isolating => 1,
                    _ => MAX_RESOURCES_PER_RESPONSE,
                };
                loop {
                    // Flow control: while MAX_PENDING responses of this type are unanswered,
                    // the rest waits in the backlog for answers (each frees room for one more
                    // response). Sending on would drop the oldest unanswered responses'
                    // tracking, and the ACKs of the clusters in them with it: routes naming
                    // those clusters would be held back for good (seen at 100k clusters).
                    if self
                        .types
                        .get(&d.type_url)
                        .is_some_and(|st| st.pending.len() >= limits::MAX_PENDING)
                    {
                        if let Some(st) = self.types.get_mut(&d.type_url) {
                            st.backlog.extend(rest.iter().map(|r| r.name().to_string()));
                            // Removals ride with the last response: look at them again too.
                            st.fresh.extend(std::mem::take(&mut d.removals));
                        }
                        break;
                    }
                    let (chunk, more) = rest.split_at(rest.len().min(per_response));
                    rest = more;
                    let removed = if rest.is_empty() {
                        std::mem::take(&mut d.removals)
                    } else {
                        Vec::new()
                    };
                    self.send(&d.type_url, d.version, chunk, removed).await?;
                    if rest.is_empty() {
                        break;
                    }
                }
            }
        }
        for (type_url, version, removals) in later.into_iter().rev() {
            self.send(&type_url, version, &[], removals).await?;
        }
        Ok(())
    }

    /// Per type, what differs from what the client holds; and the types with resources held
    /// back because what they name is not usable on the client yet.
    fn diff<'a>(&mut self, snap: &'a Snapshot) -> (Vec<Diff<'a>>, BTreeSet<String>) {
        let mut out = Vec::new();
        let subscribed: Vec<&str> = self.types.keys().map(String::as_str).collect();
        let mut deferred = Vec::new();
        let recheck = self.c.held.take_acked();
        for (type_url, st) in self.types.iter() {
            let Some(ts) = snap.types.get(type_url) else {
                continue;
            };
            // What to look at: the names changed since this type was last diffed (the cache's
            // change log) plus new subscriptions; everything when the stream is new, the log
            // does not reach back far enough, or something forced it.
            let changed = match st.synced {
                _ if st.dirty => None,
                Some(v) if v == ts.version => Some(None),
                Some(v) => ts.changes.since(v).map(Some),
                None => None,
            };
            let full = changed.is_none();
            // As much of the backlog as the free room for responses can carry.
            let room =
                limits::MAX_PENDING.saturating_sub(st.pending.len()) * MAX_RESOURCES_PER_RESPONSE;
            let from_backlog = if full { 0 } else { room.min(st.backlog.len()) };
            let rechecking = if full {
                BTreeSet::new()
            } else {
                st.rechecking(&recheck)
            };
            let look_waiting = !rechecking.is_empty();
            if !full
                && st.fresh.is_empty()
                && from_backlog == 0
                && !look_waiting
                && changed.as_ref().is_some_and(Option::is_none)
            {
                continue;
            }
            let mut upserts = Vec::new();
            let mut removals = Vec::new();
            // Waiting names looked at this round: they wait on only if held back again.
            let mut settled = Vec::new();
            let differs = |known: &HashMap<String, u64>, r: &Resource| {
                known.get(r.name()).is_none_or(|v| *v != r.version_id())
            };
            if let Some(changed) = changed {
                // Only these names can differ from what the client holds.
                let mut look: BTreeSet<&str> = st.fresh.iter().map(String::as_str).collect();
                look.extend(changed.into_iter().flatten());
                look.extend(st.backlog.iter().take(from_backlog).map(String::as_str));
                look.extend(rechecking.iter().copied());
                for n in look {
                    // Looked at now: it waits on only if held back again.
                    if st.waiting.contains(n) {
                        settled.push(n.to_string());
                    }
                    let wanted = st.wildcard || st.subscribed.contains(n);
                    match ts.resources.get(n) {
                        Some(r) if wanted && differs(&st.known, r) => upserts.push(r),
                        None if wanted && st.known.contains_key(n) => removals.push(n.to_string()),
                        _ => {}
                    }
                }
            } else if st.wildcard {
                upserts.extend(ts.resources.values().filter(|r| differs(&st.known, r)));
                removals.extend(
                    st.known
                        .keys()
                        .filter(|n| !ts.resources.contains_key(*n) && !st.subscribed.contains(*n))
                        .cloned(),
                );
            }
            if full {
                for n in &st.subscribed {
                    match ts.resources.get(n) {
                        Some(r) if !st.wildcard && differs(&st.known, r) => upserts.push(r),
                        None if st.known.contains_key(n) => removals.push(n.clone()),
                        _ => {}
                    }
                }
            }
            removals.sort();
            let first_answer = !st.answered;
            upserts.retain(|r| !st.quarantine.blocks(r));
            let mut held_back = Vec::new();
            upserts.retain(|r| {
                let ready = self.c.held.ready(r, snap, &subscribed);
                if !ready {
                    held_back.push((r.name().to_string(), Held::depends_on(r, snap)));
                }
                ready
            });
            deferred.push((
                type_url.clone(),
                ts.version,
                held_back,
                if full { usize::MAX } else { from_backlog },
                full,
                settled,
            ));
            if !upserts.is_empty() || !removals.is_empty() || first_answer {
                out.push(Diff {
                    type_url: type_url.clone(),
                    version: ts.version,
                    upserts,
                    removals,
                });
            }
        }
        // Held-back resources are looked at again once the client ACKed more.
        let mut held = BTreeSet::new();
        for (type_url, version, held_back, from_backlog, full, settled) in deferred {
            if let Some(st) = self.types.get_mut(&type_url) {
                st.synced = Some(version);
                st.dirty = false;
                st.fresh.clear();
                if full {
                    st.clear_waiting();
                }
                for n in &settled {
                    st.unwait(n);
                }
                for (n, deps) in held_back {
                    st.wait(n, deps);
                }
                // A full look covered the whole backlog.
                let drained = from_backlog.min(st.backlog.len());
                st.backlog.drain(..drained);
                if let Some(ts) = snap.types.get(&type_url) {
                    st.quarantine.forget_stale(ts);
                }
                // Isolation ends once everything of the rejected response was answered alone.
                let sending = out
                    .iter()
                    .any(|d: &Diff| d.type_url == type_url && !d.upserts.is_empty());
                if st.quarantine.isolating && st.pending.is_empty() && !sending {
                    st.quarantine.isolating = false;
                }
            }
        }
        // Every type still holding something back, looked at this round or not.
        for (type_url, st) in &self.types {
            if !st.waiting.is_empty() {
                held.insert(type_url.clone());
            }
        }
        (out, held)
    }

    async fn send(
        &mut self,
        type_url: &str,
        version: u64,
        upserts: &[&std::sync::Arc<Resource>],
        removed: Vec<String>,
    ) -> Result<(), String> {
        let Some(st) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        st.answered = true;
        let nonce = next_nonce();
        let version_s = version.to_string();
        let resp = DeltaDiscoveryResponse {
            system_version_info: version_s.clone(),
            resources: upserts
                .iter()
                .map(|r| WireResource {
                    name: r.name().to_string(),
                    version: r.version().to_string(),
                    resource: Some(r.body()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_string(),
            removed_resources: removed.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = resp.encoded_len();
        tracing::info_span!(
            "xds_push",
            node = %self.c.node.id,
            r#type = short_name(type_url),
            version,
            resources = upserts.len(),
            removed = removed.len(),
            bytes
        )
        .in_scope(|| tracing::debug!("push"));
        for r in upserts {
            st.known.insert(r.name().to_string(), r.version_id());
        }
        for n in &removed {
            st.known.remove(n);
        }
        let names: Vec<String> = upserts
            .iter()
            .map(|r| r.name().to_string())
            .chain(removed.iter().map(|n| format!("-{n}")))
            .collect();
        st.pending.insert(
            nonce.clone(),
            Pending {
                version: version_s.clone(),
                resources: upserts
                    .iter()
                    .map(|r| {
                        (
                            r.name().to_string(),
                            r.version().to_string(),
                            r.generation(),
                        )
                    })
                    .collect(),
                removed,
                at: Instant::now(),
            },
        );
        limits::bound_pending(&mut st.pending, |p| p.at);
        self.c.shared.nodes.pushed(
            self.c.stream,
            &self.c.node.id,
            Mode::Delta,
            type_url,
            Sent {
                version: version_s,
                nonce,
                names,
                at: SystemTime::now(),
            },
            bytes,
        );
        self.c.send(resp).await
    }
}
