//! The Kubernetes serving controller (`sluice controller --kube`): Knative Services,
//! Configurations, Routes and Revisions from the API server, reconciled by the same pure
//! reconcilers `sluice up` runs ([`crate::serving`]), with the API as the only state.
//!
//! - [`watch`]: kube-runtime watchers on the four `serving.knative.dev/v1` kinds, KIngresses of
//!   Sluice's class, Revisions' EndpointSlices and the `knative-serving` ConfigMaps;
//! - [`decode`]: each serving object decoded on its own (a bad one gets a condition naming the
//!   field, never fails a LIST);
//! - [`core`]: what the watches showed and what each event makes due; [`rebuild`]: the
//!   [`ServingState`](crate::serving::ServingState) rebuilt from the Revision objects (no state
//!   file); [`action`]: the writes the core asks for;
//! - [`reconcile`]: the passes — Service → Configuration + Route (server-side apply, owned by
//!   the Service), Configuration → Revision (created in the API, owned by the Configuration,
//!   labelled as upstream), Revision → [`KubeRuntime`] (Deployment + Service) with readiness
//!   from its EndpointSlices (and, while none is ready, why from its Deployment and pods:
//!   [`health`]), Route → KIngress (class
//!   `sluice.ingress.networking.knative.dev`, owned by the Route) with `IngressReady` read back
//!   from the status `sluice gateway --kube` writes, and the Route's placeholder Services
//!   ([`placeholder`]); every status written by server-side apply on the `status` subresource;
//! - [`apply`]: the writes, and why replicas are left to the `scale` subresource once a
//!   Revision's Deployment exists;
//! - [`hpa`]: an HPA-class Revision's HorizontalPodAutoscaler, applied once it runs;
//! - [`reconcile::gc`]: Revisions' routing states (label and annotation, as upstream's
//!   labeler) and their collection from `config-gc`;
//! - [`status`]: condition times, statuses of rejected objects; [`view`]: `/status`;
//! - [`CONTROLLER_PERMISSIONS`]: the API access all of this needs besides the runtime's
//!   ([`RUNTIME_PERMISSIONS`](crate::kube::runtime::RUNTIME_PERMISSIONS)), mirrored by the
//!   `sluice-controller-serving` ClusterRole in `deploy/full/200-rbac.yaml`, and
//!   [`CONTROLLER_SYSTEM_PERMISSIONS`] by the `sluice-controller-config` Role in
//!   `knative-serving` (a test compares them).
//!
//! Not here: autoscaling. A new Revision's Deployment starts at its initial scale
//! (`autoscaling.knative.dev/initial-scale`, else `config-autoscaler`'s, 1 by default, at least
//! `min-scale`; [`settings`]); after that its replica count is left to the `scale` subresource.
//!
//! ```no_run
//! # use sluice_serving::kube::controller::ControllerError;
//! # async fn run(client: ::kube::Client) -> Result<(), ControllerError> {
//! use sluice_serving::kube::controller::{ControllerConfig, KubeController};
//!
//! let controller = KubeController::new(client, ControllerConfig::default());
//! let status = controller.status(); // shared snapshot for a debug endpoint
//! controller.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod action;
pub mod apply;
pub mod core;
pub mod decode;
mod error;
pub mod health;
pub mod hpa;
pub mod permissions;
pub mod placeholder;
pub mod rebuild;
pub mod reconcile;
pub mod settings;
pub mod status;
pub mod view;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::Client;
use futures::{FutureExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use self::core::Core;
pub use action::{Action, Feedback};
pub use apply::{Executor, Failure};
pub use error::ControllerError;
pub use permissions::{
    ACTIVATOR_PERMISSIONS, AUTOSCALER_PERMISSIONS, AUTOSCALER_SYSTEM_PERMISSIONS,
    CONTROLLER_PERMISSIONS, CONTROLLER_SYSTEM_PERMISSIONS,
};
pub use rebuild::{TEMPLATE_HASH_ANNOTATION, revision_template_hash};
pub use view::{ControllerStatus, ServiceView};
pub use watch::{ObjectKind, WatchEvent, Watched, Watches};

use crate::kube::runtime::{KubeRuntime, RuntimeConfig};
use crate::serving::Key;

/// How the controller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Overrides `config-domain` (`--domain`).
    pub domain: Option<String>,
    /// Writes in flight at once (at least 1). With 1 they are made in the order the reconcile
    /// produced them.
    pub concurrency: usize,
    /// How Revisions become Deployments.
    pub runtime: RuntimeConfig,
    /// Delay before a failed write is retried the first time (doubling per failure of the same
    /// object, up to [`ControllerConfig::max_backoff`]).
    pub backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How often Revisions' routing states and `config-gc` are looked at without an event
    /// (Revisions age without one).
    pub gc_interval: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            domain: None,
            concurrency: 8,
            runtime: RuntimeConfig::default(),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            gc_interval: Duration::from_secs(60),
        }
    }
}

