//! `sluice up DIR`: Knative Serving on one machine. Knative YAML under DIR (Services,
//! Configurations, Routes, `config-*` ConfigMaps, and anything `sluice gateway --dir` reads)
//! is watched; the serving controller ([`controller::Controller`]) turns it into Revisions run
//! as local processes ([`crate::runtime::ProcessRuntime`]) and KIngresses served by the
//! gateway core and Envoy.
//!
//! Created Revisions and their generation numbers persist in `--state-dir` (default
//! `DIR/.sluice`, which the watcher ignores), so traffic naming an older Revision survives
//! template edits and restarts. Revision logs are under `STATE_DIR/logs` (`sluice logs`).

pub mod autoscale;
pub mod controller;
pub mod metrics;
mod scaling;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Args;
use sluice_serving::serving::{Key, Readiness, ServingState};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::cli::CliError;
use crate::gateway::documents::{Kind, Problem};
use crate::gateway::source::{FileSource, Input};
use crate::gateway::{Feed, GatewayArgs, Hooks, Source};
use crate::runtime::{InstanceState, InstanceStatus, ProcessRuntime};
use autoscale::{Autoscaling, ScalingView};
use controller::{Controller, Run, RuntimeReport};
use metrics::{EnvoySampler, EnvoyStats};
use sluice_activator::{Activator, ActivatorConfig};
pub use view::{InstanceView, RevisionView, ServingView};

/// The file in the state directory holding [`ServingState`].
pub const STATE_FILE: &str = "state.json";

/// How long state writes are held back to batch them.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(200);

