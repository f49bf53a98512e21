//! The `sluice` binary's library: runtime edges that the crates below do not own
//! (Envoy launcher, debug HTTP server, telemetry set-up) and the CLI commands.
//!
//! `src/main.rs` only parses the command line and calls in here.

pub mod activator;
pub mod autoscale;
pub mod autoscaler;
pub mod cli;
pub mod controller;
pub mod debug;
pub mod election;
pub mod envoy;
pub mod files;
pub mod gateway;
pub mod relist;
pub mod runtime;
pub mod table;
pub mod telemetry;
pub mod up;
