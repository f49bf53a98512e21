//! `sluice envoy bootstrap`: prints the bootstrap Sluice would launch Envoy with.

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use super::CliError;
use crate::envoy::bootstrap::{BootstrapParams, XdsClientTls, XdsMode, render};

/// `sluice envoy …`
#[derive(Debug, Args)]
pub struct EnvoyArgs {
    #[command(subcommand)]
    command: EnvoyCommand,
}

#[derive(Debug, Subcommand)]
enum EnvoyCommand {
    /// Print an Envoy bootstrap (YAML) that connects to Sluice's xDS server.
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, Args)]
struct BootstrapArgs {
    /// Address of Sluice's xDS gRPC server, HOST:PORT (a DNS name, e.g. a Service's, is
    /// resolved by Envoy). Repeat it for several control-plane replicas: Envoy keeps one ADS
    /// stream and moves to another replica when it fails.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:18000")]
    xds: Vec<String>,
    /// Envoy node id (the gateway serves every node the same configuration).
    #[arg(long, default_value = "sluice-gateway")]
    node_id: String,
    /// xDS protocol variant: delta (incremental) or sotw (state of the world).
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    xds_mode: String,
    /// Address of Envoy's admin interface (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:9901")]
    envoy_admin: SocketAddr,
    /// Also listen here for Prometheus: `GET /stats/prometheus` (and `GET /ready`) answered
    /// from the admin interface, nothing else (Kourier serves its stats on port 9000).
    #[arg(long, value_name = "ADDR")]
    envoy_stats: Option<SocketAddr>,
    /// Stream Envoy's stats every second to Sluice's autoscaler at HOST:PORT (Envoy's
    /// MetricsService sink; e.g. the `sluice-autoscaler` Service): each revision's concurrency
    /// on the direct path is summed over every gateway Envoy.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_sink: Option<String>,
    /// Envoy's client certificate (PEM file path, read by Envoy) for mutual TLS to the xDS
    /// server (`sluice gateway --xds-tls-client-ca`). Needs --xds-tls-key and --xds-tls-ca.
    #[arg(long, value_name = "PATH", requires_all = ["xds_tls_key", "xds_tls_ca"])]
    xds_tls_cert: Option<String>,
    /// The private key of --xds-tls-cert (PEM file path, read by Envoy).
    #[arg(long, value_name = "PATH", requires = "xds_tls_cert")]
    xds_tls_key: Option<String>,
    /// The CA the xDS server's certificate must chain to (PEM file path, read by Envoy).
    #[arg(long, value_name = "PATH", requires = "xds_tls_cert")]
    xds_tls_ca: Option<String>,
    /// The xDS server's name: sent as SNI and required among its certificate's DNS SANs
    /// (default: any certificate from --xds-tls-ca).
    #[arg(long, value_name = "NAME", requires = "xds_tls_cert")]
    xds_tls_server_name: Option<String>,
}

/// `HOST:PORT` (`[v6]:PORT` for an IPv6 literal), given as `flag`.
pub(crate) fn host_port(flag: &str, s: &str) -> Result<(String, u16), CliError> {
    let bad = || CliError::Usage(format!("{flag} {s:?}: want HOST:PORT"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port.parse().map_err(|_| bad())?))
}

/// Runs `sluice envoy …`.
pub fn run(args: EnvoyArgs) -> Result<(), CliError> {
    match args.command {
        EnvoyCommand::Bootstrap(a) => {
            let mode: XdsMode = a
                .xds_mode
                .parse()
                .map_err(|e| CliError::Usage(format!("--xds-mode: {e}")))?;
            let mut endpoints = Vec::new();
            for x in &a.xds {
                endpoints.push(host_port("--xds", x)?);
            }
            // One IP endpoint: the template as is (what `sluice gateway` launches Envoy with).
            let (xds, xds_endpoints) = match endpoints.as_slice() {
                [(h, p)] if h.parse::<std::net::IpAddr>().is_ok() => {
                    (SocketAddr::new(h.parse().expect("checked"), *p), Vec::new())
                }
                _ => (BootstrapParams::default().xds, endpoints),
            };
            let params = BootstrapParams {
                node_id: a.node_id,
                xds,
                xds_endpoints,
                mode,
                admin: a.envoy_admin,
                stats: a.envoy_stats,
                metrics_sink: a
                    .metrics_sink
                    .as_deref()
                    .map(|s| host_port("--metrics-sink", s))
                    .transpose()?,
                xds_tls: match (a.xds_tls_cert, a.xds_tls_key, a.xds_tls_ca) {
                    (Some(cert), Some(key), Some(ca)) => Some(XdsClientTls {
                        cert,
                        key,
                        ca,
                        server_name: a.xds_tls_server_name,
                    }),
                    _ => None,
                },
                ..BootstrapParams::default()
            };
            print!("{}", render(&params));
            Ok(())
        }
    }
}
