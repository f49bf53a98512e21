//! Per-node state other code can read: what each Envoy was sent, what it ACKed
//! or NACKed, since when it is connected, and a feed of events.
//!
//! Readiness questions ("has node X ACKed resource R at generation ≥ g?") are
//! answered here: see [`Nodes::acked_generation`] and [`Nodes::wait_acked`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;

/// Which protocol variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// State of the world.
    Sotw,
    /// Incremental (delta).
    Delta,
}

impl Mode {
    /// `sotw` / `delta`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// The last response of one type sent to a node.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Version (SotW `version_info`; in Delta the type's generation).
    pub version: String,
    /// Response nonce.
    pub nonce: String,
    /// Names of resources sent (Delta: added/changed ones; removals prefixed `-`).
    pub names: Vec<String>,
    /// When it was sent.
    pub at: SystemTime,
}

/// A rejected response.
#[derive(Debug, Clone)]
pub struct Nack {
    /// Version of the rejected response.
    pub version: String,
    /// Its nonce.
    pub nonce: String,
    /// Envoy's error message (`error_detail.message`).
    pub error: String,
    /// When the NACK arrived.
    pub at: SystemTime,
}

/// One type's state for one node.
#[derive(Debug, Clone, Default)]
pub struct TypeState {
    /// Last response sent.
    pub sent: Option<Sent>,
    /// Version of the last ACKed response.
    pub acked_version: Option<String>,
    /// When that ACK arrived.
    pub acked_at: Option<SystemTime>,
    /// Set while the newest answered response was NACKed.
    pub last_nack: Option<Nack>,
    /// Resources the node holds, as far as ACKs tell: name → (content version,
    /// cache generation at which that content was made).
    pub acked: BTreeMap<String, (String, u64)>,
    /// Resources Envoy rejected and that are not sent again until they change: name → its
    /// error message (Delta streams isolate them so the rest of a response applies).
    pub rejected: BTreeMap<String, String>,
    /// Subscribed names (empty with a wildcard subscription).
    pub subscribed: BTreeSet<String>,
    /// Whether the subscription is a wildcard.
    pub wildcard: bool,
}

/// Everything known about one ADS stream: one Envoy, as it introduced itself.
///
/// Several Envoys may share a node id (replicas of one gateway): each has its own stream and
/// its own state, so one replica's ACK never stands in for another's.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The node as it introduced itself.
    pub node: Node,
    /// The stream's id, unique within this server's lifetime.
    pub stream: u64,
    /// Snapshot group it is served from.
    pub group: String,
    /// Protocol variant of the stream.
    pub mode: Mode,
    /// Whether the stream is open (closed ones are kept a while as history, without their
    /// per-resource maps).
    pub connected: bool,
    /// When the stream opened.
    pub connected_since: SystemTime,
    /// When it closed, and why.
    pub disconnected: Option<(SystemTime, String)>,
    /// Per type URL.
    pub types: BTreeMap<String, TypeState>,
}

impl NodeState {
    /// The node id.
    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// A copy without the per-resource maps (ACKed names, subscriptions, names of the last
    /// push): what the history of closed streams keeps.
    fn summary(&self) -> NodeState {
        // Field by field: a clone of the maps (tens of thousands of names per type at scale)
        // only to drop them would cost every disconnect a copy of the whole state.
        let types = self
            .types
            .iter()
            .map(|(type_url, t)| {
                let summary = TypeState {
                    sent: t.sent.as_ref().map(|sent| Sent {
                        version: sent.version.clone(),
                        nonce: sent.nonce.clone(),
                        names: Vec::new(),
                        at: sent.at,
                    }),
                    acked_version: t.acked_version.clone(),
                    acked_at: t.acked_at,
                    last_nack: t.last_nack.clone(),
                    acked: BTreeMap::new(),
                    rejected: BTreeMap::new(),
                    subscribed: BTreeSet::new(),
                    wildcard: t.wildcard,
                };
                (type_url.clone(), summary)
            })
            .collect();
        NodeState {
            node: self.node.clone(),
            stream: self.stream,
            group: self.group.clone(),
            mode: self.mode,
            connected: self.connected,
            connected_since: self.connected_since,
            disconnected: self.disconnected.clone(),
            types,
        }
    }
}

