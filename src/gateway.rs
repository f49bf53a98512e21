//! `sluice gateway --dir DIR | --kube`: KIngresses (and the Services, endpoints
//! and Secrets they name) from a directory of YAML/JSON files or from the
//! cluster, translated incrementally and served over xDS to an Envoy that
//! Sluice launches (or one you run, `--no-envoy`). Both sources feed one core
//! ([`Input`]s in, snapshots out).
//!
//! Readiness is proven, not assumed: a KIngress is Ready once every connected
//! Envoy ACKed its route configuration and a probe through Envoy answered its
//! `K-Network-Hash`.

pub mod documents;
pub(crate) mod ha;
pub mod kube;
pub mod probe;
mod readiness;
pub mod source;
pub mod state;
mod status;

use readiness::{Readiness, readiness_loop};
use status::status_of;
pub use status::{GatewayPodView, GatewayStatus, IngressStatusView, NodeView, ProblemView};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{ArgGroup, Args};
use sluice_serving::GatewayConfig;
use sluice_serving::ingress::IngressKey;
use sluice_serving::kube::LoadBalancers;
use sluice_xds::{Metrics, SnapshotCache, Update, XdsServer, single_group};
use tokio::sync::{Notify, watch};

use crate::cli::CliError;
use crate::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use documents::Problem;
use source::{Change, FileSource, Input};
use state::GatewayState;

/// The snapshot group every gateway Envoy is served from.
pub const GROUP: &str = "gateway";

