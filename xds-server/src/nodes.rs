//! Per-node state other code can read: what each Envoy was sent, what it ACKed
//! or NACKed, since when it is connected, and a feed of events.
//!
//! Readiness questions ("has node X ACKed resource R at generation ≥ g?") are
//! answered here: see [`Nodes::acked_generation`] and [`Nodes::wait_acked`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Subscribed names (empty with a wildcard subscription).
    pub subscribed: BTreeSet<String>,
    /// Whether the subscription is a wildcard.
    pub wildcard: bool,
}

/// Everything known about one node.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The node as it introduced itself.
    pub node: Node,
    /// Snapshot group it is served from.
    pub group: String,
    /// Protocol variant of its newest stream.
    pub mode: Mode,
    /// Open streams (0 = disconnected).
    pub streams: u32,
    /// Since when its newest stream is open.
    pub connected_since: SystemTime,
    /// Per type URL.
    pub types: BTreeMap<String, TypeState>,
}

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

/// The registry of nodes, shared by all streams.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Mutex<HashMap<String, NodeState>>>,
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

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, NodeState>) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// A copy of every node's state, sorted by id.
    pub fn list(&self) -> Vec<NodeState> {
        let mut v: Vec<_> = self.with(|m| m.values().cloned().collect());
        v.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        v
    }

    /// Runs `f` over every node's state (sorted by id) without copying it: at 10k KIngresses
    /// a node's ACK maps hold tens of thousands of names, and readiness looks at them often.
    /// The nodes are locked while `f` runs: keep it short and do not await in it.
    pub fn inspect<R>(&self, f: impl FnOnce(Vec<&NodeState>) -> R) -> R {
        self.with(|m| {
            let mut v: Vec<&NodeState> = m.values().collect();
            v.sort_by(|a, b| a.node.id.cmp(&b.node.id));
            f(v)
        })
    }

    /// A copy of one node's state.
    pub fn get(&self, node_id: &str) -> Option<NodeState> {
        self.with(|m| m.get(node_id).cloned())
    }

    /// Ids of nodes with an open stream.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<_> = self.with(|m| {
            m.values()
                .filter(|n| n.streams > 0)
                .map(|n| n.node.id.clone())
                .collect()
        });
        v.sort();
        v
    }

    /// Subscribes to the event feed.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The generation at which the content that node `node_id` ACKed for
    /// resource `name` of `type_url` was made, if it holds that resource.
    pub fn acked_generation(&self, node_id: &str, type_url: &str, name: &str) -> Option<u64> {
        self.with(|m| {
            m.get(node_id)?
                .types
                .get(type_url)?
                .acked
                .get(name)
                .map(|(_, g)| *g)
        })
    }

    /// Waits until node `node_id` has ACKed resource `name` of `type_url` at a
    /// generation ≥ `min_generation` (the generation [`crate::SnapshotCache`]
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

    pub(crate) fn connected_stream(&self, node: &Node, group: &str, mode: Mode) {
        let n = self.with(|m| {
            let e = m.entry(node.id.clone()).or_insert_with(|| NodeState {
                node: node.clone(),
                group: group.to_string(),
                mode,
                streams: 0,
                connected_since: SystemTime::now(),
                types: BTreeMap::new(),
            });
            e.node = node.clone();
            e.group = group.to_string();
            e.mode = mode;
            e.streams += 1;
            e.connected_since = SystemTime::now();
            m.values().filter(|n| n.streams > 0).count()
        });
        self.metrics.stream_opened(mode.as_str());
        self.metrics.set_nodes(n);
        self.emit(Event::new(EventKind::Connect, &node.id, mode));
    }

    pub(crate) fn disconnected_stream(&self, node_id: &str, mode: Mode, reason: &str) {
        let n = self.with(|m| {
            if let Some(e) = m.get_mut(node_id) {
                e.streams = e.streams.saturating_sub(1);
            }
            m.values().filter(|n| n.streams > 0).count()
        });
        self.metrics.stream_closed(mode.as_str());
        self.metrics.set_nodes(n);
        let mut e = Event::new(EventKind::Disconnect, node_id, mode);
        e.detail = reason.to_string();
        self.emit(e);
    }

    /// A Delta subscription change: names added and removed (the whole set
    /// is not copied on every request — Envoy may send thousands).
    pub(crate) fn subscription_changed(
        &self,
        node_id: &str,
        type_url: &str,
        wildcard: bool,
        added: &[String],
        removed: &[String],
    ) {
        self.with(|m| {
            if let Some(n) = m.get_mut(node_id) {
                let t = n.types.entry(type_url.to_string()).or_default();
                t.wildcard = wildcard;
                for a in added.iter().filter(|a| *a != "*") {
                    t.subscribed.insert(a.clone());
                }
                for r in removed {
                    t.subscribed.remove(r);
                }
            }
        });
    }

    pub(crate) fn subscribed(
        &self,
        node_id: &str,
        type_url: &str,
        wildcard: bool,
        names: &BTreeSet<String>,
    ) {
        self.with(|m| {
            if let Some(n) = m.get_mut(node_id) {
                let t = n.types.entry(type_url.to_string()).or_default();
                t.wildcard = wildcard;
                t.subscribed = names.clone();
            }
        });
    }

    pub(crate) fn pushed(
        &self,
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
        self.with(|m| {
            if let Some(n) = m.get_mut(node_id) {
                n.types.entry(type_url.to_string()).or_default().sent = Some(sent);
            }
        });
        self.emit(e);
    }

    pub(crate) fn acked(&self, node_id: &str, mode: Mode, a: Answered) {
        self.metrics.answered(&a.type_url, true, a.latency);
        let mut e = Event::new(EventKind::Ack, node_id, mode);
        e.type_url = a.type_url.clone();
        e.version = a.version.clone();
        e.nonce = a.nonce.clone();
        e.latency = Some(a.latency);
        self.with(|m| {
            if let Some(n) = m.get_mut(node_id) {
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
                    t.acked.insert(name, (version, generation));
                }
            }
        });
        self.acks.send_modify(|v| *v += 1);
        self.emit(e);
    }

    pub(crate) fn nacked(&self, node_id: &str, mode: Mode, a: Answered, error: String) {
        self.metrics.answered(&a.type_url, false, a.latency);
        let mut e = Event::new(EventKind::Nack, node_id, mode);
        e.type_url = a.type_url.clone();
        e.version = a.version.clone();
        e.nonce = a.nonce.clone();
        e.detail = error.clone();
        e.latency = Some(a.latency);
        self.with(|m| {
            if let Some(n) = m.get_mut(node_id) {
                n.types.entry(a.type_url.clone()).or_default().last_nack = Some(Nack {
                    version: a.version,
                    nonce: a.nonce,
                    error,
                    at: SystemTime::now(),
                });
            }
        });
        self.acks.send_modify(|v| *v += 1);
        self.emit(e);
    }
}
