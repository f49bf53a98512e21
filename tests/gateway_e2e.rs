//! `sluice gateway --dir` end to end: the real binary reads KIngress / Service / EndpointSlice
//! YAML from a watched directory, serves it over xDS to the real Envoy it launches, and real
//! traffic goes through that Envoy to real test backends. Readiness and problems are read from
//! the gateway's `/status` (what `sluice status --json` prints).
//!
//! Each test starts its own gateway (loopback ports chosen at run time) and backends; waits are
//! bounded polls, never sleeps. Needs Envoy in `.venv` (`scripts/test.sh` installs it).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::Version;
use serde_json::{Value, json};
use support::gateway::{
    Gateway, SETTLE, endpoint_slice, kingress, kingress_of_class, rule, service, simple_kingress,
    split, yaml, yaml_docs,
};
use support::{Backend, BackendOptions, ServingStatus, wait_for};
use tokio::task::JoinHandle;

/// A backend and how its Service exposes it.
struct Upstream {
    opts: BackendOptions,
    /// Name of the Service port (and of the EndpointSlice port).
    port_name: &'static str,
    app_protocol: Option<&'static str>,
}

impl Upstream {
    /// A plain HTTP/1.1 backend behind Service `name`, port named `http`.
    fn http(name: &str) -> Upstream {
        Upstream::with(BackendOptions::new(name))
    }

    /// A backend with these options behind Service `opts.name`, port named `http`.
    fn with(opts: BackendOptions) -> Upstream {
        Upstream {
            opts,
            port_name: "http",
            app_protocol: None,
        }
    }
}

/// A gateway with backends, each behind a Service of the same name (port 80 → the backend's
/// port) with an EndpointSlice at 127.0.0.1.
struct Env {
    gw: Gateway,
    backends: BTreeMap<String, Backend>,
}

impl Env {
    /// Starts the backends, writes `svc-<name>.yaml` for each plus `files`, starts the gateway.
    async fn start(label: &str, upstreams: Vec<Upstream>, files: &[(&str, Value)]) -> Env {
        let mut backends = BTreeMap::new();
        let mut all: Vec<(String, String)> = Vec::new();
        for u in upstreams {
            let b = support::start(u.opts).await;
            let name = b.name().to_string();
            let port = b.addr.port();
            all.push((
                format!("svc-{name}.yaml"),
                yaml_docs(&[
                    service(&name, u.port_name, u.app_protocol, port),
                    endpoint_slice(&name, u.port_name, port),
                ]),
            ));
            backends.insert(name, b);
        }
        all.extend(files.iter().map(|(n, v)| (n.to_string(), yaml(v))));
        let refs: Vec<(&str, String)> = all.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
        let gw = Gateway::start(label, &refs).await;
        Env { gw, backends }
    }

    fn backend(&self, name: &str) -> &Backend {
        &self.backends[name]
    }

    async fn stop(self) {
        self.gw.stop().await;
    }
}