/// `sluice gateway` flags (names as in DESIGN.md's command-line contract).
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["dir", "kube"])))]
pub struct GatewayArgs {
    /// Directory of YAML/JSON files (KIngress, Service, EndpointSlice, Endpoints, Secret), read
    /// recursively and watched.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Read the cluster instead (kubeconfig: KUBECONFIG or ~/.kube/config, else the in-cluster
    /// config): KIngresses of our class and the Services, EndpointSlices and Secrets they name;
    /// writes KIngress status and events.
    #[arg(long)]
    pub kube: bool,
    /// External plain-HTTP listener (ExternalIP hosts).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub external_http: SocketAddr,
    /// Internal plain-HTTP listener (every host, ClusterLocal included).
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub internal_http: SocketAddr,
    /// External HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub external_https: SocketAddr,
    /// Internal HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:8444")]
    pub internal_https: SocketAddr,
    /// xDS gRPC server (ADS, CSDS, dump service, reflection).
    #[arg(long, default_value = "127.0.0.1:18000")]
    pub xds: SocketAddr,
    /// Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub envoy_admin: SocketAddr,
    /// A listener of the launched Envoy for Prometheus: `GET /stats/prometheus` (and `GET
    /// /ready`) answered from the admin interface, nothing else (none by default).
    #[arg(long, value_name = "ADDR")]
    pub envoy_stats: Option<SocketAddr>,
    /// The launched Envoy streams its stats every second to Sluice's autoscaler at HOST:PORT
    /// (Envoy's MetricsService sink): each revision's concurrency summed over every gateway
    /// Envoy, without a queue-proxy.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_sink: Option<String>,
    /// Debug HTTP server: /metrics, /healthz, /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// Envoy binary (else SLUICE_ENVOY, PATH, ./.venv/bin/envoy).
    #[arg(long, value_name = "PATH")]
    pub envoy: Option<PathBuf>,
    /// Serve xDS only; run Envoy yourself (`sluice envoy bootstrap` prints its bootstrap).
    #[arg(long)]
    pub no_envoy: bool,
    /// Node id of the gateway's Envoys (the launched one, or those you run with --no-envoy):
    /// only streams with this node id count for readiness.
    #[arg(long, default_value = "sluice-gateway")]
    pub node_id: String,
    /// xDS variant the launched Envoy speaks: delta or sotw.
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    pub xds_mode: String,
    /// With --kube: the external gateway Service's cluster DNS name, written to each KIngress's
    /// status.publicLoadBalancer.
    #[arg(long, value_name = "DOMAIN", conflicts_with = "dir", default_value_t = LoadBalancers::default().public)]
    pub public_service: String,
    /// With --kube: the internal gateway Service's cluster DNS name, written to each KIngress's
    /// status.privateLoadBalancer.
    #[arg(long, value_name = "DOMAIN", conflicts_with = "dir", default_value_t = LoadBalancers::default().private)]
    pub private_service: String,
    /// With --kube: watch only Secrets labelled networking.internal.knative.dev/certificate-uid
    /// (those Knative's certificate controller makes), as net-kourier's
    /// ENABLE_SECRET_INFORMER_FILTERING_BY_CERT_UID. Either way only the Secrets KIngresses
    /// name are kept in memory.
    #[arg(
        long,
        env = "ENABLE_SECRET_INFORMER_FILTERING_BY_CERT_UID",
        conflicts_with = "dir"
    )]
    pub secrets_with_certificate_uid: bool,
    /// Serve xDS over TLS with this certificate chain (PEM file); needs --xds-tls-key. For Envoys
    /// in other pods (so --no-envoy: the Envoy Sluice launches connects over loopback).
    #[arg(long, value_name = "PATH", requires_all = ["xds_tls_key", "no_envoy"])]
    pub xds_tls_cert: Option<PathBuf>,
    /// The private key of --xds-tls-cert (PEM file).
    #[arg(long, value_name = "PATH", requires = "xds_tls_cert")]
    pub xds_tls_key: Option<PathBuf>,
    /// Require mutual TLS: clients (Envoys, `sluice xds`) must present a certificate from this CA
    /// (PEM file); others are refused in the TLS handshake.
    #[arg(long, value_name = "PATH", requires = "xds_tls_cert")]
    pub xds_tls_client_ca: Option<PathBuf>,
    /// With --kube: this gateway's name in the Events it publishes and its Lease holder
    /// identity (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME", conflicts_with = "dir")]
    pub instance: Option<String>,
    /// With --kube: the Service whose EndpointSlices list the gateway's Envoy pods (e.g.
    /// knative-serving/sluice-internal). A KIngress is then Ready once a probe through every
    /// ready pod answers its hash, whichever control-plane replica the pod is connected to (as
    /// Kourier proves readiness); without it, through this replica's own Envoys.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "dir")]
    pub gateway_pods: Option<String>,
    /// With --kube: the Lease the control-plane replicas elect their leader on (only the leader
    /// writes KIngress status and events), as NAMESPACE/NAME.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "knative-serving/sluice-gateway",
        conflicts_with = "dir"
    )]
    pub lease: String,
}

/// Runs the gateway until Ctrl-C / SIGTERM.
///
/// Both sources share one core: inputs (object changes, rejections) are buffered until the
/// source is synced (the directory scanned, every watch listed once), then translated and
/// published; from there on each batch is applied incrementally. Readiness is proven by ACK +
/// probe and shown in `/status`; under `--kube` it is also written to each KIngress's status.
pub async fn run(args: GatewayArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    let mut election = None;
    let (source, reporter) = match &args.dir {
        Some(dir) => (Source::Dir(DirSource::open(dir)?), None),
        None => {
            let (client, origin) = kube_client().await?;
            let elected = crate::election::Election::start(
                client.clone(),
                &args.lease,
                args.instance.clone(),
            )?;
            let (leader, instance) = (elected.leader.clone(), elected.instance.clone());
            election = Some(elected);
            let reporter = kube::StatusReporter::new(
                client.clone(),
                LoadBalancers {
                    public: args.public_service.clone(),
                    private: args.private_service.clone(),
                },
                instance,
            )
            .with_leader(leader);
            (
                Source::Kube(
                    Box::new(kube::KubeInputs::new(
                        client,
                        args.secrets_with_certificate_uid,
                    )),
                    origin,
                ),
                Some(reporter),
            )
        }
    };

    let result = serve(&args, source, reporter, Hooks::default()).await;
    // Hand the Lease over at once (a successor need not wait a full lease duration).
    if let Some(election) = election {
        election.release().await;
    }
    result
}

