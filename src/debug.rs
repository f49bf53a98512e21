//! The debug HTTP server (`--debug`, loopback by default): `/metrics`
//! (Prometheus text, every name prefixed `sluice_`), `/healthz` (the process answers),
//! `/ready` (its configuration is complete: 503 until then) and `/status` (JSON built by the
//! caller).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Produces the `/status` document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Whether the process is ready to serve (`/ready`).
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct DebugState {
    registry: Arc<Registry>,
    status: StatusFn,
    ready: ReadyFn,
}

/// A registry whose metrics all carry the `sluice_` prefix.
pub fn registry() -> Registry {
    Registry::with_prefix("sluice")
}

/// The debug router.
pub fn router(registry: Arc<Registry>, status: StatusFn, ready: ReadyFn) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready_check))
        .route("/status", get(status_json))
        .with_state(DebugState {
            registry,
            status,
            ready,
        })
}

/// Always ready (for processes whose readiness is their liveness).
pub fn always_ready() -> ReadyFn {
    Arc::new(|| true)
}

/// Serves the debug router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    status: StatusFn,
    ready: ReadyFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, status, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(s): State<DebugState>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready_check(State(s): State<DebugState>) -> Response {
    if (s.ready)() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: configuration not complete yet\n",
        )
            .into_response()
    }
}

async fn status_json(State(s): State<DebugState>) -> Response {
    axum::Json((s.status)()).into_response()
}
