//! `sluice gateway --dir` (or `--kube`) as a child process, for end-to-end tests through its
//! real Envoy.
//!
//! [`Gateway::start`] writes the given files into a fresh directory, starts the binary on free
//! loopback ports (listeners, xDS, debug, Envoy admin) and waits until its debug server answers.
//! [`Gateway::start_kube`] does the same with `--kube` and a given kubeconfig.
//! Files are edited live with [`Gateway::write`] (write a hidden temporary file, then rename:
//! the watcher never sees half a file) and [`Gateway::remove`]. Readiness and problems are read
//! from the debug server's `/status` — the document `sluice status --json` prints.
//!
//! The gateway runs in its own process group, so the Envoy it launches can be ended with it:
//! [`Gateway::stop`] sends SIGTERM and expects a clean exit (the gateway stops its Envoy);
//! dropping a gateway that was not stopped (a failed test) SIGKILLs the group.
//!
//! YAML builders for the objects the gateway reads ([`kingress`], [`split`], [`service`],
//! [`endpoint_slice`], [`backend_objects`]) keep the tests short.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use sluice::gateway::{GatewayStatus, IngressStatusView};
use tokio::process::{Child, Command};

use super::{Response, free_addr, wait_for};

/// Our ingress class.
pub const CLASS: &str = "sluice.ingress.networking.knative.dev";
/// The annotation carrying it.
pub const CLASS_ANNOTATION: &str = "networking.knative.dev/ingress.class";

/// Upper bound for the gateway to start, and for any change to be served or reported.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Lines of the gateway's log shown when a test fails.
const LOG_TAIL: usize = 60;

