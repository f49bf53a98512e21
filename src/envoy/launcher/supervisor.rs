//! The task that owns the Envoy child: relaunch with backoff on unexpected exits, terminate on
//! stop.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::output::{self, Stream};
use super::{EnvoyStatus, STOP_GRACE};

/// Backoff and grace periods; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// Delay before the first relaunch after a crash; doubles on each further crash.
    pub initial_backoff: Duration,
    /// The longest delay between relaunches.
    pub max_backoff: Duration,
    /// An Envoy that stayed up this long counts as healthy: the backoff starts over.
    pub reset_after: Duration,
    /// How long to wait after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
            stop_grace: STOP_GRACE,
        }
    }
}

/// Starts Envoy processes, all with the same command line.
#[derive(Debug)]
pub(super) struct Spawner {
    /// The Envoy binary.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl Spawner {
    /// Spawns Envoy with piped output, each stream forwarded to `tracing` by its own task.
    pub fn spawn(&self) -> io::Result<Child> {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(output::forward(stdout, pid, Stream::Stdout).in_current_span());
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(output::forward(stderr, pid, Stream::Stderr).in_current_span());
        }
        Ok(child)
    }
}

/// Runs until `stop` fires or its sender is dropped, then terminates the current Envoy.
pub(super) async fn run(
    spawner: Spawner,
    mut child: Child,
    timing: Timing,
    status: watch::Sender<EnvoyStatus>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut started = Instant::now();
    let mut backoff = timing.initial_backoff;
    loop {
        let exit = tokio::select! {
            exit = child.wait() => exit,
            _ = &mut stop => {
                terminate(&mut child, timing.stop_grace).await;
                status.send_modify(|s| s.pid = None);
                return;
            }
        };
        if exit.is_err() {
            // Do not leave a possibly live Envoy behind the relaunch (it would hold the ports).
            let _ = child.start_kill();
        }
        let uptime = started.elapsed();
        if uptime >= timing.reset_after {
            backoff = timing.initial_backoff;
        }
        let last_exit = report_exit(exit, uptime, backoff);
        status.send_modify(|s| {
            s.pid = None;
            s.last_exit = last_exit.or(s.last_exit);
        });

        // Relaunch after the backoff; a failed spawn backs off further and tries again.
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = &mut stop => return,
            }
            backoff = (backoff * 2).min(timing.max_backoff);
            match spawner.spawn() {
                Ok(new_child) => {
                    child = new_child;
                    started = Instant::now();
                    let pid = child.id();
                    status.send_modify(|s| {
                        s.pid = pid;
                        s.restarts += 1;
                    });
                    tracing::info!(pid, restarts = status.borrow().restarts, "Envoy relaunched");
                    break;
                }
                Err(error) => tracing::error!(
                    %error,
                    retry_in = ?backoff,
                    "cannot relaunch Envoy; check that the binary still exists and is executable"
                ),
            }
        }
    }
}

/// Logs an unexpected exit; returns its status when there is one.
fn report_exit(
    exit: io::Result<ExitStatus>,
    uptime: Duration,
    backoff: Duration,
) -> Option<ExitStatus> {
    match exit {
        Ok(exit_status) => {
            tracing::error!(
                status = %exit_status,
                ?uptime,
                restart_in = ?backoff,
                "Envoy exited unexpectedly; restarting (its last log lines above say why)"
            );
            Some(exit_status)
        }
        Err(error) => {
            tracing::error!(
                %error,
                ?uptime,
                restart_in = ?backoff,
                "lost track of the Envoy process; restarting"
            );
            None
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; returns once the child is reaped.
async fn terminate(child: &mut Child, grace: Duration) {
    // `id()` is `None` once the child has been reaped, so the pid cannot have been reused.
    let Some(pid) = child.id() else {
        return;
    };
    let sent = i32::try_from(pid)
        .map_err(|_| nix::errno::Errno::EINVAL)
        .and_then(|raw| kill(Pid::from_raw(raw), Signal::SIGTERM));
    if let Err(errno) = sent {
        tracing::warn!(pid, %errno, "cannot send SIGTERM to Envoy; killing it");
    } else {
        tracing::info!(pid, "stopping Envoy (SIGTERM)");
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(exit_status)) => {
                tracing::info!(pid, status = %exit_status, "Envoy stopped");
                return;
            }
            Ok(Err(error)) => tracing::warn!(pid, %error, "waiting for Envoy failed; killing it"),
            Err(_) => tracing::warn!(
                pid,
                ?grace,
                "Envoy did not exit after SIGTERM; killing it (SIGKILL)"
            ),
        }
    }
    if let Err(error) = child.kill().await {
        tracing::error!(pid, %error, "cannot kill Envoy");
    } else {
        tracing::info!(pid, "Envoy killed");
    }
}
