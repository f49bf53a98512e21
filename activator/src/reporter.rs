//! Streams the activator's stats to the autoscaler: one
//! `sluice.autoscaler.v1.Stats/Report` client stream, a batch every period
//! (1 s) with every revision that saw traffic, and an immediate one-entry
//! batch with `poke = true` for every poke.
//!
//! The link reconnects with exponential backoff. Memory stays bounded while
//! the autoscaler is slow or away: at most `queue` batches wait on a stream,
//! and periods that close while disconnected are counted and dropped (each
//! batch carries its own window, so nothing downstream assumes continuity).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_proto::autoscaler::v1::{ReportAck, RevisionStat, StatBatch, stats_client::StatsClient};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::activator::{Activator, RevisionReport};
use crate::revision::RevisionKey;

/// Pokes kept while the link to the autoscaler is down (one per revision).
const MAX_UNSENT_POKES: usize = 1024;

/// Where and how often to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReporterConfig {
    /// The autoscaler's gRPC endpoint, e.g. `http://127.0.0.1:8013`.
    pub endpoint: String,
    /// This activator's id in every batch (pod name or instance id).
    pub source: String,
    /// The report period (Knative: 1 s).
    pub interval: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Batches that may wait on a stream before new ones are dropped.
    pub queue: usize,
}

impl ReporterConfig {
    /// Defaults (1 s period, 100 ms–5 s backoff, 8 queued batches) for an
    /// endpoint and source id.
    pub fn new(endpoint: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            source: source.into(),
            interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            queue: 8,
        }
    }
}

/// The reporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// The endpoint is not a valid URI.
    #[error("invalid autoscaler endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// What the reporter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReporterStats {
    /// Streams opened.
    pub connects: u64,
    /// Connect attempts or streams that failed.
    pub failures: u64,
    /// Batches handed to a stream.
    pub batches_sent: u64,
    /// Batches dropped (disconnected or stream queue full).
    pub batches_dropped: u64,
    /// Poke batches handed to a stream.
    pub pokes_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    failures: AtomicU64,
    batches_sent: AtomicU64,
    batches_dropped: AtomicU64,
    pokes_sent: AtomicU64,
}

/// The stat reporter; clone it to read [`Reporter::stats`] while it runs.
#[derive(Debug, Clone)]
pub struct Reporter {
    config: ReporterConfig,
    endpoint: Endpoint,
    counters: Arc<Counters>,
}

type Call = Pin<Box<dyn Future<Output = Result<tonic::Response<ReportAck>, tonic::Status>> + Send>>;
type Connect = Pin<Box<dyn Future<Output = Result<Channel, tonic::transport::Error>> + Send>>;

/// An open stream: where batches go, and the call that ends when it breaks.
struct Stream {
    tx: mpsc::Sender<StatBatch>,
    call: Call,
    sequence: u64,
}

