//! net-kourier's `config-kourier` against a real Envoy: `sluice gateway --dir` with the
//! ConfigMap as a file in its directory, edited live. Every key does what it does in Kourier:
//! access logs appear in Sluice's output and stop when disabled, external authorization denies
//! and allows (gRPC and HTTP services) while readiness probes pass, spans reach an OTLP
//! receiver (gRPC and HTTP), a PROXY header's source reaches the backend in X-Forwarded-For,
//! client `x-envoy-*` headers have no effect, the `server` header follows
//! `disable-envoy-server-header`, the stream idle timeout applies, TLS settings (cipher suites,
//! the default and the cluster certificate, listen addresses) take, and
//! `kourier.knative.dev/disable-http2` turns HTTP/2 to the backend off. A bad value is
//! reported and the last good configuration keeps serving, without restarting Envoy.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::gateway::{
    Gateway, SETTLE, backend_objects, endpoint_slice, kingress, rule, service, simple_kingress,
    split, yaml, yaml_docs,
};
use support::otlp;
use support::{BackendOptions, wait_for};

/// `config-kourier` in `knative-serving` with `data`.
fn config_kourier(data: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    yaml(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-kourier", "namespace": "knative-serving"},
        "data": data,
    }))
}

/// Writes `config-kourier` and waits until the gateway has it in force (`key` = `value`).
async fn apply_config(gw: &Gateway, data: &[(&str, &str)], key: &str, value: &str) {
    gw.write("config-kourier.yaml", &config_kourier(data));
    wait_for(
        &format!("config-kourier {key}={value} in force"),
        SETTLE,
        || async {
            let s = gw.status().await?;
            let c = s
                .config
                .ok_or_else(|| anyhow::anyhow!("no config in /status"))?;
            anyhow::ensure!(
                c.values.get(key).map(String::as_str) == Some(value),
                "{key} = {:?}",
                c.values.get(key)
            );
            anyhow::Ok(())
        },
    )
    .await;
}

/// The pid of the Envoy `sluice gateway` launched (its only child).
fn envoy_pid(gw: &Gateway) -> u32 {
    let sluice = gw.pid();
    std::fs::read_dir(format!("/proc/{sluice}/task"))
        .expect("/proc")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .next()
        .expect("Envoy runs as sluice's child")
}

