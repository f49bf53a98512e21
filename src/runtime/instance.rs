//! The task that owns one instance: start the process, probe it, restart it with backoff when
//! it exits, stop it when asked.
//!
//! Each process leads its own process group, so stopping an instance reaches what it started
//! too (a `sh -c` wrapper's children): SIGTERM to the group, SIGKILL after the grace period,
//! and SIGKILL for anything of the group still left after its leader exited. The child is
//! `kill_on_drop`, so it is killed if the task is dropped (Tokio runtime shut down). It is not
//! asked to die with Sluice (`PR_SET_PDEATHSIG` needs `unsafe`): if Sluice is SIGKILLed, its
//! instances outlive it — until the next start, which stops them from their pid files
//! ([`super::pids`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sluice_autoscaler::RevisionKey;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::RuntimeOptions;
use super::logs::{self, InstanceLog};
use super::probe::Target;
use super::spec::RevisionSpec;
use super::status::{Board, ExitInfo, InstanceState};

/// Everything an instance task needs.
pub(super) struct Instance {
    /// Its revision.
    pub key: RevisionKey,
    /// Its number within the revision.
    pub index: u32,
    /// `<revision>-<index>`.
    pub name: String,
    /// What to run.
    pub spec: Arc<RevisionSpec>,
    /// How a reserved instance differs (`None` for a standard one).
    pub reserved: Option<Arc<super::ReservedSpec>>,
    /// Where to report.
    pub board: Arc<Board>,
    /// The revision's log file.
    pub log_path: std::path::PathBuf,
    /// Where its pid file goes (see [`super::pids`]).
    pub pid_dir: std::path::PathBuf,
    /// Backoff, probe and grace timings.
    pub options: RuntimeOptions,
}

/// How one run of the process ended.
enum Outcome {
    /// Stopped on request: the instance is done.
    Stopped,
    /// The process exited on its own (or could not be waited for).
    Exited(Option<ExitInfo>),
    /// The process could not be started.
    SpawnFailed(String),
}

