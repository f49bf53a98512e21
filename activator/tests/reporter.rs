//! The stat reporter against a tiny in-test `sluice.autoscaler.v1.Stats`
//! server: periodic batches, pokes, reconnect after the server goes away.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sluice_activator::{ActivatorConfig, Reporter, ReporterConfig};
use sluice_proto::autoscaler::v1::stats_server::{Stats, StatsServer};
use sluice_proto::autoscaler::v1::{ReportAck, StatBatch};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

const SOON: Duration = Duration::from_secs(10);

/// Forwards every batch it receives to the test; fails open streams when
/// `fail` is set (an autoscaler restarting).
struct Collector {
    batches: mpsc::UnboundedSender<StatBatch>,
    fail: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Stats for Collector {
    async fn report(
        &self,
        req: Request<Streaming<StatBatch>>,
    ) -> Result<Response<ReportAck>, Status> {
        let mut stream = req.into_inner();
        let mut fail = self.fail.clone();
        let mut batches = 0;
        loop {
            tokio::select! {
                batch = stream.next() => match batch {
                    Some(batch) => {
                        let _ = self.batches.send(batch?);
                        batches += 1;
                    }
                    None => return Ok(Response::new(ReportAck { batches })),
                },
                _ = fail.wait_for(|f| *f) => return Err(Status::unavailable("restarting")),
            }
        }
    }
}

/// A Stats server on `listener`: the batches it receives, and a switch that
/// fails every stream.
fn stats_server(
    listener: TcpListener,
) -> (mpsc::UnboundedReceiver<StatBatch>, watch::Sender<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (fail_tx, fail) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(StatsServer::new(Collector { batches: tx, fail }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (rx, fail_tx)
}

fn reporter_config(addr: SocketAddr) -> ReporterConfig {
    ReporterConfig {
        interval: Duration::from_millis(100),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ReporterConfig::new(format!("http://{addr}"), "activator-test")
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<StatBatch>) -> StatBatch {
    tokio::time::timeout(SOON, rx.recv())
        .await
        .expect("a batch in time")
        .expect("server running")
}

#[tokio::test]
async fn pokes_and_periodic_batches_reach_the_autoscaler() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stats_addr = listener.local_addr().unwrap();
    let (mut batches, _stop) = stats_server(listener);

    let mut served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("cold"), config(0));
    let reporter = Reporter::new(reporter_config(stats_addr)).unwrap();
    let handle = reporter.clone();
    let (pokes_tx, pokes_rx) = mpsc::channel(16);
    tokio::spawn(reporter.run(a.clone(), pokes_rx, std::future::pending()));
    // Forward the activator's pokes to the reporter (as `sluice activator` will).
    tokio::spawn(async move {
        while let Some(k) = served.pokes.recv().await {
            let _ = pokes_tx.send(k).await;
        }
    });
    // Wait until the stream is up, so the poke is not dropped.
    let deadline = tokio::time::Instant::now() + SOON;
    while handle.stats().connects == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A request at zero: waits, pokes.
    let addr = served.addr;
    let waiting = tokio::spawn(async move { get(&http1(), addr, "cold", "/").await });
    let poke = loop {
        let b = next(&mut batches).await;
        if b.stats.iter().any(|s| s.poke) {
            break b;
        }
    };
    assert_eq!(poke.source, "activator-test");
    let s = &poke.stats[0];
    assert_eq!(
        (s.namespace.as_str(), s.revision.as_str()),
        ("default", "cold")
    );
    assert_eq!((s.concurrency, s.window_ms), (1.0, 0));

    // The next periodic batch carries the waiting request as concurrency.
    let periodic = loop {
        let b = next(&mut batches).await;
        if let Some(s) = b.stats.iter().find(|s| !s.poke && s.revision == "cold") {
            break s.clone();
        }
    };
    assert!(periodic.concurrency > 0.5, "{periodic:?}");
    assert!(periodic.window_ms >= 50, "{periodic:?}");

    let backend = backend("warm").await;
    a.update_instances(&key("cold"), &[backend.addr]).unwrap();
    assert_eq!(waiting.await.unwrap().status, http::StatusCode::OK);
    let stats = handle.stats();
    assert_eq!(stats.pokes_sent, 1);
    assert!(stats.batches_sent >= 1);
}

#[tokio::test]
async fn reconnects_with_backoff_when_the_autoscaler_comes_and_goes() {
    // Reserve a port, then start the reporter before anything listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stats_addr = listener.local_addr().unwrap();
    drop(listener);

    // Periodic batches need traffic: a request held in flight through the proxy.
    let backend = backend("held").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("busy"), config(0));
    a.update_instances(&key("busy"), &[backend.addr]).unwrap();
    let addr = served.addr;
    let _held = tokio::spawn(async move { get(&http1(), addr, "busy", "/?sleep=60000").await });

    let reporter = Reporter::new(reporter_config(stats_addr)).unwrap();
    let handle = reporter.clone();
    let (_pokes_tx, pokes_rx) = mpsc::channel(1);
    let (stop_reporter, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(reporter.run(a.clone(), pokes_rx, async {
        let _ = stopped.await;
    }));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = handle.stats();
    assert!(before.failures >= 2, "connect attempts retried: {before:?}");
    assert_eq!(before.connects, 0);
    assert!(
        before.batches_dropped >= 1,
        "periods while away are dropped: {before:?}"
    );

    // The autoscaler appears: the reporter connects within its backoff and
    // numbers the batches of the stream from 1.
    let listener = TcpListener::bind(stats_addr).await.unwrap();
    let (mut batches, fail) = stats_server(listener);
    let first = next(&mut batches).await;
    assert_eq!(first.sequence, 1);
    assert_eq!(first.stats[0].revision, "busy");
    assert!(first.stats[0].concurrency > 0.5, "{first:?}");
    assert_eq!(next(&mut batches).await.sequence, 2);
    assert_eq!(handle.stats().connects, 1);

    // The stream fails (an autoscaler restart): the reporter reconnects and
    // batches flow again on a fresh stream.
    fail.send_replace(true);
    let deadline = tokio::time::Instant::now() + SOON;
    while handle.stats().failures <= before.failures {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure not noticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fail.send_replace(false);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let b = next(&mut batches).await;
        if b.sequence == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no fresh stream");
    }
    assert!(handle.stats().connects >= 2);

    stop_reporter.send(()).unwrap();
    tokio::time::timeout(SOON, run).await.unwrap().unwrap();
}
