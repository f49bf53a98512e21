//! `sluice activator --kube`: the activator of the full profile (`deploy/full/600-activator.yaml`).
//!
//! While a Revision is at zero or short of burst capacity, `sluice autoscaler --kube` points the
//! Revision's public Service at this Deployment's pods, so the gateway's Envoys send its
//! requests here. For each request the [`Activator`] names the Revision from the headers the
//! KIngress adds (`Knative-Serving-Namespace`, `Knative-Serving-Revision`), holds it until a pod
//! of the Revision has room (`containerConcurrency`), and forwards it (HTTP/1.1, h2c,
//! websockets), within the Revision's `timeoutSeconds`, `responseStartTimeoutSeconds` and
//! `idleTimeoutSeconds`.
//!
//! - **Revisions** (`containerConcurrency`, `timeoutSeconds`, h2c) and **pods** (the ready
//!   endpoints of each Revision's private Service, `{revision}-private`) come from kube-runtime
//!   watches.
//! - **Stats and pokes** go to the autoscaler over `sluice.autoscaler.v1.Stats`
//!   (`--autoscaler`); the first request at zero pokes it, so the Revision is decided at once
//!   instead of at the next tick.
//! - **Several activators** share each Revision's capacity ([`sluice_activator::share`]):
//!   the Revision's public EndpointSlice, written by `sluice autoscaler --kube`, names the
//!   activators in its path; each takes its slice of the pods, or its share of a pod's
//!   `containerConcurrency` when there are more activators than pods, so the shares on a pod
//!   add up to its `containerConcurrency` (while the activators' views of the slices agree:
//!   see the share module for the moments they do not). An activator finds itself in that
//!   slice by its pod IPs (`--pod-ip`, `$POD_IP` from the downward API's `status.podIPs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_activator::{
    Activator, ActivatorConfig, Reporter, ReporterConfig, RevisionConfig, share,
};
use sluice_autoscaler::RevisionKey;
use sluice_serving::kube::controller::decode::{api_resource, decode};
use sluice_serving::kube::runtime::{REVISION_LABEL, private_service_name};
use sluice_serving::lookup::SERVICE_NAME_LABEL;
use sluice_serving::serving::{Key, Revision};

use crate::autoscaler::endpoints::{MANAGED_BY, MANAGED_BY_LABEL, MODE_LABEL, MODE_PROXY};
use crate::cli::CliError;
use crate::relist::Relist;

/// `sluice activator` flags.
#[derive(Debug, Clone, Args)]
pub struct ActivatorArgs {
    /// Read Revisions and their pods from the cluster (kubeconfig, else the in-cluster
    /// config). Required: the cluster is this command's only source (`sluice up` runs the
    /// activator in-process).
    #[arg(long, required = true)]
    pub kube: bool,
    /// Where the gateway's Envoys send the requests of Revisions in proxy mode (HTTP/1.1 and
    /// h2c on one port).
    #[arg(long, default_value = "127.0.0.1:8012")]
    pub listen: SocketAddr,
    /// The autoscaler's Stats gRPC endpoint (e.g. http://sluice-autoscaler.knative-serving.svc:8080):
    /// each second's figures and the pokes of requests waiting at zero. None: not reported.
    #[arg(long, value_name = "URL")]
    pub autoscaler: Option<String>,
    /// Debug HTTP server: /metrics, /healthz, /ready, /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// This replica's name in its reports (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// This replica's pod IPs (comma-separated: both families on a dual-stack cluster), to
    /// find itself among the activators a Revision's public EndpointSlice names (default:
    /// $POD_IP, else the --listen address when it is not 0.0.0.0). Unknown: this activator
    /// takes whole pods, as if it were alone.
    #[arg(long, value_name = "IP[,IP]", env = "POD_IP", value_delimiter = ',')]
    pub pod_ip: Vec<IpAddr>,
}

/// The data-path settings of a Revision.
fn revision_config(revision: &Revision) -> RevisionConfig {
    RevisionConfig {
        container_concurrency: u32::try_from(revision.spec.container_concurrency.unwrap_or(0))
            .unwrap_or(0),
        timeout: revision
            .spec
            .timeout_seconds
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .map_or(RevisionConfig::default().timeout, Duration::from_secs),
        response_start_timeout: revision.spec.response_start_timeout(),
        idle_timeout: revision.spec.idle_timeout(),
        h2c: revision.spec.is_h2c(),
    }
}

/// What the slices say about each Revision: its ready pods (its private Service's slices)
/// and the activators in its path (its public slice, in proxy mode).
#[derive(Debug, Default)]
struct Pods {
    /// Slice → (Revision, what it holds).
    slices: BTreeMap<Key, (Key, Held)>,
}

