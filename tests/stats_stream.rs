//! The stat stream between separate processes' worth of parts: the activator's gRPC
//! `Reporter` streaming to the autoscaler's `StatsIngest` over a real loopback connection, with
//! a real request held by the activator at zero (its poke) and then served by a real backend.

mod support;

use std::time::Duration;

use sluice_activator::{
    Activator, ActivatorConfig, NAMESPACE_HEADER, REVISION_HEADER, Reporter, ReporterConfig,
    RevisionConfig, RevisionKey,
};
use sluice_autoscaler::{Report, StatsIngest};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;

const SOON: Duration = Duration::from_secs(10);

async fn next_report(
    rx: &mut mpsc::Receiver<Report>,
    what: &str,
    f: impl Fn(&Report) -> bool,
) -> Report {
    tokio::time::timeout(SOON, async {
        loop {
            let r = rx.recv().await.expect("the ingest channel stays open");
            if f(&r) {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {SOON:?}"))
}

/// The autoscaler's side on `listener`: what it ingests arrives on the receiver.
fn start_ingest(listener: TcpListener) -> (StatsIngest, mpsc::Receiver<Report>) {
    let (ingest, reports) = StatsIngest::new(64);
    let server_ingest = ingest.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server_ingest.into_service())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    (ingest, reports)
}

/// The activator's side: `revision` (no instance yet) served on a loopback port, its reporter
/// streaming to `stats` as `source` (reconnecting every 200 ms at most). Sending `true` stops
/// the reporter.
async fn start_activator(
    stats: std::net::SocketAddr,
    source: &str,
    revision: &RevisionKey,
) -> (Activator, std::net::SocketAddr, watch::Sender<bool>) {
    let (activator, pokes) = Activator::new(ActivatorConfig::default());
    activator.set_revision(revision.clone(), RevisionConfig::default());
    let reporter = Reporter::new(ReporterConfig {
        interval: Duration::from_millis(200),
        backoff_max: Duration::from_millis(200),
        ..ReporterConfig::new(format!("http://{stats}"), source)
    })
    .expect("valid endpoint");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(reporter.run(activator.clone(), pokes, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = activator.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    (activator, addr, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activator_streams_pokes_and_load_to_the_autoscaler() {
    let stats_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stats_addr = stats_listener.local_addr().unwrap();
    let (ingest, mut reports) = start_ingest(stats_listener);
    let key = RevisionKey::new("default", "hello-00001");
    let (activator, activator_addr, stop_tx) =
        start_activator(stats_addr, "activator-e2e", &key).await;

    // A request at zero is held, and pokes the autoscaler through the stream.
    let request = tokio::spawn(async move {
        support::get(
            activator_addr,
            "hello.default.example.com",
            "/",
            &[
                (NAMESPACE_HEADER, "default"),
                (REVISION_HEADER, "hello-00001"),
            ],
        )
        .await
    });
    let poke = next_report(&mut reports, "poke", |r| r.poke).await;
    assert_eq!(poke.revision, key);
    assert_eq!(poke.source, "activator-e2e");

    // An instance arrives; the held request is served.
    let backend = support::start(support::BackendOptions::new("hello")).await;
    activator
        .update_instances(&key, &[backend.addr])
        .expect("registered revision");
    let response = request.await.expect("task").expect("request answered");
    assert_eq!(response.status, 200, "{}", response.text());

    // The period's figures carry the request: time-averaged concurrency and one arrival.
    let load = next_report(&mut reports, "periodic report with load", |r| {
        !r.poke && r.stat.requests >= 1.0
    })
    .await;
    assert_eq!(load.revision, key);
    assert!(load.stat.concurrency > 0.0, "{load:?}");
    assert!(ingest.batches() >= 2);
    assert_eq!(ingest.dropped(), 0);
    stop_tx.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_made_while_the_autoscaler_is_away_arrives_when_it_is_back() {
    // The activator starts first; its autoscaler is not listening yet.
    let stats_addr = support::ports::free_addr();
    let key = RevisionKey::new("default", "late-00001");
    let (activator, activator_addr, stop_tx) =
        start_activator(stats_addr, "activator-late", &key).await;
    let _request = tokio::spawn(async move {
        support::get(
            activator_addr,
            "late.default.example.com",
            "/",
            &[
                (NAMESPACE_HEADER, "default"),
                (REVISION_HEADER, "late-00001"),
            ],
        )
        .await
    });
    // The request waits at zero (its poke is made now, with no link).
    wait_in_flight(&activator, &key).await;
    // The autoscaler comes up: the poke arrives.
    let (_ingest, mut reports) = start_ingest(TcpListener::bind(stats_addr).await.unwrap());
    let poke = next_report(&mut reports, "poke", |r| r.poke).await;
    assert_eq!(poke.revision, key);
    stop_tx.send_replace(true);
}

/// Waits until the activator holds a request for `key`.
async fn wait_in_flight(activator: &Activator, key: &RevisionKey) {
    support::wait_for("a request held at zero", SOON, || async {
        (activator.in_flight(key) > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_deciding_ends_the_open_streams() {
    use sluice_proto::autoscaler::v1::stats_client::StatsClient;
    use sluice_proto::autoscaler::v1::{RevisionStat, StatBatch};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ingest, mut reports) = start_ingest(listener);
    let mut client = StatsClient::connect(format!("http://{addr}"))
        .await
        .expect("connected");
    let (tx, rx) = mpsc::channel(4);
    let batch = StatBatch {
        source: "activator-0".into(),
        stats: vec![RevisionStat {
            namespace: "default".into(),
            revision: "hello-00001".into(),
            concurrency: 1.0,
            requests: 1.0,
            window_ms: 1000,
            poke: true,
        }],
        ..StatBatch::default()
    };
    tx.send(batch).await.expect("queued");
    let call = tokio::spawn(async move {
        client
            .report(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    next_report(&mut reports, "the poke", |r| r.poke).await;

    // The stream is still open (`tx` lives); closing ends it for the client to reconnect.
    ingest.close_streams();
    let ended = tokio::time::timeout(SOON, call)
        .await
        .expect("ended in time")
        .expect("no panic");
    assert_eq!(
        ended.expect_err("ended by the server").code(),
        tonic::Code::Unavailable
    );
    drop(tx);
}
