//! `sluice autoscaler --kube`: the KPA on a cluster (`deploy/full/500-autoscaler.yaml`).
//!
//! - **Figures**: every gateway Envoy streams its stats to `--stats` (Envoy's MetricsService
//!   sink, `sluice envoy bootstrap --metrics-sink`), where
//!   [`EnvoySink`] sums each revision's in-flight requests over all of them. The activators
//!   stream theirs to the same port (`sluice.autoscaler.v1.Stats`). Those count the same
//!   requests (each came through an Envoy's cluster for the Revision), so for a Revision in
//!   proxy mode the activators' (time-averaged) figure is used instead of Envoy's sample
//!   ([`figures`]), unless Envoy's is higher — an activator whose stream is down reports
//!   nothing, and must not make the Revision look idle; their pokes get a Revision waited for
//!   at zero its first pod at once.
//! - **Serve or proxy** ([`endpoints`]): each Revision's public EndpointSlice — its ready pods,
//!   or the activator's while at zero or short of burst capacity.
//! - **Decisions**: [`core`], once a second, with the Revisions, their Deployments and
//!   `config-autoscaler` from kube-runtime watches; scales go to each Deployment's `scale`
//!   subresource ([`KubeRuntime::scale`]).
//! - **One decider**: the replicas elect a leader on a Lease (`--lease`). Only the leader is
//!   ready (`/ready`) and only the leader listens on `--stats` ([`serve`]), so every Envoy's
//!   and activator's stream reaches it; a replica that loses the Lease stops deciding, ends
//!   its streams and closes its connections, and they reconnect to the new leader (Envoy
//!   at its next stats flush, an activator within its 0.1–5 s backoff). Non-leaders therefore
//!   neither ingest nor forward: the figures all reach the one replica that decides.
//!
//! Scale to zero happens only behind a ready activator (else a decision of 0 is held at 1).
//! The decider is `sluice up`'s ([`crate::autoscale`]), so scheduled bounds and forecasts shape
//! the standard scale; reserved instances are not run and forecast histories are not persisted.

pub mod core;
pub mod endpoints;
pub mod figures;
pub mod serve;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::BTreeMap;

use ::kube::Client;
use ::kube::api::{Api, Patch, PatchParams};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use sluice_autoscaler::envoy_sink::{EnvoySink, SinkView};
use sluice_autoscaler::{Report, RevisionKey, StatsIngest};
use sluice_serving::kube::runtime::{KubeRuntime, RuntimeConfig};
use sluice_serving::serving::Key;
use sluice_serving::serving::kingress::REVISION_SERVICE_PORT;
use sluice_serving::translate::names::service_of_stat_cluster;
use tokio::time::Instant;

use self::core::{Core, ScaleTo};
use self::endpoints::Mode;
use self::figures::ActivatorFigures;
use self::watch::Watched;
use crate::cli::CliError;
use crate::election::Election;

/// The field manager of the public EndpointSlices.
pub const FIELD_MANAGER: &str = "sluice-autoscaler";

/// How often every Revision is decided (one metric bucket).
pub const TICK: Duration = Duration::from_secs(1);

/// `sluice autoscaler` flags.
#[derive(Debug, Clone, Args)]
pub struct AutoscalerArgs {
    /// Read Revisions, their Deployments and `config-autoscaler` from the cluster (kubeconfig,
    /// else the in-cluster config). Required: the cluster is this command's only source
    /// (`sluice up` runs the same autoscaler in-process).
    #[arg(long, required = true)]
    pub kube: bool,
    /// gRPC server the gateway Envoys stream their stats to (Envoy's MetricsService).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub stats: SocketAddr,
    /// Debug HTTP server: /metrics, /healthz, /ready (this replica decides), /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// The Lease the replicas elect their leader on, as NAMESPACE/NAME: only the leader
    /// decides, scales and receives the Envoys' streams.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "knative-serving/sluice-autoscaler"
    )]
    pub lease: String,
    /// This replica's Lease holder identity (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// The activator's Service, as NAMESPACE/NAME: its ready pods are where a Revision's public
    /// Service points while the activator is in its path.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "knative-serving/sluice-activator"
    )]
    pub activator_service: String,
}

