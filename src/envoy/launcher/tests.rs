//! Supervisor behaviour against a fake Envoy (a shell script); the real Envoy is exercised in
//! `tests/envoy_launcher.rs`.

use super::*;
use crate::envoy::test_support::TempDir;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

/// Bounds every wait in these tests: a hang fails instead of blocking forever.
const DEADLINE: Duration = Duration::from_secs(10);

fn fast_timing() -> Timing {
    Timing {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        reset_after: Duration::from_secs(10),
        stop_grace: Duration::from_millis(300),
    }
}

/// A fake Envoy that records its arguments next to the bootstrap and runs until signalled.
/// `on_term` is the shell trap action for SIGTERM; `ready` appears once the trap is set.
fn fake_envoy(dir: &Path, on_term: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n\
         echo \"$@\" > \"$(dirname \"$2\")/args\"\n\
         echo \"[info][main] fake envoy $$ starting\" >&2\n\
         echo 'not a log line'\n\
         trap '{on_term}' TERM\n\
         touch \"$(dirname \"$2\")/ready\"\n\
         while :; do sleep 0.02; done\n"
    );
    let path = dir.join("fake-envoy");
    std::fs::write(&path, script).expect("write fake envoy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn config(binary: PathBuf, work_dir: PathBuf) -> LaunchConfig {
    LaunchConfig::new(binary, "node: {id: test}\n", work_dir)
}

fn alive(pid: u32) -> bool {
    let raw = i32::try_from(pid).expect("pid fits i32");
    kill(Pid::from_raw(raw), None) != Err(Errno::ESRCH)
}

fn sigkill(pid: u32) {
    let raw = i32::try_from(pid).expect("pid fits i32");
    kill(Pid::from_raw(raw), Signal::SIGKILL).expect("SIGKILL the child");
}

async fn wait_gone(pid: u32) {
    tokio::time::timeout(DEADLINE, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("process {pid} still alive"));
}