/// What `sluice up` adds to the gateway.
#[derive(Default)]
pub(crate) struct Hooks {
    /// The command's name in messages (default `sluice gateway`).
    pub(crate) name: Option<&'static str>,
    /// The serving section of `/status`, given the gateway's own.
    pub(crate) serving_status: Option<ServingStatusFn>,
    /// Envoy's `--log-level` (default: the launcher's).
    pub(crate) envoy_log_level: Option<&'static str>,
    /// More arguments for Envoy.
    pub(crate) envoy_args: Vec<&'static str>,
    /// Where to keep Envoy's pid file (see [`crate::runtime::pids`]).
    pub(crate) envoy_pid_dir: Option<PathBuf>,
    /// Registers more metrics on the debug server's `/metrics` (the activator's).
    pub(crate) metrics: Option<MetricsHook>,
}

/// Adds metrics to the debug server's registry.
pub(crate) type MetricsHook = Box<dyn FnOnce(&mut prometheus_client::registry::Registry) + Send>;

/// The name of Envoy's pid file among the instances' ones.
const ENVOY_PID_NAME: &str = "envoy";

/// Builds `/status`'s serving section from the gateway's status.
pub(crate) type ServingStatusFn =
    Arc<dyn Fn(&GatewayStatus) -> crate::up::ServingView + Send + Sync>;