/// Closed streams remembered for `sluice xds nodes` (newest first); older ones are forgotten.
pub const HISTORY: usize = 32;

/// What happened, for watchers (`sluice xds watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A stream opened.
    Connect,
    /// A stream closed.
    Disconnect,
    /// A response was sent.
    Push,
    /// Envoy accepted a response.
    Ack,
    /// Envoy rejected a response.
    Nack,
}

/// One event of the feed.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: SystemTime,
    /// Node id.
    pub node_id: String,
    /// Protocol variant.
    pub mode: Mode,
    /// Type URL (empty for connect/disconnect).
    pub type_url: String,
    /// Version.
    pub version: String,
    /// Nonce.
    pub nonce: String,
    /// Resource names in a push (removals prefixed `-`).
    pub resources: Vec<String>,
    /// Encoded size of a push.
    pub bytes: usize,
    /// NACK message or disconnect reason.
    pub detail: String,
    /// Push-to-answer latency for ACK/NACK.
    pub latency: Option<Duration>,
}

impl Event {
    fn new(kind: EventKind, node_id: &str, mode: Mode) -> Self {
        Self {
            kind,
            at: SystemTime::now(),
            node_id: node_id.to_string(),
            mode,
            type_url: String::new(),
            version: String::new(),
            nonce: String::new(),
            resources: Vec::new(),
            bytes: 0,
            detail: String::new(),
            latency: None,
        }
    }
}

/// What a stream hands over when a response is ACKed or NACKed.
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    /// Resources in the response: name → (content version, generation).
    pub resources: Vec<(String, String, u64)>,
    /// Names removed by the response (Delta).
    pub removed: Vec<String>,
    /// SotW: the response replaced the whole set of this type.
    pub full_state: bool,
    pub latency: Duration,
}

#[derive(Default)]
struct Registry {
    /// Open streams by stream id.
    live: HashMap<u64, NodeState>,
    /// Closed streams, newest first, at most [`HISTORY`], without per-resource maps.
    history: VecDeque<NodeState>,
    next_stream: u64,
}

impl Registry {
    /// Open streams, sorted by node id then stream id.
    fn sorted_live(&self) -> Vec<&NodeState> {
        let mut v: Vec<&NodeState> = self.live.values().collect();
        v.sort_by(|a, b| (a.id(), a.stream).cmp(&(b.id(), b.stream)));
        v
    }

    /// How many node ids have an open stream.
    fn distinct_ids(&self) -> usize {
        self.live
            .values()
            .map(|n| n.node.id.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The open streams of node `id`.
    fn streams_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a NodeState> + 'a {
        self.live.values().filter(move |n| n.node.id == id)
    }
}

/// The registry of streams (one per connected Envoy), shared by all streams. State is kept per
/// stream and freed when the stream ends; a short history of closed streams stays for
/// `sluice xds nodes`.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Mutex<Registry>>,
    events: broadcast::Sender<Event>,
    acks: Arc<watch::Sender<u64>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes").finish_non_exhaustive()
    }
}

impl Nodes {
    /// An empty registry reporting to `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::default(),
            events: broadcast::channel(4096).0,
            acks: Arc::new(watch::channel(0).0),
            metrics,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    fn with_stream(&self, stream: u64, f: impl FnOnce(&mut NodeState)) {
        self.with(|r| {
            if let Some(n) = r.live.get_mut(&stream) {
                f(n)
            }
        })
    }

    /// A copy of every open stream's state (sorted by node id), then the history of closed
    /// ones (newest first).
    pub fn list(&self) -> Vec<NodeState> {
        self.with(|r| {
            r.sorted_live()
                .into_iter()
                .cloned()
                .chain(r.history.iter().cloned())
                .collect()
        })
    }

    /// Runs `f` over every open stream's state (sorted by node id) without copying it: at 10k
    /// KIngresses a node's ACK maps hold tens of thousands of names, and readiness looks at
    /// them often. The registry is locked while `f` runs: keep it short and do not await in it.
    pub fn inspect<R>(&self, f: impl FnOnce(Vec<&NodeState>) -> R) -> R {
        self.with(|r| f(r.sorted_live()))
    }