#[tokio::test]
async fn writes_bootstrap_and_passes_envoy_arguments() {
    let tmp = TempDir::new("launch-args");
    let work = tmp.path().join("state/envoy");
    let mut cfg = config(fake_envoy(tmp.path(), "exit 0"), work.clone());
    cfg.extra_args = vec!["--concurrency".to_owned(), "1".to_owned()];
    let envoy = Envoy::start_with(cfg, fast_timing()).await.expect("starts");
    assert_eq!(envoy.bootstrap_path(), work.join(BOOTSTRAP_FILE));
    let bootstrap = std::fs::read_to_string(work.join(BOOTSTRAP_FILE)).expect("bootstrap");
    assert_eq!(bootstrap, "node: {id: test}\n");

    let args_file = work.join("args");
    let args = tokio::time::timeout(DEADLINE, async {
        loop {
            match std::fs::read_to_string(&args_file) {
                Ok(args) if args.ends_with('\n') => return args,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("fake envoy records its arguments");
    let expected = format!(
        "-c {} --use-dynamic-base-id --log-level info --log-format [%l][%n] %v \
         --log-format-escaped --drain-time-s 1 --parent-shutdown-time-s 2 --concurrency 1\n",
        work.join(BOOTSTRAP_FILE).display()
    );
    assert_eq!(args, expected);
    envoy.stop().await;
}

#[tokio::test]
async fn relaunches_after_a_crash_and_stops_for_good() {
    let tmp = TempDir::new("launch-restart");
    let cfg = config(fake_envoy(tmp.path(), "exit 0"), tmp.path().join("work"));
    let envoy = Envoy::start_with(cfg, fast_timing()).await.expect("starts");
    let first = envoy.pid().expect("running");
    assert_eq!(envoy.restarts(), 0);

    sigkill(first);
    let second = tokio::time::timeout(DEADLINE, envoy.wait_restarted(0))
        .await
        .expect("relaunched in time")
        .expect("supervisor alive");
    assert_ne!(second, first);
    assert_eq!(envoy.restarts(), 1);
    assert_eq!(envoy.pid(), Some(second));
    let status = envoy.status();
    assert_eq!(
        status.last_exit.and_then(|e| e.signal()),
        Some(Signal::SIGKILL as i32)
    );
    assert!(!alive(first));

    let mut updates = envoy.subscribe();
    tokio::time::timeout(DEADLINE, envoy.stop())
        .await
        .expect("stops in time");
    assert!(!alive(second), "SIGTERM ended the fake envoy");
    // The supervisor is gone: no relaunch after stop.
    assert_eq!(updates.borrow_and_update().pid, None);
    assert!(updates.changed().await.is_err());
}

#[tokio::test]
async fn sigkills_an_envoy_that_ignores_sigterm() {
    let tmp = TempDir::new("launch-stubborn");
    let cfg = config(fake_envoy(tmp.path(), ""), tmp.path().join("work"));
    let envoy = Envoy::start_with(cfg, fast_timing()).await.expect("starts");
    let pid = envoy.pid().expect("running");
    let ready = tmp.path().join("work/ready");
    tokio::time::timeout(DEADLINE, async {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("fake envoy sets its SIGTERM trap");
    let started = tokio::time::Instant::now();
    tokio::time::timeout(DEADLINE, envoy.stop())
        .await
        .expect("stops in time");
    assert!(started.elapsed() >= fast_timing().stop_grace);
    assert!(!alive(pid));
}

#[tokio::test]
async fn dropping_the_handle_stops_envoy() {
    let tmp = TempDir::new("launch-drop");
    let cfg = config(fake_envoy(tmp.path(), "exit 0"), tmp.path().join("work"));
    let envoy = Envoy::start_with(cfg, fast_timing()).await.expect("starts");
    let pid = envoy.pid().expect("running");
    drop(envoy);
    wait_gone(pid).await;
}

#[tokio::test]
async fn keeps_relaunching_an_envoy_that_exits_at_once() {
    let tmp = TempDir::new("launch-crashloop");
    let binary = tmp.path().join("crashing-envoy");
    std::fs::write(
        &binary,
        "#!/bin/sh\necho '[critical][main] cannot bind' >&2\nexit 1\n",
    )
    .expect("write script");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let envoy = Envoy::start_with(config(binary, tmp.path().join("work")), fast_timing())
        .await
        .expect("spawning works even if Envoy then fails");
    tokio::time::timeout(DEADLINE, envoy.wait_restarted(2))
        .await
        .expect("relaunched three times");
    let mut status = envoy.subscribe();
    let exited = tokio::time::timeout(DEADLINE, status.wait_for(|s| s.last_exit.is_some()))
        .await
        .expect("an exit is recorded")
        .expect("supervisor alive")
        .last_exit;
    assert_eq!(exited.and_then(|e| e.code()), Some(1));
    envoy.stop().await;
}

#[tokio::test]
async fn unknown_log_level_is_rejected() {
    let tmp = TempDir::new("launch-level");
    let mut cfg = config(fake_envoy(tmp.path(), "exit 0"), tmp.path().join("work"));
    cfg.log_level = "loud".to_owned();
    let err = Envoy::start(cfg).await.expect_err("bad level");
    assert!(
        matches!(err, LaunchError::InvalidLogLevel { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("warning"), "{err}");
}

#[tokio::test]
async fn missing_binary_is_a_spawn_error_with_a_hint() {
    let tmp = TempDir::new("launch-missing");
    let cfg = config(tmp.path().join("no-envoy"), tmp.path().join("work"));
    let err = Envoy::start(cfg).await.expect_err("nothing to run");
    assert!(matches!(err, LaunchError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("--envoy PATH"), "{err}");
}

#[tokio::test]
async fn unwritable_work_dir_is_reported() {
    let tmp = TempDir::new("launch-workdir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let cfg = config(fake_envoy(tmp.path(), "exit 0"), file.join("work"));
    let err = Envoy::start(cfg).await.expect_err("work dir under a file");
    assert!(matches!(err, LaunchError::WorkDir { .. }), "{err:?}");
}
