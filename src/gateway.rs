//! `sluice gateway --dir DIR`: KIngresses (and the Services, endpoints and
//! Secrets they name) from a directory of YAML/JSON files, translated
//! incrementally and served over xDS to an Envoy that Sluice launches.
//!
//! Readiness is proven, not assumed: a KIngress is Ready once every connected
//! Envoy ACKed its route configuration and a probe through Envoy answered its
//! `K-Network-Hash`.

pub mod documents;
pub mod probe;
pub mod source;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use sluice_serving::GatewayConfig;
use sluice_serving::ingress::HttpOption;
use sluice_serving::ingress::IngressKey;
use sluice_xds::resource::ROUTE;
use sluice_xds::{Metrics, Nodes, SnapshotCache, Update, XdsServer, single_group};
use tokio::sync::watch;

use crate::cli::CliError;
use crate::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use documents::Problem;
use probe::Prober;
use source::FileSource;
use state::GatewayState;

/// The snapshot group every gateway Envoy is served from.
pub const GROUP: &str = "gateway";

/// `sluice gateway` flags (names as in DESIGN.md's command-line contract).
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Directory of YAML/JSON files (KIngress, Service, EndpointSlice, Endpoints, Secret), read
    /// recursively and watched.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
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
    /// Debug HTTP server: /metrics, /healthz, /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
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
}

/// One KIngress in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IngressStatusView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `True`, `False` or `Unknown`.
    pub ready: String,
    /// Condition reason.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Hosts.
    pub hosts: Vec<String>,
    /// Probe hash being served.
    pub hash: String,
}

/// The `/status` document of a gateway.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GatewayStatus {
    /// Every KIngress of our class.
    pub ingresses: Vec<IngressStatusView>,
    /// Input problems (file, object, field, message).
    pub problems: Vec<ProblemView>,
    /// Envoy nodes.
    pub nodes: Vec<NodeView>,
}

/// An input problem in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProblemView {
    /// File.
    pub file: String,
    /// Object.
    pub object: Option<String>,
    /// Field.
    pub field: Option<String>,
    /// Message.
    pub message: String,
}

/// A node in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Connected now.
    pub connected: bool,
    /// sotw / delta.
    pub mode: String,
    /// Per type: last ACKed version, or the NACK message.
    pub types: BTreeMap<String, String>,
}

#[derive(Default)]
struct Readiness {
    /// KIngress → the hash proven served (ACK + probe).
    proven: BTreeMap<IngressKey, String>,
    /// KIngress → why it is not proven yet.
    waiting: BTreeMap<IngressKey, String>,
}