/// Serves `source` until it ends or a signal arrives: the xDS and debug servers, Envoy (unless
/// `--no-envoy`), the readiness prover and (under `--kube`) the status reporter.
pub(crate) async fn serve(
    args: &GatewayArgs,
    mut source: Source,
    reporter: Option<kube::StatusReporter>,
    mut hooks: Hooks,
) -> Result<(), CliError> {
    let name = hooks.name.unwrap_or("sluice gateway");
    // Before anything answers (the debug server's /healthz tells callers we are up): a SIGTERM
    // from then on is a clean shutdown, never the default action.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(e.into()))?;
    let mode: XdsMode = args
        .xds_mode
        .parse()
        .map_err(|e| CliError::Usage(format!("--xds-mode: {e}")))?;
    let config = GatewayConfig {
        external_http: args.external_http,
        internal_http: args.internal_http,
        external_https: args.external_https,
        internal_https: args.internal_https,
        envoy_admin: args.envoy_admin,
        ..GatewayConfig::default()
    };
    let cache = SnapshotCache::new();
    let mut registry = crate::debug::registry();
    let metrics = Metrics::register(&mut registry);
    if let Some(register) = hooks.metrics.take() {
        register(&mut registry);
    }
    let mut server = XdsServer::with_metrics(cache.clone(), single_group(GROUP), metrics);
    if let Some(tls) = server_tls(args)? {
        server = server.with_tls(tls);
    }
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Usage(format!("{flag} {addr}: cannot listen: {e}")))
    };
    let xds_listener = bind(args.xds, "--xds").await?;
    let debug_listener = bind(args.debug, "--debug").await?;

    let readiness = Readiness::default();
    registry.register(
        "gateway_kingresses",
        "KIngresses by readiness: ready (ACKed and probed through Envoy), waiting (served at a \
         hash not proven yet), failed (translation failed or a host lost to another KIngress)",
        readiness.gauge.clone(),
    );
    let shared = Arc::new(Mutex::new(Shared {
        configured: false,
        state: GatewayState::with_env(config.clone(), kourier_env()),
        problems: Vec::new(),
        readiness,
        rejected: BTreeMap::new(),
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let status_fn: crate::debug::StatusFn = {
        let shared = shared.clone();
        let nodes = server.nodes().clone();
        let serving = hooks.serving_status.clone();
        let node_id = args.node_id.clone();
        Arc::new(move || {
            let mut status = {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                status_of(&s, &nodes, &node_id)
            };
            if let Some(serving) = &serving {
                status.serving = Some(serving(&status));
            }
            serde_json::to_value(status).unwrap_or_default()
        })
    };
    let ready_fn: crate::debug::ReadyFn = {
        let shared = shared.clone();
        Arc::new(move || shared.lock().unwrap_or_else(|e| e.into_inner()).configured)
    };
    let mut rx = stop_rx.clone();
    tokio::spawn(crate::debug::serve(
        debug_listener,
        Arc::new(registry),
        status_fn,
        ready_fn,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    // Nothing is sent to Envoy before the first publish (the cache is at generation 0), so
    // serving xDS before the source is synced is safe.
    let mut rx = stop_rx.clone();
    let xds_task = tokio::spawn(server.clone().serve(xds_listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));

    let metrics_sink = args
        .metrics_sink
        .as_deref()
        .map(|s| crate::cli::envoy::host_port("--metrics-sink", s))
        .transpose()?;
    let envoy = if args.no_envoy {
        None
    } else {
        let binary =
            find_envoy(args.envoy.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?;
        let work_dir =
            std::env::temp_dir().join(format!("{}-{}", name.replace(' ', "-"), std::process::id()));
        let yaml = render(&BootstrapParams {
            node_id: args.node_id.clone(),
            xds: probe::loopback_for(args.xds),
            mode,
            admin: args.envoy_admin,
            stats: args.envoy_stats,
            metrics_sink,
            ..BootstrapParams::default()
        });
        let mut cfg = LaunchConfig::new(binary, yaml, &work_dir);
        if let Some(level) = hooks.envoy_log_level {
            cfg.log_level = level.to_owned();
        }
        cfg.extra_args
            .extend(hooks.envoy_args.iter().map(|a| (*a).to_owned()));
        Some(
            Envoy::start(cfg)
                .await
                .map_err(|e| CliError::Other(e.into()))?,
        )
    };
    // Under `sluice up`, Envoy's pid is kept in the state directory so that the next start
    // can stop an Envoy a killed run left behind (holding the listener ports).
    let pid_file = match (&envoy, &hooks.envoy_pid_dir) {
        (Some(e), Some(dir)) => {
            let mut status = e.subscribe();
            let dir = dir.clone();
            Some(tokio::spawn(async move {
                loop {
                    let pid = status.borrow_and_update().pid;
                    match pid {
                        Some(pid) => crate::runtime::pids::record(&dir, ENVOY_PID_NAME, pid),
                        None => crate::runtime::pids::forget(&dir, ENVOY_PID_NAME),
                    }
                    if status.changed().await.is_err() {
                        crate::runtime::pids::forget(&dir, ENVOY_PID_NAME);
                        return;
                    }
                }
            }))
        }
        _ => None,
    };
    eprintln!(
        "{name}: reading {}\n  external http {}  internal http {}  external https {}  internal https {}\n  xDS {} ({mode})  debug http://{}  Envoy admin http://{}{}",
        source.describe(),
        args.external_http,
        args.internal_http,
        args.external_https,
        args.internal_https,
        args.xds,
        args.debug,
        args.envoy_admin,
        if args.no_envoy {
            "  (--no-envoy: run Envoy yourself)"
        } else {
            ""
        },
    );

    // Poked whenever a KIngress's readiness may have changed (for the status reporter).
    let changed = Arc::new(Notify::new());
    let gateway_pods = match &args.gateway_pods {
        Some(s) => Some(
            ha::parse_service(s).map_err(|e| CliError::Usage(format!("--gateway-pods: {e}")))?,
        ),
        None => None,
    };
    let readiness = tokio::spawn(readiness_loop(
        shared.clone(),
        server.nodes().clone(),
        args.node_id.clone(),
        gateway_pods,
        changed.clone(),
        stop_rx.clone(),
    ));
    let reporter = reporter.map(|r| tokio::spawn(r.run(shared.clone(), changed.clone(), stop_rx)));

    let result = core_loop(name, &mut source, &shared, &cache, &changed, &mut sigterm).await;
    eprintln!("{name}: shutting down");
    if let Some(e) = envoy {
        e.stop().await;
    }
    if let Some(task) = pid_file {
        let _ = task.await;
    }
    stop_tx.send_replace(true);
    readiness.abort();
    if let Some(r) = reporter {
        r.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), xds_task).await;
    result
}

/// What `config-kourier` takes from the environment, as net-kourier: `CERTS_SECRET_NAME`,
/// `CERTS_SECRET_NAMESPACE` and `KOURIER_EXTAUTHZ_*`.
pub(crate) fn kourier_env() -> sluice_serving::kourier::KourierEnv {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    sluice_serving::kourier::KourierEnv {
        certs_secret_name: var("CERTS_SECRET_NAME"),
        certs_secret_namespace: var("CERTS_SECRET_NAMESPACE"),
        extauthz: std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("KOURIER_EXTAUTHZ_")
                    .map(|f| (f.to_string(), v))
            })
            .collect(),
    }
}

/// The xDS server's TLS from `--xds-tls-*`, the files read now (a missing or unreadable file is
/// a usage error naming the flag).
fn server_tls(args: &GatewayArgs) -> Result<Option<sluice_xds::ServerTls>, CliError> {
    let read = |flag: &str, p: &Path| {
        std::fs::read(p).map_err(|e| CliError::Usage(format!("{flag} {}: {e}", p.display())))
    };
    let (Some(cert), Some(key)) = (&args.xds_tls_cert, &args.xds_tls_key) else {
        return Ok(None);
    };
    let cert_pem = read("--xds-tls-cert", cert)?;
    let key_pem = read("--xds-tls-key", key)?;
    for (flag, pem, what) in [
        ("--xds-tls-cert", &cert_pem, "CERTIFICATE"),
        ("--xds-tls-key", &key_pem, "PRIVATE KEY"),
    ] {
        if !String::from_utf8_lossy(pem).contains(&format!("{what}-----")) {
            return Err(CliError::Usage(format!(
                "{flag}: not a PEM {}: expected a '-----BEGIN …{what}-----' block",
                what.to_lowercase()
            )));
        }
    }
    let client_ca_pem = match &args.xds_tls_client_ca {
        Some(p) => Some(read("--xds-tls-client-ca", p)?),
        None => None,
    };
    Ok(Some(sluice_xds::ServerTls {
        cert_pem,
        key_pem,
        client_ca_pem,
    }))
}

/// Where the gateway's objects come from.
pub(crate) enum Source {
    /// `--dir`: files, scanned and watched.
    Dir(DirSource),
    /// `--kube`: the cluster (and its API server's URL, for humans).
    Kube(Box<kube::KubeInputs>, String),
    /// Another component (`sluice up`'s serving controller) hands the inputs over.
    Feed(Feed),
}

/// Inputs handed over by another component, with its own input problems.
pub(crate) struct Feed {
    /// Batches of inputs; `Input::Synced` once the producer's first pass is complete.
    pub(crate) inputs: tokio::sync::mpsc::Receiver<Vec<Input>>,
    /// What it reads, for humans.
    pub(crate) describe: String,
    /// Its input problems (file, object, field), shown in `/status`.
    pub(crate) problems: Arc<Mutex<Vec<Problem>>>,
}

impl Source {
    /// The next inputs, in order; `None` when the source has ended. Cancel-safe.
    async fn next(&mut self) -> Option<Vec<Input>> {
        match self {
            Source::Dir(d) => d.next().await,
            Source::Kube(k, _) => k.next().await,
            Source::Feed(f) => f.inputs.recv().await,
        }
    }

    /// Every input problem, for `/status`.
    fn problems(&self, s: &Shared) -> Vec<Problem> {
        match self {
            Source::Dir(d) => input_problems(&d.files, &s.state),
            Source::Kube(k, _) => k.problems(&s.state, &s.rejected),
            Source::Feed(f) => {
                let mut problems = f.problems.lock().unwrap_or_else(|e| e.into_inner()).clone();
                problems.extend(ingress_problems(&s.state, |_| {
                    Some(f.describe.clone().into())
                }));
                problems
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.dir.display().to_string(),
            Source::Kube(_, url) => format!("the cluster at {url}"),
            Source::Feed(f) => f.describe.clone(),
        }
    }
}

/// The directory source: a watch on the directory and what its files define.
pub(crate) struct DirSource {
    dir: PathBuf,
    watch: crate::files::DirWatch,
    files: FileSource,
    /// The scan, handed out as the first batch.
    initial: Option<Vec<(PathBuf, String)>>,
    /// Whether the "serving kinds are for `sluice up`" warning was given.
    warned_serving: bool,
}

impl DirSource {
    fn open(dir: &Path) -> Result<Self, CliError> {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!(
                "--dir {}: not a directory",
                dir.display()
            )));
        }
        // Watch first, then scan: nothing written in between is missed.
        let watch = crate::files::watch(dir, Vec::new()).map_err(|e| CliError::Other(e.into()))?;
        let files = crate::files::scan(dir, &[]).map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            watch,
            files: FileSource::new(),
            initial: Some(files),
            warned_serving: false,
        })
    }

    async fn next(&mut self) -> Option<Vec<Input>> {
        let mut inputs = self.read().await?;
        inputs.retain(|i| match i {
            Input::Change((key, _)) if key.kind.is_serving() => {
                if !self.warned_serving {
                    self.warned_serving = true;
                    tracing::warn!(object = %key, "Knative Services, Configurations and Routes are read by `sluice up DIR`, not by `sluice gateway`; skipped");
                }
                false
            }
            _ => true,
        });
        Some(inputs)
    }

    async fn read(&mut self) -> Option<Vec<Input>> {
        let mut inputs = Vec::new();
        if let Some(files) = self.initial.take() {
            tracing::info!(files = files.len(), dir = %self.dir.display(), "directory scanned");
            for (path, text) in &files {
                inputs.extend(
                    self.files
                        .file_changed(path, text)
                        .into_iter()
                        .map(Input::Change),
                );
            }
            inputs.push(Input::Synced);
            return Some(inputs);
        }
        let batch = self.watch.changes.recv().await?;
        tracing::debug!(files = batch.len(), "file changes");
        for c in &batch {
            inputs.extend(self.files.apply(c).into_iter().map(Input::Change));
        }
        Some(inputs)
    }
}

