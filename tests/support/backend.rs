//! Small real backends that behave like Knative's conformance test images.
//!
//! One listener on `127.0.0.1:0` serves HTTP/1.1 and h2c (prior knowledge) through hyper-util's
//! auto builder, and dispatches each request:
//!
//! 1. **Probe** — header `K-Network-Probe: probe`: 200, body `probe ok`, and the request's
//!    `K-Network-Hash` echoed back, as Knative's queue-proxy answers. Probes skip the `delay` and
//!    `fail_first` behaviours (the queue-proxy answers them without the app).
//! 2. **Slow mode** — [`BackendOptions::delay`]: every other request waits this long first.
//! 3. **First requests fail** — [`BackendOptions::fail_first`]: the first `n` non-probe requests
//!    get `503` (plain text), later ones are served normally.
//! 4. **gRPC** — `content-type: application/grpc*`: a `grpc.health.v1.Health` service whose
//!    overall status (`""`) starts `SERVING` (see [`Backend::set_grpc_status`]).
//! 5. **Websocket** — `Upgrade: websocket` over HTTP/1.1 (any path): exact echo of text and
//!    binary messages.
//! 6. **JSON echo** — everything else: 200 (or `?status=CODE`), `content-type:
//!    application/json`, body `{"name", "host", "path", "query", "method", "proto", "protoMajor",
//!    "headers": {lowercased name: [values]}}`. Query `initialTimeout=MS` waits before the response
//!    head; `timeout=MS` sends the head, then waits before the body; `server=NAME` answers with
//!    that `Server` header.
//!
//! Every response carries `x-backend: <name>` (for gRPC that is initial response metadata; gRPC
//! responses also carry `x-authority: <:authority of the request>`).
//! Malformed input (bad query values, incomplete websocket handshakes) gets `400`, never a panic.
//!
//! Counters cover every request (probes, gRPC and websocket handshakes included): a request is
//! in flight from the moment its head is read until its response body has been fully sent (or
//! the client went away).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::server::HealthReporter;

/// Error type of response bodies.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body before in-flight accounting is attached.
type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";
/// Request header marking a Knative network probe (value `probe`).
pub const PROBE_HEADER: &str = "k-network-probe";
/// Probe hash header, echoed back on probes.
pub const HASH_HEADER: &str = "k-network-hash";
/// gRPC response header (initial metadata) carrying the request's `:authority`, so tests can
/// check which virtual host a gateway asked for.
pub const AUTHORITY_HEADER: &str = "x-authority";

/// How a [`Backend`] behaves. Build with [`BackendOptions::new`] and the chained setters.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Identity returned in echo bodies and the `x-backend` header. Must be a valid header value.
    pub name: String,
    /// Delay applied to every non-probe request before it is handled (slow mode).
    pub delay: Duration,
    /// Number of initial non-probe requests answered with `503`.
    pub fail_first: u64,
    /// Address to listen on; `127.0.0.1:0` (any free port) by default.
    pub bind: SocketAddr,
}

impl BackendOptions {
    /// Options for a plain echo backend called `name` on a free loopback port.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            delay: Duration::ZERO,
            fail_first: 0,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// Answer the first `n` non-probe requests with `503`, later ones normally.
    pub fn fail_first(mut self, n: u64) -> Self {
        self.fail_first = n;
        self
    }

    /// Delay every non-probe request by `delay` before handling it.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Listen on `addr` instead of a free port (e.g. to bring a backend back on its old port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self::new("backend")
    }
}

impl From<&str> for BackendOptions {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// A running backend. Dropping it (or [`Backend::shutdown`]) stops the listener, every
/// connection and every websocket session.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    /// Dropping the sender tells every task to stop.
    stop: Option<watch::Sender<()>>,
    accept: Option<JoinHandle<()>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.state.name)
            .field("addr", &self.addr)
            .field("requests", &self.requests())
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight())
            .finish()
    }
}

/// Starts a backend; see the [module docs](self) for what it serves.
///
/// # Panics
/// If `opts.name` is not a valid header value or `opts.bind` cannot be bound (test setup bugs).
pub async fn start(opts: BackendOptions) -> Backend {
    let bind = opts.bind;
    try_start(opts)
        .await
        .unwrap_or_else(|e| panic!("starting a test backend on {bind}: {e}"))
}