impl Reporter {
    /// A reporter for `config`; fails if the endpoint is not a valid URI.
    pub fn new(config: ReporterConfig) -> Result<Self, ReporterError> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| ReporterError::InvalidEndpoint {
                endpoint: config.endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        Ok(Self {
            config,
            endpoint,
            counters: Arc::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ReporterStats {
        let c = &self.counters;
        ReporterStats {
            connects: c.connects.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            batches_sent: c.batches_sent.load(Ordering::Relaxed),
            batches_dropped: c.batches_dropped.load(Ordering::Relaxed),
            pokes_sent: c.pokes_sent.load(Ordering::Relaxed),
        }
    }

    /// Reports `activator`'s stats every period and forwards `pokes`, until
    /// `shutdown` completes; then closes the stream (waiting up to one period
    /// for the autoscaler's ack).
    pub async fn run(
        self,
        activator: Activator,
        mut pokes: mpsc::Receiver<RevisionKey>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let interval = self.config.interval.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = self.config.backoff_min;
        let mut pokes_open = true;
        let mut stream: Option<Stream> = None;
        let mut connect: Option<Connect> = Some(self.connect());
        let mut retry: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Pokes that came while the link was down: sent once it is up (a request waiting at
        // zero must not wait for the next period's figures). One per revision, bounded.
        let mut unsent: BTreeSet<RevisionKey> = BTreeSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {
                    let reports = activator.collect_stats(Instant::now());
                    if !reports.is_empty() {
                        let stats = reports.iter().map(revision_stat).collect();
                        self.send(&mut stream, stats, false);
                    }
                }
                poke = pokes.recv(), if pokes_open => match poke {
                    Some(key) if stream.is_none() => {
                        if unsent.len() < MAX_UNSENT_POKES {
                            unsent.insert(key);
                        } else {
                            self.counters.batches_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(key) => {
                        let stat = poke_stat(&activator, key);
                        self.send(&mut stream, vec![stat], true);
                    }
                    None => pokes_open = false,
                },
                () = or_pending(retry.as_mut()), if retry.is_some() => {
                    retry = None;
                    connect = Some(self.connect());
                }
                res = or_pending(connect.as_mut()), if connect.is_some() => {
                    connect = None;
                    match res {
                        Ok(channel) => {
                            stream = Some(self.open(channel));
                            backoff = self.config.backoff_min;
                            // One batch for all of them (the stream's queue is short), and
                            // only for requests still waiting.
                            let waiting: Vec<RevisionStat> = std::mem::take(&mut unsent)
                                .into_iter()
                                .filter(|key| activator.in_flight(key) > 0)
                                .map(|key| poke_stat(&activator, key))
                                .collect();
                            if !waiting.is_empty() {
                                self.send(&mut stream, waiting, true);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(endpoint = %self.config.endpoint, error = %e, "autoscaler unreachable");
                            self.counters.failures.fetch_add(1, Ordering::Relaxed);
                            retry = Some(Box::pin(tokio::time::sleep(backoff)));
                            backoff = (backoff * 2).min(self.config.backoff_max);
                        }
                    }
                }
                res = or_pending(stream.as_mut().map(|s| &mut s.call)), if stream.is_some() => {
                    stream = None;
                    match res {
                        Ok(ack) => tracing::info!(batches = ack.get_ref().batches, "autoscaler closed the stat stream"),
                        Err(status) => tracing::warn!(%status, "stat stream failed"),
                    }
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    retry = Some(Box::pin(tokio::time::sleep(backoff)));
                    backoff = (backoff * 2).min(self.config.backoff_max);
                }
            }
        }
        if let Some(Stream { tx, call, .. }) = stream {
            drop(tx);
            let _ = tokio::time::timeout(interval, call).await;
        }
    }

    fn connect(&self) -> Connect {
        let endpoint = self.endpoint.clone();
        Box::pin(async move { endpoint.connect().await })
    }

    fn open(&self, channel: Channel) -> Stream {
        let (tx, rx) = mpsc::channel(self.config.queue.max(1));
        let mut client = StatsClient::new(channel);
        let call: Call = Box::pin(async move { client.report(ReceiverStream::new(rx)).await });
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        Stream {
            tx,
            call,
            sequence: 0,
        }
    }

    /// Hands a batch to the open stream, or counts it dropped.
    fn send(&self, stream: &mut Option<Stream>, stats: Vec<RevisionStat>, poke: bool) {
        let c = &self.counters;
        let Some(s) = stream else {
            c.batches_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        s.sequence += 1;
        let batch = StatBatch {
            source: self.config.source.clone(),
            sequence: s.sequence,
            stats,
        };
        match s.tx.try_send(batch) {
            Ok(()) if poke => c.pokes_sent.fetch_add(1, Ordering::Relaxed),
            Ok(()) => c.batches_sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.batches_dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A poke: a request waits for `key` at zero.
fn poke_stat(activator: &Activator, key: RevisionKey) -> RevisionStat {
    RevisionStat {
        concurrency: activator.in_flight(&key).max(1) as f64,
        namespace: key.namespace,
        revision: key.name,
        requests: 0.0,
        window_ms: 0,
        poke: true,
    }
}

/// Awaits the future if there is one; otherwise never completes (its
/// `select!` branch is disabled anyway).
async fn or_pending<F: Future + Unpin>(fut: Option<&mut F>) -> F::Output {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn revision_stat(r: &RevisionReport) -> RevisionStat {
    RevisionStat {
        namespace: r.revision.namespace.clone(),
        revision: r.revision.name.clone(),
        concurrency: r.stat.concurrency,
        requests: r.stat.requests as f64,
        window_ms: u32::try_from(r.stat.window.as_millis()).unwrap_or(u32::MAX),
        poke: false,
    }
}
