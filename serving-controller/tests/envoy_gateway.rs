//! The translation served to a real Envoy over ADS (Delta and SotW), with real HTTP through it:
//! scoped routes keyed on the host, probes answered by Envoy with the hash, visibility,
//! headers set, redirects, SNI with SDS, and an edit served without touching other KIngresses.
//!
//! Needs Envoy: `SLUICE_ENVOY`, or the workspace's `.venv` (`scripts/test.sh` installs it).
//! Without it the tests print a note and pass. The TLS part also needs `openssl` and `curl`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};
use sluice_serving::lookup::SERVICE_NAME_LABEL;
use sluice_serving::{GatewayConfig, Ingress, Objects, assemble, translate_ingress};
use sluice_xds::{SnapshotCache, XdsServer, single_group};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GROUP: &str = "gateway";

fn find_envoy() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    let lib = venv.join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let real = e.path().join("site-packages/envoy/_bin/envoy");
            if real.is_file() {
                return Some(real);
            }
        }
    }
    let wrapper = venv.join("bin/envoy");
    wrapper.is_file().then_some(wrapper)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Envoy, killed on drop.
struct EnvoyProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EnvoyProcess {
    fn start(bin: &Path, dir: &Path, xds: SocketAddr, delta: bool) -> Self {
        let bootstrap = format!(
            r#"
node: {{id: test-gateway, cluster: test}}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: sluice_xds}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: sluice_xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sluice_xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#,
            api = if delta { "DELTA_GRPC" } else { "GRPC" },
            port = xds.port(),
        );
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, bootstrap).unwrap();
        let log = dir.join("envoy.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .args(["--use-dynamic-base-id", "-l", "warning", "--log-path"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A backend answering every request with 200 and the request head as body.
async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    buf.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&buf).await;
            });
        }
    });
    addr
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection.
async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Polls until `check` holds for a request's reply (30 s at most), or panics with the log.
async fn eventually(
    envoy: &EnvoyProcess,
    what: &str,
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    check: impl Fn(&Reply) -> bool,
) -> Reply {
    eventually_within(
        envoy,
        what,
        addr,
        host,
        headers,
        Duration::from_secs(30),
        check,
    )
    .await
}

async fn eventually_within(
    envoy: &EnvoyProcess,
    what: &str,
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    within: Duration,
    check: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = get(addr, host, "/healthz", headers).await
            && check(&r)
        {
            return r;
        }
        if Instant::now() > deadline {
            let last = get(addr, host, "/healthz", headers)
                .await
                .map(|r| format!("{} {:?} {}", r.status, r.headers, r.body));
            panic!(
                "{what}: never held; last reply {last:?}\nenvoy log:\n{}",
                envoy.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn objects(backend: SocketAddr) -> Objects {
    let mut o = Objects::new();
    o.add_service(Service {
        metadata: meta("default", "hello-00001"),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(i32::from(backend.port()))),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    // A revision without endpoints, only ever given 0%.
    o.add_service(Service {
        metadata: meta("default", "idle-00001"),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut m = meta("default", "hello-00001-x1");
    m.labels = Some([(SERVICE_NAME_LABEL.to_string(), "hello-00001".to_string())].into());
    o.add_endpoint_slice(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![backend.ip().to_string()],
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(backend.port())),
            ..Default::default()
        }]),
    });
    o
}

fn kingress(name: &str, spec: &str) -> Ingress {
    let mut i = Ingress {
        metadata: meta("default", name),
        ..Default::default()
    };
    i.metadata.annotations = Some(
        [(
            INGRESS_CLASS_ANNOTATION.to_string(),
            SLUICE_INGRESS_CLASS.to_string(),
        )]
        .into(),
    );
    i.spec = serde_yaml::from_str(spec).unwrap();
    i
}

fn hello_spec(revision_header: &str) -> String {
    format!(
        r#"
rules:
- hosts: [hello.example.com]
  visibility: ExternalIP
  http:
    paths:
    - splits:
      - serviceName: hello-00001
        serviceNamespace: default
        servicePort: 80
        appendHeaders: {{Knative-Serving-Revision: {revision_header}}}
    - path: /api
      headers: {{X-Canary: {{exact: "yes"}}}}
      rewriteHost: rewritten.example.com
      appendHeaders: {{X-Route: canary}}
      splits:
      - {{serviceName: hello-00001, serviceNamespace: default, servicePort: 80}}
- hosts: [hello.default, hello.default.svc.cluster.local]
  visibility: ClusterLocal
  http:
    paths:
    - splits:
      - {{serviceName: hello-00001, serviceNamespace: default, servicePort: 80}}
"#
    )
}

const SECURE_SPEC: &str = r#"
httpOption: Redirected
rules:
- hosts: [secure.example.com]
  http:
    paths:
    - splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80, percent: 100}
      - {serviceName: idle-00001, serviceNamespace: default, servicePort: 80, percent: 0}