/// Runs the gateway until Ctrl-C / SIGTERM.
pub async fn run(args: GatewayArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    let mode: XdsMode = args
        .xds_mode
        .parse()
        .map_err(|e| CliError::Usage(format!("--xds-mode: {e}")))?;
    if !args.dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--dir {}: not a directory",
            args.dir.display()
        )));
    }
    let config = GatewayConfig {
        external_http: args.external_http,
        internal_http: args.internal_http,
        external_https: args.external_https,
        internal_https: args.internal_https,
    };

    // Watch first, then scan: nothing written in between is missed.
    let mut watch =
        crate::files::watch(&args.dir, Vec::new()).map_err(|e| CliError::Other(e.into()))?;
    let files = crate::files::scan(&args.dir, &[]).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut source = FileSource::new();
    let mut state = GatewayState::new(config.clone());
    let mut initial = Vec::new();
    for (path, text) in &files {
        initial.extend(source.file_changed(path, text));
    }
    let cache = SnapshotCache::new();
    let (update, keys) = state.apply(initial);
    // Publish before serving: Envoy never sees a half-read directory.
    let applied = cache
        .update(GROUP, update)
        .map_err(|e| CliError::Other(anyhow::anyhow!("initial configuration: {e}")))?;
    state.published(&keys, applied.generation);
    tracing::info!(
        files = files.len(),
        ingresses = state.ingresses().len(),
        generation = applied.generation,
        "initial configuration translated"
    );

    let mut registry = crate::debug::registry();
    let metrics = Metrics::register(&mut registry);
    let server = XdsServer::with_metrics(cache.clone(), single_group(GROUP), metrics);
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Usage(format!("{flag} {addr}: cannot listen: {e}")))
    };
    let xds_listener = bind(args.xds, "--xds").await?;
    let debug_listener = bind(args.debug, "--debug").await?;

    let shared = Arc::new(Mutex::new(Shared {
        problems: input_problems(&source, &state),
        state,
        readiness: Readiness::default(),
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let status_fn: crate::debug::StatusFn = {
        let shared = shared.clone();
        let nodes = server.nodes().clone();
        Arc::new(move || {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_value(status_of(&s, &nodes)).unwrap_or_default()
        })
    };
    let mut rx = stop_rx.clone();
    tokio::spawn(crate::debug::serve(
        debug_listener,
        Arc::new(registry),
        status_fn,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let mut rx = stop_rx.clone();
    let xds_task = tokio::spawn(server.clone().serve(xds_listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));

    let envoy = if args.no_envoy {
        None
    } else {
        let binary =
            find_envoy(args.envoy.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?;
        let work_dir = std::env::temp_dir().join(format!("sluice-gateway-{}", std::process::id()));
        let yaml = render(&BootstrapParams {
            node_id: args.node_id.clone(),
            xds: probe::loopback_for(args.xds),
            mode,
            admin: args.envoy_admin,
            ..BootstrapParams::default()
        });
        let cfg = LaunchConfig::new(binary, yaml, &work_dir);
        Some(
            Envoy::start(cfg)
                .await
                .map_err(|e| CliError::Other(e.into()))?,
        )
    };
    eprintln!(
        "sluice gateway: {} KIngress(es) from {}\n  external http {}  internal http {}  external https {}  internal https {}\n  xDS {} ({mode})  debug http://{}  Envoy admin http://{}{}",
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
            .ingresses()
            .len(),
        args.dir.display(),
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

    let readiness = tokio::spawn(readiness_loop(
        shared.clone(),
        server.nodes().clone(),
        config,
        stop_rx.clone(),
    ));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(e.into()))?;
    loop {
        tokio::select! {
            batch = watch.changes.recv() => {
                let Some(batch) = batch else { break };
                tracing::debug!(files = batch.len(), "file changes");
                let mut changes = Vec::new();
                for c in batch {
                    match c {
                        crate::files::FileChange::Changed(p, text) => changes.extend(source.file_changed(&p, &text)),
                        crate::files::FileChange::Removed(p) => changes.extend(source.removed(&p)),
                    }
                }
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if !changes.is_empty() {
                    let (update, keys) = s.state.apply(changes);
                    publish(&cache, &mut s.state, update, &keys);
                }
                s.problems = input_problems(&source, &s.state);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    eprintln!("sluice gateway: shutting down");
    if let Some(e) = envoy {
        e.stop().await;
    }
    stop_tx.send_replace(true);
    readiness.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), xds_task).await;
    Ok(())
}

struct Shared {
    state: GatewayState,
    problems: Vec<Problem>,
    readiness: Readiness,
}

/// Every input problem: each file's own, plus each KIngress whose current spec cannot be
/// translated (invalid, or naming a missing Service, port or Secret), named by its file, object
/// and field. A KIngress losing a host to another (`DomainConflict`) is not an input problem of
/// its own; its status says why.
fn input_problems(source: &FileSource, state: &GatewayState) -> Vec<Problem> {
    let mut problems = source.problems();
    for (key, st) in state.ingresses() {
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
        let Some(file) = source.file_of(&object) else {
            continue;
        };
        problems.push(Problem {
            file: file.to_path_buf(),
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

/// One KIngress to prove: key, hash, (listener, host) probe targets, and the
/// route configurations (name, version) every node must have ACKed.
type ProbeTask = (
    IngressKey,
    String,
    Vec<(SocketAddr, String)>,
    Vec<(String, String)>,
);

/// Proves readiness: for every KIngress whose served hash is not proven yet,
/// waits for every connected node to ACK its route configuration at the
/// served version, then probes it through Envoy.
async fn readiness_loop(
    shared: Arc<Mutex<Shared>>,
    nodes: Nodes,
    config: GatewayConfig,
    mut stop: watch::Receiver<bool>,
) {
    let prober = Prober::new();
    let mut acks = nodes.ack_changes();
    loop {
        // Work out what to probe without holding the lock across awaits.
        let todo: Vec<ProbeTask> = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.state
                .ingresses()
                .iter()
                .filter_map(|(k, st)| {
                    let hash = st.served_hash.clone()?;
                    if s.readiness.proven.get(k) == Some(&hash) {
                        return None;
                    }
                    let redirected = st.ingress.spec.http_option == Some(HttpOption::Redirected);
                    let targets = st
                        .hosts
                        .iter()
                        .flat_map(|(h, local)| {
                            let mut t = vec![(config.internal_http, h.clone())];
                            if !local && !redirected {
                                t.push((config.external_http, h.clone()));
                            }
                            t
                        })
                        .collect();
                    let versions = s.state.route_versions(k).into_iter().collect();
                    Some((k.clone(), hash, targets, versions))
                })
                .collect()
        };
        let connected = nodes.connected();
        for (key, hash, targets, versions) in todo {
            let acked = !connected.is_empty()
                && connected.iter().all(|n| {
                    nodes.get(n).is_some_and(|st| {
                        versions.iter().all(|(name, v)| {
                            st.types
                                .get(ROUTE)
                                .and_then(|t| t.acked.get(name))
                                .is_some_and(|(av, _)| av == v)
                        })
                    })
                });
            let verdict = if !acked {
                Err("waiting for Envoy to ACK its route configuration".to_string())
            } else {
                let mut result = Ok(());
                for (addr, host) in &targets {
                    if let Err(e) = prober.probe(*addr, host, &hash).await {
                        result = Err(e.to_string());
                        break;
                    }
                }
                result
            };
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            match verdict {
                Ok(()) => {
                    tracing::info!(ingress = %key, hash, "ready: ACKed and probed through Envoy");
                    s.readiness.waiting.remove(&key);
                    s.readiness.proven.insert(key, hash);
                }
                Err(why) => {
                    s.readiness.waiting.insert(key, why);
                }
            }
        }
        let pending = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            !s.readiness.waiting.is_empty()
        };
        // Re-check on the next ACK, or soon when a probe is pending (backoff-free
        // but bounded: Envoy applies config in milliseconds).
        let wait = if pending {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = acks.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn status_of(s: &Shared, nodes: &Nodes) -> GatewayStatus {
    let ingresses = s
        .state
        .ingresses()
        .iter()
        .map(|(k, st)| {
            let proven =
                st.served_hash.is_some() && s.readiness.proven.get(k) == st.served_hash.as_ref();
            let (ready, reason, message) = match (&st.error, proven) {
                (Some(e), _) => (
                    "False".to_string(),
                    st.reason.clone().unwrap_or_default(),
                    if st.served_hash.is_some() {
                        format!("{e} (the previous configuration keeps serving)")
                    } else {
                        e.clone()
                    },
                ),
                (None, true) => ("True".into(), String::new(), String::new()),
                (None, false) => (
                    "Unknown".into(),
                    "Uninitialized".into(),
                    s.readiness
                        .waiting
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| "waiting for Envoy".into()),
                ),
            };
            IngressStatusView {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                ready,
                reason,
                message,
                hosts: st.hosts.iter().map(|(h, _)| h.clone()).collect(),
                hash: st.served_hash.clone().unwrap_or_default(),
            }
        })
        .collect();
    let problems = s
        .problems
        .iter()
        .map(|p| ProblemView {
            file: p.file.display().to_string(),
            object: p.object.clone(),
            field: p.field.clone(),
            message: p.message.clone(),
        })
        .collect();
    let nodes = nodes
        .list()
        .into_iter()
        .map(|n| NodeView {
            id: n.node.id.clone(),
            connected: n.streams > 0,
            mode: n.mode.as_str().to_string(),
            types: n
                .types
                .iter()
                .map(|(t, st)| {
                    let v = match (&st.last_nack, &st.acked_version) {
                        (Some(nack), _) => format!("NACK {}: {}", nack.version, nack.error),
                        (None, Some(v)) => format!("ACK {v}"),
                        (None, None) => "pending".into(),
                    };
                    (sluice_xds::resource::short_name(t).to_string(), v)
                })
                .collect(),
        })
        .collect();
    GatewayStatus {
        ingresses,
        problems,
        nodes,
    }
}
