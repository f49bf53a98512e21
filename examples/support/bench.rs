//! Helpers shared by the benchmark examples (`gateway_bench`, `up_bench`).

use std::net::SocketAddr;
use std::path::Path;

/// A free loopback address (bind, read the port, drop).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Host of benchmark service `i`.
pub fn host(i: usize) -> String {
    format!("svc-{i}.bench.example.com")
}

/// Replaces `path` atomically: a hidden temporary file (which the watcher skips) renamed over
/// it.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Resident memory of process `pid`, in MB (0 when unknown).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