    /// A copy of node `node_id`'s state: its newest open stream, else its most recently
    /// closed one (from the history, without per-resource maps).
    pub fn get(&self, node_id: &str) -> Option<NodeState> {
        self.with(|r| {
            r.streams_of(node_id)
                .max_by_key(|n| n.stream)
                .cloned()
                .or_else(|| r.history.iter().find(|n| n.node.id == node_id).cloned())
        })
    }

    /// Ids of nodes with an open stream (each once, sorted).
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<_> = self.with(|r| r.live.values().map(|n| n.node.id.clone()).collect());
        v.sort();
        v.dedup();
        v
    }

    /// Number of open streams and of closed ones kept as history (for tests and metrics:
    /// both must return to their level when clients go).
    pub fn counts(&self) -> (usize, usize) {
        self.with(|r| (r.live.len(), r.history.len()))
    }

    /// Subscribes to the event feed.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The generation at which the content that node `node_id` ACKed for resource `name` of
    /// `type_url` was made, if it holds that resource. With several open streams of that node
    /// id (replicas), the oldest content any of them holds: all of them must have ACKed it.
    pub fn acked_generation(&self, node_id: &str, type_url: &str, name: &str) -> Option<u64> {
        self.with(|r| {
            let mut out: Option<u64> = None;
            for n in r.streams_of(node_id) {
                let g = n.types.get(type_url)?.acked.get(name).map(|(_, g)| *g)?;
                out = Some(out.map_or(g, |o| o.min(g)));
            }
            out
        })
    }

    /// Waits until node `node_id` (every open stream of it) has ACKed resource `name` of
    /// `type_url` at a generation ≥ `min_generation` (the generation [`crate::SnapshotCache`]
    /// returned for the change). Returns at once if it already has.
    pub async fn wait_acked(&self, node_id: &str, type_url: &str, name: &str, min_generation: u64) {
        let mut rx = self.acks.subscribe();
        loop {
            if self
                .acked_generation(node_id, type_url, name)
                .is_some_and(|g| g >= min_generation)
            {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that changes on every ACK, for callers that wait on several
    /// conditions at once.
    pub fn ack_changes(&self) -> watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// Registers a new stream; returns its id, which every later call about it names.
    pub(crate) fn connected_stream(&self, node: &Node, group: &str, mode: Mode) -> u64 {
        let (stream, n) = self.with(|r| {
            r.next_stream += 1;
            let stream = r.next_stream;
            r.live.insert(
                stream,
                NodeState {
                    node: node.clone(),
                    stream,
                    group: group.to_string(),
                    mode,
                    connected: true,
                    connected_since: SystemTime::now(),
                    disconnected: None,
                    types: BTreeMap::new(),
                },
            );
            (stream, r.distinct_ids())
        });
        self.metrics.stream_opened(mode.as_str());
        self.metrics.set_nodes(n);
        self.emit(Event::new(EventKind::Connect, &node.id, mode));
        stream
    }

    /// A stream ended: its state moves to the (bounded) history without its per-resource maps.
    pub(crate) fn disconnected_stream(&self, stream: u64, reason: &str) {
        let (gone, n) = self.with(|r| {
            let gone = r.live.remove(&stream).map(|st| {
                let mut h = st.summary();
                h.connected = false;
                h.disconnected = Some((SystemTime::now(), reason.to_string()));
                r.history.push_front(h);
                r.history.truncate(HISTORY);
                (st.node.id, st.mode)
            });
            (gone, r.distinct_ids())
        });
        self.metrics.set_nodes(n);
        if let Some((node_id, mode)) = gone {
            self.metrics.stream_closed(mode.as_str());
            let mut e = Event::new(EventKind::Disconnect, &node_id, mode);
            e.detail = reason.to_string();
            self.emit(e);
            // Readiness waiting on this stream's ACKs must look again.
            self.acks.send_modify(|v| *v += 1);
        }
    }

    /// A Delta subscription change: names added and removed (the whole set
    /// is not copied on every request — Envoy may send thousands).
    pub(crate) fn subscription_changed(
        &self,
        stream: u64,
        type_url: &str,
        wildcard: bool,
        added: &[String],
        removed: &[String],
    ) {
        self.with_stream(stream, |n| {
            let t = n.types.entry(type_url.to_string()).or_default();
            t.wildcard = wildcard;
            for a in added.iter().filter(|a| *a != "*") {
                t.subscribed.insert(a.clone());
            }
            for r in removed {
                t.subscribed.remove(r);
            }
        });
    }

    /// A SotW subscription: the whole set of names.
    pub(crate) fn subscribed(
        &self,
        stream: u64,
        type_url: &str,
        wildcard: bool,
        names: &BTreeSet<String>,
    ) {
        self.with_stream(stream, |n| {
            let t = n.types.entry(type_url.to_string()).or_default();
            t.wildcard = wildcard;
            t.subscribed = names.clone();
        });
    }

    /// What a reconnecting Delta client says it holds (`initial_resource_versions`): those
    /// resources count as ACKed at the version it names (generation unknown: 0).
    pub(crate) fn holds(&self, stream: u64, type_url: &str, versions: &HashMap<String, String>) {
        if versions.is_empty() {
            return;
        }
        self.with_stream(stream, |n| {
            let t = n.types.entry(type_url.to_string()).or_default();
            for (name, v) in versions {
                t.acked.insert(name.clone(), (v.clone(), 0));
            }
        });
        self.acks.send_modify(|v| *v += 1);
    }

    /// A request of `bytes` for `type_url` arrived (a served type: checked before).
    pub(crate) fn request_size(&self, type_url: &str, bytes: usize) {
        self.metrics.request(type_url, bytes);
    }

    pub(crate) fn pushed(
        &self,
        stream: u64,
        node_id: &str,
        mode: Mode,
        type_url: &str,
        sent: Sent,
        bytes: usize,
    ) {
        self.metrics.pushed(type_url, bytes, sent.names.len());
        let mut e = Event::new(EventKind::Push, node_id, mode);
        e.type_url = type_url.to_string();
        e.version = sent.version.clone();
        e.nonce = sent.nonce.clone();
        e.resources = sent.names.clone();
        e.bytes = bytes;
        self.with_stream(stream, |n| {
            n.types.entry(type_url.to_string()).or_default().sent = Some(sent);
        });
        self.emit(e);
    }

    pub(crate) fn acked(&self, stream: u64, node_id: &str, mode: Mode, a: Answered) {
        self.metrics.answered(&a.type_url, true, a.latency);
        let mut e = Event::new(EventKind::Ack, node_id, mode);
        e.type_url = a.type_url.clone();
        e.version = a.version.clone();
        e.nonce = a.nonce.clone();
        e.latency = Some(a.latency);
        self.with_stream(stream, |n| {
            let t = n.types.entry(a.type_url.clone()).or_default();
            t.acked_version = Some(a.version.clone());
            t.acked_at = Some(SystemTime::now());
            t.last_nack = None;
            if a.full_state {
                t.acked.clear();
            }
            for name in &a.removed {
                t.acked.remove(name);
            }
            for (name, version, generation) in a.resources {
                t.rejected.remove(&name);
                t.acked.insert(name, (version, generation));
            }
        });
        self.acks.send_modify(|v| *v += 1);
        self.emit(e);
    }

    /// A NACK of response `a`; `rejected` are the resources now kept apart (Delta).
    pub(crate) fn nacked(
        &self,
        stream: u64,
        node_id: &str,
        mode: Mode,
        a: Answered,
        error: String,
        rejected: Vec<String>,
    ) {
        self.metrics.answered(&a.type_url, false, a.latency);
        let mut e = Event::new(EventKind::Nack, node_id, mode);
        e.type_url = a.type_url.clone();
        e.version = a.version.clone();
        e.nonce = a.nonce.clone();
        e.detail = error.clone();
        e.latency = Some(a.latency);
        self.with_stream(stream, |n| {
            let t = n.types.entry(a.type_url.clone()).or_default();
            for name in rejected {
                t.rejected.insert(name, error.clone());
            }
            t.last_nack = Some(Nack {
                version: a.version,
                nonce: a.nonce,
                error,
                at: SystemTime::now(),
            });
        });
        self.acks.send_modify(|v| *v += 1);
        self.emit(e);
    }
}
