//! Concurrency on the direct path from every gateway Envoy, with no queue-proxy: two real
//! Envoys (two `sluice gateway` processes over the same files) stream their stats to an
//! [`EnvoySink`] (`--metrics-sink`), and a known load through both — requests held open by
//! the backend — shows up as their sum for the revision.

use std::time::Duration;

use sluice_autoscaler::RevisionKey;
use sluice_autoscaler::envoy_sink::EnvoySink;
use sluice_serving::translate::names::service_of_stat_cluster;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;

use crate::support::gateway::{Gateway, backend_objects, simple_kingress, yaml};
use crate::support::{BackendOptions, start, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_through_two_envoys_adds_up_in_the_metrics_sink() {
    let sink = EnvoySink::new(|cluster| {
        service_of_stat_cluster(cluster, 80).map(|(ns, name)| RevisionKey::new(ns, name))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sink_addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(sink.clone().into_service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let backend = start(BackendOptions::new("hello-00001")).await;
    let files = [
        ("backend.yaml", backend_objects("hello-00001", backend.addr)),
        (
            "hello.yaml",
            yaml(&simple_kingress(
                "hello",
                "hello.example.com",
                "hello-00001",
            )),
        ),
    ];
    let flags = ["--metrics-sink", sink_addr.as_str()];
    let a = Gateway::start_with("sink-a", &files, &flags).await;
    let b = Gateway::start_with("sink-b", &files, &flags).await;
    a.wait_ready("hello").await;
    b.wait_ready("hello").await;
    let hello = RevisionKey::new("default", "hello-00001");
    wait_for(
        "both Envoys stream their stats",
        Duration::from_secs(20),
        || {
            let envoys = sink.view().envoys;
            async move { (envoys.len() == 2).then_some(()) }
        },
    )
    .await;

    // A known load: 3 requests held open through one Envoy, 2 through the other.
    async fn held(gw: &Gateway) -> anyhow::Result<u16> {
        let r = gw.get("hello.example.com", "/?initialTimeout=6000").await?;
        Ok(r.status.as_u16())
    }
    let load = futures::future::join_all([held(&a), held(&a), held(&a), held(&b), held(&b)]);
    let watch = wait_for(
        "the sink to show 5 requests in flight for the revision",
        Duration::from_secs(5),
        || {
            let stat = sink.take(Instant::now()).get(&hello).copied();
            let in_flight = backend.in_flight();
            async move {
                match stat {
                    Some(s) if s.concurrency == 5.0 && in_flight == 5 => Ok(s.concurrency),
                    other => Err(format!("sink {other:?}, backend holds {in_flight}")),
                }
            }
        },
    );
    let (statuses, concurrency) = tokio::join!(load, watch);
    assert_eq!(concurrency, 5.0);
    assert!(
        statuses.iter().all(|s| s.as_ref().is_ok_and(|s| *s == 200)),
        "{statuses:?}"
    );

    // Done: back to nothing in flight, and the five requests counted.
    wait_for(
        "the sink to show nothing in flight",
        Duration::from_secs(5),
        || {
            let stat = sink.take(Instant::now()).get(&hello).copied();
            async move { stat.filter(|s| s.concurrency == 0.0) }
        },
    )
    .await;
    let view = sink.view();
    assert_eq!(view.revisions, 1, "only the revision's cluster: {view:?}");
    eprintln!(
        "metrics sink: {} messages, {} metric families, {} bytes ({:.0} bytes per family) from 2 Envoys serving 1 KIngress",
        view.messages,
        view.families,
        view.bytes,
        view.bytes as f64 / view.families.max(1) as f64
    );
    a.stop().await;
    b.stop().await;
    server.abort();
}
