//! Test backends and clients for the activator's integration tests: small
//! hyper servers on 127.0.0.1:0 that count what they see.
//!
//! Backend behaviour, by request:
//! * any path: 200, body = `method path?query` then one `name: value` line per
//!   request header; header `x-backend: <name>`;
//! * `?sleep=MS`: waits MS milliseconds before answering;
//! * `/stream`: echoes the request body frame by frame as it arrives, then
//!   trailers `grpc-status: 0` (what a gRPC server does);
//! * `Upgrade:` header: 101, then echoes bytes on the upgraded connection.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice_activator::{Activator, ActivatorConfig, RevisionConfig, RevisionKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Test body type.
pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What a backend has seen.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// A running backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
    pub fn max_in_flight(&self) -> usize {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend named `name` on 127.0.0.1:0 (HTTP/1.1 and h2c).
pub async fn backend(name: &'static str) -> Backend {
    backend_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a backend named `name` on `addr`.
pub async fn backend_on(name: &'static str, addr: SocketAddr) -> Backend {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let c = Arc::clone(&c);
                    async move { Ok::<_, Infallible>(serve(name, c, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, counts, task }
}

struct InFlight(Arc<Counts>);
impl InFlight {
    fn new(c: Arc<Counts>) -> Self {
        c.requests.fetch_add(1, Ordering::SeqCst);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(c)
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    name: &'static str,
    c: Arc<Counts>,
    mut req: Request<Incoming>,
) -> Response<TestBody> {
    let in_flight = InFlight::new(c);
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(ms) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep="))
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if req.headers().contains_key("upgrade") {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(empty())
            .unwrap();
    }
    if req.uri().path() == "/stream" {
        // Echo frames as they come; trailers at the end; count until done.
        let mut incoming = req.into_body();
        let (tx, rx) =
            mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            while let Some(frame) = incoming.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data()
                            && tx.send(Ok(Frame::data(data))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Box::new(e))).await;
                        return;
                    }
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        return Response::builder()
            .header("content-type", "application/grpc")
            .header("x-backend", name)
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap();
    }
    let mut text = format!(
        "{} {}{}\n",
        req.method(),
        req.uri().path(),
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    );
    text.push_str(&format!("version: {:?}\n", req.version()));
    for (k, v) in req.headers() {
        text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
    }
    drop(in_flight);
    Response::builder()
        .header("x-backend", name)
        .body(full(text))
        .unwrap()
}

pub fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A backend that accepts connections and closes them at once (it passes a
/// TCP probe, then fails every request).
pub async fn rude_backend() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    (addr, task)
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A served activator and the handle to stop it.
pub struct Served {
    pub activator: Activator,
    pub addr: SocketAddr,
    pub pokes: mpsc::Receiver<RevisionKey>,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<JoinHandle<std::io::Result<()>>>,
}

impl Served {
    /// Starts draining; `done` completes when drained.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn serve_activator(config: ActivatorConfig) -> Served {
    let (activator, pokes) = Activator::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let a = activator.clone();
    let done = tokio::spawn(async move {
        a.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    Served {
        activator,
        addr,
        pokes,
        stop: Some(stop),
        done: Some(done),
    }
}

pub fn key(name: &str) -> RevisionKey {
    RevisionKey::new("default", name)
}

pub fn config(cc: u32) -> RevisionConfig {
    RevisionConfig {
        container_concurrency: cc,
        ..RevisionConfig::default()
    }
}

/// An HTTP/1.1 client.
pub fn http1() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2c() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A request for revision `default/<rev>` to `path` on `addr`.
pub fn request(addr: SocketAddr, rev: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "hello.default.example.com")
        .header("knative-serving-namespace", "default")
        .header("knative-serving-revision", rev)
}

/// A response with its body collected.
#[derive(Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends a GET for `rev` to `path` and collects the response.
pub async fn get(
    client: &Client<HttpConnector, TestBody>,
    addr: SocketAddr,
    rev: &str,
    path: &str,
) -> Collected {
    let req = request(addr, rev, path).body(empty()).unwrap();
    let resp = client.request(req).await.expect("activator answers");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A body fed from a channel, for streaming requests.
pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(b)));
    (tx, StreamBody::new(stream).boxed_unsync())
}
