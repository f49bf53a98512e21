//! The standalone process runtime: each revision instance is a local process.
//!
//! [`ProcessRuntime::ensure`] makes a revision run a number of instances. Each instance gets a
//! free loopback port, passed in `PORT` with Knative's `K_SERVICE`, `K_CONFIGURATION` and
//! `K_REVISION` and the revision's own `env`; `command` + `args` and `env` values go through
//! Kubernetes `$(VAR)` expansion. Output is appended to the revision's log
//! ([`logs::log_path`]). An instance is ready once its readiness probe passes (an HTTP `GET`
//! answered 2xx/3xx, or a TCP connect; by default a TCP connect to `PORT`), polled every
//! ~100 ms until then. An instance whose process exits is restarted with exponential backoff
//! (100 ms doubling to 10 s, starting over once a run lasted 10 s) on a fresh port, and shows as
//! [`InstanceState::Crashed`] meanwhile. Stopping takes the instance out of the ready set at
//! once, then (after a short drain delay) sends SIGTERM to its process group, and SIGKILL after
//! the grace period.
//!
//! The controller learns about changes through [`ProcessRuntime::subscribe`] (each change
//! carries the revision's ready addresses, for its EDS/EndpointSlice) and reads
//! [`ProcessRuntime::instances`] for `sluice status`. The autoscaler drives the runtime
//! through [`sluice_autoscaler::Scaler`], which scales the last spec given for the revision.
//!
//! Dropping the last handle stops every instance in the background (SIGTERM, then SIGKILL);
//! [`ProcessRuntime::shutdown`] does the same and waits until the processes are gone.

mod expand;
mod instance;
pub mod logs;
pub mod pids;
mod probe;
mod reserved;
mod spec;
mod status;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_autoscaler::{RevisionKey, ScaleError, Scaler};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use expand::expand;
pub use reserved::{RESERVED_INSTANCE_ENV, RESERVED_NICE, ReservedSpec};
pub use spec::{DEFAULT_CONTAINER_PORT, RESERVED_ENV, ReadinessProbe, RevisionSpec};
pub use status::{ExitInfo, InstanceState, InstanceStatus, RuntimeChange};

use instance::Instance;
use status::Board;

/// Under the state directory: the instances' pid files ([`pids`]).
pub const RUN_DIR: &str = "run";

/// Why the runtime cannot run a revision as asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The revision's container has no `command`.
    #[error(
        "revision {revision}: the standalone runtime runs commands, not images: set \
         containers[0].command"
    )]
    NoCommand {
        /// The revision.
        revision: RevisionKey,
    },
    /// The spec lacks something else the runtime needs.
    #[error("revision {revision}: {reason}")]
    InvalidSpec {
        /// The revision.
        revision: RevisionKey,
        /// What is wrong.
        reason: String,
    },
    /// No free loopback port could be found for a new instance.
    #[error("revision {revision}: no free port on 127.0.0.1 for a new instance: {source}")]
    NoPort {
        /// The revision.
        revision: RevisionKey,
        /// The error binding a port.
        source: io::Error,
    },
}

/// Timings of the runtime; the defaults suit real use, tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Delay before the first restart after a crash; doubles on each further crash.
    pub initial_backoff: Duration,
    /// The longest delay between restarts.
    pub max_backoff: Duration,
    /// A run that lasted this long counts as healthy: the backoff starts over.
    pub reset_after: Duration,
    /// How long a stopped instance keeps running, already out of the ready set, before it
    /// gets SIGTERM: time for Envoy to learn (over EDS) not to send it new requests.
    pub drain_delay: Duration,
    /// How long a stopped instance may take to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// How often a not-yet-ready instance is probed.
    pub probe_interval: Duration,
    /// How often a ready instance is probed.
    pub ready_probe_period: Duration,
    /// How long one probe may take.
    pub probe_timeout: Duration,
    /// Failed probes in a row that make a ready instance unready.
    pub failure_threshold: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            reset_after: Duration::from_secs(10),
            drain_delay: Duration::from_millis(300),
            stop_grace: Duration::from_secs(10),
            probe_interval: Duration::from_millis(100),
            ready_probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            failure_threshold: 3,
        }
    }
}

/// Runs revisions as local processes. Cheap to clone: clones share the instances.
///
/// Needs a Tokio runtime: instances are supervised by tasks spawned on the current one.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state_dir: PathBuf,
    options: RuntimeOptions,
    revisions: Mutex<BTreeMap<RevisionKey, Revision>>,
    /// The next instance number per revision. Kept when a revision is removed, so a new
    /// instance never shares a number with one of the same revision still stopping.
    next_index: Mutex<BTreeMap<RevisionKey, u32>>,
    board: Arc<Board>,
}

/// A revision the runtime was asked to run: its last spec and its live instances.
#[derive(Debug)]
struct Revision {
    spec: Arc<RevisionSpec>,
    instances: Vec<Handle>,
    /// Reserved instances ([`ProcessRuntime::ensure_reserved`]) and how they run.
    reserved: Vec<Handle>,
    reserved_spec: Arc<ReservedSpec>,
}