impl Instance {
    /// Runs the instance until `stop` fires or its sender is dropped. `port` is the first
    /// run's port, already reserved on the board (as is the instance's status).
    pub async fn run(self, mut port: u16, mut stop: oneshot::Receiver<()>) {
        let log = InstanceLog::open(&self.log_path, &self.name).await;
        let opts = self.options;
        let mut backoff = opts.initial_backoff;
        let mut restarts = 0u32;
        loop {
            let started = Instant::now();
            let outcome = self.run_once(port, &log, &mut stop).await;
            super::pids::forget(&self.pid_dir, &self.name);
            self.board.release_port(port);
            let (exit, error) = match outcome {
                Outcome::Stopped => break,
                Outcome::Exited(exit) => (exit, None),
                Outcome::SpawnFailed(error) => (None, Some(error)),
            };
            if started.elapsed() >= opts.reset_after {
                backoff = opts.initial_backoff;
            }
            let restart_in = backoff;
            backoff = (backoff * 2).min(opts.max_backoff);
            let what = match (&exit, &error) {
                (_, Some(error)) => error.clone(),
                (Some(exit), _) => format!("exited with {exit}"),
                (None, None) => "lost track of the process".to_owned(),
            };
            tracing::warn!(
                instance = %self.name,
                uptime = ?started.elapsed(),
                ?restart_in,
                "instance {what}; restarting"
            );
            log.note(&format!(
                "{what} after {} ms; restarting in {} ms",
                started.elapsed().as_millis(),
                restart_in.as_millis()
            ))
            .await;
            self.board.update(&self.key, self.index, |s| {
                s.state = InstanceState::Crashed { restart_in };
                s.pid = None;
                if exit.is_some() {
                    s.last_exit = exit;
                }
                if error.is_some() {
                    s.last_error = error.clone();
                }
            });
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep(restart_in) => {}
            }
            restarts = restarts.saturating_add(1);
            port = match self.board.reserve_port() {
                Ok(port) => port,
                Err(error) => {
                    log.note(&format!("no free loopback port: {error}")).await;
                    // Try again after the next backoff; `0` is never reserved.
                    0
                }
            };
            self.board.update(&self.key, self.index, |s| {
                s.restarts = restarts;
                s.state = InstanceState::Starting;
                s.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            });
        }
        log.note("stopped").await;
        self.board.remove(&self.key, self.index);
    }

    /// Starts the process on `port` and supervises it until it exits or `stop` fires.
    async fn run_once(
        &self,
        port: u16,
        log: &InstanceLog,
        stop: &mut oneshot::Receiver<()>,
    ) -> Outcome {
        if port == 0 {
            return Outcome::SpawnFailed("no free loopback port".to_owned());
        }
        let mut env = self.spec.container_env(port);
        let command_line = match &self.reserved {
            None => self.spec.command_line(&env),
            Some(r) => {
                env.push((super::RESERVED_INSTANCE_ENV.to_owned(), "true".to_owned()));
                r.command_line(&self.spec, &env)
            }
        };
        let Some((program, args)) = command_line else {
            return Outcome::SpawnFailed("the revision has no command".to_owned());
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.spec.working_dir {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let dir = self
                    .spec
                    .working_dir
                    .as_ref()
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_default();
                return Outcome::SpawnFailed(format!("cannot start {program:?}{dir}: {error}"));
            }
        };
        let pid = child.id();
        if let Some(pid) = pid {
            super::pids::record(&self.pid_dir, &self.name, pid);
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(logs::forward(stdout, log.clone(), "stdout"));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(logs::forward(stderr, log.clone(), "stderr"));
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        tracing::info!(instance = %self.name, pid, %addr, "instance started");
        log.note(&format!(
            "started pid {} on {addr}: {}",
            pid.unwrap_or_default(),
            shell_words(&program, &args)
        ))
        .await;
        self.board.update(&self.key, self.index, |s| {
            s.pid = pid;
            s.addr = addr;
            s.state = InstanceState::Starting;
        });

        let target = Target::new(&self.spec.readiness, self.spec.container_port, port);
        let spawned = Instant::now();
        tokio::select! {
            biased;
            _ = stop => {
                self.board.update(&self.key, self.index, |s| s.state = InstanceState::Stopping);
                // Out of the ready set already; let Envoy catch up before the app stops
                // accepting.
                tokio::select! {
                    () = tokio::time::sleep(self.options.drain_delay) => {}
                    _ = child.wait() => {}
                }
                log.note("stopping (SIGTERM)").await;
                terminate(&mut child, self.options.stop_grace, log).await;
                Outcome::Stopped
            }
            exit = child.wait() => {
                if let Some(pid) = pid {
                    kill_group(pid, Signal::SIGKILL);
                }
                Outcome::Exited(exit.ok().map(ExitInfo::from))
            }
            () = self.probe(target, log, spawned) => Outcome::Stopped, // never completes
        }
    }

    /// Probes until the process exits (the caller drops this future then): every
    /// `probe_interval` until ready, then every `ready_probe_period`; `failure_threshold`
    /// failures in a row make a ready instance unready.
    async fn probe(&self, target: Target, log: &InstanceLog, spawned: Instant) {
        let opts = &self.options;
        let mut ready = false;
        let mut first_ready = true;
        let mut failures = 0u32;
        // A starting app is probed quickly at first (5 ms, doubling up to `probe_interval`):
        // requests held at zero wait for exactly this.
        let mut starting = Duration::from_millis(5);
        loop {
            let period = if ready {
                opts.ready_probe_period
            } else {
                let p = starting.min(opts.probe_interval);
                starting = starting.saturating_mul(2);
                p
            };
            tokio::time::sleep(period).await;
            if target.check(opts.probe_timeout).await {
                failures = 0;
                if !ready {
                    ready = true;
                    let took = std::mem::take(&mut first_ready).then(|| spawned.elapsed());
                    self.board.update(&self.key, self.index, |s| {
                        s.state = InstanceState::Ready;
                        if took.is_some() {
                            s.start_time = took;
                        }
                    });
                    log.note("ready").await;
                }
            } else if ready {
                failures += 1;
                if failures >= opts.failure_threshold.max(1) {
                    ready = false;
                    self.board
                        .update(&self.key, self.index, |s| s.state = InstanceState::Unready);
                    log.note(&format!("not ready: {failures} failed probes in a row"))
                        .await;
                }
            }
        }
    }
}

/// SIGTERM to the process group, SIGKILL after `grace`; returns once the process is reaped
/// and nothing of its group is left (or SIGKILL was sent to what is).
async fn terminate(child: &mut Child, grace: Duration, log: &InstanceLog) {
    // `id()` is `None` once the child has been reaped: then its pid may be reused.
    let Some(pid) = child.id() else {
        return;
    };
    let deadline = Instant::now() + grace;
    if !kill_group(pid, Signal::SIGTERM) {
        let _ = child.start_kill();
    }
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(exit)) => {
            log.note(&format!("exited with {}", ExitInfo::from(exit)))
                .await
        }
        Ok(Err(_)) | Err(_) => {
            log.note(&format!(
                "still running {} ms after SIGTERM; sending SIGKILL",
                grace.as_millis()
            ))
            .await;
            kill_group(pid, Signal::SIGKILL);
            let _ = child.kill().await;
        }
    }
    // What the leader started may still be shutting down: wait for the rest of the grace
    // period. While a group member lives, its id cannot be reused, so the group is still ours.
    while group_alive(pid) {
        if Instant::now() >= deadline {
            kill_group(pid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` to the process group led by `pid`; `false` if it could not be sent.
fn kill_group(pid: u32, signal: Signal) -> bool {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), signal).is_ok(),
        _ => false,
    }
}

/// Whether any process of the group led by `pid` still exists.
fn group_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), None) != Err(Errno::ESRCH),
        _ => false,
    }
}

/// The command line as a shell would show it, for the log.
fn shell_words(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                word.to_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_logged_shell_quoted() {
        assert_eq!(
            shell_words(
                "python3",
                &["-c".into(), "print('hi')".into(), String::new()]
            ),
            r#"python3 -c 'print('\''hi'\'')' ''"#
        );
        assert_eq!(
            shell_words("/bin/app", &["--port=80".into()]),
            "/bin/app --port=80"
        );
    }
}
