//! The control plane trusts no client and leaks no secret, end to end: `sluice gateway --dir`
//! with the real Envoy it launches, plus hostile or curious clients on its xDS port.
//!
//! - A foreign ADS client (another node id, never ACKing) neither delays a KIngress's
//!   readiness nor changes the reason shown for it.
//! - A TLS KIngress's private key reaches Envoy (HTTPS works) but no debug surface: the dump
//!   service, `sluice xds dump` in every format, CSDS.
//!
//! Needs Envoy in `.venv` (`scripts/test.sh` installs it).

mod support;

use std::net::SocketAddr;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use sluice_xds::resource::{CLUSTER, ROUTE};
use support::gateway::{
    Gateway, SETTLE, backend_objects, kingress, rule, simple_kingress, split, yaml,
};
use support::{BackendOptions, wait_for};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A Delta ADS client that subscribes and never ACKs: what a stranger (or a stuck debug tool)
/// on the xDS port looks like.
struct Stranger {
    _tx: mpsc::Sender<DeltaDiscoveryRequest>,
    _responses:
        tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>,
}

impl Stranger {
    async fn connect(xds: SocketAddr, node_id: &str) -> Stranger {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
            .await
            .expect("connect to xDS");
        let node = Node {
            id: node_id.to_string(),
            ..Default::default()
        };
        for (i, type_url) in [CLUSTER, ROUTE].into_iter().enumerate() {
            tx.send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| node.clone()),
                type_url: type_url.to_string(),
                resource_names_subscribe: if type_url == ROUTE {
                    vec!["*".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let mut responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open Delta stream")
            .into_inner();
        // It reads what it is sent (so the server is not merely blocked on it), never answers.
        let first = tokio::time::timeout(SETTLE, responses.message())
            .await
            .expect("a first response")
            .expect("stream ok");
        assert!(first.is_some(), "the stranger is served like anyone");
        Stranger {
            _tx: tx,
            _responses: responses,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_xds_client_neither_delays_nor_changes_readiness() {
    let a = support::start(BackendOptions::new("a")).await;
    let gw = Gateway::start(
        "foreign-client",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing-one.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
        ],
    )
    .await;
    gw.wait_ready("one").await;
    let stranger = Stranger::connect(gw.xds, "stranger").await;
    // Added after the stranger connected: it must become Ready all the same.
    gw.write(
        "ing-two.yaml",
        &yaml(&simple_kingress("two", "two.example.com", "a")),
    );
    let two = gw.wait_ready("two").await;
    assert_eq!(two.reason, "");
    let status = gw.status().await.unwrap();
    let stranger_view = status
        .nodes
        .iter()
        .find(|n| n.id == "stranger")
        .expect("the stranger is listed");
    assert!(stranger_view.connected && !stranger_view.gateway);
    assert!(
        status.nodes.iter().any(|n| n.gateway && n.connected),
        "the gateway's own Envoy is marked: {:?}",
        status.nodes
    );
    for i in &status.ingresses {
        assert!(!i.message.contains("stranger"), "{i:?}");
    }
    // Gone when it goes: no open stream left for it, only a short history line.
    drop(stranger);
    wait_for("the stranger's stream to close", SETTLE, || async {
        let s = gw.status().await?;
        anyhow::ensure!(
            s.nodes.iter().all(|n| n.id != "stranger" || !n.connected),
            "still connected"
        );
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

/// The self-signed fixture certificate (CN hello.example.com) and its key.
const CERT: &str = include_str!("../xds-server/src/redact/test-cert.pem");
const KEY: &str = include_str!("../xds-server/src/redact/test-key.pem");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_keys_reach_envoy_but_no_debug_surface() {
    let a = support::start(BackendOptions::new("a")).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "hello-tls", "namespace": "default"},
        "data": {"tls.crt": b64(CERT), "tls.key": b64(KEY)},
    });
    let mut ing = kingress(
        "hello",
        json!([rule(
            &["hello.example.com"],
            "ExternalIP",
            json!([{"splits": [split("a", 100)]}])
        )]),
    );
    ing["spec"]["tls"] = json!([{
        "hosts": ["hello.example.com"],
        "secretName": "hello-tls",
        "secretNamespace": "default",
    }]);
    let gw = Gateway::start(
        "tls-redaction",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            ("secret.yaml", yaml(&secret)),
            ("ing.yaml", yaml(&ing)),
        ],
    )
    .await;
    gw.wait_ready("hello").await;

    // Envoy has the key: HTTPS with SNI works.
    std::fs::write(gw.dir().join("../ca.pem"), CERT).unwrap();
    let https = gw.external_https;
    let resolve = format!("hello.example.com:{}:127.0.0.1", https.port());
    let url = format!("https://hello.example.com:{}/", https.port());
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(gw.dir().join("../ca.pem"))
        .arg(&url)
        .output()
        .await
        .expect("run curl");
    assert!(
        curl.status.success(),
        "HTTPS through Envoy: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert!(String::from_utf8_lossy(&curl.stdout).contains("\"a\""));

    // The key's body (any line of it) appears nowhere a debug client can read.
    let key_lines: Vec<&str> = KEY
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_lines.is_empty());
    let leaks = |what: &str, text: &str| {
        assert!(!text.contains("PRIVATE KEY"), "{what} shows a private key");
        for l in &key_lines {
            assert!(!text.contains(l), "{what} shows key material");
        }
        // Nor base64 of the PEM (inline_bytes in protobuf JSON).
        assert!(
            !text.contains(&b64(KEY)[..40]),
            "{what} shows base64 key material"
        );
    };

    let sluice = env!("CARGO_BIN_EXE_sluice");
    let xds = gw.xds.to_string();
    for format in ["table", "json", "yaml"] {
        let out = tokio::process::Command::new(sluice)
            .args([
                "xds", "dump", "--xds", &xds, "--type", "secrets", "-o", format,
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        leaks(&format!("sluice xds dump -o {format}"), &text);
        assert!(text.contains("[redacted]"), "-o {format}: {text}");
        assert!(
            text.contains("CN=hello.example.com"),
            "-o {format} names the certificate: {text}"
        );
        if format == "table" {
            assert!(text.contains("DNS:hello.example.com"), "{text}");
            assert!(text.contains("expires in"), "{text}");
        }
    }

    // The dump service itself (what grpcurl sees).
    let mut debug = sluice_proto::xds::v1::snapshot_debug_client::SnapshotDebugClient::connect(
        format!("http://{xds}"),
    )
    .await
    .unwrap();
    let snap = debug
        .get_snapshot(sluice_proto::xds::v1::GetSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    let secrets: Vec<_> = snap
        .resources
        .iter()
        .filter(|r| r.type_url.ends_with("Secret"))
        .collect();
    assert!(!secrets.is_empty());
    for r in &secrets {
        let bytes = r.resource.as_ref().unwrap().value.clone();
        leaks("GetSnapshot", &String::from_utf8_lossy(&bytes));
        assert!(r.redacted);
        assert_eq!(r.certificates.len(), 1);
    }

    // CSDS.
    let mut csds = ClientStatusDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .unwrap();
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let encoded = status.encode_to_vec();
    leaks("CSDS", &String::from_utf8_lossy(&encoded));
    assert!(String::from_utf8_lossy(&encoded).contains("[redacted]"));

    // Nor the gateway's own log.
    leaks("the gateway's log", &gw.log());
    gw.stop().await;
}

/// The gateway's resident memory, from `/proc`.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// One round of hostile clients: `streams` short-lived node ids that subscribe and leave,
/// `silent` streams that are pushed to (the KIngress edits of the round) and never ACK, and
/// requests for made-up type URLs.
async fn flood(gw: &Gateway, round: usize, streams: usize, silent: usize) {
    let xds = gw.xds;
    // Thousands of node ids, a few at a time.
    futures::stream::iter(0..streams)
        .for_each_concurrent(32, |i| async move {
            let s = Stranger::connect(xds, &format!("flood-{round}-{i}")).await;
            drop(s);
        })
        .await;
    // Made-up type URLs: refused, nothing kept.
    futures::stream::iter(0..streams / 4)
        .for_each_concurrent(32, |i| async move {
            let (tx, rx) = mpsc::channel(4);
            let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
                .await
                .unwrap();
            tx.send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: format!("typo-{round}-{i}"),
                    ..Default::default()
                }),
                type_url: format!("type.googleapis.com/made.up.Type{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut responses = client
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let err = tokio::time::timeout(SETTLE, responses.message())
                .await
                .expect("an answer")
                .expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
        })
        .await;
    // Streams that read every push and never ACK, while KIngresses change.
    let mut quiet = Vec::new();
    for i in 0..silent {
        quiet.push(Stranger::connect(xds, &format!("silent-{round}-{i}")).await);
    }
    for e in 0..10 {
        gw.write(
            &format!("ing-flood-{e}.yaml"),
            &yaml(&simple_kingress(
                &format!("flood-{e}"),
                &format!("flood-{e}-r{round}.example.com"),
                "a",
            )),
        );
    }
    for e in 0..10 {
        gw.wait_ingress(&format!("flood-{e}"), "Ready at this round's host", |i| {
            i.ready == "True"
                && i.hosts
                    .iter()
                    .any(|h| h.ends_with(&format!("-r{round}.example.com")))
        })
        .await;
    }
    drop(quiet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_no_state_and_do_not_disturb_envoy() {
    let a = support::start(BackendOptions::new("a")).await;
    let gw = Gateway::start(
        "flood",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing-one.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
        ],
    )
    .await;
    gw.wait_ready("one").await;
    let pid = gw.pid();
    // The first round warms the allocator up; later rounds must not grow it.
    flood(&gw, 0, 1000, 50).await;
    let warmed = rss_kb(pid);
    for round in 1..=3 {
        flood(&gw, round, 1000, 50).await;
    }
    // Every stranger's stream is gone; only the gateway's own Envoy is connected.
    wait_for("only the gateway's Envoy connected", SETTLE, || async {
        let s = gw.status().await?;
        let connected: Vec<_> = s.nodes.iter().filter(|n| n.connected).collect();
        anyhow::ensure!(
            connected.len() == 1 && connected[0].gateway,
            "connected: {connected:?}"
        );
        anyhow::ensure!(
            s.nodes.len() <= 1 + sluice_xds::nodes::HISTORY,
            "{} listed",
            s.nodes.len()
        );
        anyhow::Ok(())
    })
    .await;
    let after = rss_kb(pid);
    eprintln!("gateway RSS after the first flood round {warmed} kB, after three more {after} kB");
    assert!(
        after <= warmed + 8 * 1024,
        "RSS grew from {warmed} kB to {after} kB over three rounds of hostile clients"
    );
    // Envoy was served all along: a KIngress added now is Ready and answers.
    gw.write(
        "ing-last.yaml",
        &yaml(&simple_kingress("last", "last.example.com", "a")),
    );
    gw.wait_ready("last").await;
    gw.wait_backend(gw.external_http, "last.example.com", "a", 5)
        .await;
    gw.stop().await;
}

/// What Envoy would refuse never reaches it: a KIngress setting a header with CR/LF in its
/// value, or setting `Host`, is `Ready=False` naming the field while a KIngress written in the
/// same batch becomes Ready; a Service's timeout annotation beyond Envoy's range (or beyond
/// u64, where it used to wrap to a negative duration) is reported and treated as absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_envoy_would_refuse_is_reported_and_never_sent() {
    let a = support::start(BackendOptions::new("a")).await;
    let objects = backend_objects("a", a.addr);
    let mut svc: serde_json::Value =
        serde_yaml::from_str(objects.split("---").next().unwrap()).unwrap();
    svc["metadata"]["annotations"] =
        json!({"sluice.knative.dev/timeout-seconds": "10000000000000000000"});
    let mut svc_b = svc.clone();
    svc_b["metadata"]["name"] = json!("b");
    svc_b["metadata"]["annotations"] =
        json!({"sluice.knative.dev/timeout-seconds": "1000000000000"});
    let slice = |name: &str| {
        let mut s: serde_json::Value =
            serde_yaml::from_str(backend_objects(name, a.addr).split("---").nth(1).unwrap())
                .unwrap();
        s["metadata"]["name"] = json!(format!("{name}-slice"));
        s
    };
    let injected = {
        let mut k = simple_kingress("injected", "injected.example.com", "a");
        k["spec"]["rules"][0]["http"]["paths"][0]["appendHeaders"] =
            json!({"X-Evil": "x\r\nSet-Cookie: owned=1"});
        k
    };
    let host_setter = {
        let mut k = simple_kingress("host-setter", "host-setter.example.com", "a");
        k["spec"]["rules"][0]["http"]["paths"][0]["appendHeaders"] = json!({"Host": "elsewhere"});
        k
    };
    let gw = Gateway::start(
        "envoy-would-refuse",
        &[
            ("svc-a.yaml", yaml(&svc)),
            ("slice-a.yaml", yaml(&slice("a"))),
            ("svc-b.yaml", yaml(&svc_b)),
            ("slice-b.yaml", yaml(&slice("b"))),
            ("ing-injected.yaml", yaml(&injected)),
            ("ing-host.yaml", yaml(&host_setter)),
            (
                "ing-good.yaml",
                yaml(&simple_kingress("good", "good.example.com", "a")),
            ),
            (
                "ing-b.yaml",
                yaml(&simple_kingress("uses-b", "b.example.com", "b")),
            ),
        ],
    )
    .await;
    gw.wait_ready("good").await;
    gw.wait_ready("uses-b").await;
    let injected = gw
        .wait_ingress("injected", "Ready=False", |i| i.ready == "False")
        .await;
    assert_eq!(injected.reason, "InvalidIngress");
    assert!(
        injected
            .message
            .contains("spec.rules[0].http.paths[0].appendHeaders[\"X-Evil\"]"),
        "{}",
        injected.message
    );
    let host = gw
        .wait_ingress("host-setter", "Ready=False", |i| i.ready == "False")
        .await;
    assert!(host.message.contains("Host"), "{}", host.message);
    // Never sent: Envoy has no route for it, and no NACK anywhere.
    assert_eq!(
        gw.get("injected.example.com", "/").await.unwrap().status,
        404
    );
    let status = gw.status().await.unwrap();
    for n in &status.nodes {
        for (t, v) in &n.types {
            assert!(!v.starts_with("NACK"), "{t}: {v}");
        }
    }
    // The two timeout annotations: reported with object and annotation, treated as absent.
    for (object, value) in [
        ("Service default/a", "10000000000000000000"),
        ("Service default/b", "1000000000000"),
    ] {
        let p = status
            .problems
            .iter()
            .find(|p| p.object.as_deref() == Some(object))
            .unwrap_or_else(|| panic!("no problem reported for {object}: {:?}", status.problems));
        assert_eq!(
            p.field.as_deref(),
            Some("metadata.annotations[\"sluice.knative.dev/timeout-seconds\"]")
        );
        assert!(
            p.message.contains(value) || p.message.contains("whole number"),
            "{}",
            p.message
        );
    }
    // Both Services still serve (no timeout rather than a broken one).
    gw.wait_backend(gw.external_http, "good.example.com", "a", 3)
        .await;
    gw.wait_backend(gw.external_http, "b.example.com", "a", 3)
        .await;
    gw.stop().await;
}

/// A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, made with
/// `openssl` in `dir`: (ca, server cert, server key, client cert, client key).
fn mtls_files(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    support::certs::ca_and_certificates(
        dir,
        "sluice test CA",
        &[
            ("server", "DNS:localhost,IP:127.0.0.1"),
            ("client", "DNS:envoy"),
        ],
    );
    [
        "ca.crt",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ]
    .map(|f| dir.join(f))
}

/// Mutual TLS on the xDS port: an Envoy started from `sluice envoy bootstrap --xds-tls-…`
/// connects and serves (the KIngress becomes Ready through it), `sluice xds nodes` with a client
/// certificate works, and clients without one (plain text, or TLS without a certificate) are
/// refused before they can read anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_over_mutual_tls_serves_envoy_and_refuses_strangers() {
    let a = support::start(BackendOptions::new("a")).await;
    let certs = std::env::temp_dir().join(format!("sluice-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let [ca, server_crt, server_key, client_crt, client_key] = mtls_files(&certs);
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca_s, server_crt_s, server_key_s) = (p(&ca), p(&server_crt), p(&server_key));
    let gw = Gateway::start_with(
        "mtls",
        &[
            ("svc-a.yaml", backend_objects("a", a.addr)),
            (
                "ing.yaml",
                yaml(&simple_kingress("one", "one.example.com", "a")),
            ),
        ],
        &[
            "--no-envoy",
            "--xds-tls-cert",
            &server_crt_s,
            "--xds-tls-key",
            &server_key_s,
            "--xds-tls-client-ca",
            &ca_s,
        ],
    )
    .await;
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let xds = gw.xds.to_string();
    let bootstrap = tokio::process::Command::new(sluice)
        .args(["envoy", "bootstrap", "--xds", &xds, "--node-id", "e2e-mtls"])
        .args(["--envoy-admin", &gw.envoy_admin.to_string()])
        .args([
            "--xds-tls-cert",
            &p(&client_crt),
            "--xds-tls-key",
            &p(&client_key),
        ])
        .args(["--xds-tls-ca", &ca_s, "--xds-tls-server-name", "localhost"])
        .output()
        .await
        .unwrap();
    assert!(
        bootstrap.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrap.stderr)
    );
    let mut cfg = sluice::envoy::LaunchConfig::new(
        sluice::envoy::find_envoy(None).unwrap(),
        String::from_utf8(bootstrap.stdout).unwrap(),
        &certs,
    );
    cfg.log_level = "warning".into();
    let envoy = sluice::envoy::Envoy::start(cfg)
        .await
        .expect("Envoy starts");
    gw.wait_ready("one").await;
    gw.wait_backend(gw.external_http, "one.example.com", "a", 3)
        .await;

    // `sluice xds` with a client certificate…
    let nodes = tokio::process::Command::new(sluice)
        .args(["xds", "nodes", "--xds", &xds, "--xds-tls-ca", &ca_s])
        .args([
            "--xds-tls-cert",
            &p(&client_crt),
            "--xds-tls-key",
            &p(&client_key),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    assert!(String::from_utf8_lossy(&nodes.stdout).contains("e2e-mtls"));
    // …but not without one, nor in plain text.
    for extra in [vec!["--xds-tls-ca", ca_s.as_str()], vec![]] {
        let out = tokio::process::Command::new(sluice)
            .args(["xds", "nodes", "--xds", &xds])
            .args(&extra)
            .output()
            .await
            .unwrap();
        assert!(
            !out.status.success(),
            "{extra:?}: accepted without a client certificate"
        );
    }
    let status = gw.status().await.unwrap();
    assert_eq!(
        status.nodes.iter().filter(|n| n.connected).count(),
        1,
        "only the mTLS Envoy got in: {:?}",
        status.nodes
    );
    envoy.stop().await;
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}