/// `sluice up` flags (names as in DESIGN.md's command-line contract; every default address is
/// on loopback).
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory of Knative YAML/JSON (Service, Configuration, Route, config-* ConfigMaps),
    /// read recursively and watched.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// External plain-HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub external_http: SocketAddr,
    /// Internal plain-HTTP listener (cluster-local Services too).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub internal_http: SocketAddr,
    /// External HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub external_https: SocketAddr,
    /// Internal HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub internal_https: SocketAddr,
    /// xDS gRPC server (ADS, CSDS, dump service, reflection).
    #[arg(long, default_value = "127.0.0.1:18000")]
    pub xds: SocketAddr,
    /// Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub envoy_admin: SocketAddr,
    /// Debug HTTP server: /metrics, /healthz, /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// The activator (Envoy sends a Revision's traffic here while it is at zero or short of
    /// burst capacity: it holds requests while instances start).
    #[arg(long, default_value = "127.0.0.1:8012")]
    pub activator: SocketAddr,
    /// The most requests the activator holds waiting, per Revision and in all; beyond it
    /// requests get 503 at once (this bounds its memory under a flood).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub activator_queue: usize,
    /// Envoy binary (else SLUICE_ENVOY, PATH, ./.venv/bin/envoy).
    #[arg(long, value_name = "PATH")]
    pub envoy: Option<PathBuf>,
    /// Serve xDS only; run Envoy yourself (`sluice envoy bootstrap` prints its bootstrap).
    #[arg(long)]
    pub no_envoy: bool,
    /// Node id of the launched Envoy.
    #[arg(long, default_value = "sluice-gateway")]
    pub node_id: String,
    /// xDS variant the launched Envoy speaks: delta or sotw.
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    pub xds_mode: String,
    /// Domain of the Services' URLs (`{name}.{namespace}.{domain}`); default from
    /// config-domain, else example.com.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Where created Revisions and logs are kept (default DIR/.sluice, ignored by the watcher).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl UpArgs {
    fn gateway_args(&self) -> GatewayArgs {
        GatewayArgs {
            dir: None,
            kube: false,
            external_http: self.external_http,
            internal_http: self.internal_http,
            external_https: self.external_https,
            internal_https: self.internal_https,
            xds: self.xds,
            envoy_admin: self.envoy_admin,
            debug: self.debug,
            envoy: self.envoy.clone(),
            no_envoy: self.no_envoy,
            node_id: self.node_id.clone(),
            xds_mode: self.xds_mode.clone(),
            public_service: String::new(),
            private_service: String::new(),
            instance: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `sluice up` until Ctrl-C / SIGTERM; then stops every revision's processes and Envoy.
pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    if !args.dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{}: not a directory (sluice up DIR reads Knative YAML under DIR)",
            args.dir.display()
        )));
    }
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.dir.display())))?;
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => dir.join(".sluice"),
    };
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        CliError::Usage(format!(
            "--state-dir {}: cannot create it: {e}",
            state_dir.display()
        ))
    })?;
    let state_dir = state_dir.canonicalize().unwrap_or(state_dir);
    let state = load_state(&state_dir)?;
    let runtime = ProcessRuntime::new(state_dir.clone());
    let orphans = runtime.reap_orphans().await;
    if !orphans.is_empty() {
        eprintln!(
            "sluice up: stopped {} process(es) (revision instances, Envoy) an earlier sluice up left running",
            orphans.len()
        );
    }

    // Watch first, then scan: nothing written in between is missed.
    let ignore = vec![state_dir.clone()];
    let watch = crate::files::watch(&dir, ignore.clone()).map_err(|e| CliError::Other(e.into()))?;
    let scanned = crate::files::scan(&dir, &ignore).map_err(|e| CliError::Usage(e.to_string()))?;

    let activator_listener = tokio::net::TcpListener::bind(args.activator)
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "--activator {}: cannot listen there ({e}); choose another address",
                args.activator
            ))
        })?;
    let (activator, pokes) = Activator::new(ActivatorConfig {
        throttler: sluice_activator::ThrottlerConfig {
            revision_queue: args.activator_queue,
            global_queue: args.activator_queue,
        },
        ..ActivatorConfig::default()
    });
    let controller = Arc::new(Mutex::new(
        Controller::new(state, args.domain.clone()).with_activator(args.activator),
    ));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(256);
    let feed = Feed {
        inputs: rx,
        describe: dir.display().to_string(),
        problems: problems.clone(),
    };
    let scaling_views = Arc::new(Mutex::new(BTreeMap::new()));
    let serving_status = view::status_fn(
        controller.clone(),
        runtime.clone(),
        state_dir.clone(),
        scaling_views.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let activator_task = {
        let activator = activator.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = activator.serve(activator_listener, stopped).await {
                tracing::error!(error = %e, "the activator stopped");
            }
        })
    };
    let envoy_stats = Arc::new(Mutex::new(EnvoySampler::default()));
    tokio::spawn(sample_envoy(
        EnvoyStats::new(args.envoy_admin),
        envoy_stats.clone(),
        stop_rx.clone(),
    ));
    let looper = Loop {
        controller: controller.clone(),
        runtime: runtime.clone(),
        state_dir: state_dir.clone(),
        problems,
        tx,
        files: FileSource::new(),
        spec_errors: BTreeMap::new(),
        ever_ready: BTreeSet::new(),
        announced: BTreeSet::new(),
        external_http: args.external_http,
        state_due: None,
        autoscaling: Autoscaling::default(),
        activator,
        pokes,
        runs: BTreeMap::new(),
        requested: BTreeMap::new(),
        envoy_stats,
        scaling_views,
    };
    let task = tokio::spawn(looper.run(scanned, watch, stop_rx));
    let result = crate::gateway::serve(
        &args.gateway_args(),
        Source::Feed(feed),
        None,
        Hooks {
            name: Some("sluice up"),
            serving_status: Some(serving_status),
            // Envoy's start-up chatter would drown the URLs a user is looking for.
            envoy_log_level: Some("warning"),
            envoy_args: vec!["--concurrency", "1"],
            envoy_pid_dir: Some(state_dir.join(crate::runtime::RUN_DIR)),
        },
    )
    .await;
    stop_tx.send_replace(true);
    let _ = task.await;
    let _ = activator_task.await;
    eprintln!("sluice up: stopping revision processes");
    runtime.shutdown().await;
    result
}

/// Reads the persisted state; a missing file is a fresh start.
fn load_state(state_dir: &Path) -> Result<ServingState, CliError> {
    let path = state_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => ServingState::from_json(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{}: not a Sluice state file ({e}); move it away to start afresh (created revisions are then forgotten)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ServingState::default()),
        Err(e) => Err(CliError::Usage(format!("{}: {e}", path.display()))),
    }
}

/// Writes the state atomically (a temporary file renamed over the old one).
fn save_state(state_dir: &Path, state: &ServingState) -> std::io::Result<()> {
    let path = state_dir.join(STATE_FILE);
    let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, state.to_json())?;
    std::fs::rename(&tmp, &path)
}