/// The core: inputs from `source` until it ends or a signal arrives. Until the source is
/// synced, inputs are only buffered (Envoy is not served a half-read state); then everything
/// is translated and published at once, and each later batch incrementally.
async fn core_loop(
    name: &str,
    source: &mut Source,
    shared: &Arc<Mutex<Shared>>,
    cache: &SnapshotCache,
    changed: &Notify,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<(), CliError> {
    let mut pending: Vec<Input> = Vec::new();
    let mut synced = false;
    loop {
        tokio::select! {
            inputs = source.next() => {
                let Some(inputs) = inputs else { return Ok(()) };
                let mut initial = false;
                for input in inputs {
                    match input {
                        Input::Synced => {
                            initial |= !synced;
                            synced = true;
                        }
                        other => pending.push(other),
                    }
                }
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if synced {
                    let changes = absorb(&mut s.rejected, std::mem::take(&mut pending));
                    if initial {
                        let (update, keys) = s.state.apply(changes);
                        let applied = cache
                            .update(GROUP, update)
                            .map_err(|e| CliError::Other(anyhow::anyhow!("initial configuration: {e}")))?;
                        s.state.published(&keys, applied.generation);
                        s.configured = true;
                        tracing::info!(
                            ingresses = s.state.ingresses().len(),
                            generation = applied.generation,
                            "initial configuration translated"
                        );
                        if !matches!(source, Source::Feed(_)) {
                            eprintln!(
                                "{name}: {} KIngress(es) from {}, serving",
                                s.state.ingresses().len(),
                                source.describe()
                            );
                        }
                    } else if !changes.is_empty() {
                        let named: Vec<IngressKey> = changes
                            .iter()
                            .filter(|(k, _)| k.kind == documents::Kind::Ingress)
                            .map(|(k, _)| IngressKey::new(&k.namespace, &k.name))
                            .collect();
                        let (update, keys) = s.state.apply(changes);
                        publish(cache, &mut s.state, update, &keys);
                        // A KIngress deleted (and maybe re-created later) must be proven again.
                        let Shared { state, readiness, .. } = &mut *s;
                        for k in named.iter().filter(|k| !state.ingresses().contains_key(*k)) {
                            readiness.proven.remove(k);
                            readiness.waiting.remove(k);
                        }
                    }
                    let Shared { state, readiness, .. } = &mut *s;
                    readiness.unproven.extend(state.take_to_prove());
                    s.count_kingresses();
                }
                s.problems = source.problems(&s);
                drop(s);
                changed.notify_one();
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}

/// The object changes among `inputs`, in order; rejections are recorded in `rejected`, and a
/// change to a KIngress clears its rejection (the new version reads, or it is gone).
fn absorb(rejected: &mut BTreeMap<IngressKey, Rejected>, inputs: Vec<Input>) -> Vec<Change> {
    let mut changes = Vec::with_capacity(inputs.len());
    for input in inputs {
        match input {
            Input::Change(change) => {
                if change.0.kind == documents::Kind::Ingress {
                    rejected.remove(&IngressKey::new(&change.0.namespace, &change.0.name));
                }
                changes.push(change);
            }
            Input::Rejected { ingress, message } => {
                rejected.insert(
                    ingress.key(),
                    Rejected {
                        ingress: *ingress,
                        message,
                    },
                );
            }
            Input::Synced => {}
        }
    }
    changes
}

/// A KIngress of our class that the source could not read (`--kube`: it does not decode).
/// The state keeps its previous version.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Its metadata and status (for the status write).
    pub ingress: sluice_serving::Ingress,
    /// Why.
    pub message: String,
}

/// What the core loop, the readiness prover and `/status` share.
pub(crate) struct Shared {
    /// The first full configuration is translated and published (`/ready`).
    pub(crate) configured: bool,
    pub(crate) state: GatewayState,
    pub(crate) problems: Vec<Problem>,
    pub(crate) readiness: Readiness,
    /// KIngresses the source could not read, by key.
    pub(crate) rejected: BTreeMap<IngressKey, Rejected>,
}

/// Every input problem: each file's own, plus each KIngress whose current spec cannot be
/// translated (invalid, or naming a missing Service, port or Secret), named by its file, object
/// and field. A KIngress losing a host to another (`DomainConflict`) is not an input problem of
/// its own; its status says why.
fn input_problems(source: &FileSource, state: &GatewayState) -> Vec<Problem> {
    let mut problems = source.problems();
    problems.extend(ingress_problems(state, |object| {
        source.file_of(object).map(Path::to_path_buf)
    }));
    problems
}

/// Each KIngress whose current spec cannot be translated, named by the file `file_of` gives
/// (none: not reported).
fn ingress_problems(
    state: &GatewayState,
    file_of: impl Fn(&documents::ObjectKey) -> Option<PathBuf>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, st) in state.failing() {
        let (Some(message), Some(reason)) = (&st.error, &st.reason) else {
            continue;
        };
        if reason == sluice_serving::conflict::DOMAIN_CONFLICT {
            continue;
        }
        let object = documents::ObjectKey {
            kind: documents::Kind::Ingress,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        let Some(file) = file_of(&object) else {
            continue;
        };
        problems.push(Problem {
            file,
            object: Some(object.to_string()),
            field: st.error_field.clone(),
            message: message.clone(),
        });
    }
    problems
}

fn publish(
    cache: &SnapshotCache,
    state: &mut GatewayState,
    update: Update,
    keys: &BTreeSet<IngressKey>,
) {
    if update.is_empty() {
        return;
    }
    match cache.update(GROUP, update) {
        Ok(applied) => {
            tracing::info!(
                generation = applied.generation,
                changed = applied.changed,
                removed = applied.removed,
                ingresses = keys.len(),
                "published"
            );
            state.published(keys, applied.generation);
        }
        // The consistency check refused it: the previous snapshot keeps serving.
        Err(e) => {
            tracing::error!(error = %e, "update refused; the previous configuration keeps serving")
        }
    }
}

/// The cluster client for `--kube` (KUBECONFIG, `~/.kube/config` or in-cluster), and the
/// cluster's URL to name it by.
pub(crate) async fn kube_client() -> Result<(::kube::Client, String), CliError> {
    let kube_config = ::kube::Config::infer().await.map_err(|e| {
        CliError::Usage(format!(
            "--kube: no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
        ))
    })?;
    let origin = kube_config.cluster_url.to_string();
    let client = ::kube::Client::try_from(kube_config)
        .map_err(|e| CliError::Usage(format!("--kube: {e}")))?;
    Ok((client, origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<GatewayArgs, clap::Error> {
        let cli =
            crate::cli::Cli::try_parse_from(["sluice", "gateway"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Gateway(args) => Ok(*args),
            other => panic!("not gateway: {other:?}"),
        }
    }

    #[test]
    fn exactly_one_source() {
        let dir = parse(&["--dir", "d"]).expect("--dir");
        assert_eq!(dir.dir.as_deref(), Some(Path::new("d")));
        assert!(!dir.kube);
        let kube = parse(&["--kube", "--no-envoy"]).expect("--kube");
        assert!(kube.kube && kube.dir.is_none());
        assert_eq!(kube.public_service, LoadBalancers::default().public);
        assert_eq!(kube.private_service, LoadBalancers::default().private);
        assert_eq!(kube.instance, None);
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--dir", "d", "--kube"]).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn status_flags_only_with_kube() {
        let kube = parse(&[
            "--kube",
            "--public-service",
            "gw.ingress.svc.cluster.local",
            "--private-service",
            "local.ingress.svc.cluster.local",
            "--instance",
            "gw-0",
        ])
        .expect("--kube with status flags");
        assert_eq!(kube.public_service, "gw.ingress.svc.cluster.local");
        assert_eq!(kube.private_service, "local.ingress.svc.cluster.local");
        assert_eq!(kube.instance.as_deref(), Some("gw-0"));
        for flag in ["--public-service", "--private-service", "--instance"] {
            assert!(
                parse(&["--dir", "d", flag, "x"]).is_err(),
                "{flag} needs --kube"
            );
        }
    }

    fn ingress_change(name: &str, present: bool) -> Input {
        let key = documents::ObjectKey {
            kind: documents::Kind::Ingress,
            namespace: "default".into(),
            name: name.into(),
        };
        let object = present.then(|| {
            let mut i = sluice_serving::Ingress::default();
            i.metadata.namespace = Some("default".into());
            i.metadata.name = Some(name.into());
            documents::Object::Ingress(Box::new(i))
        });
        Input::Change((key, object))
    }

    fn rejection(name: &str) -> Input {
        let mut i = sluice_serving::Ingress::default();
        i.metadata.namespace = Some("default".into());
        i.metadata.name = Some(name.into());
        Input::Rejected {
            ingress: Box::new(i),
            message: "does not decode".into(),
        }
    }

    #[test]
    fn rejections_hold_until_the_kingress_changes() {
        let mut rejected = BTreeMap::new();
        // Applied, then rejected in the same batch: the good version applies, the rejection stays.
        let changes = absorb(
            &mut rejected,
            vec![ingress_change("a", true), rejection("a"), rejection("b")],
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(
            rejected.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["default/a", "default/b"]
        );
        // A readable version clears it; so does a deletion.
        let changes = absorb(
            &mut rejected,
            vec![ingress_change("a", true), ingress_change("b", false)],
        );
        assert_eq!(changes.len(), 2);
        assert!(rejected.is_empty());
    }
}
