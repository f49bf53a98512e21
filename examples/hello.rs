//! The demo app: a tiny HTTP server that says which revision answered.
//!
//! Listens on `127.0.0.1:$PORT` (default 8080; set `HOST` to listen elsewhere) and answers
//! - `GET /` with `Hello {TARGET}! from {K_REVISION}` (`TARGET` defaults to `World`) and the
//!   header `x-revision: {K_REVISION}`,
//! - `GET /healthz` with 200 `ok`,
//! - anything else with 404.
//!
//! `CRASH_AFTER=N` makes it exit with status 1 after answering N requests to `/` (to watch the
//! runtime restart it). `START_DELAY_MS=N` waits N ms before listening (an app that is slow to
//! start, as a JVM's). Reserved instances (`SLUICE_RESERVED_INSTANCE=true`) answer with the
//! header `x-reserved: true`. On SIGTERM or Ctrl-C it stops accepting, lets open requests finish
//! and exits 0.
//!
//! ```text
//! cargo run --example hello
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! In a Knative Service for `sluice up` (the standalone runtime runs commands, not images):
//!
//! ```yaml
//! spec:
//!   template:
//!     spec:
//!       containers:
//!         - command: ["target/debug/examples/hello"]
//!           env: [{ name: TARGET, value: Sluice }]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What every request handler needs.
struct App {
    target: String,
    revision: String,
    crash_after: Option<u64>,
    served: AtomicU64,
    reserved: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .with_context(|| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let crash_after = match std::env::var("CRASH_AFTER") {
        Ok(n) => Some(
            n.parse()
                .with_context(|| format!("CRASH_AFTER={n:?} is not a number"))?,
        ),
        Err(_) => None,
    };
    let app = Arc::new(App {
        target: std::env::var("TARGET").unwrap_or_else(|_| "World".to_owned()),
        revision: std::env::var("K_REVISION").unwrap_or_else(|_| "unknown".to_owned()),
        crash_after,
        served: AtomicU64::new(0),
        reserved: std::env::var("SLUICE_RESERVED_INSTANCE").is_ok_and(|v| v == "true"),
    });
    if let Ok(ms) = std::env::var("START_DELAY_MS") {
        let ms: u64 = ms
            .parse()
            .with_context(|| format!("START_DELAY_MS={ms:?} is not a number"))?;
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .with_context(|| format!("HOST={host:?} is not an IP address"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("hello: {} listening on {addr}", app.revision);

    let mut sigterm = signal(SignalKind::terminate())?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("hello: accept failed: {e}");
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let mut shutdown = shutdown.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&app), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = shutdown.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(_) = connections.join_next() => {}
        }
    }
    println!("hello: shutting down");
    let _ = shutdown_tx.send(true);
    // Open requests get a few seconds; the runtime's grace period is longer.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => {
            let served = app.served.fetch_add(1, Ordering::SeqCst) + 1;
            if app.crash_after.is_some_and(|n| served >= n) {
                eprintln!("hello: CRASH_AFTER={served} reached; exiting with status 1");
                tokio::spawn(async {
                    // Let this response go out first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(1);
                });
            }
            text(
                StatusCode::OK,
                format!("Hello {}! from {}\n", app.target, app.revision),
            )
            .map(|mut r| {
                if let Ok(value) = app.revision.parse() {
                    r.headers_mut().insert("x-revision", value);
                }
                if app.reserved {
                    r.headers_mut().insert(
                        "x-reserved",
                        hyper::header::HeaderValue::from_static("true"),
                    );
                }
                r
            })
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".to_owned()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn text(status: StatusCode, body: String) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
}
