//! Accepting connections (HTTP/1.1 and h2c on one port, hyper-util's `auto`
//! builder) and draining them on shutdown.
//!
//! Drain: when `shutdown` completes the listener closes (new connections are
//! refused), every connection is asked to shut down gracefully (HTTP/1.1:
//! close after the current response; h2: GOAWAY, finish open streams), and
//! `serve` waits for connections and websocket tunnels to finish — at most
//! `drain_grace`, after which the remaining ones are closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::activator::Activator;

/// How long an HTTP/1.1 client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Activator {
    /// Serves HTTP/1.1 and h2c on `listener` until `shutdown` completes, then
    /// drains (see the module docs). Returns once drained.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let (draining, _) = watch::channel(false);
        let mut conns = JoinSet::new();
        let max = self.inner.config.max_connections.max(1);
        let mut capped = false;
        tokio::pin!(shutdown);
        loop {
            if conns.len() >= max && !capped {
                tracing::warn!(
                    connections = conns.len(),
                    "connection cap reached: not accepting until one closes"
                );
            }
            capped = conns.len() >= max;
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept(), if conns.len() < max => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: back off
                            // briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let activator = self.clone();
                    let builder = builder.clone();
                    let mut draining = draining.subscribe();
                    conns.spawn(async move {
                        let service = service_fn(move |req| {
                            let activator = activator.clone();
                            async move { Ok::<_, Infallible>(activator.handle(req).await) }
                        });
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        let result = tokio::select! {
                            res = conn.as_mut() => res,
                            () = async { let _ = draining.wait_for(|d| *d).await; } => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        let open = conns.len();
        tracing::info!(connections = open, "draining");
        let _ = draining.send(true);
        let tunnels = self.inner.tunnels.clone();
        let drained = tokio::time::timeout(self.inner.config.drain_grace, async {
            while conns.join_next().await.is_some() {}
            tunnels.closed().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = conns.len(),
                tunnels = tunnels.receiver_count(),
                "drain grace over: closing the rest"
            );
            let _ = self.inner.hard_stop.send(true);
            conns.shutdown().await;
        }
        Ok(())
    }
}