/// What `/status` shows.
/// Per Revision, entries of deleted Revisions are dropped at the next tick.
#[derive(Debug, Clone, Default, Serialize)]
struct Status {
    leader: bool,
    synced: bool,
    revisions: usize,
    /// Refused annotations per Revision, and a refused `config-autoscaler`.
    problems: BTreeMap<String, String>,
    sink: Option<SinkView>,
    /// The last scale of each Revision: `ns/name` → `from → to`.
    #[serde(serialize_with = "by_name")]
    scales: BTreeMap<Key, String>,
    /// The last failed write of each Revision.
    #[serde(serialize_with = "by_name")]
    errors: BTreeMap<Key, String>,
    /// Where each Revision's public Service points: `Serve` (its pods) or `Proxy` (the
    /// activator).
    #[serde(serialize_with = "by_name")]
    modes: BTreeMap<Key, String>,
    /// The last second's concurrency of each Revision with traffic, and whose figure it is
    /// (`envoy`, or `activators` while they are in its path).
    #[serde(serialize_with = "by_name")]
    figures: BTreeMap<Key, Figure>,
}

/// One Revision's figure in `/status`.
#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    from: &'static str,
    concurrency: f64,
}

/// A per-Revision map as JSON, keyed `namespace/name`.
fn by_name<S: serde::Serializer, V: serde::Serialize>(
    map: &BTreeMap<Key, V>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
}

/// The sink naming revisions as the gateway names their clusters (`ns/rev:80`).
pub fn revision_sink() -> EnvoySink {
    EnvoySink::new(|cluster| {
        service_of_stat_cluster(cluster, REVISION_SERVICE_PORT)
            .map(|(ns, name)| RevisionKey::new(ns, name))
    })
}

/// Runs the autoscaler until Ctrl-C / SIGTERM.
pub async fn run(args: AutoscalerArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(e.into()))?;
    let (client, origin) = crate::gateway::kube_client().await?;
    // Checked now (a bad --stats fails at once), opened only while this replica decides.
    drop(
        tokio::net::TcpListener::bind(args.stats)
            .await
            .map_err(|e| CliError::Usage(format!("--stats {}: cannot listen: {e}", args.stats)))?,
    );
    let debug_listener = tokio::net::TcpListener::bind(args.debug)
        .await
        .map_err(|e| CliError::Usage(format!("--debug {}: cannot listen: {e}", args.debug)))?;
    let (activator_ns, activator_name) = crate::gateway::ha::parse_service(&args.activator_service)
        .map_err(|e| CliError::Usage(format!("--activator-service: {e}")))?;
    let activator = Key::new(activator_ns, activator_name);
    let election = Election::start(client.clone(), &args.lease, args.instance.clone())?;
    let leader = election.leader.clone();

    let sink = revision_sink();
    let (ingest, reports) = StatsIngest::new(1024);
    let grpc = tokio::spawn(serve::stats_while_leading(
        args.stats,
        sink.clone(),
        ingest.clone(),
        leader.clone(),
    ));
    let status = Arc::new(Mutex::new(Status::default()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let debug = {
        let status = status.clone();
        let ready = leader.clone();
        tokio::spawn(crate::debug::serve(
            debug_listener,
            Arc::new(crate::debug::registry()),
            Arc::new(move || {
                serde_json::to_value(&*status.lock().unwrap_or_else(|e| e.into_inner()))
                    .unwrap_or_default()
            }),
            Arc::new(move || *ready.borrow()),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ))
    };
    eprintln!(
        "sluice autoscaler: reading Revisions from {origin}\n  stats (Envoy metrics sink) {}  debug http://{}",
        args.stats, args.debug
    );
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    };
    decide(
        client,
        Streams { sink, reports },
        activator,
        leader,
        status,
        shutdown,
    )
    .await;
    eprintln!("sluice autoscaler: shutting down");
    election.release().await;
    stop_tx.send_replace(true);
    grpc.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), debug).await;
    Ok(())
}

/// What streams in: the Envoys' stats and the activators' reports.
struct Streams {
    sink: EnvoySink,
    reports: tokio::sync::mpsc::Receiver<Report>,
}