/// Like [`start`], but reports bind failures instead of panicking.
///
/// # Panics
/// If `opts.name` is not a valid header value.
pub async fn try_start(opts: BackendOptions) -> std::io::Result<Backend> {
    let listener = TcpListener::bind(opts.bind).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(());
    let state = Arc::new(State::new(opts, stop_rx.clone()));
    let accept = tokio::spawn(accept_loop(listener, state.clone(), stop_rx));
    Ok(Backend {
        addr,
        state,
        stop: Some(stop_tx),
        accept: Some(accept),
    })
}

impl Backend {
    /// The backend's name (its identity in responses).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (all kinds, failed ones included).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests currently in flight (head read, response body not yet fully sent).
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Highest number of requests that were in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Resets `requests()` and `max_in_flight()` (the latter to the current in-flight count).
    pub fn reset_counters(&self) {
        self.state.requests.store(0, Ordering::SeqCst);
        self.state
            .max_in_flight
            .store(self.in_flight(), Ordering::SeqCst);
    }

    /// Sets the overall (`""`) gRPC health status reported by this backend. Takes the wire enum
    /// that [`grpc_health`](super::client::grpc_health) returns; `ServiceUnknown` (which only
    /// describes unregistered services) is stored as `Unknown`.
    pub async fn set_grpc_status(&self, status: WireStatus) {
        let status = match status {
            WireStatus::Serving => ServingStatus::Serving,
            WireStatus::NotServing => ServingStatus::NotServing,
            WireStatus::Unknown | WireStatus::ServiceUnknown => ServingStatus::Unknown,
        };
        self.state.health.set_service_status("", status).await;
    }

