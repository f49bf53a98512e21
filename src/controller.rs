//! `sluice controller --kube`: the Kubernetes serving controller of the full profile
//! (`deploy/full/`). Knative Services, Configurations, Routes and Revisions are read from the
//! cluster; Revisions run as Deployments; Routes become KIngresses that `sluice gateway --kube`
//! serves. The work is done by [`sluice_serving::kube::controller::KubeController`]; this module
//! is the command: flags, the cluster connection, the debug server, signals.
//!
//! The debug server (`--debug`) serves `/healthz`, `/status` (the controller's
//! [`ControllerStatus`] as JSON) and `/metrics` (`sluice_controller_*`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::election::Election;
use clap::Args;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sluice_serving::kube::controller::{ControllerConfig, ControllerStatus, KubeController};
use tokio::sync::watch;

use crate::cli::CliError;

/// `sluice controller` flags.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Read Knative Services, Configurations, Routes and Revisions from the cluster (kubeconfig:
    /// KUBECONFIG or ~/.kube/config, else the in-cluster config). Required: the cluster is the
    /// only source of this command (`sluice up DIR` runs the same reconcilers from files).
    #[arg(long, required = true)]
    pub kube: bool,
    /// Debug HTTP server: /metrics, /healthz, /status.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// Domain of every Route's external host (default: `config-domain` in knative-serving, else
    /// example.com).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// The Lease the controller replicas elect their leader on, as NAMESPACE/NAME: only the
    /// leader reconciles and writes; the others watch, ready to take over.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "knative-serving/sluice-controller"
    )]
    pub lease: String,
    /// This replica's Lease holder identity (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

/// Runs the controller until Ctrl-C / SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<(), CliError> {
    let _telemetry = crate::telemetry::init_server();
    // Before anything answers: a SIGTERM from then on is a clean shutdown.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(e.into()))?;
    if let Some(domain) = &args.domain
        && (domain.is_empty() || domain.contains(char::is_whitespace) || domain.contains('/'))
    {
        return Err(CliError::Usage(format!(
            "--domain {domain:?}: not a domain name"
        )));
    }
    let (client, origin) = crate::gateway::kube_client().await?;
    let listener = tokio::net::TcpListener::bind(args.debug)
        .await
        .map_err(|e| CliError::Usage(format!("--debug {}: cannot listen: {e}", args.debug)))?;

    let election = Election::start(client.clone(), &args.lease, args.instance.clone())?;
    let controller = KubeController::new(
        client,
        ControllerConfig {
            domain: args.domain.clone(),
            ..ControllerConfig::default()
        },
    )
    .with_leader(election.leader.clone());
    let status = controller.status();
    let mut registry = crate::debug::registry();
    registry.register_collector(Box::new(StatusMetrics(status.clone())));
    let status_fn: crate::debug::StatusFn = {
        let status = status.clone();
        Arc::new(move || {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_value(&*s).unwrap_or_default()
        })
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let debug = tokio::spawn(crate::debug::serve(
        listener,
        Arc::new(registry),
        status_fn,
        crate::debug::always_ready(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    eprintln!(
        "sluice controller: reading Knative Services from {origin}\n  debug http://{}{}",
        args.debug,
        args.domain
            .as_deref()
            .map(|d| format!("  domain {d}"))
            .unwrap_or_default()
    );

    let result = controller
        .run(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await;
    eprintln!("sluice controller: shutting down");
    // Hand the Lease over at once (a successor need not wait a full lease duration).
    election.release().await;
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), debug).await;
    result.map_err(|e| CliError::Other(e.into()))
}

/// `/metrics` from the controller's status, read at each scrape.
#[derive(Debug)]
struct StatusMetrics(Arc<Mutex<ControllerStatus>>);

impl Collector for StatusMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(m)
        };
        gauge(
            &mut encoder,
            "controller_synced",
            "1 once every watch has listed once",
            i64::from(s.synced),
        )?;
        gauge(
            &mut encoder,
            "controller_leader",
            "1 while this replica holds the controller Lease (only the leader writes)",
            i64::from(s.leader),
        )?;
        gauge(
            &mut encoder,
            "controller_problems",
            "Objects failing decoding or validation",
            i64::try_from(s.problems.len()).unwrap_or(i64::MAX),
        )?;
        let reconciles = ConstCounter::new(s.reconciles);
        reconciles.encode(encoder.encode_descriptor(
            "controller_reconciles",
            "Reconciles run",
            None,
            reconciles.metric_type(),
        )?)?;
        let mut objects = encoder.encode_descriptor(
            "controller_objects",
            "Objects known, by resource",
            None,
            MetricType::Gauge,
        )?;
        for (resource, count) in &s.objects {
            let labels = [("resource", *resource)];
            ConstGauge::new(i64::try_from(*count).unwrap_or(i64::MAX))
                .encode(objects.encode_family(&labels)?)?;
        }
        for (name, help, counts) in [
            (
                "controller_writes",
                "Writes to the API server, by action",
                &s.writes,
            ),
            (
                "controller_write_failures",
                "Failed writes to the API server, by action",
                &s.write_failures,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (action, count) in counts {
                let labels = [("action", *action)];
                ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_sluice_prefix_and_the_status() {
        let status = ControllerStatus {
            synced: true,
            objects: [("services", 3)].into(),
            writes: [("apply_ingress", 2)].into(),
            reconciles: 5,
            ..ControllerStatus::default()
        };
        let mut registry = crate::debug::registry();
        registry.register_collector(Box::new(StatusMetrics(Arc::new(Mutex::new(status)))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "sluice_controller_synced 1",
            "sluice_controller_reconciles_total 5",
            "sluice_controller_objects{resource=\"services\"} 3",
            "sluice_controller_writes_total{action=\"apply_ingress\"} 2",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
