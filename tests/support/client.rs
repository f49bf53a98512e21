//! Clients for the protocols Sluice carries: HTTP/1.1, h2c (prior knowledge), websockets and
//! gRPC. Each call opens a fresh connection, so tests never share connection state by accident.
//!
//! `addr` is where to connect (Envoy's listener or a backend); `host` is the virtual host to ask
//! for (`Host` for HTTP/1.1 and websockets, `:authority` for HTTP/2 and gRPC), so a test can
//! reach any route through one listener.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// gRPC health status as seen on the wire.
pub use tonic_health::pb::health_check_response::ServingStatus;

/// A client-side websocket connection (see [`websocket_connect`]).
pub type WsStream = WebSocketStream<TcpStream>;

/// Upper bound on any one client call, so a broken data path fails a test instead of hanging it.
/// Longer than every delay the tests ask for (and than Envoy's 15 s default route timeout, which
/// tests may need to prove is disabled).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete HTTP response, with timings.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// HTTP version of the connection that carried it.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Time from sending the request until the response head arrived.
    pub head_elapsed: Duration,
    /// Time from sending the request until the body was complete.
    pub elapsed: Duration,
}

impl Response {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// If the body is not JSON; the message shows status and body.
    pub fn json(&self) -> serde_json::Value {
        self.try_json().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The body parsed as JSON, or an error showing status and body.
    pub fn try_json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response body is not JSON (status {}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The first value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-backend` header: which test backend answered.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }
}

/// `GET http://{host}{path}` over HTTP/1.1 to `addr`, with extra `headers`.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    send(addr, Version::HTTP_11, get_request(host, path, headers)?).await
}

/// `GET http://{host}{path}` over h2c (HTTP/2 with prior knowledge) to `addr`.
pub async fn get_h2c(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    send(addr, Version::HTTP_2, get_request(host, path, headers)?).await
}

fn get_request(host: &str, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Request<Bytes>> {
    let uri = absolute_uri(host, path)?;
    let mut builder = Request::builder().method(Method::GET).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::new()).context("building the request")
}

fn absolute_uri(host: &str, path: &str) -> anyhow::Result<Uri> {
    if !path.starts_with('/') {
        bail!("path {path:?} must start with '/'");
    }
    format!("http://{host}{path}")
        .parse()
        .with_context(|| format!("host {host:?} and path {path:?} do not form a URI"))
}

/// Sends `req` to `addr` over a fresh connection speaking `version` (`HTTP_11`, or `HTTP_2` for
/// h2c with prior knowledge), and reads the whole response.
///
/// `req`'s URI must be absolute (`http://host/path?query`): its authority becomes `Host` for
/// HTTP/1.1 (unless `req` already has one, which then wins) and `:authority` for HTTP/2.
pub async fn send(
    addr: SocketAddr,
    version: Version,
    req: Request<Bytes>,
) -> anyhow::Result<Response> {
    let what = format!("{} {} over {version:?} to {addr}", req.method(), req.uri());
    tokio::time::timeout(CLIENT_TIMEOUT, send_inner(addr, version, req))
        .await
        .map_err(|_| anyhow!("no complete response within {CLIENT_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(|| what)
}

async fn send_inner(
    addr: SocketAddr,
    version: Version,
    req: Request<Bytes>,
) -> anyhow::Result<Response> {
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| anyhow!("request URI {} has no host", req.uri()))?
        .clone();
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let io = TokioIo::new(stream);
    let (parts, body) = req.into_parts();
    let mut req = Request::from_parts(parts, Full::new(body));

    let start = Instant::now();
    let response = if version == Version::HTTP_2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .context("h2c handshake")?;
        tokio::spawn(conn);
        sender.send_request(req).await.context("sending")?
    } else if version == Version::HTTP_11 {
        // Origin-form request line plus a Host header, as a browser sends it.
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        if !req.headers().contains_key(HOST) {
            let host = HeaderValue::from_str(authority.as_str()).context("host header")?;
            req.headers_mut().insert(HOST, host);
        }
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(conn);
        sender.send_request(req).await.context("sending")?
    } else {
        bail!("unsupported HTTP version {version:?} (use HTTP_11 or HTTP_2)");
    };
    let head_elapsed = start.elapsed();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
        head_elapsed,
        elapsed: start.elapsed(),
    })
}