/// Requests `path` on `host` `n` times through the external listener, expecting 200.
async fn hit(gw: &Gateway, host: &str, path: &str, n: usize) {
    for _ in 0..n {
        let r = support::get(gw.external_http, host, path, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_follow_the_config_map_live_and_bad_values_keep_the_last_good() {
    let a = support::start(BackendOptions::new("a")).await;
    let gw = Gateway::start(
        "kourier-access-log",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
        ],
    )
    .await;
    gw.wait_ready("one").await;
    let envoy = envoy_pid(&gw);
    // No ConfigMap: Kourier's default logs every request, in Envoy's default format.
    hit(&gw, "one.example.com", "/logged-by-default", 3).await;
    wait_for("three access log lines", SETTLE, || async {
        let n = gw
            .log()
            .lines()
            .filter(|l| l.contains("\"GET /logged-by-default HTTP/1.1\" 200"))
            .count();
        (n == 3).then_some(())
    })
    .await;

    // A template, live.
    apply_config(
        &gw,
        &[(
            "service-access-log-template",
            "TEMPLATED %REQ(:PATH)% %RESPONSE_CODE%\n",
        )],
        "service-access-log-template",
        "TEMPLATED %REQ(:PATH)% %RESPONSE_CODE%\n",
    )
    .await;
    wait_for("the template in use", SETTLE, || async {
        let _ = support::get(gw.external_http, "one.example.com", "/tpl", &[]).await;
        gw.log()
            .lines()
            .any(|l| l == "TEMPLATED /tpl 200")
            .then_some(())
    })
    .await;

    // Off: no more lines.
    apply_config(
        &gw,
        &[("enable-service-access-logging", "false")],
        "enable-service-access-logging",
        "false",
    )
    .await;
    // Wait for Envoy to have the listener without the access log: a probe path that would be
    // logged stops appearing.
    wait_for("access log off in Envoy", SETTLE, || async {
        let marker = format!("/marker-{}", rand_suffix());
        let _ = support::get(gw.external_http, "one.example.com", &marker, &[]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (!gw.log().contains(&marker)).then_some(())
    })
    .await;
    hit(&gw, "one.example.com", "/after-off", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !gw.log().contains("/after-off"),
        "logged after being disabled"
    );

    // A bad value: refused, named, and the last good configuration stays in force.
    gw.write(
        "config-kourier.yaml",
        &config_kourier(&[
            ("enable-service-access-logging", "true"),
            ("enable-proxy-protocol", "sometimes"),
            (
                "tracing-collector-full-endpoint",
                "zipkin.default:9411/api/v2/spans",
            ),
        ]),
    );
    let refused = wait_for("the refusal in /status", SETTLE, || async {
        let c = gw.status().await.ok()?.config?;
        c.error.clone().map(|e| (e, c))
    })
    .await;
    assert!(refused.0.contains("enable-proxy-protocol"), "{}", refused.0);
    assert_eq!(
        refused.1.values["enable-service-access-logging"], "false",
        "the previous configuration is still in force"
    );
    hit(&gw, "one.example.com", "/while-refused", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gw.log().contains("/while-refused"));
    // Fixed: applied; the removed Zipkin key is noted; enable-cryptomb is said to do nothing.
    gw.write(
        "config-kourier.yaml",
        &config_kourier(&[
            ("enable-service-access-logging", "true"),
            (
                "tracing-collector-full-endpoint",
                "zipkin.default:9411/api/v2/spans",
            ),
            ("enable-cryptomb", "true"),
        ]),
    );
    let c = wait_for("the fixed ConfigMap in force", SETTLE, || async {
        let c = gw.status().await.ok()?.config?;
        (c.error.is_none() && c.values["enable-service-access-logging"] == "true").then_some(c)
    })
    .await;
    assert!(
        c.notes
            .iter()
            .any(|n| n.starts_with("tracing-collector-full-endpoint")
                && n.contains("tracing-endpoint")),
        "{:?}",
        c.notes
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.starts_with("enable-cryptomb") && n.contains("no effect"))
    );
    // `sluice status` prints what is in force.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "--debug", &gw.debug.to_string()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("config-kourier (knative-serving/config-kourier) in force"),
        "{text}"
    );
    assert!(text.contains("enable-service-access-logging"), "{text}");
    // Every change applied without restarting Envoy.
    assert_eq!(envoy_pid(&gw), envoy, "Envoy was restarted");
    gw.stop().await;
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

mod authz {
    //! Test external authorization services: allow paths starting with `/ok`, deny the rest.

    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
        Authorization, AuthorizationServer,
    };
    use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    /// What the gRPC service saw: (path, context extensions).
    pub type Seen = Arc<Mutex<Vec<(String, std::collections::HashMap<String, String>)>>>;

    struct Grpc(Seen);

    #[tonic::async_trait]
    impl Authorization for Grpc {
        async fn check(
            &self,
            request: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            let attrs = request.into_inner().attributes.unwrap_or_default();
            let path = attrs
                .request
                .and_then(|r| r.http)
                .map(|h| h.path)
                .unwrap_or_default();
            self.0
                .lock()
                .unwrap()
                .push((path.clone(), attrs.context_extensions));
            // google.rpc.Code: 0 OK, 7 PERMISSION_DENIED.
            let code = if path.starts_with("/ok") { 0 } else { 7 };
            Ok(tonic::Response::new(CheckResponse {
                status: Some(RpcStatus {
                    code,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }
    }

    /// A gRPC `envoy.service.auth.v3.Authorization` server.
    pub async fn grpc() -> (SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = AuthorizationServer::new(Grpc(seen.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, seen)
    }

    /// An HTTP authorization service: 200 for `/check/ok…`, 403 otherwise.
    pub async fn http() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        let addr = support::http::serve_http1(move |req| {
            let path = req.uri().path().to_string();
            s.lock().unwrap().push(path.clone());
            let code = if path.starts_with("/check/ok") {
                200
            } else {
                403
            };
            async move {
                hyper::Response::builder()
                    .status(code)
                    .body(http_body_util::Full::default())
                    .unwrap()
            }
        })
        .await;
        (addr, seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_authorization_denies_and_allows_and_probes_pass() {
    let a = support::start(BackendOptions::new("a")).await;
    let (grpc, grpc_seen) = authz::grpc().await;
    let (http, http_seen) = authz::http().await;
    let grpc_host = grpc.to_string();
    let gw = Gateway::start(
        "kourier-extauthz",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "config-kourier.yaml",
                config_kourier(&[("extauthz-host", &grpc_host), ("extauthz-protocol", "grpc")]),
            ),
        ],
    )
    .await;
    // Added with every non-/ok path denied: it becomes Ready all the same (probes are exempt).
    let mut ing = simple_kingress("guarded", "guarded.example.com", "a");
    ing["metadata"]["labels"] = json!({"team": "blue"});
    gw.write("ing.yaml", &yaml(&ing));
    gw.wait_ready("guarded").await;
    let ok = support::get(gw.external_http, "guarded.example.com", "/ok/1", &[])
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let denied = support::get(gw.external_http, "guarded.example.com", "/secret", &[])
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    {
        let seen = grpc_seen.lock().unwrap();
        let (_, ctx) = seen.iter().find(|(p, _)| p == "/ok/1").expect("checked");
        assert_eq!(ctx.get("client").map(String::as_str), Some("kourier"));
        assert_eq!(
            ctx.get("visibility").map(String::as_str),
            Some("ExternalIP")
        );
        assert_eq!(
            ctx.get("team").map(String::as_str),
            Some("blue"),
            "KIngress labels"
        );
        assert!(
            !seen.iter().any(|(p, _)| p == "/healthz"),
            "a probe reached the authorization service"
        );
    }
    // The HTTP service, live.
    let http_host = http.to_string();
    apply_config(
        &gw,
        &[
            ("extauthz-host", &http_host),
            ("extauthz-protocol", "http"),
            ("extauthz-path-prefix", "/check"),
        ],
        "extauthz-protocol",
        "http",
    )
    .await;
    wait_for("the HTTP service in use", SETTLE, || async {
        let r = support::get(gw.external_http, "guarded.example.com", "/ok/2", &[])
            .await
            .ok()?;
        (r.status == 200 && http_seen.lock().unwrap().iter().any(|p| p == "/check/ok/2"))
            .then_some(())
    })
    .await;
    let denied = support::get(gw.external_http, "guarded.example.com", "/nope", &[])
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    // The gateway's readiness route is exempt too.
    let ready = support::get(gw.internal_http, "internalkourier", "/ready", &[])
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_over_grpc_and_http_and_trace_context_goes_upstream() {
    let a = support::start(BackendOptions::new("a")).await;
    let (grpc, grpc_seen) = otlp::grpc().await;
    let (http, http_seen) = otlp::http().await;
    let grpc_endpoint = format!("http://{grpc}");
    let gw = Gateway::start(
        "kourier-tracing",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
            (
                "config-kourier.yaml",
                config_kourier(&[
                    ("tracing-endpoint", &grpc_endpoint),
                    ("tracing-service-name", "edge-grpc"),
                ]),
            ),
        ],
    )
    .await;
    gw.wait_ready("one").await;
    let r = support::get(gw.external_http, "one.example.com", "/traced", &[])
        .await
        .unwrap();
    let body = r.json();
    let traceparent = body["headers"]["traceparent"][0]
        .as_str()
        .expect("W3C trace context reaches the backend")
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_string();
    wait_for("the span at the gRPC collector", SETTLE, || async {
        grpc_seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.service == "edge-grpc" && s.trace == trace_id)
            .then_some(())
    })
    .await;
    // OTLP over HTTP with protobuf bodies, live.
    let http_endpoint = format!("http://{http}/v1/traces");
    apply_config(
        &gw,
        &[
            ("tracing-endpoint", &http_endpoint),
            ("tracing-protocol", "http/protobuf"),
            ("tracing-service-name", "edge-http"),
        ],
        "tracing-protocol",
        "http/protobuf",
    )
    .await;
    wait_for("a span at the HTTP collector", SETTLE, || async {
        let _ = support::get(gw.external_http, "one.example.com", "/traced-http", &[]).await;
        http_seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.service == "edge-http")
            .then_some(())
    })
    .await;
    gw.stop().await;
}

/// A raw HTTP/1.1 request preceded by a PROXY v1 header claiming `source`.
async fn proxied_get(addr: SocketAddr, source: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "PROXY TCP4 {source} 127.0.0.1 40000 {}\r\nGET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(SETTLE, s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_client_headers_server_header_and_idle_timeout() {
    let flaky = support::start(BackendOptions::new("flaky").fail_first(2)).await;
    let gw = Gateway::start(
        "kourier-headers",
        &[
            ("svc-a.yaml", backend_objects("flaky", flaky.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("one", "one.example.com", "flaky")),
            ),
        ],
    )
    .await;
    gw.wait_ready("one").await;
    // The gateway never retries and never times out, whatever the client asks, with either
    // use-remote-address value.
    for (round, ura) in ["false", "true"].into_iter().enumerate() {
        if ura == "true" {
            apply_config(
                &gw,
                &[("use-remote-address", "true")],
                "use-remote-address",
                "true",
            )
            .await;
        }
        let before = flaky.requests();
        let r = support::get(
            gw.external_http,
            "one.example.com",
            "/",
            &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "5")],
        )
        .await
        .unwrap();
        if round == 0 {
            assert_eq!(
                r.status,
                503,
                "the backend's 503 is not retried: {}",
                r.text()
            );
        }
        assert_eq!(
            flaky.requests(),
            before + 1,
            "use-remote-address={ura}: retried"
        );
        let r = support::get(
            gw.external_http,
            "one.example.com",
            "/?initialTimeout=400",
            &[("x-envoy-upstream-rq-timeout-ms", "50")],
        )
        .await
        .unwrap();
        assert!(
            r.status == 200 || r.status == 503,
            "use-remote-address={ura}: {} {}",
            r.status,
            r.text()
        );
        assert_ne!(
            r.status.as_u16(),
            504,
            "the client's timeout header took effect"
        );
    }
    // Server header: Envoy's by default, the backend's own with disable-envoy-server-header.
    let r = support::get(gw.external_http, "one.example.com", "/?server=my-app", &[])
        .await
        .unwrap();
    assert_eq!(r.header("server"), Some("envoy"));
    apply_config(
        &gw,
        &[("disable-envoy-server-header", "true")],
        "disable-envoy-server-header",
        "true",
    )
    .await;
    wait_for("the backend's Server header", SETTLE, || async {
        let r = support::get(gw.external_http, "one.example.com", "/?server=my-app", &[])
            .await
            .ok()?;
        (r.header("server") == Some("my-app")).then_some(())
    })
    .await;
    let r = support::get(gw.external_http, "one.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(
        r.header("server"),
        None,
        "none added when the backend sends none"
    );
    // Stream idle timeout.
    apply_config(
        &gw,
        &[("stream-idle-timeout", "1s")],
        "stream-idle-timeout",
        "1s",
    )
    .await;
    wait_for(
        "a slow response cut by the idle timeout",
        SETTLE,
        || async {
            let r = support::get(
                gw.external_http,
                "one.example.com",
                "/?initialTimeout=2500",
                &[],
            )
            .await
            .ok()?;
            (r.status != 200).then_some(())
        },
    )
    .await;
    // PROXY protocol: required on the external listener; the client it names is the one the
    // backend sees in X-Forwarded-For. Readiness keeps being proven through it.
    apply_config(
        &gw,
        &[("enable-proxy-protocol", "true")],
        "enable-proxy-protocol",
        "true",
    )
    .await;
    let answer = wait_for("an answer over PROXY", SETTLE, || async {
        let text = proxied_get(gw.external_http, "203.0.113.7", "one.example.com").await;
        text.starts_with("HTTP/1.1 200").then_some(text)
    })
    .await;
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let xff = body["headers"]["x-forwarded-for"][0]
        .as_str()
        .unwrap_or_default();
    assert!(xff.contains("203.0.113.7"), "X-Forwarded-For {xff:?}");
    gw.write(
        "ing.yaml",
        &yaml(&simple_kingress("one", "one-v2.example.com", "flaky")),
    );
    gw.wait_ingress("one", "Ready at its new host through PROXY", |i| {
        i.ready == "True" && i.hosts == ["one-v2.example.com"]
    })
    .await;
    gw.stop().await;
}

/// The fixture certificate (CN hello.example.com, SANs hello.example.com and *.example.com).
const CERT: &str = include_str!("../xds-server/src/redact/test-cert.pem");
const KEY: &str = include_str!("../xds-server/src/redact/test-key.pem");

fn tls_secret(namespace: &str, name: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    yaml(&json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": b64(CERT), "tls.key": b64(KEY)},
    }))
}

async fn curl_https(
    addr: SocketAddr,
    host: &str,
    extra: &[&str],
    ca: &std::path::Path,
) -> std::process::Output {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .await
        .expect("curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_default_certificates_cipher_suites_and_listen_addresses() {
    let a = support::start(BackendOptions::new("a")).await;
    let local = kingress(
        "local",
        json!([rule(
            &["local.default.svc.cluster.local"],
            "ClusterLocal",
            json!([{"splits": [split("a", 100)]}])
        )]),
    );
    let gw = Gateway::start(
        "kourier-tls",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("plain", "plain.example.com", "a")),
            ),
            ("local.yaml", yaml(&local)),
            ("wildcard.yaml", tls_secret("kourier-system", "wildcard")),
            (
                "cluster-cert.yaml",
                tls_secret("knative-serving", "server-certs"),
            ),
            (
                "config-kourier.yaml",
                config_kourier(&[
                    ("certs-secret-name", "wildcard"),
                    ("certs-secret-namespace", "kourier-system"),
                    ("cluster-cert-secret", "server-certs"),
                    ("cipher-suites", "ECDHE-ECDSA-AES128-GCM-SHA256"),
                ]),
            ),
        ],
    )
    .await;
    gw.wait_ready("plain").await;
    gw.wait_ready("local").await;
    let ca = gw.dir().join("../ca.pem");
    std::fs::write(&ca, CERT).unwrap();
    // The default certificate serves a host without spec.tls over HTTPS.
    let ok = wait_for("HTTPS with the default certificate", SETTLE, || async {
        let out = curl_https(gw.external_https, "plain.example.com", &[], &ca).await;
        out.status.success().then_some(out)
    })
    .await;
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"a\""));
    // Only the configured cipher suite is offered (TLS 1.2; 1.3 suites are not configurable).
    let allowed = curl_https(
        gw.external_https,
        "plain.example.com",
        &[
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
        &ca,
    )
    .await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let refused = curl_https(
        gw.external_https,
        "plain.example.com",
        &[
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ],
        &ca,
    )
    .await;
    assert!(
        !refused.status.success(),
        "a cipher suite that is not configured was accepted"
    );
    // The cluster certificate serves cluster-local hosts on the internal HTTPS listener.
    let out = curl_https(
        gw.internal_https,
        "local.default.svc.cluster.local",
        &["-k"],
        &ca,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a\""));
    // listen-ip-addresses: both loopbacks, when this machine has IPv6.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        apply_config(
            &gw,
            &[("listen-ip-addresses", "127.0.0.1,::1")],
            "listen-ip-addresses",
            "127.0.0.1,::1",
        )
        .await;
        let v6 = SocketAddr::new("::1".parse().unwrap(), gw.external_http.port());
        wait_for("the IPv6 listener", SETTLE, || async {
            let r = support::get(v6, "plain.example.com", "/", &[]).await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
        let r = support::get(gw.external_http, "plain.example.com", "/", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "IPv4 still served");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_http2_annotation_speaks_http1_to_an_h2c_backend() {
    let a = support::start(BackendOptions::new("a")).await;
    let objects = yaml_docs(&[
        service("a", "http2", None, a.addr.port()),
        endpoint_slice("a", "http2", a.addr.port()),
    ]);
    let h2 = simple_kingress("h2", "h2.example.com", "a");
    let mut h1 = simple_kingress("h1", "h1.example.com", "a");
    h1["metadata"]["annotations"]["kourier.knative.dev/disable-http2"] = json!("true");
    let gw = Gateway::start(
        "kourier-http2",
        &[
            ("svc-a.yaml", objects),
            ("h2.yaml", yaml(&h2)),
            ("h1.yaml", yaml(&h1)),
        ],
    )
    .await;
    gw.wait_ready("h2").await;
    gw.wait_ready("h1").await;
    let proto = |host: &'static str| {
        let addr = gw.external_http;
        async move {
            let r = support::get(addr, host, "/", &[]).await.unwrap();
            r.json()["proto"].as_str().unwrap_or_default().to_string()
        }
    };
    assert_eq!(
        proto("h2.example.com").await,
        "HTTP/2.0",
        "a port named http2 speaks h2c"
    );
    assert_eq!(
        proto("h1.example.com").await,
        "HTTP/1.1",
        "disable-http2 forces HTTP/1.1"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_stats_listener_serves_prometheus_and_readiness_only() {
    // As Kourier's stats listener: Prometheus scrapes Envoy there, the admin interface itself
    // stays on loopback and out of reach.
    let stats = support::ports::free_addr();
    let stats_flag = stats.to_string();
    let a = support::start(BackendOptions::new("a")).await;
    let gw = Gateway::start_with(
        "kourier-stats",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
        ],
        &["--envoy-stats", &stats_flag],
    )
    .await;
    gw.wait_ready("one").await;
    let r = support::get(gw.external_http, "one.example.com", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let host = stats.to_string();
    let page = support::get(stats, &host, "/stats/prometheus", &[])
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    assert!(
        text.contains("envoy_server_live") && text.contains("envoy_http_downstream_rq_total"),
        "Envoy's Prometheus stats: {}",
        &text[..text.len().min(500)]
    );
    let ready = support::get(stats, &host, "/ready", &[]).await.unwrap();
    assert_eq!(ready.status, 200, "Envoy's own readiness");
    assert_eq!(ready.text().trim(), "LIVE");
    // Nothing else of the admin interface: no config dump (secrets), no quitting.
    for path in ["/config_dump", "/stats", "/clusters", "/quitquitquit"] {
        let r = support::get(stats, &host, path, &[]).await.unwrap();
        assert_eq!(r.status, 404, "{path} must not reach the admin interface");
    }
    gw.stop().await;
}
