//! The activator as a whole: the revision registry, the throttler, the
//! upstream clients, and the per-revision stat accumulators.
//!
//! Who calls what:
//! * the control plane registers revisions ([`Activator::set_revision`]),
//!   their ready instances ([`Activator::update_instances`], probed first:
//!   `probe.rs`) and removes them;
//! * [`Activator::serve`] (in `server.rs`) accepts connections and hands each
//!   request to the proxy (`proxy.rs`);
//! * the stat reporter (`reporter.rs`) calls [`Activator::collect_stats`]
//!   every second and forwards pokes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::body::Body;
use crate::metrics::Metrics;
use crate::probe::ProbeTable;
use crate::revision::{RevisionConfig, RevisionKey};
use crate::stats::{ConcurrencyAccumulator, PeriodStat};
use crate::throttler::{Throttler, ThrottlerConfig};

/// Activator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatorConfig {
    /// Queue bounds.
    pub throttler: ThrottlerConfig,
    /// On shutdown, how long in-flight requests (and websockets) may take to
    /// finish before their connections are closed.
    pub drain_grace: Duration,
    /// How long connecting to an instance may take (then 502).
    pub connect_timeout: Duration,
    /// Capacity of the poke channel (pokes beyond it are dropped and counted).
    pub poke_capacity: usize,
    /// Probe new instances (TCP connect) before sending them traffic,
    /// retrying at this interval; `None` trusts the instance list as given.
    pub probe_interval: Option<Duration>,
    /// Client connections served at once; beyond it new ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// Websocket (upgrade) tunnels open at once; beyond it an upgrade gets 503.
    pub max_tunnels: usize,
}

impl Default for ActivatorConfig {
    fn default() -> Self {
        Self {
            throttler: ThrottlerConfig::default(),
            drain_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            poke_capacity: 1024,
            probe_interval: Some(Duration::from_millis(200)),
            max_connections: 20_000,
            max_tunnels: 10_000,
        }
    }
}

/// One revision's figures for one report period.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionReport {
    /// The revision.
    pub revision: RevisionKey,
    /// Its figures.
    pub stat: PeriodStat,
}

/// A registered revision.
#[derive(Debug)]
pub(crate) struct Entry {
    pub config: RevisionConfig,
    /// Shared by successive entries of the same revision (a config change
    /// must not reset the period's counts).
    pub stats: Arc<Mutex<ConcurrencyAccumulator>>,
}

impl Entry {
    pub fn stats(&self) -> MutexGuard<'_, ConcurrencyAccumulator> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The activator; cheap to clone (shared).
#[derive(Clone)]
pub struct Activator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: ActivatorConfig,
    pub throttler: Throttler,
    pub registry: ArcSwap<HashMap<RevisionKey, Arc<Entry>>>,
    /// Serialises registry writers.
    pub writer: Mutex<()>,
    pub http1: Client<HttpConnector, Body>,
    pub h2c: Client<HttpConnector, Body>,
    /// Every websocket tunnel holds a receiver; `closed()` = all done.
    pub tunnels: watch::Sender<()>,
    /// Set to true when the drain grace runs out: tunnels stop.
    pub hard_stop: watch::Sender<bool>,
    /// Instances waiting for, or past, their first probe.
    pub probes: Mutex<ProbeTable>,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Activator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activator")
            .field("config", &self.inner.config)
            .field("revisions", &self.inner.registry.load().len())
            .finish_non_exhaustive()
    }
}

impl Activator {
    /// An activator with `config`, and the receiving end of its poke channel:
    /// one [`RevisionKey`] each time a request starts waiting for a revision
    /// with no ready instance (feed it to the [`Reporter`](crate::Reporter) or
    /// straight to an in-process autoscaler).
    pub fn new(config: ActivatorConfig) -> (Self, mpsc::Receiver<RevisionKey>) {
        let (poke_tx, poke_rx) = mpsc::channel(config.poke_capacity.max(1));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build(connector);
        let inner = Inner {
            throttler: Throttler::new(config.throttler, poke_tx),
            config,
            registry: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
            http1,
            h2c,
            tunnels: watch::channel(()).0,
            hard_stop: watch::channel(false).0,
            probes: Mutex::new(ProbeTable::new()),
            metrics: Metrics::default(),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            poke_rx,
        )
    }

    /// Registers a revision or changes its settings.
    pub fn set_revision(&self, key: RevisionKey, config: RevisionConfig) {
        let _w = self.writer();
        let current = self.inner.registry.load();
        let stats = current.get(&key).map_or_else(
            || Arc::new(Mutex::new(ConcurrencyAccumulator::new(Instant::now()))),
            |e| Arc::clone(&e.stats),
        );
        self.inner
            .throttler
            .set_revision(&key, config.container_concurrency);
        let mut next = HashMap::clone(&current);
        next.insert(key, Arc::new(Entry { config, stats }));
        self.inner.registry.store(Arc::new(next));
    }

    /// Forgets a revision: new requests get 404, waiting ones 503; requests
    /// in flight finish.
    pub fn remove_revision(&self, key: &RevisionKey) {
        let _w = self.writer();
        let current = self.inner.registry.load();
        if current.contains_key(key) {
            let mut next = HashMap::clone(&current);
            next.remove(key);
            self.inner.registry.store(Arc::new(next));
        }
        self.forget_probes(key);
        self.inner.throttler.remove_revision(key);
    }

    /// A revision's settings, if registered.
    pub fn revision(&self, key: &RevisionKey) -> Option<RevisionConfig> {
        self.entry(key).map(|e| e.config.clone())
    }

    /// The throttler, for its counters. Change instances through
    /// [`Activator::update_instances`], which probes new ones first.
    pub fn throttler(&self) -> &Throttler {
        &self.inner.throttler
    }

    /// The configuration.
    pub fn config(&self) -> &ActivatorConfig {
        &self.inner.config
    }

    /// Closes every revision's report period at `now` and returns the figures
    /// of those that saw traffic (idle revisions are left out, as upstream).
    pub fn collect_stats(&self, now: Instant) -> Vec<RevisionReport> {
        let registry = self.inner.registry.load();
        let mut reports: Vec<_> = registry
            .iter()
            .filter_map(|(key, entry)| {
                let mut acc = entry.stats();
                let idle = acc.is_idle();
                let stat = acc.report(now);
                (!idle).then(|| RevisionReport {
                    revision: key.clone(),
                    stat,
                })
            })
            .collect();
        reports.sort_by(|a, b| a.revision.cmp(&b.revision));
        reports
    }

    /// Requests in flight (waiting included) for a revision right now.
    pub fn in_flight(&self, key: &RevisionKey) -> u64 {
        self.entry(key).map_or(0, |e| e.stats().in_flight())
    }

    pub(crate) fn entry(&self, key: &RevisionKey) -> Option<Arc<Entry>> {
        self.inner.registry.load().get(key).cloned()
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