#[derive(Debug)]
enum Held {
    /// A private Service's slice: ready pod addresses.
    Pods(Vec<SocketAddr>),
    /// A public slice in proxy mode: the activators' IPs.
    Activators(Vec<IpAddr>),
}

fn ready_ips(slice: &EndpointSlice) -> impl Iterator<Item = IpAddr> + '_ {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
}

impl Pods {
    /// Takes a slice; the Revision it is about, if it is a private Service's or a public one
    /// written by the autoscaler.
    fn observe(&mut self, slice: &EndpointSlice) -> Option<Key> {
        let labels = slice.metadata.labels.as_ref()?;
        let name = labels.get(REVISION_LABEL)?;
        let service = labels.get(SERVICE_NAME_LABEL)?;
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let revision = Key::new(&namespace, name);
        let held = if service == &private_service_name(name) {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find_map(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())?;
            Held::Pods(
                ready_ips(slice)
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
            )
        } else if service == name
            && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        {
            // In serve mode the public slice names pods: no activator is in the path.
            let activators = if labels.get(MODE_LABEL).map(String::as_str) == Some(MODE_PROXY) {
                ready_ips(slice).collect()
            } else {
                Vec::new()
            };
            Held::Activators(activators)
        } else {
            return None;
        };
        self.slices
            .insert(slice_key(slice), (revision.clone(), held));
        Some(revision)
    }

    fn gone(&mut self, slice: &Key) -> Option<Key> {
        self.slices.remove(slice).map(|(r, _)| r)
    }

    /// A Revision's ready pods and the activators in its path, each sorted.
    fn of(&self, revision: &Key) -> (Vec<SocketAddr>, Vec<IpAddr>) {
        let (mut pods, mut activators) = (Vec::new(), Vec::new());
        for (r, held) in self.slices.values() {
            if r != revision {
                continue;
            }
            match held {
                Held::Pods(p) => pods.extend(p.iter().copied()),
                Held::Activators(a) => activators.extend(a.iter().copied()),
            }
        }
        pods.sort();
        pods.dedup();
        activators.sort();
        activators.dedup();
        (pods, activators)
    }
}

enum Change {
    Revision(Box<Event<DynamicObject>>),
    Slice(Box<Event<EndpointSlice>>),
}