/// The controller's event loop: file changes and runtime changes in; gateway inputs, process
/// starts and stops, and state writes out.
struct Loop {
    controller: Arc<Mutex<Controller>>,
    runtime: ProcessRuntime,
    state_dir: PathBuf,
    problems: Arc<Mutex<Vec<Problem>>>,
    tx: mpsc::Sender<Vec<Input>>,
    files: FileSource,
    /// Revisions the runtime refused to run, and why.
    spec_errors: BTreeMap<Key, String>,
    /// Revisions that had a ready instance once (they stay Ready at zero instances).
    ever_ready: BTreeSet<Key>,
    /// Routes whose URL was printed.
    announced: BTreeSet<Key>,
    external_http: SocketAddr,
    /// When the state must be written (None: it is up to date).
    state_due: Option<Instant>,
    /// The KPA of every active Revision.
    autoscaling: Autoscaling,
    /// The in-process activator.
    activator: Activator,
    /// Revisions whose requests wait at zero.
    pokes: mpsc::Receiver<sluice_autoscaler::RevisionKey>,
    /// The last [`Run`] of each autoscaled Revision.
    runs: BTreeMap<Key, Run>,
    /// Instances asked of the runtime per Revision.
    requested: BTreeMap<Key, u32>,
    /// Envoy's per-Revision figures, sampled in the background.
    envoy_stats: Arc<Mutex<EnvoySampler>>,
    /// What `sluice status` shows of each Revision's scaling.
    scaling_views: Arc<Mutex<BTreeMap<Key, ScalingView>>>,
}