/// How the binary is started.
enum Mode<'a> {
    /// `sluice gateway --dir`.
    Dir,
    /// `sluice gateway --dir` with extra flags.
    DirWith(&'a [&'a str]),
    /// `sluice gateway --kube` with this kubeconfig, extra flags, and the listener addresses
    /// given (several control planes serving the same Envoys).
    KubeWith(&'a Path, &'a [&'a str], [SocketAddr; 4]),
    /// `sluice gateway --kube` with this kubeconfig.
    Kube(&'a Path),
    /// `sluice up DIR` with extra flags.
    Up(&'a [&'a str]),
    /// `sluice up DIR` with extra environment variables.
    UpEnv(&'a [(&'a str, &'a str)]),
}

/// A running `sluice gateway --dir` (or `--kube`, or `sluice up`).
pub struct Gateway {
    /// External plain-HTTP listener (ExternalIP hosts).
    pub external_http: SocketAddr,
    /// Internal plain-HTTP listener (every host).
    pub internal_http: SocketAddr,
    /// External HTTPS listener.
    pub external_https: SocketAddr,
    /// Internal HTTPS listener.
    pub internal_https: SocketAddr,
    /// xDS gRPC server.
    pub xds: SocketAddr,
    /// Debug HTTP server (`/status`, `/metrics`, `/healthz`).
    pub debug: SocketAddr,
    /// Envoy's admin interface.
    pub envoy_admin: SocketAddr,
    root: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// Keep the directory when dropped (it is restarted).
    keep: bool,
}

impl Gateway {
    /// Starts a gateway over a new directory holding `files` (name → content) and waits until
    /// its debug server answers. `label` names the directory (for humans reading /tmp).
    pub async fn start(label: &str, files: &[(&str, String)]) -> Gateway {
        Self::spawn(label, files, Mode::Dir).await
    }

    /// [`Self::start`] with extra `sluice gateway` flags (e.g. `--no-envoy`).
    pub async fn start_with(label: &str, files: &[(&str, String)], flags: &[&str]) -> Gateway {
        Self::spawn(label, files, Mode::DirWith(flags)).await
    }

    /// Starts `sluice up DIR` over a new directory holding `files` and waits until its debug
    /// server answers.
    pub async fn start_up(label: &str, files: &[(&str, String)]) -> Gateway {
        Self::spawn(label, files, Mode::Up(&[])).await
    }

    /// [`Self::start_up`] with extra `sluice up` flags.
    pub async fn start_up_with(label: &str, files: &[(&str, String)], flags: &[&str]) -> Gateway {
        Self::spawn(label, files, Mode::Up(flags)).await
    }

    /// [`Self::start_up`] with extra environment variables for `sluice up`.
    pub async fn start_up_env(
        label: &str,
        files: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::spawn(label, files, Mode::UpEnv(env)).await
    }

    /// Starts `sluice gateway --kube` reading the cluster of `kubeconfig` (set as `KUBECONFIG`)
    /// and waits until its debug server answers.
    pub async fn start_kube(label: &str, kubeconfig: &Path) -> Gateway {
        Self::spawn(label, &[], Mode::Kube(kubeconfig)).await
    }

    async fn spawn(label: &str, files: &[(&str, String)], mode: Mode<'_>) -> Gateway {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "sluice-gateway-e2e-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("files");
        std::fs::create_dir_all(&dir).expect("creating the gateway's directory");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("writing a fixture");
        }
        Self::launch(label, root, dir, mode).await
    }

    /// Starts `sluice gateway --kube` (this kubeconfig) with `flags` and the listener addresses
    /// `listeners` (external HTTP, internal HTTP, external HTTPS, internal HTTPS).
    pub async fn start_kube_with(
        label: &str,
        kubeconfig: &Path,
        flags: &[&str],
        listeners: [SocketAddr; 4],
    ) -> Gateway {
        Self::spawn(label, &[], Mode::KubeWith(kubeconfig, flags, listeners)).await
    }

    /// SIGKILLs this `sluice` (its process group), as a crash would.
    pub async fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
        }
    }

    /// Stops this `sluice up` (SIGTERM, clean exit) and starts it again over the same
    /// directory (and so the same state directory), on new ports.
    pub async fn restart_up(mut self, label: &str) -> Gateway {
        let (root, dir) = (self.root.clone(), self.dir.clone());
        self.keep = true;
        self.stop().await;
        Self::launch(label, root, dir, Mode::Up(&[])).await
    }

    /// SIGKILLs this `sluice up` alone: its Envoy and its revision processes survive it, as
    /// after a crash. Then starts it again over the same directory, on new ports.
    pub async fn kill_and_restart_up(mut self, label: &str) -> Gateway {
        let (root, dir) = (self.root.clone(), self.dir.clone());
        self.keep = true;
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("not yet reaped") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL to sluice");
        let _ = child.wait().await;
        drop(self);
        Self::launch(label, root, dir, Mode::Up(&[])).await
    }

    async fn launch(label: &str, root: PathBuf, dir: PathBuf, mode: Mode<'_>) -> Gateway {
        let [external_http, internal_http, external_https, internal_https] = match &mode {
            Mode::KubeWith(_, _, listeners) => *listeners,
            _ => [free_addr(), free_addr(), free_addr(), free_addr()],
        };
        let mut gw = Gateway {
            external_http,
            internal_http,
            external_https,
            internal_https,
            xds: free_addr(),
            debug: free_addr(),
            envoy_admin: free_addr(),
            root,
            dir,
            child: None,
            keep: false,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(gw.log_path())
            .expect("creating the gateway log");
        let addr = |a: SocketAddr| a.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        match mode {
            Mode::Kube(path) => {
                cmd.args(["gateway", "--kube"])
                    .args(["--instance", &format!("e2e-{label}")])
                    .env("KUBECONFIG", path);
            }
            Mode::Dir => {
                cmd.args(["gateway", "--dir"]).arg(&gw.dir);
            }
            Mode::DirWith(flags) => {
                cmd.args(["gateway", "--dir"]).arg(&gw.dir).args(flags);
            }
            Mode::KubeWith(path, flags, _) => {
                cmd.args(["gateway", "--kube"])
                    .args(["--instance", &format!("e2e-{label}")])
                    .args(flags)
                    .env("KUBECONFIG", path);
            }
            Mode::Up(flags) => {
                cmd.arg("up")
                    .arg(&gw.dir)
                    .args(["--activator", &addr(free_addr())])
                    .args(flags);
            }
            Mode::UpEnv(env) => {
                cmd.arg("up")
                    .arg(&gw.dir)
                    .args(["--activator", &addr(free_addr())])
                    .envs(env.iter().copied());
            }
        }
        cmd.args(["--external-http", &addr(gw.external_http)])
            .args(["--internal-http", &addr(gw.internal_http)])
            .args(["--external-https", &addr(gw.external_https)])
            .args(["--internal-https", &addr(gw.internal_https)])
            .args(["--xds", &addr(gw.xds)])
            .args(["--debug", &addr(gw.debug)])
            .args(["--envoy-admin", &addr(gw.envoy_admin)])
            .args(match &mode {
                // Several control planes serve the same Envoys: the caller names their node id.
                Mode::KubeWith(..) => Vec::new(),
                _ => vec!["--node-id".to_string(), format!("e2e-{label}")],
            })
            // `.venv/bin/envoy` is found relative to the current directory.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        gw.child = Some(cmd.spawn().expect("spawning sluice gateway"));
        let debug = gw.debug;
        let log_path = gw.log_path();
        let child = gw.child.as_mut().expect("just spawned");
        wait_for("the gateway's debug server", SETTLE, || {
            if let Ok(Some(exit)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("sluice gateway exited early ({exit}):\n{log}");
            }
            async move {
                super::get(debug, &debug.to_string(), "/healthz", &[])
                    .await
                    .and_then(|r| {
                        if r.status == 200 {
                            Ok(())
                        } else {
                            Err(anyhow!("status {}", r.status))
                        }
                    })
            }
        })
        .await;
        gw
    }

    /// The process id of `sluice` itself.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("sluice is running")
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of file `name` in the watched directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("gateway.log")
    }

    /// Everything the gateway (and its Envoy) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates or replaces file `name` atomically: a hidden temporary file (which the gateway
    /// skips) renamed over it.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("writing a temporary file");
        std::fs::rename(&tmp, self.path(name)).expect("renaming into place");
    }

    /// Deletes file `name`.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).expect("removing a file");
    }

    /// The gateway's `/status` document.
    pub async fn status(&self) -> anyhow::Result<GatewayStatus> {
        let r = super::get(self.debug, &self.debug.to_string(), "/status", &[]).await?;
        if r.status != 200 {
            bail!("/status answered {}: {}", r.status, r.text());
        }
        serde_json::from_slice(&r.body)
            .with_context(|| format!("/status is not a status document: {}", r.text()))
    }

    /// The status of KIngress `default/name`, if listed.
    pub async fn ingress(&self, name: &str) -> anyhow::Result<Option<IngressStatusView>> {
        Ok(self
            .status()
            .await?
            .ingresses
            .into_iter()
            .find(|i| i.namespace == "default" && i.name == name))
    }

    /// Waits until KIngress `default/name` satisfies `check` and returns its status.
    pub async fn wait_ingress(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&IngressStatusView) -> bool,
    ) -> IngressStatusView {
        wait_for(
            &format!("KIngress default/{name}: {what}"),
            SETTLE,
            || async {
                match self.ingress(name).await? {
                    Some(i) if check(&i) => Ok(i),
                    Some(i) => Err(anyhow!("status is {i:?}")),
                    None => Err(anyhow!("not listed in /status")),
                }
            },
        )
        .await
    }

    /// Waits until KIngress `default/name` is Ready=True and returns its status.
    pub async fn wait_ready(&self, name: &str) -> IngressStatusView {
        self.wait_ingress(name, "Ready=True", |i| i.ready == "True")
            .await
    }

    /// Waits until KIngress `default/name` is Ready=True at a hash other than `old`.
    pub async fn wait_ready_after(&self, name: &str, old: &str) -> IngressStatusView {
        self.wait_ingress(name, "Ready=True at a new hash", |i| {
            i.ready == "True" && i.hash != old
        })
        .await
    }

    /// `GET path` with `Host: host` on the external HTTP listener.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<Response> {
        super::get(self.external_http, host, path, &[]).await
    }

    /// Waits until `n` requests in a row to `host` on `addr` are answered 200 by `backend`.
    pub async fn wait_backend(&self, addr: SocketAddr, host: &str, backend: &str, n: usize) {
        wait_for(
            &format!("{n} answers in a row from {backend} for {host} via {addr}"),
            SETTLE,
            || async {
                for _ in 0..n {
                    let r = super::get(addr, host, "/", &[]).await?;
                    anyhow::ensure!(r.status == 200, "status {}: {}", r.status, r.text());
                    anyhow::ensure!(
                        r.backend() == Some(backend),
                        "answered by {:?}",
                        r.backend()
                    );
                }
                anyhow::Ok(())
            },
        )
        .await
    }

    /// Waits until requests to `host` on `addr` get status `code`.
    pub async fn wait_status(&self, addr: SocketAddr, host: &str, code: u16) {
        wait_for(&format!("{code} for {host} via {addr}"), SETTLE, || async {
            let r = super::get(addr, host, "/", &[]).await?;
            anyhow::ensure!(r.status == code, "status {}: {}", r.status, r.text());
            anyhow::Ok(())
        })
        .await
    }

    /// SIGTERM, then waits for a clean exit (the gateway stops its Envoy first).
    pub async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("not yet reaped") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM to the gateway");
        let status = tokio::time::timeout(SETTLE, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the gateway did not exit within {SETTLE:?} of SIGTERM:\n{}",
                    self.log()
                )
            })
            .expect("waiting for the gateway");
        assert!(
            status.success(),
            "the gateway exited with {status} after SIGTERM:\n{}",
            self.log()
        );
        // Nothing of the group (Envoy) outlives the gateway.
        wait_for("the gateway's Envoy to exit", SETTLE, || async {
            let alive = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_ok();
            (!alive).then_some(())
        })
        .await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &self.child
            && let Some(pid) = child.id()
        {
            // A failed test: end the gateway and the Envoy it launched (same process group).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            if std::thread::panicking() {
                let log = self.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
                eprintln!("--- sluice gateway log, last {LOG_TAIL} lines ---\n{tail}");
            }
        }
        if !self.keep {
            // Revision instances and Envoy have process groups of their own: a `sluice up`
            // that died (or was killed above) leaves them running. Their pid files say which.
            let run = self.dir.join(".sluice").join(sluice::runtime::RUN_DIR);
            if run.is_dir() {
                sluice::runtime::pids::reap(&run, std::time::Duration::from_millis(200));
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A KIngress of our class in namespace `default` with `rules` (JSON of `spec.rules`).
pub fn kingress(name: &str, rules: Value) -> Value {
    kingress_of_class(name, Some(CLASS), rules)
}

/// A KIngress of `class` (`None`: no class annotation).
pub fn kingress_of_class(name: &str, class: Option<&str>, rules: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(c) = class {
        meta["annotations"] = json!({ CLASS_ANNOTATION: c });
    }
    json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {"rules": rules},
    })
}