"#;

/// A self-signed certificate for `host` from the `openssl` CLI, if there is one.
fn self_signed(dir: &Path, host: &str) -> Option<(String, String)> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .arg("-subj")
        .arg(format!("/CN={host}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    Some((
        std::fs::read_to_string(cert).ok()?,
        std::fs::read_to_string(key).ok()?,
    ))
}

async fn scenario(delta: bool) {
    let Some(bin) = find_envoy() else {
        eprintln!("skipping: no Envoy (set SLUICE_ENVOY or install .venv)");
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-serving-envoy-{}-{}",
        std::process::id(),
        if delta { "delta" } else { "sotw" }
    ));
    std::fs::create_dir_all(&dir).unwrap();

    let backend = echo_backend().await;
    let mut objects = objects(backend);
    let config = GatewayConfig {
        external_http: free_addr(),
        internal_http: free_addr(),
        external_https: free_addr(),
        internal_https: free_addr(),
        ..GatewayConfig::default()
    };

    let tls = self_signed(&dir, "secure.example.com");
    let mut secure = SECURE_SPEC.to_string();
    if let Some((cert, key)) = &tls {
        objects.add_secret(Secret {
            metadata: meta("default", "secure-cert"),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(cert.clone().into_bytes())),
                ("tls.key".to_string(), ByteString(key.clone().into_bytes())),
            ])),
            ..Default::default()
        });
        secure.push_str(
            "tls:\n- {hosts: [secure.example.com], secretName: secure-cert, secretNamespace: default}\n",
        );
    }

    let hello = kingress("hello", &hello_spec("hello-00001"));
    let secure = kingress("secure", &secure);
    let translate = |ings: &[&Ingress], objects: &Objects| {
        let t: Vec<_> = ings
            .iter()
            .map(|i| translate_ingress(i, objects).unwrap())
            .collect();
        (assemble(&t, &config), t)
    };
    let (resources, translated) = translate(&[&hello, &secure], &objects);
    let hello_hash = translated[0].hash.clone();
    let secure_hash = translated[1].hash.clone();

    let cache = SnapshotCache::new();
    cache.set_snapshot(GROUP, resources).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = listener.local_addr().unwrap();
    let server = XdsServer::new(cache.clone(), single_group(GROUP));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let envoy = EnvoyProcess::start(&bin, &dir, xds, delta);

    let probe = [
        ("K-Network-Hash", "override"),
        ("K-Network-Probe", "probe"),
        ("User-Agent", "Knative-Ingress-Probe"),
    ];
    let ext = config.external_http;
    let int = config.internal_http;

    // Probes are answered by Envoy itself, with the hash, on both listeners.
    for addr in [ext, int] {
        let r = eventually(
            &envoy,
            "probe served",
            addr,
            "hello.example.com",
            &probe,
            |r| r.status == 200,
        )
        .await;
        assert_eq!(r.headers.get("k-network-hash"), Some(&hello_hash));
        assert!(r.body.is_empty(), "answered by Envoy, not the backend");
    }

    // Ordinary requests reach the backend, with a port in Host too, headers SET.
    for host in ["hello.example.com", "hello.example.com:8080"] {
        let r = get(ext, host, "/", &[("Knative-Serving-Revision", "forged")])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{host}");
        let body = r.body.to_ascii_lowercase();
        assert!(
            body.contains("knative-serving-revision: hello-00001"),
            "{body}"
        );
        assert!(!body.contains("forged"), "client value replaced: {body}");
    }

    // Header match before the plain path, longest prefix first, rewriteHost, path headers.
    let r = get(ext, "hello.example.com", "/api/x", &[("X-Canary", "yes")])
        .await
        .unwrap();
    let body = r.body.to_ascii_lowercase();
    assert!(body.contains("host: rewritten.example.com"), "{body}");
    assert!(body.contains("x-route: canary"), "{body}");
    let r = get(ext, "hello.example.com", "/api/x", &[("X-Canary", "no")])
        .await
        .unwrap();
    let body = r.body.to_ascii_lowercase();
    assert!(body.contains("host: hello.example.com"), "{body}");
    assert!(!body.contains("x-route"), "{body}");

    // Visibility: cluster-local hosts exist only on the internal listener.
    assert_eq!(
        get(ext, "hello.default", "/", &[]).await.unwrap().status,
        404
    );
    assert_eq!(
        get(int, "hello.default", "/", &[]).await.unwrap().status,
        200
    );
    assert_eq!(
        get(int, "hello.default.svc.cluster.local:80", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(ext, "nobody.example.com", "/", &[])
            .await
            .unwrap()
            .status,
        404
    );

    // Redirected: plain HTTP on the external listener gets 301 to https, probes still work,
    // the internal listener serves.
    let r = get(ext, "secure.example.com", "/x?y=1", &[]).await.unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").map(String::as_str),
        Some("https://secure.example.com/x?y=1")
    );
    let r = get(ext, "secure.example.com", "/", &probe).await.unwrap();
    assert_eq!(
        (r.status, r.headers.get("k-network-hash")),
        (200, Some(&secure_hash))
    );
    // The 0% split takes no traffic (its cluster has no endpoint: a request sent there would
    // fail with 503).
    for _ in 0..20 {
        let r = get(int, "secure.example.com", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }

    // HTTPS with SNI and the SDS certificate.
    if tls.is_some() {
        let https = config.external_https;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
                .arg(format!("secure.example.com:{}:127.0.0.1", https.port()))
                .arg(format!("https://secure.example.com:{}/", https.port()))
                .output();
            match out {
                Err(_) => {
                    eprintln!("skipping HTTPS check: no curl");
                    break;
                }
                Ok(o) if String::from_utf8_lossy(&o.stdout) == "200" => break,
                Ok(o) if Instant::now() > deadline => panic!(
                    "HTTPS never served: {:?}\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    envoy.log()
                ),
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    // An edit: only that KIngress's route configuration changes, and Envoy serves the new
    // generation (new hash, new header) while the other keeps serving.
    let edited = kingress("hello", &hello_spec("hello-00001-edited"));
    let (resources, translated) = translate(&[&edited, &secure], &objects);
    let new_hash = translated[0].hash.clone();
    assert_ne!(new_hash, hello_hash);
    let applied = cache.set_snapshot(GROUP, resources).unwrap();
    assert_eq!(
        applied.changed, 1,
        "one route configuration changed: {applied:?}"
    );
    let r = eventually(
        &envoy,
        "new hash served",
        ext,
        "hello.example.com",
        &probe,
        |r| r.headers.get("k-network-hash") == Some(&new_hash),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(ext, "hello.example.com", "/", &[]).await.unwrap();
    assert!(
        r.body.to_ascii_lowercase().contains("hello-00001-edited"),
        "{}",
        r.body
    );
    let r = get(ext, "secure.example.com", "/", &probe).await.unwrap();
    assert_eq!(r.headers.get("k-network-hash"), Some(&secure_hash));

    // Deleting a KIngress removes its hosts.
    let (resources, _) = translate(&[&secure], &objects);
    cache.set_snapshot(GROUP, resources).unwrap();
    eventually(
        &envoy,
        "deleted host gone",
        ext,
        "hello.example.com",
        &[],
        |r| r.status == 404,
    )
    .await;

    drop(envoy);
    let _ = stop.send(());
    let _ = serve.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_by_envoy_over_delta_ads() {
    scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_by_envoy_over_sotw_ads() {
    scenario(false).await;
}

/// A gateway without any KIngress has no clusters and no scopes; Envoy must still get its
/// listeners up promptly (answering 404), not after its 15 s initial-fetch timeouts.
async fn empty_gateway(delta: bool) {
    let Some(bin) = find_envoy() else {
        eprintln!("skipping: no Envoy (set SLUICE_ENVOY or install .venv)");
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-serving-empty-{}-{delta}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = GatewayConfig {
        external_http: free_addr(),
        internal_http: free_addr(),
        external_https: free_addr(),
        internal_https: free_addr(),
        ..GatewayConfig::default()
    };
    let cache = SnapshotCache::new();
    cache.set_snapshot(GROUP, assemble(&[], &config)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = listener.local_addr().unwrap();
    let server = XdsServer::new(cache, single_group(GROUP));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let envoy = EnvoyProcess::start(&bin, &dir, xds, delta);
    eventually_within(
        &envoy,
        "empty gateway answers 404",
        config.external_http,
        "nobody.example.com",
        &[],
        Duration::from_secs(8),
        |r| r.status == 404,
    )
    .await;
    drop(envoy);
    let _ = stop.send(());
    let _ = serve.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_gateway_is_up_promptly_over_sotw() {
    empty_gateway(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_gateway_is_up_promptly_over_delta() {
    empty_gateway(true).await;
}
