//! `sluice up DIR`: Knative Serving on one machine. Knative YAML under DIR (Services,
//! Configurations, Routes, `config-*` ConfigMaps, and anything `sluice gateway --dir` reads)
//! is watched; the serving controller ([`controller::Controller`]) turns it into Revisions run
//! as local processes ([`crate::runtime::ProcessRuntime`]) and KIngresses served by the
//! gateway core and Envoy.
//!
//! Created Revisions and their generation numbers persist in `--state-dir` (default
//! `DIR/.sluice`, which the watcher ignores), so traffic naming an older Revision survives
//! template edits and restarts. Revision logs are under `STATE_DIR/logs` (`sluice logs`).

pub mod controller;
pub mod metrics;
mod scaling;
mod serving_loop;
pub mod usage;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Args;
use sluice_serving::serving::ServingState;
use tokio::sync::{mpsc, watch};

use crate::autoscale::Autoscaling;
use crate::cli::CliError;
use crate::gateway::source::FileSource;
use crate::gateway::{Feed, GatewayArgs, Hooks, Source};
use crate::runtime::ProcessRuntime;
use controller::Controller;
use metrics::{EnvoySampler, EnvoyStats};
use serving_loop::{Loop, sample_envoy};
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
            envoy_stats: None,
            metrics_sink: None,
            debug: self.debug,
            envoy: self.envoy.clone(),
            no_envoy: self.no_envoy,
            node_id: self.node_id.clone(),
            xds_mode: self.xds_mode.clone(),
            public_service: String::new(),
            private_service: String::new(),
            xds_tls_cert: None,
            xds_tls_key: None,
            xds_tls_client_ca: None,
            secrets_with_certificate_uid: false,
            instance: None,
            gateway_pods: None,
            lease: String::new(),
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
    let activator_metrics = activator.clone();
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
        refused_annotations: BTreeMap::new(),
        retiring: BTreeMap::new(),
        reserved_specs: BTreeMap::new(),
        usage: usage::UsageSampler::default(),
        history_minute: 0,
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
            metrics: Some(Box::new(move |registry| {
                activator_metrics.register_metrics(registry)
            })),
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