fn slice_key(slice: &EndpointSlice) -> Key {
    Key::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

fn revision_key(key: &Key) -> RevisionKey {
    RevisionKey::new(&key.namespace, &key.name)
}

/// Runs the activator until Ctrl-C / SIGTERM.
pub async fn run(args: ActivatorArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(e.into()))?;
    let (client, origin) = crate::gateway::kube_client().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Usage(format!("--listen {}: cannot listen: {e}", args.listen)))?;
    let debug_listener = tokio::net::TcpListener::bind(args.debug)
        .await
        .map_err(|e| CliError::Usage(format!("--debug {}: cannot listen: {e}", args.debug)))?;
    let instance =
        crate::gateway::kube::instance_name(args.instance.clone(), |k| std::env::var(k).ok());
    let mut pod_ips = args.pod_ip.clone();
    if pod_ips.is_empty() && !args.listen.ip().is_unspecified() {
        pod_ips.push(args.listen.ip());
    }
    if pod_ips.is_empty() {
        tracing::warn!(
            "no --pod-ip ($POD_IP): this activator takes whole pods, so with several \
             activators a pod may get more than its containerConcurrency"
        );
    }
    let (activator, pokes) = Activator::new(ActivatorConfig::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let reporter = match &args.autoscaler {
        Some(endpoint) => {
            let reporter = Reporter::new(ReporterConfig::new(endpoint.clone(), instance.clone()))
                .map_err(|e| CliError::Usage(format!("--autoscaler {endpoint}: {e}")))?;
            tokio::spawn(reporter.run(activator.clone(), pokes, stopped(stop_rx.clone())))
        }
        None => tokio::spawn(async move {
            // Nobody to poke: drain, so a full queue never matters.
            let mut pokes = pokes;
            while pokes.recv().await.is_some() {}
        }),
    };
    let mut registry = crate::debug::registry();
    activator.register_metrics(&mut registry);
    let status_activator = activator.clone();
    // Each Revision's pods, activators in its path and this activator's share (for /status).
    let shares: Arc<Mutex<BTreeMap<String, serde_json::Value>>> = Arc::default();
    let status_shares = Arc::clone(&shares);
    let status_ips = pod_ips.clone();
    let debug = tokio::spawn(crate::debug::serve(
        debug_listener,
        Arc::new(registry),
        Arc::new(move || {
            let t = status_activator.throttler().stats();
            let revisions = status_shares
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            serde_json::json!({"queued": t.queued, "admitted": t.admitted, "waited": t.waited,
                "rejected": t.rejected, "timed_out": t.timed_out, "pokes": t.pokes,
                "pod_ips": status_ips, "revisions": revisions})
        }),
        crate::debug::always_ready(),
        stopped(stop_rx.clone()),
    ));
    let server = {
        let activator = activator.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { activator.serve(listener, stopped(rx)).await })
    };
    eprintln!(
        "sluice activator: reading Revisions from {origin}\n  listening {}  debug http://{}",
        args.listen, args.debug
    );

    let revisions = watcher::watcher(
        Api::<DynamicObject>::all_with(client.clone(), &api_resource::<Revision>()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|e| async move { e.ok().map(|e| Change::Revision(Box::new(e))) });
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(REVISION_LABEL),
    )
    .default_backoff()
    .filter_map(|e| async move { e.ok().map(|e| Change::Slice(Box::new(e))) });
    let mut changes = futures::stream::select(revisions.boxed(), slices.boxed());
    let mut pods = Pods::default();
    let mut revisions = Relist::default();
    let mut slices = Relist::default();
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    };
    tokio::pin!(shutdown);
    loop {
        let change = tokio::select! {
            _ = &mut shutdown => break,
            Some(change) = changes.next() => change,
        };
        let mut touched = Vec::new();
        let mut removed = Vec::new();
        match change {
            Change::Revision(event) => match *event {
                Event::Init => revisions.init(),
                Event::InitApply(o) | Event::Apply(o) => {
                    let observed = decode::<Revision>(o);
                    let key = observed.object.key();
                    if observed.error.is_none() {
                        activator
                            .set_revision(revision_key(&key), revision_config(&observed.object));
                        revisions.applied(key.clone());
                        touched.push(key);
                    }
                }
                Event::Delete(o) => {
                    let key = decode::<Revision>(o).object.key();
                    activator.remove_revision(&revision_key(&key));
                    revisions.deleted(&key);
                    removed.push(key);
                }
                Event::InitDone => {
                    for gone in revisions.init_done() {
                        activator.remove_revision(&revision_key(&gone));
                        removed.push(gone);
                    }
                }
            },
            Change::Slice(event) => match *event {
                Event::Init => slices.init(),
                Event::InitApply(s) | Event::Apply(s) => {
                    let key = slice_key(&s);
                    touched.extend(pods.gone(&key));
                    if let Some(revision) = pods.observe(&s) {
                        slices.applied(key);
                        touched.push(revision);
                    }
                }
                Event::Delete(s) => {
                    let key = slice_key(&s);
                    slices.deleted(&key);
                    touched.extend(pods.gone(&key));
                }
                Event::InitDone => {
                    for gone in slices.init_done() {
                        touched.extend(pods.gone(&gone));
                    }
                }
            },
        }
        touched.sort();
        touched.dedup();
        let mut shown = shares.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in removed {
            shown.remove(&gone.to_string());
        }
        for revision in touched {
            if !activator.throttler().contains(&revision_key(&revision)) {
                continue;
            }
            let key = revision_key(&revision);
            let (addrs, activators) = pods.of(&revision);
            let cc = activator
                .revision(&key)
                .map_or(0, |c| c.container_concurrency);
            // Which of this replica's IPs the slice names (the family it uses), if any.
            let me = pod_ips
                .iter()
                .find(|ip| activators.contains(ip))
                .or(pod_ips.first());
            let assigned = match me {
                Some(me) => share::assign(&addrs, cc, &activators, *me),
                None => addrs.iter().map(|a| (*a, cc)).collect(),
            };
            shown.insert(
                revision.to_string(),
                serde_json::json!({
                    "pods": addrs.len(),
                    "activators": activators.len(),
                    "assigned": assigned
                        .iter()
                        .map(|(a, c)| serde_json::json!({"pod": a.to_string(), "capacity": c}))
                        .collect::<Vec<_>>(),
                }),
            );
            if let Err(e) = activator.update_assigned(&key, &assigned) {
                tracing::warn!(%revision, error = %e, "pods not taken");
            } else {
                tracing::debug!(%revision, pods = addrs.len(), activators = activators.len(),
                    assigned = assigned.len(), "pods");
            }
        }
    }
    eprintln!("sluice activator: shutting down (draining)");
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), debug).await;
    Ok(())
}