/// A live (not yet asked to stop) instance. Dropping `stop` stops it.
#[derive(Debug)]
struct Handle {
    index: u32,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Asks the instance to stop; returns its task to await if wanted.
    fn stop(self) -> JoinHandle<()> {
        // An error means the task has ended already.
        let _ = self.stop.send(());
        self.task
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessRuntime {
    /// A runtime that keeps revision logs under `state_dir/logs`, with default timings.
    pub fn new(state_dir: PathBuf) -> Self {
        Self::with_options(state_dir, RuntimeOptions::default())
    }

    /// A runtime with the given timings.
    pub fn with_options(state_dir: PathBuf, options: RuntimeOptions) -> Self {
        ProcessRuntime {
            inner: Arc::new(Inner {
                state_dir,
                options,
                revisions: Mutex::default(),
                next_index: Mutex::default(),
                board: Arc::new(Board::new()),
            }),
        }
    }

    /// Stops instances an earlier runtime over the same state directory left running (it was
    /// killed before it could stop them); returns their pids. Call it before starting any.
    pub async fn reap_orphans(&self) -> Vec<u32> {
        let dir = self.inner.state_dir.join(RUN_DIR);
        let grace = self.inner.options.stop_grace;
        tokio::task::spawn_blocking(move || pids::reap(&dir, grace))
            .await
            .unwrap_or_default()
    }

    /// The state directory given to [`ProcessRuntime::new`].
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The log file of a revision (see [`logs::log_path`]).
    pub fn log_path(&self, revision: &RevisionKey) -> PathBuf {
        logs::log_path(&self.inner.state_dir, &revision.namespace, &revision.name)
    }

    /// Makes `spec`'s revision run `instances` instances: starts new ones or stops the surplus
    /// (not-ready ones first, then the newest), and remembers the spec for
    /// [`Scaler::scale`]. A spec whose process settings changed replaces every instance.
    ///
    /// Returns once new processes are being started and surplus ones asked to stop; watch
    /// [`ProcessRuntime::subscribe`] or use [`ProcessRuntime::wait_ready`] for readiness.
    /// Fails, changing nothing, when the spec has no command ([`RuntimeError::NoCommand`]).
    pub async fn ensure(&self, spec: RevisionSpec, instances: u32) -> Result<(), RuntimeError> {
        spec.validate()?;
        let key = spec.key();
        let inner = &self.inner;
        let mut revisions = lock(&inner.revisions);
        let revision = revisions.entry(key.clone()).or_insert_with(|| Revision {
            spec: Arc::new(spec.clone()),
            instances: Vec::new(),
            reserved: Vec::new(),
            reserved_spec: Arc::default(),
        });
        if !same_process(&revision.spec, &spec) {
            tracing::warn!(
                revision = %key,
                "the revision's spec changed (revisions should be immutable); replacing its instances"
            );
            for handle in revision
                .instances
                .drain(..)
                .chain(revision.reserved.drain(..))
            {
                self.mark_stopping(&key, handle.index);
                drop(handle.stop());
            }
        }
        revision.spec = Arc::new(spec);

        let want = usize::try_from(instances).unwrap_or(usize::MAX);
        let have = revision.instances.len();
        if have > want {
            // Stop what serves least: not ready first, then the newest.
            let statuses = inner.board.instances(&key);
            let ready = |index: u32| statuses.iter().any(|s| s.index == index && s.ready);
            revision
                .instances
                .sort_by_key(|h| (std::cmp::Reverse(ready(h.index)), h.index));
            for handle in revision.instances.split_off(want) {
                tracing::info!(revision = %key, index = handle.index, "stopping instance");
                self.mark_stopping(&key, handle.index);
                drop(handle.stop());
            }
            revision.instances.sort_by_key(|h| h.index);
        }
        while revision.instances.len() < want {
            let port = inner
                .board
                .reserve_port()
                .map_err(|source| RuntimeError::NoPort {
                    revision: key.clone(),
                    source,
                })?;
            let index = self.next_index(&key);
            revision
                .instances
                .push(self.start(&revision.spec, None, index, port));
        }
        Ok(())
    }

    /// The next instance number of a revision.
    fn next_index(&self, key: &RevisionKey) -> u32 {
        let mut next = lock(&self.inner.next_index);
        let next = next.entry(key.clone()).or_default();
        let index = *next;
        *next = next.saturating_add(1);
        index
    }

    /// Starts the task of a new instance (a reserved one with `reserved`) whose first run uses
    /// `port`.
    fn start(
        &self,
        spec: &Arc<RevisionSpec>,
        reserved: Option<&Arc<ReservedSpec>>,
        index: u32,
        port: u16,
    ) -> Handle {
        let key = spec.key();
        let name = format!("{}-{index}", spec.revision);
        self.inner.board.insert(
            &key,
            InstanceStatus {
                index,
                name: name.clone(),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                ready: false,
                state: InstanceState::Starting,
                pid: None,
                restarts: 0,
                last_exit: None,
                last_error: None,
                reserved: reserved.is_some(),
                start_time: None,
            },
        );
        let span = tracing::info_span!("instance", revision = %key, index);
        let instance = Instance {
            log_path: self.log_path(&key),
            pid_dir: self.inner.state_dir.join(RUN_DIR),
            key,
            index,
            name,
            spec: Arc::clone(spec),
            reserved: reserved.cloned(),
            board: Arc::clone(&self.inner.board),
            options: self.inner.options,
        };
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(instance.run(port, stop_rx).instrument(span));
        Handle { index, stop, task }
    }

    fn mark_stopping(&self, key: &RevisionKey, index: u32) {
        self.inner
            .board
            .update(key, index, |s| s.state = InstanceState::Stopping);
    }

    /// Stops every instance of `revision` and forgets its spec; returns once the processes
    /// are gone (each gets the grace period after SIGTERM). Unknown revisions are fine.
    pub async fn remove(&self, revision: &RevisionKey) {
        let removed = lock(&self.inner.revisions).remove(revision);
        let Some(removed) = removed else {
            return;
        };
        let tasks: Vec<JoinHandle<()>> = removed
            .instances
            .into_iter()
            .chain(removed.reserved)
            .map(|handle| {
                self.mark_stopping(revision, handle.index);
                handle.stop()
            })
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(revision = %revision, %error, "instance task failed");
            }
        }
        // Instances stopped earlier by a scale-down may still be in their grace period.
        let mut version = self.inner.board.version();
        while !self.inner.board.instances(revision).is_empty() {
            if version.changed().await.is_err() {
                break;
            }
        }
    }