    /// Stops listening and closes every connection; returns once the port is released.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(accept) = self.accept.take() {
            // The accept task only ends by this signal or by panicking; either way it is gone.
            let _ = accept.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// Shared by every connection of one backend.
struct State {
    name: String,
    name_header: HeaderValue,
    delay: Duration,
    fail_remaining: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    grpc: Routes,
    health: HealthReporter,
    /// Closed when the backend stops; long-lived tasks (websockets) watch it.
    stop: watch::Receiver<()>,
}

impl State {
    fn new(opts: BackendOptions, stop: watch::Receiver<()>) -> Self {
        let name_header = HeaderValue::from_str(&opts.name).unwrap_or_else(|e| {
            panic!(
                "backend name {:?} is not a valid header value: {e}",
                opts.name
            )
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        Self {
            name: opts.name,
            name_header,
            delay: opts.delay,
            fail_remaining: AtomicU64::new(opts.fail_first),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            grpc: Routes::new(health_service).prepare(),
            health,
            stop,
        }
    }

    /// Counts a new request; the guard keeps it in flight until dropped.
    fn enter(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One in-flight request; decrements the gauge when dropped.
struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it (after the
/// last frame was sent, or when the client went away).
struct GuardedBody {
    inner: BoxBody,
    _in_flight: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Latency matters more than throughput for these tests; failure is harmless.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (resets, malformed preludes) only end this connection.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<GuardedBody> {
    let in_flight = state.enter();
    let mut response = route(&state, req).await;
    response
        .headers_mut()
        .insert(BACKEND_HEADER, state.name_header.clone());
    response.map(|inner| GuardedBody {
        inner,
        _in_flight: in_flight,
    })
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    if header_is(&req, PROBE_HEADER, "probe") {
        return probe(&req);
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let fail = state
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} failing on purpose (fail_first)\n", state.name),
        );
    }
    let is_grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        return grpc(state, req).await;
    }
    let is_websocket = req
        .headers()
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"));
    if is_websocket {
        return websocket(state, req);
    }
    echo(state, req).await
}

fn header_is(req: &Request<Incoming>, name: &str, value: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn bad_request(why: impl fmt::Display) -> Response<BoxBody> {
    text(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"))
}

/// Knative probe: 200 with the request's `K-Network-Hash` echoed, as the queue-proxy answers.
fn probe(req: &Request<Incoming>) -> Response<BoxBody> {
    let mut response = text(StatusCode::OK, "probe ok");
    if let Some(hash) = req.headers().get(HASH_HEADER) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HASH_HEADER), hash.clone());
    }
    response
}

/// gRPC: hand the request to the tonic routes (health service).
async fn grpc(state: &State, req: Request<Incoming>) -> Response<BoxBody> {
    let authority = request_host(&req);
    let mut routes = state.grpc.clone();
    // Both are `Infallible`: the router is always ready and answers errors as gRPC statuses.
    let ready = std::future::poll_fn(|cx| {
        <Routes as Service<Request<Incoming>>>::poll_ready(&mut routes, cx)
    })
    .await;
    if let Err(never) = ready {
        match never {}
    }
    let response = match routes.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let mut response = response.map(|body| {
        body.map_err(|status| Box::new(status) as BoxError)
            .boxed_unsync()
    });
    if let Ok(authority) = HeaderValue::from_str(&authority) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(AUTHORITY_HEADER), authority);
    }
    response
}

/// Websocket over an HTTP/1.1 upgrade: answer 101 and echo every text/binary message.
fn websocket(state: &State, mut req: Request<Incoming>) -> Response<BoxBody> {
    if req.version() != Version::HTTP_11 {
        return bad_request("websocket upgrades need HTTP/1.1");
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return bad_request("websocket upgrade without Sec-WebSocket-Key");
    };
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() != b"13")
    {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version\n",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        // A base64 digest is always a valid header value; this is unreachable in practice.
        return bad_request("cannot encode Sec-WebSocket-Accept");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut stop = state.stop.clone();
    tokio::spawn(async move {
        // Fails when the client goes away before the 101 is delivered: nothing to echo then.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::select! {
            () = echo_messages(ws) => {}
            _ = stop.changed() => {}
        }
    });

    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo_messages<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            // Pings are answered and closes acknowledged by tungstenite itself.
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Query parameters the echo handler understands.
#[derive(Default)]
struct EchoQuery {
    initial_timeout: Option<Duration>,
    timeout: Option<Duration>,
    status: Option<StatusCode>,
    /// `server=NAME`: answer with this `Server` header.
    server: Option<HeaderValue>,
}

impl EchoQuery {
    fn parse(query: &str) -> Result<Self, String> {
        let mut parsed = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|e| format!("{key}={value:?} is not a number of milliseconds: {e}"))
            };
            match key {
                "initialTimeout" => parsed.initial_timeout = Some(millis()?),
                "timeout" => parsed.timeout = Some(millis()?),
                "status" => {
                    let status = value
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| format!("status={value:?} is not an HTTP status code"))?;
                    parsed.status = Some(status);
                }
                "server" => {
                    parsed.server = Some(
                        HeaderValue::from_str(value)
                            .map_err(|e| format!("server={value:?}: {e}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// JSON echo of the request, with the optional delays of Knative's `timeout` image.
async fn echo(state: &State, req: Request<Incoming>) -> Response<BoxBody> {
    let query = req.uri().query().unwrap_or("");
    let params = match EchoQuery::parse(query) {
        Ok(params) => params,
        Err(why) => return bad_request(why),
    };
    if let Some(wait) = params.initial_timeout {
        tokio::time::sleep(wait).await;
    }

    let body = Bytes::from(echo_json(state, &req).to_string());
    let body = match params.timeout {
        Some(wait) if !wait.is_zero() => {
            // Head now, body after `wait`: hyper flushes the head while the body is pending.
            let frames = futures::stream::once(async move {
                tokio::time::sleep(wait).await;
                Ok::<_, BoxError>(Frame::data(body))
            });
            StreamBody::new(frames).boxed_unsync()
        }
        _ => full(body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = params.status.unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(server) = params.server {
        response.headers_mut().insert(http::header::SERVER, server);
    }
    response
}

/// The host asked for: HTTP/2 carries it as `:authority` (in the URI), HTTP/1.1 in `Host` (or an
/// absolute-form URI). Empty when absent.
fn request_host(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default()
}

fn echo_json(state: &State, req: &Request<Incoming>) -> serde_json::Value {
    let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = request_host(req);
    let (proto, major) = match req.version() {
        Version::HTTP_09 => ("HTTP/0.9", 0),
        Version::HTTP_10 => ("HTTP/1.0", 1),
        Version::HTTP_11 => ("HTTP/1.1", 1),
        Version::HTTP_2 => ("HTTP/2.0", 2),
        Version::HTTP_3 => ("HTTP/3.0", 3),
        _ => ("unknown", 0),
    };
    serde_json::json!({
        "name": state.name,
        "host": host,
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "method": req.method().as_str(),
        "proto": proto,
        "protoMajor": major,
        "headers": headers,
    })
}
