//! Free loopback ports for components that must be told their address up front (Envoy
//! listeners, admin ports) rather than binding `127.0.0.1:0` themselves.
//!
//! The port is free when returned, but nothing reserves it: another process may take it before
//! the caller binds. Prefer binding `:0` directly wherever the component supports it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind `:0`, read, drop).
///
/// # Panics
/// If the OS cannot bind a loopback socket at all (the test environment is broken).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// Returns `127.0.0.1:<port>` for a port that was free a moment ago; see [`free_port`].
///
/// # Panics
/// If the OS cannot bind a loopback socket at all (the test environment is broken).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the address of a 127.0.0.1:0 listener: {e}"))
}