    /// Stops every revision's instances and waits until the processes are gone.
    pub async fn shutdown(&self) {
        let keys: Vec<RevisionKey> = lock(&self.inner.revisions).keys().cloned().collect();
        // All at once: each stop waits out the drain delay and up to the grace period.
        let tasks: Vec<JoinHandle<()>> = keys
            .into_iter()
            .map(|key| {
                let runtime = self.clone();
                tokio::spawn(async move { runtime.remove(&key).await })
            })
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "stopping a revision failed");
            }
        }
    }

    /// The instances of `revision` (including crashed and stopping ones), by index.
    pub fn instances(&self, revision: &RevisionKey) -> Vec<InstanceStatus> {
        self.inner.board.instances(revision)
    }

    /// The addresses of `revision`'s ready instances, sorted.
    pub fn ready_addrs(&self, revision: &RevisionKey) -> Vec<SocketAddr> {
        self.inner.board.ready_addrs(revision)
    }

    /// The revisions the runtime has a spec for (see [`ProcessRuntime::ensure`]).
    pub fn revisions(&self) -> Vec<RevisionKey> {
        lock(&self.inner.revisions).keys().cloned().collect()
    }

    /// The last spec given for `revision`.
    pub fn spec(&self, revision: &RevisionKey) -> Option<RevisionSpec> {
        lock(&self.inner.revisions)
            .get(revision)
            .map(|r| RevisionSpec::clone(&r.spec))
    }

    /// Every change to any instance (started, ready, unready, crashed, stopping, gone), with
    /// the revision's ready addresses after it.
    ///
    /// A subscriber that falls more than 1024 changes behind gets `Lagged`: it should then
    /// re-read [`ProcessRuntime::ready_addrs`] for every revision it serves.
    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeChange> {
        self.inner.board.subscribe()
    }

    /// A counter bumped on every change: a cheap "something changed" signal that never lags.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.board.version()
    }

    /// Waits until `revision` has at least `count` ready instances. Never returns if it does
    /// not get there: wrap it in a timeout.
    pub async fn wait_ready(&self, revision: &RevisionKey, count: usize) {
        let mut version = self.inner.board.version();
        while self.inner.board.ready_addrs(revision).len() < count {
            if version.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Whether two specs start the same processes (`containerConcurrency` does not matter here).
fn same_process(a: &RevisionSpec, b: &RevisionSpec) -> bool {
    RevisionSpec {
        container_concurrency: 0,
        ..a.clone()
    } == RevisionSpec {
        container_concurrency: 0,
        ..b.clone()
    }
}

/// The autoscaler's decisions: scale the revision's last known spec.
impl Scaler for ProcessRuntime {
    async fn scale(&self, revision: &RevisionKey, desired: u32) -> Result<(), ScaleError> {
        let spec = self.spec(revision).ok_or_else(|| ScaleError::NotFound {
            revision: revision.clone(),
        })?;
        self.ensure(spec, desired)
            .await
            .map_err(|e| ScaleError::Failed {
                revision: revision.clone(),
                desired,
                source: Box::new(e),
            })
    }
}