/// One rule: `hosts`, visibility, and `paths` (JSON of `http.paths`).
pub fn rule(hosts: &[&str], visibility: &str, paths: Value) -> Value {
    json!({"hosts": hosts, "visibility": visibility, "http": {"paths": paths}})
}

/// A split to Service `default/service` port 80 with `percent`.
pub fn split(service: &str, percent: u32) -> Value {
    json!({"serviceName": service, "serviceNamespace": "default", "servicePort": 80, "percent": percent})
}

/// A KIngress with one ExternalIP rule for `host`, path `/`, 100% to `service`.
pub fn simple_kingress(name: &str, host: &str, service: &str) -> Value {
    kingress(
        name,
        json!([rule(
            &[host],
            "ExternalIP",
            json!([{"splits": [split(service, 100)]}])
        )]),
    )
}

/// A v1 Service `default/name`, port 80 (named `port_name`, with `app_protocol` if given) →
/// `target_port`.
pub fn service(name: &str, port_name: &str, app_protocol: Option<&str>, target_port: u16) -> Value {
    let mut port =
        json!({"name": port_name, "port": 80, "targetPort": target_port, "protocol": "TCP"});
    if let Some(a) = app_protocol {
        port["appProtocol"] = json!(a);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [port]},
    })
}

/// An EndpointSlice of Service `default/service`: 127.0.0.1, port `port_name` = `port`.
pub fn endpoint_slice(service: &str, port_name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    })
}

/// Service `default/name` (port named `http`) and its EndpointSlice pointing at `backend`.
pub fn backend_objects(name: &str, backend: SocketAddr) -> String {
    yaml_docs(&[
        service(name, "http", None, backend.port()),
        endpoint_slice(name, "http", backend.port()),
    ])
}

/// Objects as one multi-document YAML file.
pub fn yaml_docs(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One object as YAML.
pub fn yaml(object: &Value) -> String {
    yaml_docs(std::slice::from_ref(object))
}