/// Opens a websocket to `ws://{host}{path}` over a TCP connection to `addr`.
pub async fn websocket_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<WsStream> {
    let connect = async {
        if !path.starts_with('/') {
            bail!("path {path:?} must start with '/'");
        }
        // Builds the handshake (key, version, upgrade headers) with `Host: {host}`.
        let request = format!("ws://{host}{path}")
            .into_client_request()
            .context("building the websocket handshake")?;
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (ws, _response) = tokio_tungstenite::client_async(request, stream)
            .await
            .context("websocket handshake")?;
        Ok(ws)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("no websocket within {CLIENT_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(|| format!("websocket ws://{host}{path} via {addr}"))
}

/// Connects a websocket (see [`websocket_connect`]), sends `msg` as text, and returns the first
/// text (or UTF-8 binary) message received back. Closes the socket afterwards.
pub async fn websocket_echo(
    addr: SocketAddr,
    host: &str,
    path: &str,
    msg: &str,
) -> anyhow::Result<String> {
    use futures::{SinkExt, StreamExt};

    let mut ws = websocket_connect(addr, host, path).await?;
    let exchange = async {
        ws.send(Message::text(msg)).await.context("sending")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Binary(data))) => {
                    return String::from_utf8(data.to_vec()).context("binary reply is not UTF-8");
                }
                Some(Ok(Message::Close(frame))) => bail!("closed by peer: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("receiving"),
                None => bail!("connection ended without a reply"),
            }
        }
    };
    let reply = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no websocket reply within {CLIENT_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(|| format!("websocket echo via {addr} (host {host}, path {path})"))?;
    // Best effort: the answer is in hand, a failed close handshake changes nothing.
    let _ = ws.close(None).await;
    Ok(reply)
}

/// What one gRPC health check returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcHealth {
    /// The reported status.
    pub status: ServingStatus,
    /// The `x-backend` response metadata: which test backend answered.
    pub backend: Option<String>,
    /// The `x-authority` response metadata: the `:authority` the test backend received.
    pub authority: Option<String>,
}

/// Calls `grpc.health.v1.Health/Check` (service `""`) over h2c to `addr`, with `:authority`
/// set to `host` so a gateway can route on it. Returns the status and the `x-backend` response
/// metadata (which test backend answered), if any. See [`grpc_health_check`].
pub async fn grpc_health(
    addr: SocketAddr,
    host: &str,
) -> anyhow::Result<(ServingStatus, Option<String>)> {
    let health = grpc_health_check(addr, host, "").await?;
    Ok((health.status, health.backend))
}

/// Calls `grpc.health.v1.Health/Check` for `service` over h2c to `addr`, with `:authority`
/// `host`.
///
/// The channel connects to `addr` while [`Endpoint::origin`] supplies the scheme and authority
/// of every request URI, which hyper sends as `:authority`.
pub async fn grpc_health_check(
    addr: SocketAddr,
    host: &str,
    service: &str,
) -> anyhow::Result<GrpcHealth> {
    let call = async {
        let origin: Uri = format!("http://{host}")
            .parse()
            .with_context(|| format!("host {host:?} is not a URI authority"))?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .context("endpoint")?
            .origin(origin)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting")?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .context("Health/Check")?;
        let metadata = |name: &str| {
            response
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let backend = metadata("x-backend");
        let authority = metadata("x-authority");
        let raw = response.into_inner().status;
        let status =
            ServingStatus::try_from(raw).map_err(|_| anyhow!("unknown serving status {raw}"))?;
        Ok(GrpcHealth {
            status,
            backend,
            authority,
        })
    };
    tokio::time::timeout(CLIENT_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("no gRPC answer within {CLIENT_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(|| format!("gRPC health via {addr} (authority {host}, service {service:?})"))
}
