//! Knative's readiness probe, sent through Envoy: proves that a gateway serves
//! a given generation of a KIngress. The answer comes from Envoy itself (the
//! probe route copy is a `direct_response` carrying `K-Network-Hash`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Header carrying the probe hash.
pub const HASH_HEADER: &str = "K-Network-Hash";

/// A reusable prober (pooled HTTP/1.1 connections).
#[derive(Clone, Debug)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Why a probe did not prove readiness.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer.
    #[error("probe to {addr} for {host} failed: {message}")]
    Unreachable {
        /// Listener probed.
        addr: SocketAddr,
        /// Host probed.
        host: String,
        /// What happened.
        message: String,
    },
    /// Answered, but not with this generation.
    #[error("probe to {addr} for {host}: status {status}, hash {got:?} (want {want})")]
    Mismatch {
        /// Listener probed.
        addr: SocketAddr,
        /// Host probed.
        host: String,
        /// HTTP status.
        status: u16,
        /// Hash answered.
        got: Option<String>,
        /// Hash wanted.
        want: String,
    },
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    /// A prober.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }

    /// Probes `host` on the listener at `addr` (a wildcard address is probed on
    /// loopback) and checks the answer carries `hash`.
    pub async fn probe(&self, addr: SocketAddr, host: &str, hash: &str) -> Result<(), ProbeError> {
        self.probe_via(addr, host, hash, false).await
    }

    /// [`Self::probe`]; with `proxy_protocol`, on a connection of its own that starts with a
    /// PROXY v1 header (a listener with `enable-proxy-protocol` requires one).
    pub async fn probe_via(
        &self,
        addr: SocketAddr,
        host: &str,
        hash: &str,
        proxy_protocol: bool,
    ) -> Result<(), ProbeError> {
        let target = loopback_for(addr);
        let unreachable = |message: String| ProbeError::Unreachable {
            addr: target,
            host: host.to_string(),
            message,
        };
        let req = hyper::Request::get(format!("http://{target}/healthz"))
            .header("host", host)
            .header("K-Network-Probe", "probe")
            .header(HASH_HEADER, "override")
            .header("User-Agent", "Knative-Ingress-Probe")
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let sent = async {
            if !proxy_protocol {
                return self.client.request(req).await.map_err(|e| e.to_string());
            }
            proxied(target, req).await
        };
        let resp = tokio::time::timeout(Duration::from_secs(5), sent)
            .await
            .map_err(|_| unreachable("timed out after 5 s".into()))?
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let got = resp
            .headers()
            .get(HASH_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let _ = resp.into_body().collect().await;
        if status == 200 && got.as_deref() == Some(hash) {
            Ok(())
        } else {
            Err(ProbeError::Mismatch {
                addr: target,
                host: host.to_string(),
                status,
                got,
                want: hash.to_string(),
            })
        }
    }
}

/// One request on a connection of its own that opens with a PROXY v1 header naming the
/// connection's own addresses.
async fn proxied(
    target: SocketAddr,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let family = if target.is_ipv4() { "TCP4" } else { "TCP6" };
    let header = format!(
        "PROXY {family} {} {} {} {}\r\n",
        local.ip(),
        target.ip(),
        local.port(),
        target.port()
    );
    stream
        .write_all(header.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    // Origin-form on a connection of its own (the absolute URI would become the authority).
    let (mut parts, body) = req.into_parts();
    parts.uri = hyper::Uri::from_static("/healthz");
    sender
        .send_request(hyper::Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())
}

/// `0.0.0.0:p` → `127.0.0.1:p`, `[::]:p` → `[::1]:p`.
pub fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}
