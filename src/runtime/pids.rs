//! Pid files of running instances and of Envoy (`STATE_DIR/run/<name>.pid`), so that a
//! `sluice up` killed without a chance to stop them (SIGKILL, a crash) stops them on its next
//! start instead of leaving them running and holding their ports.
//!
//! Each file holds the pid and the process's start time (field 22 of `/proc/<pid>/stat`, in
//! clock ticks since boot): a pid reused by an unrelated process since then has another start
//! time and is left alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

fn file(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("{instance}.pid"))
}

/// The start time of a live process, from `/proc`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, which is field 3's predecessor.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records that `instance` runs as `pid` (for [`reap`]: the leader of its process group, or a
/// single process).
pub fn record(dir: &Path, instance: &str, pid: u32) {
    let Some(started) = start_time(pid) else {
        return;
    };
    if let Err(error) = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(file(dir, instance), format!("{pid} {started}\n")))
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot write the instance's pid file; it would outlive a killed sluice");
    }
}

/// Forgets `instance`'s pid file: its process is gone.
pub fn forget(dir: &Path, instance: &str) {
    let _ = std::fs::remove_file(file(dir, instance));
}

/// Stops the process groups left behind by an earlier run (SIGTERM, SIGKILL after `grace`)
/// and removes every pid file; returns the pids stopped.
pub fn reap(dir: &Path, grace: Duration) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut alive = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "pid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        if pid > 1 && start_time(pid) == Some(started) {
            alive.push(pid);
        }
    }
    let pid_of = |pid: u32| Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    // Its process group when it leads one (an instance and what it started), else itself
    // (Envoy, which shares its launcher's group).
    let signal = |pid: u32, sig: Option<Signal>| {
        killpg(pid_of(pid), sig).or_else(|_| kill(pid_of(pid), sig))
    };
    for &pid in &alive {
        tracing::warn!(pid, "stopping a process left running by an earlier sluice");
        let _ = signal(pid, Some(Signal::SIGTERM));
    }
    let deadline = std::time::Instant::now() + grace;
    while alive
        .iter()
        .any(|&p| start_time(p).is_some() && signal(p, None).is_ok())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &alive {
        let _ = signal(pid, Some(Signal::SIGKILL));
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_stopped_and_reused_pids_left_alone() {
        let dir = std::env::temp_dir().join(format!("sluice-pids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        use std::os::unix::process::CommandExt;
        let mut orphan = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("sleep");
        record(&dir, "hello-00001-0", orphan.id());
        // Our own pid with a wrong start time: a reused pid, never signalled.
        std::fs::write(dir.join("other.pid"), format!("{} 1\n", std::process::id()))
            .expect("write");
        std::fs::write(dir.join("garbage.pid"), "not a pid\n").expect("write");

        let stopped = reap(&dir, Duration::from_millis(500));
        assert_eq!(stopped, [orphan.id()]);
        let status = orphan.wait().expect("reaped");
        assert!(!status.success(), "ended by a signal: {status}");
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            0,
            "pid files removed"
        );
        forget(&dir, "hello-00001-0"); // already gone: fine
        let _ = std::fs::remove_dir_all(&dir);
    }
}
