//! Knative's `system-internal-tls` through a real Envoy: with `config-network` turning it on,
//! the gateway speaks TLS 1.3 to the splits' endpoints (as to the activator's and the
//! queue-proxies' port 8112), trusting `ca.crt` of `knative-serving/routing-serving-certs` and
//! accepting only `kn-routing` (the activator) and `kn-user-<namespace>` (that namespace's
//! queue-proxies). The backends are small Python TLS servers with certificates from a test CA
//! made with `openssl`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use support::gateway::{Gateway, SETTLE, backend_objects, simple_kingress, yaml, yaml_docs};
use support::wait_for;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A TLS 1.3 HTTP/1.1 server answering every GET with `reply`.
const TLS_SERVER: &str = r#"
import http.server, ssl, sys
cert, key, reply = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (reply + "\n").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Starts a TLS server with `dir/name.crt`; returns it (killed on drop) and its port.
async fn tls_server(dir: &Path, name: &str) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(TLS_SERVER)
        .arg(dir.join(format!("{name}.crt")))
        .arg(dir.join(format!("{name}.key")))
        .arg(name)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let port = line.trim().parse().expect("the server's port");
    (child, port)
}

fn config_network(value: &str) -> String {
    yaml(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-network", "namespace": "knative-serving"},
        "data": {"system-internal-tls": value},
    }))
}

fn ca_secret(ca: &Path) -> String {
    yaml(&json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "routing-serving-certs", "namespace": "knative-serving"},
        "stringData": {"ca.crt": std::fs::read_to_string(ca).unwrap()},
    }))
}

async fn body(gw: &Gateway, host: &str) -> (u16, String) {
    let r = support::get(gw.external_http, host, "/", &[])
        .await
        .unwrap();
    (r.status.as_u16(), r.text().trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_internal_tls_verifies_the_activator_and_queue_proxy_names() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-internal-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    support::certs::ca_and_certificates(
        &dir,
        "knative test CA",
        &[
            ("queue-proxy", "DNS:kn-user-default"),
            ("activator", "DNS:kn-routing"),
            ("stranger", "DNS:kn-user-elsewhere"),
        ],
    );
    let (_qp, qp) = tls_server(&dir, "queue-proxy").await;
    let (_act, act) = tls_server(&dir, "activator").await;
    let (_str, stranger) = tls_server(&dir, "stranger").await;
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gw = Gateway::start(
        "internal-tls",
        &[
            ("config-network.yaml", config_network("enabled")),
            ("ca.yaml", ca_secret(&dir.join("ca.crt"))),
            ("qp.yaml", backend_objects("qp", at(qp))),
            ("act.yaml", backend_objects("act", at(act))),
            ("stranger.yaml", backend_objects("stranger", at(stranger))),
            (
                "ing.yaml",
                yaml_docs(&[
                    simple_kingress("qp", "qp.example.com", "qp"),
                    simple_kingress("act", "act.example.com", "act"),
                    simple_kingress("stranger", "stranger.example.com", "stranger"),
                ]),
            ),
        ],
    )
    .await;
    for name in ["qp", "act", "stranger"] {
        gw.wait_ready(name).await;
    }
    assert_eq!(
        body(&gw, "qp.example.com").await,
        (200, "queue-proxy".into()),
        "kn-user-<namespace> is accepted"
    );
    assert_eq!(
        body(&gw, "act.example.com").await,
        (200, "activator".into()),
        "kn-routing is accepted"
    );
    // A certificate from the right CA for another namespace is refused in the handshake.
    let (status, _) = body(&gw, "stranger.example.com").await;
    assert_eq!(
        status, 503,
        "kn-user-elsewhere must not serve namespace default"
    );

    // Live: with internal TLS off, the gateway speaks plain HTTP (the TLS servers refuse it);
    // on again, TLS again.
    gw.write("config-network.yaml", &config_network("disabled"));
    wait_for("plain HTTP to the backends", SETTLE, || async {
        let (status, _) = body(&gw, "qp.example.com").await;
        (status != 200).then_some(())
    })
    .await;
    gw.write("config-network.yaml", &config_network("Enabled"));
    wait_for("TLS to the backends again", SETTLE, || async {
        (body(&gw, "qp.example.com").await.0 == 200).then_some(())
    })
    .await;

    // Without the CA the KIngresses cannot be translated: each says why, naming the split,
    // and what was served keeps serving.
    gw.remove("ca.yaml");
    let view = wait_for("qp reports the missing CA", SETTLE, || async {
        let v = gw.ingress("qp").await.ok().flatten()?;
        v.message.contains("routing-serving-certs").then_some(v)
    })
    .await;
    assert!(
        view.message
            .contains("spec.rules[0].http.paths[0].splits[0]")
            && view.message.contains("system-internal-tls"),
        "{view:?}"
    );
    assert_eq!(
        body(&gw, "qp.example.com").await,
        (200, "queue-proxy".into())
    );
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
