//! `sluice activator --kube`: the activator of the full profile (`deploy/full/600-activator.yaml`).
//!
//! While a Revision is at zero or short of burst capacity, `sluice autoscaler --kube` points the
//! Revision's public Service at this Deployment's pods, so the gateway's Envoys send its
//! requests here. For each request the [`Activator`] names the Revision from the headers the
//! KIngress adds (`Knative-Serving-Namespace`, `Knative-Serving-Revision`), holds it until a pod
//! of the Revision has room (`containerConcurrency`), and forwards it (HTTP/1.1, h2c,
//! websockets), within the Revision's `timeoutSeconds`.
//!
//! - **Revisions** (`containerConcurrency`, `timeoutSeconds`, h2c) and **pods** (the ready
//!   endpoints of each Revision's private Service, `{revision}-private`) come from kube-runtime
//!   watches.
//! - **Stats and pokes** go to the autoscaler over `sluice.autoscaler.v1.Stats`
//!   (`--autoscaler`); the first request at zero pokes it, so the Revision is decided at once
//!   instead of at the next tick.
//! - Several activators: each holds every request it receives within the Revision's
//!   `containerConcurrency` per pod it knows, so with N activators a pod may see up to N × cc
//!   during the hand-over (upstream's `numActivators` share is not implemented).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_activator::{Activator, ActivatorConfig, Reporter, ReporterConfig, RevisionConfig};
use sluice_autoscaler::RevisionKey;
use sluice_serving::kube::controller::decode::{api_resource, decode};
use sluice_serving::kube::runtime::{REVISION_LABEL, private_service_name};
use sluice_serving::lookup::SERVICE_NAME_LABEL;
use sluice_serving::serving::{Key, Revision};

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
        h2c: revision.spec.is_h2c(),
    }
}

/// The ready pods of each Revision, from its private Service's slices.
#[derive(Debug, Default)]
struct Pods {
    /// Slice → (Revision, its ready addresses).
    slices: BTreeMap<Key, (Key, Vec<SocketAddr>)>,
}

impl Pods {
    /// Takes a slice; the Revision whose pods changed, if it is a private Service's.
    fn observe(&mut self, slice: &EndpointSlice) -> Option<Key> {
        let labels = slice.metadata.labels.as_ref()?;
        let name = labels.get(REVISION_LABEL)?;
        if labels.get(SERVICE_NAME_LABEL)? != &private_service_name(name) {
            return None;
        }
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let revision = Key::new(&namespace, name);
        let port = slice
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())?;
        let ready = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        self.slices
            .insert(slice_key(slice), (revision.clone(), ready));
        Some(revision)
    }

    fn gone(&mut self, slice: &Key) -> Option<Key> {
        self.slices.remove(slice).map(|(r, _)| r)
    }

    fn of(&self, revision: &Key) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .slices
            .values()
            .filter(|(r, _)| r == revision)
            .flat_map(|(_, a)| a.iter().copied())
            .collect();
        out.sort();
        out.dedup();
        out
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
    let debug = tokio::spawn(crate::debug::serve(
        debug_listener,
        Arc::new(registry),
        Arc::new(move || {
            let t = status_activator.throttler().stats();
            serde_json::json!({"queued": t.queued, "admitted": t.admitted, "waited": t.waited,
                "rejected": t.rejected, "timed_out": t.timed_out, "pokes": t.pokes})
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
                }
                Event::InitDone => {
                    for gone in revisions.init_done() {
                        activator.remove_revision(&revision_key(&gone));
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
        for revision in touched {
            if !activator.throttler().contains(&revision_key(&revision)) {
                continue;
            }
            let addrs = pods.of(&revision);
            if let Err(e) = activator.update_instances(&revision_key(&revision), &addrs) {
                tracing::warn!(%revision, error = %e, "pods not taken");
            } else {
                tracing::debug!(%revision, pods = addrs.len(), "pods");
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