/// The echoed request headers named `name` (every value) from a JSON echo body.
fn echoed(body: &Value, name: &str) -> Vec<String> {
    body["headers"][name]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET host path` on `addr`, expecting 200 from `backend`; returns the echo body.
async fn expect_backend(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    backend: &str,
) -> Value {
    let r = support::get(addr, host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path} via {addr}: {e:#}"));
    assert_eq!(
        r.status,
        200,
        "GET {host}{path} {headers:?} via {addr}: {}",
        r.text()
    );
    assert_eq!(
        r.backend(),
        Some(backend),
        "GET {host}{path} {headers:?} via {addr}: {}",
        r.text()
    );
    r.json()
}

async fn expect_status(addr: SocketAddr, host: &str, code: u16) {
    let r = support::get(addr, host, "/", &[])
        .await
        .unwrap_or_else(|e| panic!("GET {host}/ via {addr}: {e:#}"));
    assert_eq!(r.status, code, "GET {host}/ via {addr}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kingress_becomes_ready_and_is_routed_by_host() {
    let env = Env::start(
        "basic",
        vec![Upstream::http("a")],
        &[(
            "hello.yaml",
            simple_kingress("hello", "hello.example.com", "a"),
        )],
    )
    .await;
    let gw = &env.gw;
    let st = gw.wait_ready("hello").await;
    assert_eq!(st.hosts, ["hello.example.com"]);
    assert_eq!(st.hash.len(), 64, "hex SHA-256: {st:?}");

    // Ready means served: the very first request gets through.
    let body = expect_backend(
        gw.external_http,
        "hello.example.com",
        "/some/path?x=1",
        &[],
        "a",
    )
    .await;
    assert_eq!(body["host"], "hello.example.com");
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], "x=1");
    // A Host with a port finds the same virtual host.
    let body = expect_backend(gw.external_http, "hello.example.com:8080", "/", &[], "a").await;
    assert_eq!(body["host"], "hello.example.com:8080");
    // Host names are case-insensitive.
    expect_backend(gw.external_http, "Hello.Example.COM", "/", &[], "a").await;
    expect_status(gw.external_http, "unknown.example.com", 404).await;

    // Knative's probe is answered by Envoy itself with the served hash.
    let before = env.backend("a").requests();
    let r = support::get(
        gw.external_http,
        "hello.example.com",
        "/healthz",
        &[("K-Network-Probe", "probe"), ("K-Network-Hash", "override")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("k-network-hash"), Some(st.hash.as_str()));
    assert_eq!(
        env.backend("a").requests(),
        before,
        "the probe never reaches the backend"
    );

    // `sluice status --json` and the table show the same.
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let debug = gw.debug.to_string();
    let out = tokio::process::Command::new(sluice)
        .args(["status", "--debug", &debug, "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(doc["ingresses"][0]["name"], "hello");
    assert_eq!(doc["ingresses"][0]["ready"], "True");
    assert_eq!(doc["ingresses"][0]["hash"], st.hash.as_str());
    assert_eq!(doc["problems"], json!([]));
    let node = &doc["nodes"][0];
    assert_eq!(node["id"], "e2e-basic");
    assert_eq!(node["connected"], true);
    let types = node["types"].as_object().unwrap();
    assert!(
        !types.is_empty()
            && types
                .values()
                .all(|v| v.as_str().unwrap().starts_with("ACK")),
        "every type ACKed: {types:?}"
    );
    let out = tokio::process::Command::new(sluice)
        .args(["status", "--debug", &debug])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("default/hello"))
        .unwrap_or_else(|| panic!("no row for default/hello:\n{table}"));
    assert!(
        row.contains("True") && row.contains("hello.example.com"),
        "{table}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_local_hosts_are_served_only_on_the_internal_listener() {
    let local = "vis.default.svc.cluster.local";
    let external = "vis.example.com";
    let paths = |svc: &str| json!([{"splits": [split(svc, 100)]}]);
    let ing = kingress(
        "vis",
        json!([
            rule(&[local, "vis.default.svc"], "ClusterLocal", paths("local")),
            rule(&[external], "ExternalIP", paths("public")),
        ]),
    );
    let env = Env::start(
        "visibility",
        vec![Upstream::http("local"), Upstream::http("public")],
        &[("vis.yaml", ing)],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("vis").await;

    // External listener: ClusterLocal hosts do not exist there, with or without a port.
    expect_status(gw.external_http, local, 404).await;
    expect_status(gw.external_http, &format!("{local}:80"), 404).await;
    expect_status(gw.external_http, "vis.default.svc", 404).await;
    expect_backend(gw.external_http, external, "/", &[], "public").await;
    // Internal listener: every host.
    expect_backend(gw.internal_http, local, "/", &[], "local").await;
    expect_backend(gw.internal_http, &format!("{local}:80"), "/", &[], "local").await;
    expect_backend(gw.internal_http, "vis.default.svc", "/", &[], "local").await;
    expect_backend(gw.internal_http, external, "/", &[], "public").await;
    expect_status(gw.internal_http, "unknown.example.com", 404).await;
    assert_eq!(
        env.backend("local").requests(),
        3,
        "the 404s never reached the backend"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_headers_append_headers_and_rewrite_host() {
    let host = "paths.example.com";
    let mut root_split = split("root", 100);
    root_split["appendHeaders"] = json!({"x-split": "root-split"});
    // Listed in the order that would be wrong if taken literally: `/` first, and `/foo`
    // without headers before `/foo` with them.
    let ing = kingress(
        "paths",
        json!([rule(
            &[host],
            "ExternalIP",
            json!([
                {"splits": [root_split], "appendHeaders": {"x-path": "root-path"}},
                {"path": "/foo", "rewriteHost": "rewritten.internal.example", "splits": [split("foo", 100)]},
                {"path": "/foo", "headers": {"x-canary": {"exact": "yes"}}, "splits": [split("canary", 100)]},
            ])
        )]),
    );
    let env = Env::start(
        "paths",
        vec![
            Upstream::http("root"),
            Upstream::http("foo"),
            Upstream::http("canary"),
        ],
        &[("paths.yaml", ing)],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("paths").await;
    let ext = gw.external_http;

    // Longest prefix wins.
    expect_backend(ext, host, "/", &[], "root").await;
    expect_backend(ext, host, "/bar", &[], "root").await;
    let body = expect_backend(ext, host, "/foo", &[], "foo").await;
    expect_backend(ext, host, "/foo/deeper", &[], "foo").await;
    // rewriteHost: the upstream sees the rewritten Host.
    assert_eq!(body["host"], "rewritten.internal.example");

    // The header-matching path is tried before the same path without.
    let body = expect_backend(ext, host, "/foo", &[("x-canary", "yes")], "canary").await;
    assert_eq!(body["host"], host, "no rewrite on the canary path");
    expect_backend(ext, host, "/foo", &[("x-canary", "no")], "foo").await;
    expect_backend(ext, host, "/foo", &[("x-canary", "YES")], "foo").await;
    expect_backend(ext, host, "/", &[("x-canary", "yes")], "root").await;

    // Split- and path-level appendHeaders SET the header: a client value is replaced.
    let body = expect_backend(ext, host, "/", &[], "root").await;
    assert_eq!(echoed(&body, "x-split"), ["root-split"]);
    assert_eq!(echoed(&body, "x-path"), ["root-path"]);
    let body = expect_backend(
        ext,
        host,
        "/",
        &[("x-split", "client"), ("x-path", "client")],
        "root",
    )
    .await;
    assert_eq!(echoed(&body, "x-split"), ["root-split"], "{body}");
    assert_eq!(echoed(&body, "x-path"), ["root-path"], "{body}");
    // Other paths do not get them.
    let body = expect_backend(ext, host, "/foo", &[], "foo").await;
    assert_eq!(echoed(&body, "x-split"), Vec::<String>::new());
    assert_eq!(echoed(&body, "x-path"), Vec::<String>::new());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_splits_follow_their_percentages() {
    const PERCENTS: [u32; 10] = [1, 2, 4, 8, 16, 32, 37, 0, 0, 0];
    const REQUESTS: usize = 1000;
    let host = "split.example.com";
    let names: Vec<String> = (0..PERCENTS.len()).map(|i| format!("s{i}")).collect();
    let splits: Vec<Value> = names
        .iter()
        .zip(PERCENTS)
        .map(|(n, p)| split(n, p))
        .collect();
    let ing = kingress(
        "split",
        json!([rule(&[host], "ExternalIP", json!([{"splits": splits}]))]),
    );
    let env = Env::start(
        "splits",
        names.iter().map(|n| Upstream::http(n)).collect(),
        &[("split.yaml", ing)],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("split").await;

    let ext = gw.external_http;
    let answers: Vec<Result<String, String>> = futures::stream::iter(0..REQUESTS)
        .map(|_| async move {
            match support::get(ext, host, "/", &[]).await {
                Ok(r) if r.status == 200 => Ok(r.backend().unwrap_or("?").to_string()),
                Ok(r) => Err(format!("status {}: {}", r.status, r.text())),
                Err(e) => Err(format!("{e:#}")),
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in answers.iter().flatten() {
        *counts.entry(a.clone()).or_default() += 1;
    }
    for (name, percent) in names.iter().zip(PERCENTS) {
        let got = counts.get(name).copied().unwrap_or(0);
        let share = got as f64 * 100.0 / REQUESTS as f64;
        if percent == 0 {
            assert_eq!(got, 0, "{name} has 0% yet got {got} requests: {counts:?}");
            assert_eq!(env.backend(name).requests(), 0, "{name} was never called");
        } else {
            assert!(
                (share - f64::from(percent)).abs() <= 5.0,
                "{name}: {share:.1}% of requests, want {percent}% ± 5: {counts:?}"
            );
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_503_reaches_the_client_without_retry() {
    let env = Env::start(
        "no-retry",
        vec![Upstream::with(BackendOptions::new("flaky").fail_first(1))],
        &[(
            "flaky.yaml",
            simple_kingress("flaky", "flaky.example.com", "flaky"),
        )],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("flaky").await;
    let flaky = env.backend("flaky");
    assert_eq!(
        flaky.requests(),
        0,
        "readiness probes are answered by Envoy"
    );
    let r = gw.get("flaky.example.com", "/").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.backend(),
        Some("flaky"),
        "the backend's own 503: {}",
        r.text()
    );
    assert!(r.text().contains("failing on purpose"), "{}", r.text());
    assert_eq!(flaky.requests(), 1, "Envoy did not retry");
    // The next request is served.
    expect_backend(gw.external_http, "flaky.example.com", "/", &[], "flaky").await;
    assert_eq!(flaky.requests(), 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gateway_timeout_beyond_envoys_default_15s() {
    let env = Env::start(
        "no-timeout",
        vec![Upstream::http("slow")],
        &[(
            "slow.yaml",
            simple_kingress("slow", "slow.example.com", "slow"),
        )],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("slow").await;
    let wait = Duration::from_millis(16_000);
    // Before the response head, and between head and body, at once.
    let (before_head, before_body) = tokio::join!(
        gw.get("slow.example.com", "/?initialTimeout=16000"),
        gw.get("slow.example.com", "/?timeout=16000"),
    );
    let r = before_head.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), Some("slow"));
    assert!(
        r.head_elapsed >= wait,
        "the backend did wait: {:?}",
        r.head_elapsed
    );
    assert_eq!(r.json()["query"], "initialTimeout=16000");
    let r = before_body.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.head_elapsed < wait,
        "head sent first: {:?}",
        r.head_elapsed
    );
    assert!(r.elapsed >= wait, "body after the wait: {:?}", r.elapsed);
    assert_eq!(r.json()["query"], "timeout=16000");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_grpc_and_h2c_through_envoy() {
    let paths = |svc: &str| json!([{"splits": [split(svc, 100)]}]);
    let ing = kingress(
        "protocols",
        json!([
            rule(&["web.example.com"], "ExternalIP", paths("web")),
            rule(&["grpc.example.com"], "ExternalIP", paths("grpc-named")),
            rule(&["grpc-app.example.com"], "ExternalIP", paths("grpc-app")),
        ]),
    );
    let env = Env::start(
        "protocols",
        vec![
            Upstream::http("web"),
            // h2c by port name…
            Upstream {
                opts: BackendOptions::new("grpc-named"),
                port_name: "h2c",
                app_protocol: None,
            },
            // …and by appProtocol.
            Upstream {
                opts: BackendOptions::new("grpc-app"),
                port_name: "grpc",
                app_protocol: Some("kubernetes.io/h2c"),
            },
        ],
        &[("protocols.yaml", ing)],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("protocols").await;
    let (ext, int) = (gw.external_http, gw.internal_http);

    // Websocket upgrade on an ordinary route, on both listeners.
    for addr in [ext, int] {
        let echo = support::websocket_echo(addr, "web.example.com", "/ws", "hello through envoy")
            .await
            .unwrap();
        assert_eq!(echo, "hello through envoy");
    }

    // gRPC over h2c to Services whose port is h2c.
    for (host, backend) in [
        ("grpc.example.com", "grpc-named"),
        ("grpc-app.example.com", "grpc-app"),
    ] {
        let h = support::grpc_health_check(ext, host, "").await.unwrap();
        assert_eq!(h.status, ServingStatus::Serving, "{host}");
        assert_eq!(h.backend.as_deref(), Some(backend), "{host}");
        assert_eq!(h.authority.as_deref(), Some(host), "{host}");
    }

    // h2c downstream works; the backend sees HTTP/2 only when its upstream is h2c.
    let r = support::get_h2c(ext, "web.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.version),
        (200, Version::HTTP_2),
        "{}",
        r.text()
    );
    assert_eq!(r.backend(), Some("web"));
    assert_eq!(r.json()["protoMajor"], 1, "HTTP/1.1 upstream");
    let r = support::get(ext, "web.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.json()["protoMajor"], 1);
    for host in ["grpc.example.com", "grpc-app.example.com"] {
        let r = support::get_h2c(ext, host, "/", &[]).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.version),
            (200, Version::HTTP_2),
            "{}",
            r.text()
        );
        assert_eq!(r.json()["protoMajor"], 2, "{host}: h2c upstream");
        let r = support::get(ext, host, "/", &[]).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.version),
            (200, Version::HTTP_11),
            "{}",
            r.text()
        );
        assert_eq!(
            r.json()["protoMajor"],
            2,
            "{host}: h2c upstream whatever the downstream"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_edits_apply_and_bad_input_keeps_the_last_good_config() {
    let host = "live.example.com";
    let live = |a: u32, b: u32| {
        kingress(
            "live",
            json!([rule(
                &[host],
                "ExternalIP",
                json!([{"splits": [split("a", a), split("b", b)]}])
            )]),
        )
    };
    let env = Env::start(
        "live",
        vec![Upstream::http("a"), Upstream::http("b")],
        &[("live.yaml", live(100, 0))],
    )
    .await;
    let gw = &env.gw;
    let first = gw.wait_ready("live").await;
    gw.wait_backend(gw.external_http, host, "a", 20).await;

    // Edit the split: traffic moves.
    gw.write("live.yaml", &yaml(&live(0, 100)));
    let shifted = gw.wait_ready_after("live", &first.hash).await;
    gw.wait_backend(gw.external_http, host, "b", 20).await;

    // A file that is not YAML is reported with its file; the rest keeps serving.
    gw.write("broken.yaml", "apiVersion: v1\nkind: [\n");
    let broken = gw.path("broken.yaml").display().to_string();
    let problem = wait_for("the broken file in problems", SETTLE, || async {
        let s = gw.status().await?;
        s.problems
            .into_iter()
            .find(|p| p.file == broken)
            .ok_or_else(|| anyhow::anyhow!("no problem for {broken}"))
    })
    .await;
    assert!(problem.message.starts_with("document 1:"), "{problem:?}");
    assert!(problem.message.contains("line"), "says where: {problem:?}");

    // An invalid KIngress (percents sum to 90): reported with object and field, Ready=False,
    // and the previous configuration keeps serving.
    gw.write("live.yaml", &yaml(&live(50, 40)));
    let st = gw
        .wait_ingress("live", "Ready=False (InvalidIngress)", |i| {
            i.ready == "False"
        })
        .await;
    assert_eq!(st.reason, "InvalidIngress", "{st:?}");
    assert!(
        st.message
            .contains("traffic split percentage must total to 100, but was 90")
            && st.message.contains("spec.rules[0].http.paths[0].splits"),
        "{st:?}"
    );
    assert_eq!(
        st.hash, shifted.hash,
        "the last good generation is still served"
    );
    for _ in 0..20 {
        expect_backend(gw.external_http, host, "/", &[], "b").await;
    }
    // `sluice status` lists it among the problems with its file, object and field.
    let file = gw.path("live.yaml").display().to_string();
    let problems = gw.status().await.unwrap().problems;
    assert!(
        problems.iter().any(|p| p.file == file
            && p.object.as_deref() == Some("Ingress default/live")
            && p.field.as_deref() == Some("spec.rules[0].http.paths[0].splits")
            && p.message.contains("must total to 100")),
        "{problems:#?}"
    );
    kingresses_metric(gw.debug, [0, 0, 1]).await;

    // Fixing both clears the problems and serves the fix.
    gw.write("live.yaml", &yaml(&live(100, 0)));
    gw.remove("broken.yaml");
    gw.wait_ready_after("live", &shifted.hash).await;
    gw.wait_backend(gw.external_http, host, "a", 20).await;
    wait_for("no problems left", SETTLE, || async {
        let s = gw.status().await?;
        anyhow::ensure!(s.problems.is_empty(), "{:?}", s.problems);
        anyhow::Ok(())
    })
    .await;
    kingresses_metric(gw.debug, [1, 0, 0]).await;

    // Deleting the KIngress file removes the host.
    gw.remove("live.yaml");
    gw.wait_status(gw.external_http, host, 404).await;
    expect_status(gw.internal_http, host, 404).await;
    wait_for("live gone from status", SETTLE, || async {
        let s = gw.status().await?;
        anyhow::ensure!(s.ingresses.is_empty(), "{:?}", s.ingresses);
        anyhow::Ok(())
    })
    .await;
    kingresses_metric(gw.debug, [0, 0, 0]).await;
    env.stop().await;
}

/// Waits until `sluice_gateway_kingresses` on the debug server reads `want` (ready, waiting,
/// failed).
async fn kingresses_metric(debug: SocketAddr, want: [u64; 3]) {
    wait_for("sluice_gateway_kingresses", SETTLE, || async {
        let r = support::get(debug, "localhost", "/metrics", &[]).await?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let read = |state: &str| {
            let name = format!("sluice_gateway_kingresses{{state=\"{state}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(name.as_str())?.trim().parse::<u64>().ok())
        };
        let got = [read("ready"), read("waiting"), read("failed")];
        anyhow::ensure!(got == want.map(Some), "{got:?}, want {want:?}");
        anyhow::Ok(())
    })
    .await;
}

/// What the continuous prober saw.
#[derive(Debug, Default)]
struct ProberStats {
    ok: u64,
    failures: Vec<String>,
    /// The last (x-generation header, backend) seen.
    last: Option<(String, String)>,
}

/// Clients sending requests back to back (each on a fresh connection) until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ProberStats>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Prober {
    fn start(addr: SocketAddr, host: &'static str, clients: usize) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ProberStats::default()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, stats) = (stop.clone(), stats.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = support::get(addr, host, "/", &[]).await;
                        let mut s = stats.lock().unwrap();
                        match outcome {
                            Ok(r) if r.status == 200 => {
                                s.ok += 1;
                                let generation = echoed(&r.json(), "x-generation").join(",");
                                s.last = Some((generation, r.backend().unwrap_or("?").to_string()));
                            }
                            Ok(r) => s
                                .failures
                                .push(format!("status {}: {}", r.status, r.text())),
                            Err(e) => s.failures.push(format!("{e:#}")),
                        }
                    }
                })
            })
            .collect();
        Prober { stop, stats, tasks }
    }

    fn ok(&self) -> u64 {
        self.stats.lock().unwrap().ok
    }

    /// Waits until the prober sees a response after `since` answers that matches `want`.
    async fn wait_seen(&self, since: u64, want: (&str, &str)) {
        wait_for(&format!("the prober to see {want:?}"), SETTLE, || async {
            let s = self.stats.lock().unwrap();
            let seen = s.last.as_ref().map(|(g, b)| (g.as_str(), b.as_str()));
            (s.ok > since && seen == Some(want))
                .then_some(())
                .ok_or_else(|| format!("last seen {seen:?}"))
        })
        .await
    }

    async fn finish(self) -> ProberStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("prober task");
        }
        Arc::try_unwrap(self.stats)
            .expect("tasks done")
            .into_inner()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_prober_sees_no_failure_across_header_updates_and_backend_swaps() {
    const HOST: &str = "prober.example.com";
    let ing = |service: &str, generation: u32| {
        let mut s = split(service, 100);
        s["appendHeaders"] = json!({"x-generation": generation.to_string()});
        kingress(
            "prober",
            json!([rule(&[HOST], "ExternalIP", json!([{"splits": [s]}]))]),
        )
    };
    let env = Env::start(
        "prober",
        vec![Upstream::http("a"), Upstream::http("b")],
        &[("prober.yaml", ing("a", 0))],
    )
    .await;
    let gw = &env.gw;
    let mut hash = gw.wait_ready("prober").await.hash;
    let prober = Prober::start(gw.external_http, HOST, 2);
    prober.wait_seen(0, ("0", "a")).await;

    let mut generation = 0;
    let mut service = "a";
    // 10 header updates, then 10 backend swaps; every one must reach Envoy.
    for step in 0..20 {
        generation += 1;
        if step >= 10 {
            service = if service == "a" { "b" } else { "a" };
        }
        let since = prober.ok();
        gw.write("prober.yaml", &yaml(&ing(service, generation)));
        prober
            .wait_seen(since, (&generation.to_string(), service))
            .await;
        hash = gw.wait_ready_after("prober", &hash).await.hash;
    }
    let stats = prober.finish().await;
    eprintln!(
        "prober: {} answers, {} failures",
        stats.ok,
        stats.failures.len()
    );
    assert!(
        stats.failures.is_empty(),
        "{} failed requests (of {}): {:?}",
        stats.failures.len(),
        stats.ok + stats.failures.len() as u64,
        stats.failures
    );
    assert!(
        stats.ok >= 100,
        "the prober kept sending: {} requests",
        stats.ok
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_claimed_twice_goes_to_the_older_kingress() {
    let shared = "shared.example.com";
    let only = "second-only.example.com";
    let stamped = |mut v: Value, ts: &str| {
        v["metadata"]["creationTimestamp"] = json!(ts);
        v
    };
    // Named so that name order would pick the wrong one.
    let older = stamped(
        simple_kingress("zz-older", shared, "a"),
        "2024-01-01T00:00:00Z",
    );
    let newer = stamped(
        kingress(
            "aa-newer",
            json!([rule(
                &[shared, only],
                "ExternalIP",
                json!([{"splits": [split("b", 100)]}])
            )]),
        ),
        "2024-06-01T00:00:00Z",
    );
    let env = Env::start(
        "conflict",
        vec![Upstream::http("a"), Upstream::http("b")],
        &[("older.yaml", older), ("newer.yaml", newer)],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("zz-older").await;
    let st = gw
        .wait_ingress("aa-newer", "Ready=False", |i| i.ready == "False")
        .await;
    assert_eq!(st.reason, "DomainConflict", "{st:?}");
    assert!(
        st.message.contains("default/zz-older") && st.message.contains(shared),
        "{st:?}"
    );
    gw.wait_backend(gw.external_http, shared, "a", 20).await;
    // The rejected KIngress serves nothing, not even its uncontested host.
    expect_status(gw.external_http, only, 404).await;
    assert_eq!(env.backend("b").requests(), 0);

    // Once the older one is gone the host is free.
    gw.remove("older.yaml");
    gw.wait_ready("aa-newer").await;
    gw.wait_backend(gw.external_http, shared, "b", 20).await;
    expect_backend(gw.external_http, only, "/", &[], "b").await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kingresses_of_other_classes_are_left_alone() {
    let kourier = "kourier.ingress.networking.knative.dev";
    let paths = json!([{"splits": [split("b", 100)]}]);
    let env = Env::start(
        "other-class",
        vec![Upstream::http("a"), Upstream::http("b")],
        &[
            (
                "mine.yaml",
                simple_kingress("mine", "mine.example.com", "a"),
            ),
            (
                "kourier.yaml",
                kingress_of_class(
                    "kourier",
                    Some(kourier),
                    json!([rule(&["kourier.example.com"], "ExternalIP", paths.clone())]),
                ),
            ),
            (
                "classless.yaml",
                kingress_of_class(
                    "classless",
                    None,
                    json!([rule(
                        &["classless.example.com"],
                        "ExternalIP",
                        paths.clone()
                    )]),
                ),
            ),
        ],
    )
    .await;
    let gw = &env.gw;
    gw.wait_ready("mine").await;
    expect_backend(gw.external_http, "mine.example.com", "/", &[], "a").await;
    for host in ["kourier.example.com", "classless.example.com"] {
        expect_status(gw.external_http, host, 404).await;
        expect_status(gw.internal_http, host, 404).await;
    }
    let names: Vec<String> = gw
        .status()
        .await
        .unwrap()
        .ingresses
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(env.backend("b").requests(), 0);

    // Moving a KIngress to another class drops it; moving one to ours serves it.
    gw.write(
        "mine.yaml",
        &yaml(&kingress_of_class(
            "mine",
            Some(kourier),
            json!([rule(
                &["mine.example.com"],
                "ExternalIP",
                json!([{"splits": [split("a", 100)]}])
            )]),
        )),
    );
    gw.write(
        "kourier.yaml",
        &yaml(&kingress(
            "kourier",
            json!([rule(&["kourier.example.com"], "ExternalIP", paths)]),
        )),
    );
    gw.wait_ready("kourier").await;
    gw.wait_backend(gw.external_http, "kourier.example.com", "b", 5)
        .await;
    gw.wait_status(gw.external_http, "mine.example.com", 404)
        .await;
    let names: Vec<String> = gw
        .status()
        .await
        .unwrap()
        .ingresses
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["kourier"]);
    env.stop().await;
}
