//! The standalone process runtime with real processes.
//!
//! The apps are small `python3` programs (python3 is on every machine these tests run on), so
//! the tests need nothing built beforehand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use sluice::runtime::{
    InstanceState, InstanceStatus, ProcessRuntime, ReadinessProbe, RevisionSpec, RuntimeError,
    RuntimeOptions, logs,
};
use sluice_autoscaler::{RevisionKey, ScaleError, Scaler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Generous: two shared cores, and python3 takes a while to start on a busy machine.
const WAIT: Duration = Duration::from_secs(30);

/// An HTTP server that prints a line to stdout and one to stderr once it listens, then answers `GET /ready`
/// with 200 once `$READY_FILE` exists (503 before) and anything else with its environment,
/// arguments and working directory as JSON.
const ENV_APP: &str = r#"
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/ready':
            ok = os.path.exists(os.environ.get('READY_FILE', '/nonexistent'))
            self.send_response(200 if ok else 503)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        body = json.dumps({'env': dict(os.environ), 'argv': sys.argv[1:], 'cwd': os.getcwd()}).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)
print('app listening on', os.environ['PORT'], flush=True)
print('app says hi on stderr', file=sys.stderr, flush=True)
server.serve_forever()
"#;

/// Listens on `$PORT` and ignores SIGTERM: only SIGKILL ends it.
const STUBBORN_APP: &str = r#"
import signal, socket, os, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT'])))
s.listen()
print('stubborn listening', flush=True)
while True:
    time.sleep(1)
"#;

fn state_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-process-runtime-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the state dir");
    dir
}

/// Short timings so crash and stop tests run quickly.
fn fast() -> RuntimeOptions {
    RuntimeOptions {
        stop_grace: Duration::from_millis(1500),
        ..RuntimeOptions::default()
    }
}

