//! Concurrency on the direct path from every gateway Envoy: Envoy's MetricsService stats sink
//! (`envoy.service.metrics.v3.MetricsService/StreamMetrics`) served here, summed per revision
//! across all Envoys that stream to it.
//!
//! Knative counts a revision's concurrency in the queue-proxy of each pod. Sluice has no such
//! hop: every request of a revision passes through one of the gateway Envoys, and each Envoy's
//! per-cluster gauges `upstream_rq_active` (requests on upstream connections) and
//! `upstream_rq_pending_active` (requests queued by the per-host limit) add up to the requests
//! it holds for that revision. On a cluster there are several gateway pods, each with its own
//! Envoy; each Envoy's bootstrap names this service as its stats sink (`sluice envoy bootstrap
//! --metrics-sink`), flushing every second. [`EnvoySink::take`] sums the latest figures of
//! every Envoy per revision: the revision's concurrency at that second, and the requests sent
//! since the previous take (from the counter `upstream_rq_total`).
//!
//! - **What it costs.** The sink cannot be filtered on its own: Envoy sends every stat that
//!   passes the bootstrap's `stats_matcher` (the same list the dashboard reads). With Sluice's
//!   list that is 13 stats per cluster plus Envoy's server-wide ones, every second, from every
//!   Envoy (measured in `tests/metrics_sink_e2e.rs`, BENCHMARKS.md). Messages are batched by
//!   Envoy (`batch_size`) and decoded one at a time; only the three figures of revision clusters
//!   are kept.
//! - **Point samples.** A gauge is read at each flush (1 s), not averaged over it. The KPA
//!   averages 60 s (stable) and 6 s (panic) windows of them, which is what it needs; `sluice up`
//!   samples its one Envoy's admin interface five times a second instead.
//! - **The activator's figure wins.** While a revision is routed through the activator, the
//!   Envoys' cluster for it points at the activator pods, so these gauges count the same
//!   requests the activator reports: the caller must use the activator's figure then, and this
//!   one only on the direct path, so no request is counted twice.
//! - **Untrusted clients.** At most [`MAX_STREAMS`] Envoys at once (more are refused with
//!   `RESOURCE_EXHAUSTED`), at most [`MAX_REVISIONS_PER_STREAM`] revisions remembered per
//!   Envoy; an Envoy's figures go when its stream does, and figures older than [`STALE`] are not
//!   counted (an Envoy that stopped flushing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::envoy::pb::envoy::service::metrics::v3::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use sluice_proto::envoy::pb::envoy::service::metrics::v3::{
    StreamMetricsMessage, StreamMetricsResponse,
};
use sluice_proto::envoy::pb::io::prometheus::client::MetricFamily;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::closer::StreamCloser;
use crate::decider::Stat;
use crate::scaler::RevisionKey;

/// Envoys streaming at once, at most.
pub const MAX_STREAMS: usize = 256;
/// Revisions remembered per Envoy, at most (more are ignored until some go).
pub const MAX_REVISIONS_PER_STREAM: usize = 200_000;
/// Figures not refreshed for this long are not counted.
pub const STALE: Duration = Duration::from_secs(3);
/// Largest message accepted (Envoy batches its flush; 5000 families are well under 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Which revision a cluster (as written in stat names) serves, if any.
pub type ClusterMapper = dyn Fn(&str) -> Option<RevisionKey> + Send + Sync;

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    active: f64,
    pending: f64,
    /// `upstream_rq_total` as last reported, and as at the previous take.
    total: Option<f64>,
    taken_total: Option<f64>,
    updated: Option<Instant>,
}

#[derive(Debug, Default)]
struct Stream {
    node: String,
    revisions: HashMap<RevisionKey, Figures>,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<u64, Stream>,
    next: u64,
}

/// What the sink holds, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkView {
    /// Node ids of the Envoys streaming now (one per stream; empty until identified).
    pub envoys: Vec<String>,
    /// Revisions with figures, over all Envoys.
    pub revisions: usize,
    /// Messages received since start.
    pub messages: u64,
    /// Metric families received since start.
    pub families: u64,
    /// Bytes of messages received since start (protobuf-encoded).
    pub bytes: u64,
}

/// The MetricsService; clone it freely (clones share their state).
#[derive(Clone)]
pub struct EnvoySink {
    state: Arc<Mutex<State>>,
    mapper: Arc<ClusterMapper>,
    messages: Arc<AtomicU64>,
    families: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Ends every open stream ([`EnvoySink::close_streams`]).
    closer: StreamCloser,
}

impl std::fmt::Debug for EnvoySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoySink")
            .field("view", &self.view())
            .finish_non_exhaustive()
    }
}

