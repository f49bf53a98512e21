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