fn python_spec(revision: &str, program: &str) -> RevisionSpec {
    let mut spec = RevisionSpec::new("default", revision);
    spec.service = "hello".into();
    spec.configuration = "hello-config".into();
    spec.command = vec!["python3".into(), "-c".into(), program.into()];
    spec
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after [`WAIT`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` over HTTP/1.0; returns the status code and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the instance");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Whether the process is gone (a zombie waiting for a reaper counts as gone).
fn is_gone(pid: u32) -> bool {
    let raw = i32::try_from(pid).unwrap();
    if kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

fn log_text(dir: &Path, revision: &str) -> String {
    std::fs::read_to_string(logs::log_path(dir, "default", revision)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serve_on_their_own_ports_with_knative_env_and_logs() {
    let dir = state_dir("env");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let mut changes = runtime.subscribe();

    let mut spec = python_spec("hello-00001", ENV_APP);
    spec.args = vec![
        "$(GREETING)".into(),
        "--port=$(PORT)".into(),
        "$$(PORT)".into(),
        "$(UNKNOWN)".into(),
    ];
    spec.env = vec![
        ("TARGET".into(), "World".into()),
        ("GREETING".into(), "hi $(TARGET) from $(K_REVISION)".into()),
        ("LITERAL".into(), "$$(TARGET)".into()),
    ];
    spec.working_dir = Some(work.clone());
    let key = spec.key();
    runtime.ensure(spec, 2).await.expect("ensure 2 instances");
    assert_eq!(
        runtime.instances(&key).len(),
        2,
        "both instances show at once"
    );

    timeout(WAIT, runtime.wait_ready(&key, 2))
        .await
        .expect("two ready instances");
    let ready = runtime.ready_addrs(&key);
    assert_eq!(ready.len(), 2);
    assert_ne!(ready[0].port(), ready[1].port(), "one port per instance");

    // The controller hears about readiness: the last change names both addresses.
    let mut last = None;
    while let Ok(change) = changes.try_recv() {
        assert_eq!(change.revision, key);
        last = Some(change.ready);
    }
    assert_eq!(last, Some(ready.clone()));

    for addr in &ready {
        assert!(addr.ip().is_loopback());
        let (status, body) = get(*addr, "/").await;
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let env = &seen["env"];
        assert_eq!(env["PORT"], addr.port().to_string());
        assert_eq!(env["K_REVISION"], "hello-00001");
        assert_eq!(env["K_SERVICE"], "hello");
        assert_eq!(env["K_CONFIGURATION"], "hello-config");
        assert_eq!(env["GREETING"], "hi World from hello-00001");
        assert_eq!(env["LITERAL"], "$(TARGET)");
        assert_eq!(
            seen["argv"],
            serde_json::json!([
                "hi World from hello-00001",
                format!("--port={}", addr.port()),
                "$(PORT)",
                "$(UNKNOWN)"
            ])
        );
        assert_eq!(
            Path::new(seen["cwd"].as_str().unwrap())
                .canonicalize()
                .unwrap(),
            work.canonicalize().unwrap()
        );
    }

    let statuses = runtime.instances(&key);
    for s in &statuses {
        assert_eq!(s.state, InstanceState::Ready);
        assert!(s.ready && s.pid.is_some());
        assert_eq!(s.restarts, 0);
    }
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hello-00001-0", "hello-00001-1"]);

    // Both instances' output lands in the revision's log, each line with its instance.
    let log = eventually("both instances' output in the log", || {
        let log = log_text(&dir, "hello-00001");
        let done = ["hello-00001-0", "hello-00001-1"].iter().all(|i| {
            log.contains(&format!("{i} stdout: app listening on"))
                && log.contains(&format!("{i} stderr: app says hi on stderr"))
        });
        done.then_some(log)
    })
    .await;
    assert!(log.contains("hello-00001-0 sluice: started pid"), "{log}");
    assert!(log.contains("hello-00001-1 sluice: ready"), "{log}");
    let tail = logs::tail(&runtime.log_path(&key), Some(1)).await.unwrap();
    assert_eq!(tail.text.iter().filter(|&&b| b == b'\n').count(), 1);

    // Scale to zero: every process is gone.
    let pids: Vec<u32> = statuses.iter().filter_map(|s| s.pid).collect();
    runtime
        .ensure(runtime.spec(&key).unwrap(), 0)
        .await
        .unwrap();
    assert!(
        runtime.ready_addrs(&key).is_empty(),
        "out of service at once"
    );
    eventually("no instances", || {
        runtime.instances(&key).is_empty().then_some(())
    })
    .await;
    for pid in pids {
        assert!(is_gone(pid), "pid {pid} still runs");
    }
    assert!(log_text(&dir, "hello-00001").contains("hello-00001-0 sluice: stopping (SIGTERM)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_app_is_restarted_with_backoff_and_shown() {
    let dir = state_dir("crash");
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let spec = python_spec(
        "crash-00001",
        "import sys; print('boom', flush=True); sys.exit(3)",
    );
    let key = spec.key();
    runtime.ensure(spec, 1).await.unwrap();

    // Record the backoffs shown while it crashes.
    let mut backoffs: Vec<Duration> = Vec::new();
    let crashed: InstanceStatus = eventually("three restarts", || {
        let status = runtime.instances(&key).into_iter().next()?;
        if let InstanceState::Crashed { restart_in } = status.state
            && backoffs.last() != Some(&restart_in)
        {
            backoffs.push(restart_in);
        }
        (status.restarts >= 3 && matches!(status.state, InstanceState::Crashed { .. }))
            .then_some(status)
    })
    .await;
    assert!(!crashed.ready);
    assert_eq!(crashed.pid, None);
    assert_eq!(crashed.last_exit.map(|e| e.code), Some(Some(3)));
    // Polling may miss a short one, but every backoff shown is on the doubling ladder.
    assert!(!backoffs.is_empty());
    for backoff in &backoffs {
        assert!(
            [100, 200, 400, 800, 1600].contains(&backoff.as_millis()),
            "{backoffs:?}"
        );
    }
    assert!(runtime.ready_addrs(&key).is_empty());

    let log = log_text(&dir, "crash-00001");
    assert!(log.contains("crash-00001-0 stdout: boom"), "{log}");
    assert!(
        log.contains("crash-00001-0 sluice: exited with exit code 3 after"),
        "{log}"
    );
    // The log has every one, in order: the backoff doubles from 100 ms.
    let ladder: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("; restarting in ").nth(1))
        .collect();
    assert!(
        ladder.starts_with(&["100 ms", "200 ms", "400 ms", "800 ms"]),
        "{ladder:?}"
    );

    runtime.remove(&key).await;
    assert!(runtime.instances(&key).is_empty());
    assert!(runtime.revisions().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_shows_why_and_is_retried() {
    let dir = state_dir("missing");
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let mut spec = RevisionSpec::new("default", "missing-00001");
    spec.command = vec!["/nonexistent/sluice-test-app".into()];
    let key = spec.key();
    runtime.ensure(spec, 1).await.unwrap();
    let status = eventually("a retried start", || {
        runtime
            .instances(&key)
            .into_iter()
            .next()
            .filter(|s| s.restarts >= 1 && s.last_error.is_some())
    })
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.starts_with("cannot start \"/nonexistent/sluice-test-app\": "),
        "{error}"
    );
    runtime.shutdown().await;
    assert!(runtime.instances(&key).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_get_readiness_probe_decides_readiness() {
    let dir = state_dir("probe");
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let ready_file = dir.join("ready");
    let mut spec = python_spec("probe-00001", ENV_APP);
    spec.env = vec![("READY_FILE".into(), ready_file.display().to_string())];
    spec.readiness = ReadinessProbe::HttpGet {
        path: "/ready".into(),
        port: None,
    };
    let key = spec.key();
    runtime.ensure(spec, 1).await.unwrap();

    // The app listens (a TCP probe would pass) but answers /ready with 503.
    eventually("the app to listen", || {
        log_text(&dir, "probe-00001")
            .contains("stdout: app listening on")
            .then_some(())
    })
    .await;
    let addr = runtime.instances(&key)[0].addr;
    assert_eq!(get(addr, "/ready").await.0, 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = &runtime.instances(&key)[0];
    assert_eq!(status.state, InstanceState::Starting);
    assert!(!status.ready);

    std::fs::write(&ready_file, "").unwrap();
    timeout(WAIT, runtime.wait_ready(&key, 1))
        .await
        .expect("ready once /ready answers 200");
    assert_eq!(runtime.ready_addrs(&key), vec![addr]);

    runtime.remove(&key).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_kills_what_ignores_sigterm_and_the_whole_process_group() {
    let dir = state_dir("stop");
    let runtime = ProcessRuntime::with_options(
        dir.clone(),
        RuntimeOptions {
            stop_grace: Duration::from_millis(500),
            ..RuntimeOptions::default()
        },
    );
    let helper_pid_file = dir.join("helper.pid");
    let mut spec = RevisionSpec::new("default", "stubborn-00001");
    // A shell that starts a helper in the background, then becomes the app.
    spec.command = vec!["sh".into(), "-c".into()];
    spec.args = vec!["sleep 300 & echo $! > \"$PID_FILE\"; exec python3 -c \"$APP\"".into()];
    spec.env = vec![
        ("PID_FILE".into(), helper_pid_file.display().to_string()),
        ("APP".into(), STUBBORN_APP.into()),
    ];
    let key = spec.key();
    runtime.ensure(spec, 1).await.unwrap();
    timeout(WAIT, runtime.wait_ready(&key, 1))
        .await
        .expect("the stubborn app gets ready");
    let pid = runtime.instances(&key)[0].pid.unwrap();
    let helper: u32 = eventually("the helper's pid", || {
        std::fs::read_to_string(&helper_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    assert!(!is_gone(helper));

    let started = Instant::now();
    runtime
        .ensure(runtime.spec(&key).unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(runtime.instances(&key)[0].state, InstanceState::Stopping);
    eventually("the instance to stop", || {
        runtime.instances(&key).is_empty().then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited the grace period"
    );
    assert!(is_gone(pid), "the app ignored SIGTERM and was killed");
    eventually("the helper to be gone", || is_gone(helper).then_some(())).await;
    let log = log_text(&dir, "stubborn-00001");
    assert!(log.contains("sending SIGKILL"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_scales_the_last_spec() {
    let dir = state_dir("scaler");
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let unknown = RevisionKey::new("default", "nope-00001");
    let err = runtime.scale(&unknown, 1).await.unwrap_err();
    assert!(matches!(err, ScaleError::NotFound { .. }), "{err}");

    let spec = python_spec("scaled-00001", ENV_APP);
    let key = spec.key();
    runtime.ensure(spec, 0).await.unwrap();
    assert!(runtime.instances(&key).is_empty());
    assert_eq!(runtime.revisions(), vec![key.clone()]);

    runtime.scale(&key, 1).await.unwrap();
    timeout(WAIT, runtime.wait_ready(&key, 1))
        .await
        .expect("scaled to 1");
    runtime.scale(&key, 3).await.unwrap();
    timeout(WAIT, runtime.wait_ready(&key, 3))
        .await
        .expect("scaled to 3");
    let first = runtime.instances(&key)[0].clone();
    runtime.scale(&key, 1).await.unwrap();
    // The oldest ready instance is kept; the newest are stopped.
    eventually("scaled in to 1", || {
        (runtime.instances(&key).len() == 1).then_some(())
    })
    .await;
    assert_eq!(runtime.instances(&key)[0].index, first.index);
    assert_eq!(runtime.ready_addrs(&key), vec![first.addr]);

    runtime.scale(&key, 0).await.unwrap();
    eventually("scaled to 0", || {
        runtime.instances(&key).is_empty().then_some(())
    })
    .await;
    assert!(first.pid.is_some_and(is_gone));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_revision_without_command_is_refused_clearly() {
    let runtime = ProcessRuntime::new(state_dir("nocommand"));
    let spec = RevisionSpec::new("default", "image-00001");
    let err = runtime.ensure(spec.clone(), 1).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NoCommand { .. }));
    assert_eq!(
        err.to_string(),
        "revision default/image-00001: the standalone runtime runs commands, not images: set \
         containers[0].command"
    );
    assert!(runtime.instances(&spec.key()).is_empty());
    assert!(runtime.revisions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_spec_replaces_the_instances_and_numbers_are_not_reused() {
    let dir = state_dir("respec");
    let runtime = ProcessRuntime::with_options(dir.clone(), fast());
    let mut spec = python_spec("respec-00001", ENV_APP);
    spec.env = vec![("TARGET".into(), "one".into())];
    let key = spec.key();
    runtime.ensure(spec.clone(), 1).await.unwrap();
    timeout(WAIT, runtime.wait_ready(&key, 1))
        .await
        .expect("ready");
    let old = runtime.instances(&key)[0].clone();

    // containerConcurrency does not change the process: nothing restarts.
    spec.container_concurrency = 1;
    runtime.ensure(spec.clone(), 1).await.unwrap();
    assert_eq!(runtime.instances(&key), vec![old.clone()]);

    spec.env = vec![("TARGET".into(), "two".into())];
    runtime.ensure(spec.clone(), 1).await.unwrap();
    let new = eventually("the replacement alone, ready", || {
        let instances = runtime.instances(&key);
        (instances.len() == 1 && instances[0].ready).then(|| instances[0].clone())
    })
    .await;
    assert_eq!(new.index, 1);
    let (_, body) = get(new.addr, "/").await;
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["env"]["TARGET"], "two");
    assert!(old.pid.is_some_and(is_gone));

    // Removed and added again: numbering goes on.
    runtime.remove(&key).await;
    runtime.ensure(spec, 1).await.unwrap();
    assert_eq!(runtime.instances(&key)[0].index, 2);
    runtime.shutdown().await;
    assert!(runtime.instances(&key).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