impl Loop {
    async fn run(
        mut self,
        scanned: Vec<(PathBuf, String)>,
        mut watch: crate::files::DirWatch,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut changes = self.runtime.subscribe();
        let mut ticks = tokio::time::interval(scaling::TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inputs = Vec::new();
        for (path, text) in &scanned {
            let c = self.files.file_changed(path, text);
            self.route(c, &mut inputs);
        }
        tracing::info!(files = scanned.len(), "directory scanned");
        self.pass(inputs, true).await;
        loop {
            let mut inputs = Vec::new();
            let due = self.state_due;
            tokio::select! {
                batch = watch.changes.recv() => {
                    let Some(batch) = batch else { break };
                    tracing::debug!(files = batch.len(), "file changes");
                    for change in &batch {
                        let c = self.files.apply(change);
                        self.route(c, &mut inputs);
                    }
                }
                change = changes.recv() => match change {
                    Ok(c) => self.refresh(&[Key::new(&c.revision.namespace, &c.revision.name)]),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let all = lock(&self.controller).revisions();
                        self.refresh(&all);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = sleep_until(due) => {
                    self.write_state();
                    continue;
                }
                _ = ticks.tick() => {
                    if !self.tick().await {
                        continue;
                    }
                }
                Some(key) = self.pokes.recv() => {
                    if !self.poked(key).await {
                        continue;
                    }
                }
                () = stopped(&mut stop) => break,
            }
            self.pass(inputs, false).await;
        }
        if self.state_due.is_some() {
            self.write_state();
        }
    }

    /// Hands Knative objects and ConfigMaps to the controller (with the file defining them;
    /// a deleted one has none), everything else to the gateway.
    fn route(&mut self, changes: Vec<crate::gateway::source::Change>, inputs: &mut Vec<Input>) {
        let mut c = lock(&self.controller);
        for (key, object) in changes {
            if key.kind.is_serving() || key.kind == Kind::ConfigMap {
                let file = self.files.file_of(&key).unwrap_or(Path::new(""));
                c.object_changed(&key, object, file);
            } else {
                inputs.push(Input::Change((key, object)));
            }
        }
    }

    /// Re-reads what the runtime says about `revisions`.
    fn refresh(&mut self, revisions: &[Key]) {
        let mut c = lock(&self.controller);
        for key in revisions {
            let rk = sluice_autoscaler::RevisionKey::new(&key.namespace, &key.name);
            let instances = self.runtime.instances(&rk);
            let ready = self.runtime.ready_addrs(&rk);
            if self.activator.revision(&rk).is_some()
                && let Err(e) = self.activator.update_instances(&rk, &ready)
            {
                tracing::debug!(revision = %key, error = %e, "activator instances");
            }
            if !ready.is_empty() {
                self.ever_ready.insert(key.clone());
            }
            let readiness = readiness_of(
                key,
                &instances,
                self.spec_errors.get(key),
                self.ever_ready.contains(key),
            );
            c.runtime_changed(key, RuntimeReport { ready, readiness });
        }
    }

    /// Reconciles until nothing changes, carrying out each pass's output; `initial` marks the
    /// first pass (after it the gateway may publish).
    async fn pass(&mut self, mut inputs: Vec<Input>, initial: bool) {
        let started = std::time::Instant::now();
        // A refused spec feeds back as a failed Revision: a second pass settles it.
        for _ in 0..3 {
            let out = lock(&self.controller).reconcile();
            inputs.extend(out.gateway.into_iter().map(Input::Change));
            if out.state_changed {
                self.state_due
                    .get_or_insert(Instant::now() + STATE_WRITE_DELAY);
            }
            self.autoscaling
                .set_config(lock(&self.controller).autoscaler_config().clone());
            for key in out.remove {
                self.forget_revision(&key);
                self.spec_errors.remove(&key);
                self.ever_ready.remove(&key);
                let runtime = self.runtime.clone();
                let rk = sluice_autoscaler::RevisionKey::new(&key.namespace, &key.name);
                tokio::spawn(async move { runtime.remove(&rk).await });
            }
            let keys: Vec<Key> = out
                .run
                .iter()
                .map(|r| Key::new(&r.spec.namespace, &r.spec.revision))
                .collect();
            let mut refused = Vec::new();
            for (key, e) in self.apply_runs(out.run).await {
                tracing::warn!(revision = %key, error = %e, "cannot run the revision");
                self.spec_errors.insert(key.clone(), e.to_string());
                refused.push(key);
            }
            for key in keys {
                if !refused.contains(&key) {
                    self.spec_errors.remove(&key);
                }
            }
            if refused.is_empty() {
                break;
            }
            self.refresh(&refused);
        }
        if initial {
            inputs.push(Input::Synced);
        }
        {
            let c = lock(&self.controller);
            let mut problems = self.files.problems();
            problems.extend(c.problems());
            *lock(&self.problems) = problems;
        }
        tracing::debug!(
            inputs = inputs.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "serving pass"
        );
        // Even an empty batch: the gateway refreshes its problems from it.
        if self.tx.send(inputs).await.is_err() {
            return;
        }
        self.announce();
    }

    /// Prints each Route's URL once it is first served.
    fn announce(&mut self) {
        let c = lock(&self.controller);
        for (key, url) in c.served_urls() {
            if self.announced.insert(key.clone()) {
                let host = url
                    .split_once("://")
                    .map_or(url.as_str(), |(_, h)| h)
                    .to_string();
                eprintln!(
                    "sluice up: {}/{} is served at {url}\n  try: curl -H 'Host: {host}' http://{}/",
                    key.namespace, key.name, self.external_http
                );
            }
        }
        self.announced.retain(|k| c.is_served(k));
    }

    fn write_state(&mut self) {
        self.state_due = None;
        let state = lock(&self.controller).state().clone();
        if let Err(e) = save_state(&self.state_dir, &state) {
            tracing::error!(dir = %self.state_dir.display(), error = %e, "cannot write the state; created revisions may be forgotten on restart");
        }
    }
}

/// Samples Envoy's per-Revision gauges every [`metrics::SAMPLE_INTERVAL`] until `stop`.
async fn sample_envoy(
    stats: EnvoyStats,
    into: Arc<Mutex<EnvoySampler>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(metrics::SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !lock(&into).wanted() {
            continue;
        }
        match stats.read().await {
            Ok(samples) => lock(&into).add(&samples),
            Err(e) => tracing::trace!(error = %e, "Envoy stats"),
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A Revision's readiness from its instances: Ready with a ready instance (or once it had one:
/// a Revision stays Ready when it runs no instance, as upstream at zero scale); Failed when the
/// runtime refused it or its instances crash before ever becoming ready; else Pending.
fn readiness_of(
    key: &Key,
    instances: &[InstanceStatus],
    spec_error: Option<&String>,
    ever_ready: bool,
) -> Readiness {
    if let Some(e) = spec_error {
        return Readiness::Failed {
            reason: "ContainerMissing".into(),
            message: e.clone(),
        };
    }
    if ever_ready || instances.iter().any(|i| i.ready) {
        return Readiness::Ready;
    }
    let crashed = instances
        .iter()
        .find(|i| matches!(i.state, InstanceState::Crashed { .. }));
    match crashed {
        Some(i) => {
            let what = match (&i.last_error, &i.last_exit) {
                (Some(e), _) => format!("could not start: {e}"),
                (None, Some(exit)) => format!("exited ({exit})"),
                (None, None) => "exited".into(),
            };
            Readiness::Failed {
                reason: if i.last_error.is_some() {
                    "StartFailed".into()
                } else {
                    "ExitCode".into()
                },
                message: format!(
                    "instance {} {what}; restarted {} time(s); see `sluice logs {} -n {}`",
                    i.name, i.restarts, key.name, key.namespace
                ),
            }
        }
        None => Readiness::Pending,
    }
}

/// Completes once `stop` turns true (its guard is not held: the caller stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
