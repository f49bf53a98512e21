//! Free loopback ports for components that must be told their address up front (Envoy
//! listeners, admin ports) rather than binding `127.0.0.1:0` themselves.
//!
//! The port is free when returned, but nothing reserves it: another process may take it before
//! the caller binds. Prefer binding `:0` directly wherever the component supports it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports are handed out from below Linux's ephemeral range (32768-60999 by default), so the
/// kernel never gives one to an outgoing connection (of a client, of Envoy) between the moment
/// it is chosen and the moment its user binds it; within this process no port is handed out
/// twice (a counter), and the process id spreads test binaries apart.
const LOW: u32 = 10_000;
const HIGH: u32 = 32_000;
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound, read, dropped).
///
/// # Panics
/// If no port of the range can be bound (the test environment is broken).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// Returns `127.0.0.1:<port>` for a port that was free a moment ago; see [`free_port`].
///
/// # Panics
/// If no port of the range can be bound (the test environment is broken).
pub fn free_addr() -> SocketAddr {
    let span = HIGH - LOW;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + n) % span;
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port as u16)) {
            return listener
                .local_addr()
                .unwrap_or_else(|e| panic!("reading the address of 127.0.0.1:{port}: {e}"));
        }
    }
    panic!("no free TCP port on 127.0.0.1 between {LOW} and {HIGH}")
}