/// The Kubernetes serving controller.
pub struct KubeController {
    client: Client,
    config: ControllerConfig,
    core: Core,
    executor: Executor,
    status: Arc<Mutex<ControllerStatus>>,
    /// Failures in a row per write ([`Action::describe`]), for the backoff.
    attempts: HashMap<String, u32>,
    /// Whether this replica leads ([`KubeController::with_leader`]); `None`: always.
    leader: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for KubeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeController")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl KubeController {
    /// A controller talking to the API server through `client`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let runtime = KubeRuntime::new(client.clone(), config.runtime.clone());
        Self {
            executor: Executor::new(client.clone(), runtime),
            core: Core::with_runtime(config.domain.clone(), config.runtime.clone()),
            client,
            config,
            status: Arc::default(),
            attempts: HashMap::new(),
            leader: None,
        }
    }

    /// Reconciles and writes only while `leader` says this replica leads (a
    /// [`LeaderElector`](crate::kube::lease::LeaderElector) on the controller's Lease). The
    /// others watch too, so a new leader starts from warm caches: on taking over it reconciles
    /// everything once, comparing against the API as it is. On losing the Lease it stops
    /// before its next write batch (a batch under way completes: each write is idempotent).
    pub fn with_leader(mut self, leader: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// The status snapshot, updated after every reconcile.
    pub fn status(&self) -> Arc<Mutex<ControllerStatus>> {
        self.status.clone()
    }

    /// Watches and reconciles until `shutdown` completes (or every watch ends, which only
    /// happens when the client is gone). Watch errors are retried with backoff and shown in
    /// the status; failed writes are retried per object with backoff.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ControllerError> {
        let mut watches = Watches::new(&self.client);
        let (requeue_tx, mut requeue_rx) = mpsc::unbounded_channel::<(ObjectKind, Key)>();
        let mut timers = JoinSet::new();
        let mut gc = tokio::time::interval(self.config.gc_interval.max(Duration::from_secs(1)));
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut leader = self.leader.take();
        let mut leads = leader.as_ref().is_none_or(|l| *l.borrow());
        self.lock().leader = leads;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                item = watches.next() => match item {
                    None => break,
                    Some(item) => {
                        self.take(item);
                        // Whatever else already arrived joins this reconcile.
                        while let Some(Some(item)) = watches.next().now_or_never() {
                            self.take(item);
                        }
                    }
                },
                Some((kind, key)) = requeue_rx.recv() => self.core.requeue(kind, key),
                _ = gc.tick() => self.core.tick(),
                Ok(()) = async {
                    match leader.as_mut() {
                        Some(l) => l.changed().await.map_err(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    let now = leader.as_ref().is_some_and(|l| *l.borrow());
                    if now != leads {
                        tracing::info!(leader = now, "serving controller: {}", if now { "this replica leads: reconciling" } else { "another replica leads: watching only" });
                        if now {
                            self.core.resync();
                        }
                        leads = now;
                        self.lock().leader = leads;
                    }
                }
                Some(_) = timers.join_next(), if !timers.is_empty() => continue,
            }
            if leads {
                self.settle(&requeue_tx, &mut timers).await;
            } else {
                self.publish();
            }
        }
        tracing::info!("serving controller stopped");
        Ok(())
    }

    fn take(&mut self, item: Result<Vec<WatchEvent>, ControllerError>) {
        match item {
            Ok(events) => {
                for event in events {
                    self.core.observe(event);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "watch failed (it retries by itself)");
                if !self.core.is_synced()
                    && let ControllerError::Watch { resource, .. } = &error
                {
                    self.lock()
                        .errors
                        .insert(format!("watch {resource}"), error.to_string());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControllerStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconciles and writes until nothing is due (bounded: a reconcile that keeps producing
    /// writes is picked up again on the next event).
    async fn settle(
        &mut self,
        requeue: &mpsc::UnboundedSender<(ObjectKind, Key)>,
        timers: &mut JoinSet<()>,
    ) {
        for _ in 0..16 {
            let actions = self.core.reconcile(&now());
            self.lock().reconciles += 1;
            if actions.is_empty() {
                break;
            }
            tracing::debug!(actions = actions.len(), "reconciled; writing");
            let names: Vec<(&'static str, String)> =
                actions.iter().map(|a| (a.name(), a.describe())).collect();
            let executor = self.executor.clone();
            let results: Vec<_> = futures::stream::iter(actions)
                .map(|action| {
                    let executor = executor.clone();
                    async move { executor.execute(action).await }
                })
                .buffered(self.config.concurrency.max(1))
                .collect()
                .await;
            for ((name, what), (feedback, failure)) in names.into_iter().zip(results) {
                *self.lock().writes.entry(name).or_default() += 1;
                if let Some(feedback) = feedback {
                    self.core.feedback(feedback);
                }
                match failure {
                    None => {
                        self.attempts.remove(&what);
                        self.lock().errors.remove(&what);
                    }
                    Some(failure) => {
                        *self.lock().write_failures.entry(name).or_default() += 1;
                        self.retry_later(what, failure, requeue, timers);
                    }
                }
            }
        }
        self.publish();
    }

    fn retry_later(
        &mut self,
        what: String,
        failure: Failure,
        requeue: &mpsc::UnboundedSender<(ObjectKind, Key)>,
        timers: &mut JoinSet<()>,
    ) {
        let Failure { kind, key, error } = failure;
        tracing::warn!(%error, "{what} failed; retrying later");
        self.lock().errors.insert(what.clone(), error.to_string());
        let attempts = self.attempts.entry(what).or_default();
        let delay = self
            .config
            .backoff
            .saturating_mul(2u32.saturating_pow((*attempts).min(16)))
            .min(self.config.max_backoff);
        *attempts += 1;
        let requeue = requeue.clone();
        timers.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = requeue.send((kind, key));
        });
    }

    fn publish(&self) {
        self.lock().update(&self.core);
    }
}
