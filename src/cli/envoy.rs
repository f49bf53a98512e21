//! `sluice envoy bootstrap`: prints the bootstrap Sluice would launch Envoy with.

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use super::CliError;
use crate::envoy::bootstrap::{BootstrapParams, XdsMode, render};

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
    /// Address of Sluice's xDS gRPC server.
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds: SocketAddr,
    /// Envoy node id (the gateway serves every node the same configuration).
    #[arg(long, default_value = "sluice-gateway")]
    node_id: String,
    /// xDS protocol variant: delta (incremental) or sotw (state of the world).
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    xds_mode: String,
    /// Address of Envoy's admin interface (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:9901")]
    envoy_admin: SocketAddr,
}

/// Runs `sluice envoy …`.
pub fn run(args: EnvoyArgs) -> Result<(), CliError> {
    match args.command {
        EnvoyCommand::Bootstrap(a) => {
            let mode: XdsMode = a
                .xds_mode
                .parse()
                .map_err(|e| CliError::Usage(format!("--xds-mode: {e}")))?;
            let params = BootstrapParams {
                node_id: a.node_id,
                xds: a.xds,
                mode,
                admin: a.envoy_admin,
                ..BootstrapParams::default()
            };
            print!("{}", render(&params));
            Ok(())
        }
    }
}