/// Watches, decides every [`TICK`] while leading, scales.
async fn decide(
    client: Client,
    streams: Streams,
    activator: Key,
    mut leader: tokio::sync::watch::Receiver<bool>,
    status: Arc<Mutex<Status>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Streams { sink, mut reports } = streams;
    let mut changes = watch::changes(&client, &activator);
    let slices_api = client.clone();
    let runtime = KubeRuntime::new(client, RuntimeConfig::default());
    let mut core = Core::new(activator);
    let mut from_activators = ActivatorFigures::default();
    let mut watched = Watched::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The stats port follows the Lease on its own ([`serve`]); here it only gates deciding.
    let mut leads = *leader.borrow();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(change) = changes.next() => watched.apply(&mut core, change),
            Ok(()) = leader.changed() => {
                let now = *leader.borrow();
                if now && !leads {
                    core.endpoints.forget_written();
                }
                leads = now;
                tracing::info!(leader = leads, "autoscaler: {}", if leads { "this replica decides" } else { "another replica decides" });
            }
            Some(report) = reports.recv() => {
                let key = Key::new(report.revision.namespace, report.revision.name);
                if report.poke {
                    if leads && watched.synced()
                        && let Some(first) = core.poke(&key)
                    {
                        scale(&runtime, &mut core, vec![first], &status).await;
                    }
                } else if core.knows(&key) {
                    from_activators.record(Instant::now(), key, report.source, report.stat);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let mut stats: HashMap<Key, sluice_autoscaler::Stat> = sink
                    .take(now)
                    .into_iter()
                    .map(|(k, s)| (Key::new(k.namespace, k.name), s))
                    .collect();
                let mut figures: BTreeMap<Key, Figure> = stats
                    .iter()
                    .filter(|(_, s)| s.concurrency > 0.0 || s.requests > 0.0)
                    .map(|(k, s)| (k.clone(), Figure { from: "envoy", concurrency: s.concurrency }))
                    .collect();
                // Behind the activators, their (time-averaged) figure replaces Envoy's unless
                // Envoy's is higher (an activator whose stream is down reports nothing).
                for (revision, stat) in from_activators.current(now) {
                    if core.endpoints.mode(&revision) != Some(Mode::Proxy) {
                        continue;
                    }
                    let envoy = stats.get(&revision).map_or(0.0, |s| s.concurrency);
                    if stat.concurrency >= envoy {
                        figures.insert(revision.clone(), Figure { from: "activators", concurrency: stat.concurrency });
                        stats.insert(revision, stat);
                    }
                }
                if leads && watched.synced() {
                    let tick = core.tick(now, jiff::Timestamp::now(), &stats);
                    write_slices(&slices_api, &mut core, tick.slices, &status).await;
                    scale(&runtime, &mut core, tick.scales, &status).await;
                }
                let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                s.leader = leads;
                s.synced = watched.synced();
                s.revisions = core.tracked();
                s.problems = core.problems.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                if let Some(e) = &watched.config_error {
                    s.problems.insert("ConfigMap knative-serving/config-autoscaler".into(), e.clone());
                }
                s.scales.retain(|k, _| core.knows(k));
                s.errors.retain(|k, _| core.knows(k));
                s.modes.retain(|k, _| core.knows(k));
                s.sink = Some(sink.view());
                s.figures = figures;
            }
        }
    }
}

/// Server-side applies each public slice (field manager `sluice-autoscaler`).
async fn write_slices(
    client: &Client,
    core: &mut Core,
    slices: Vec<(Key, Mode, EndpointSlice)>,
    status: &Mutex<Status>,
) {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (revision, mode, slice) in slices {
        let key = revision.clone();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &revision.namespace);
        match api.patch(&name, &params, &Patch::Apply(&slice)).await {
            Ok(_) => {
                tracing::info!(revision = %key, ?mode, endpoints = slice.endpoints.as_ref().map_or(0, Vec::len), "public endpoints written");
                status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .modes
                    .insert(key, format!("{mode:?}"));
                core.endpoints.written(revision, mode, slice);
            }
            Err(e) => {
                tracing::warn!(revision = %key, error = %e, "writing the public endpoints failed; the next tick tries again");
                status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .errors
                    .insert(key, e.to_string());
            }
        }
    }
}

async fn scale(
    runtime: &KubeRuntime,
    core: &mut Core,
    scales: Vec<ScaleTo>,
    status: &Mutex<Status>,
) {
    for s in scales {
        let key = s.revision.clone();
        match runtime
            .scale(&s.revision.namespace, &s.revision.name, s.to)
            .await
        {
            Ok(()) => {
                tracing::info!(revision = %key, from = s.from, to = s.to, "scaled");
                core.scaled(&s.revision, s.to);
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                st.scales
                    .insert(key.clone(), format!("{} → {}", s.from, s.to));
                st.errors.remove(&key);
            }
            Err(e) => {
                tracing::warn!(revision = %key, error = %e, "scale failed; the next tick tries again");
                status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .errors
                    .insert(key, e.to_string());
            }
        }
    }
}
