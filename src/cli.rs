//! Command-line interface: the `sluice` subcommands and their flags (names as
//! in DESIGN.md's command-line contract).

pub mod envoy;
pub mod logs;
pub mod status;
pub mod xds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for invalid configuration or usage (sysexits `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Sluice: a Knative Serving data plane built on Envoy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Knative Services from a directory of YAML: revisions as local processes, traffic
    /// through Envoy. The directory is watched: edits apply live.
    Up(Box<crate::up::UpArgs>),
    /// Run the gateway: KIngresses from a directory of YAML files (--dir) or the cluster (--kube),
    /// served by Envoy.
    Gateway(Box<crate::gateway::GatewayArgs>),
    /// Show what a running gateway serves: KIngresses, readiness, input problems, Envoy nodes.
    Status(status::StatusArgs),
    /// Ask the control plane what it serves each Envoy (nodes, snapshots, live pushes).
    Xds(xds::XdsArgs),
    /// Run the Kubernetes serving controller (--kube, the only source): Knative Services,
    /// Configurations and Routes from the cluster become Revisions, Deployments and KIngresses.
    Controller(crate::controller::ControllerArgs),
    /// Run the KPA on the cluster (--kube, the only source): Revisions' Deployments scaled on
    /// the concurrency every gateway Envoy streams to it.
    Autoscaler(crate::autoscaler::AutoscalerArgs),
    /// Run the activator on the cluster (--kube, the only source): requests of Revisions at
    /// zero or short of capacity wait here for a pod.
    Activator(crate::activator::ActivatorArgs),
    /// Envoy helpers (print the bootstrap for an Envoy you run yourself).
    Envoy(envoy::EnvoyArgs),
    /// Print a revision's logs (`sluice up`): its instances' stdout and stderr.
    Logs(logs::LogsArgs),
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Xds(args) => {
            crate::telemetry::init_cli();
            xds::run(args).await
        }
        Command::Envoy(args) => envoy::run(args),
        Command::Gateway(args) => crate::gateway::run(*args).await,
        Command::Up(args) => crate::up::run(*args).await,
        Command::Controller(args) => crate::controller::run(args).await,
        Command::Autoscaler(args) => crate::autoscaler::run(args).await,
        Command::Activator(args) => crate::activator::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Status(args) => status::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// An error for the user: what went wrong and the exit code to leave with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or configuration (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Other(_) => 1,
        }
    }
}
