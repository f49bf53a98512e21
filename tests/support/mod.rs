//! Shared support for Sluice's integration tests.
//!
//! Every integration test crate includes this module with `mod support;`, so each crate uses only
//! part of it; hence the crate-wide `dead_code` allowance below.
//!
//! - [`backend`]: small real HTTP/1.1 + h2c + websocket + gRPC servers that behave like Knative's
//!   conformance images (JSON echo, delays, first-request-fails, probe echo, websocket echo, gRPC
//!   health), with request and concurrency counters.
//! - [`certs`]: a test CA and certificates, made with `openssl`.
//! - [`client`]: clients for those protocols that return everything a test asserts on.
//! - [`fake_kube`]: a fake Kubernetes API server for the real binary's `--kube` modes.
//! - [`http`]: a one-handler HTTP/1.1 server for test doubles.
//! - [`otlp`]: OTLP trace receivers (gRPC and HTTP) recording every span.
//! - [`ports`]: free loopback ports.
//! - [`wait`]: bounded polling instead of sleeps.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod certs;
pub mod client;
pub mod fake_kube;
pub mod gateway;
pub mod http;
pub mod otlp;
pub mod ports;
pub mod serving;
pub mod wait;

pub use backend::{Backend, BackendOptions, start, try_start};
pub use client::{
    GrpcHealth, Response, ServingStatus, WsStream, get, get_h2c, grpc_health, grpc_health_check,
    send, websocket_connect, websocket_echo,
};
pub use ports::{free_addr, free_port};
pub use wait::{Attempt, wait_for};