/// Removes a stream's figures when its handler ends, however it ends.
struct Registration {
    state: Arc<Mutex<State>>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.state).streams.remove(&self.id);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl EnvoySink {
    /// A sink naming revisions with `mapper` (the cluster part of `cluster.<name>.<stat>`).
    pub fn new(mapper: impl Fn(&str) -> Option<RevisionKey> + Send + Sync + 'static) -> Self {
        Self {
            state: Arc::default(),
            mapper: Arc::new(mapper),
            messages: Arc::default(),
            families: Arc::default(),
            bytes: Arc::default(),
            closer: StreamCloser::default(),
        }
    }

    /// Ends every open stream (`UNAVAILABLE`), and new ones until [`Self::accept_streams`]:
    /// the Envoys reconnect, through their Service, to
    /// the replica that decides now (a replica that lost its Lease calls this).
    pub fn close_streams(&self) {
        self.closer.close_all();
    }

    /// Takes streams again after [`Self::close_streams`] (until then new streams are ended at
    /// once, so the Envoys reach the replica that decides).
    pub fn accept_streams(&self) {
        self.closer.accept();
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> MetricsServiceServer<Self> {
        MetricsServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Each revision's concurrency now (the sum over Envoys of their latest in-flight figures)
    /// and the requests sent since the previous take.
    pub fn take(&self, now: Instant) -> HashMap<RevisionKey, Stat> {
        let mut out: HashMap<RevisionKey, Stat> = HashMap::new();
        let mut state = lock(&self.state);
        for stream in state.streams.values_mut() {
            for (key, f) in &mut stream.revisions {
                let fresh = f
                    .updated
                    .is_some_and(|t| now.saturating_duration_since(t) <= STALE);
                let requests = match (f.total, f.taken_total) {
                    (Some(total), Some(before)) if total >= before => total - before,
                    _ => 0.0,
                };
                f.taken_total = f.total;
                if !fresh {
                    continue;
                }
                let stat = out.entry(key.clone()).or_insert(Stat {
                    concurrency: 0.0,
                    requests: 0.0,
                });
                stat.concurrency += f.active + f.pending;
                stat.requests += requests;
            }
        }
        out
    }

    /// What the sink holds.
    pub fn view(&self) -> SinkView {
        let state = lock(&self.state);
        let mut envoys: Vec<String> = state.streams.values().map(|s| s.node.clone()).collect();
        envoys.sort();
        let mut revisions: Vec<&RevisionKey> = state
            .streams
            .values()
            .flat_map(|s| s.revisions.keys())
            .collect();
        revisions.sort();
        revisions.dedup();
        SinkView {
            envoys,
            revisions: revisions.len(),
            messages: self.messages.load(Ordering::Relaxed),
            families: self.families.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn register(&self) -> Result<Registration, Status> {
        let mut state = lock(&self.state);
        if state.streams.len() >= MAX_STREAMS {
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_STREAMS} Envoys may stream metrics at once"
            )));
        }
        let id = state.next;
        state.next += 1;
        state.streams.insert(id, Stream::default());
        Ok(Registration {
            state: self.state.clone(),
            id,
        })
    }

    /// Takes one message of stream `id` at `now`.
    fn ingest(&self, id: u64, message: &StreamMetricsMessage, now: Instant) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.families
            .fetch_add(message.envoy_metrics.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(
            prost::Message::encoded_len(message) as u64,
            Ordering::Relaxed,
        );
        let mut state = lock(&self.state);
        let Some(stream) = state.streams.get_mut(&id) else {
            return;
        };
        if let Some(node) = message.identifier.as_ref().and_then(|i| i.node.as_ref()) {
            stream.node.clone_from(&node.id);
        }
        for family in &message.envoy_metrics {
            self.family(stream, family, now);
        }
    }

    fn family(&self, stream: &mut Stream, family: &MetricFamily, now: Instant) {
        let Some(rest) = family
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("cluster."))
        else {
            return;
        };
        let Some((cluster, stat)) = rest.rsplit_once('.') else {
            return;
        };
        if !matches!(
            stat,
            "upstream_rq_active" | "upstream_rq_pending_active" | "upstream_rq_total"
        ) {
            return;
        }
        let Some(metric) = family.metric.first() else {
            return;
        };
        let value = metric
            .gauge
            .as_ref()
            .and_then(|g| g.value)
            .or_else(|| metric.counter.as_ref().and_then(|c| c.value))
            .filter(|v| v.is_finite() && *v >= 0.0);
        let Some(value) = value else {
            return;
        };
        let Some(key) = (self.mapper)(cluster) else {
            return;
        };
        let full = stream.revisions.len() >= MAX_REVISIONS_PER_STREAM;
        let figures = match stream.revisions.get_mut(&key) {
            Some(f) => f,
            None if full => return,
            None => stream.revisions.entry(key).or_default(),
        };
        match stat {
            "upstream_rq_active" => figures.active = value,
            "upstream_rq_pending_active" => figures.pending = value,
            _ => figures.total = Some(value),
        }
        figures.updated = Some(now);
    }
}

#[tonic::async_trait]
impl MetricsService for EnvoySink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let registration = self.register()?;
        let closed = self.closer.closed();
        tokio::pin!(closed);
        let mut stream = request.into_inner();
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(message) => self.ingest(registration.id, &message, Instant::now()),
                    None => break,
                },
                status = &mut closed => return Err(status),
            }
        }
        drop(registration);
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

#[cfg(test)]
mod tests;
