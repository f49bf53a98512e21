//! The stats port (`--stats`) is open only while this replica decides.
//!
//! Envoy's gRPC client keeps its HTTP/2 connection when a stream ends, and reopens the stream
//! on it: a replica that merely ended its streams on losing the Lease would get them back.
//! So a replica that does not decide does not listen at all; on losing the Lease it ends
//! its streams ([`EnvoySink::close_streams`], [`StatsIngest::close_streams`]) and shuts the
//! server down, which closes the connections. Envoys and activators then connect anew,
//! through the `sluice-autoscaler` Service, and only the leader accepts.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_autoscaler::StatsIngest;
use sluice_autoscaler::envoy_sink::EnvoySink;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

/// How long a replica that stopped deciding waits for its connections to close.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves the Envoys' metrics sink and the activators' Stats on `addr` while `leader` says
/// this replica decides; returns when `leader`'s sender is gone.
pub async fn stats_while_leading(
    addr: SocketAddr,
    sink: EnvoySink,
    ingest: StatsIngest,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "stats port: cannot listen; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        sink.accept_streams();
        ingest.accept_streams();
        // One signal: the streams end first (else the graceful shutdown would wait on them),
        // then the server stops; connections get DRAIN to go.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tonic::transport::Server::builder()
            .add_service(sink.clone().into_service())
            .add_service(ingest.clone().into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_rx.await;
            });
        let mut ending = leader.clone();
        let closer = async {
            let _ = ending.wait_for(|leads| !*leads).await;
            sink.close_streams();
            ingest.close_streams();
            let _ = stop_tx.send(());
            // A connection that ignores its GOAWAY must not keep this replica from listening
            // again when it leads.
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            res = served => if let Err(e) = res {
                tracing::warn!(%addr, error = %e, "stats port failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
            () = closer => {}
        }
        tracing::info!(%addr, "stats port closed (this replica does not decide)");
    }
}

#[cfg(test)]
mod tests {
    use sluice_proto::autoscaler::v1::stats_client::StatsClient;
    use sluice_proto::autoscaler::v1::{RevisionStat, StatBatch};

    use super::*;

    async fn free_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// Polls `f` every 20 ms until it gives a value (at most 5 s).
    async fn until<T, F, Fut>(mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(v) = f().await {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("in time")
    }

    async fn connects(addr: SocketAddr) -> bool {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    }

    #[tokio::test]
    async fn only_the_leader_listens_and_losing_the_lease_ends_streams_and_connections() {
        let addr = free_addr().await;
        let (ingest, mut reports) = StatsIngest::new(16);
        let (leader_tx, leader) = watch::channel(false);
        let task = tokio::spawn(stats_while_leading(
            addr,
            crate::autoscaler::revision_sink(),
            ingest,
            leader,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !connects(addr).await,
            "a replica that does not decide does not listen"
        );

        leader_tx.send_replace(true);
        let channel = until(|| async {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .ok()
        })
        .await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = StatsClient::new(channel);
        let call = tokio::spawn(async move {
            client
                .report(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        tx.send(StatBatch {
            source: "a0".into(),
            sequence: 1,
            stats: vec![RevisionStat {
                namespace: "default".into(),
                revision: "hello-00001".into(),
                concurrency: 1.0,
                requests: 1.0,
                ..RevisionStat::default()
            }],
        })
        .await
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), reports.recv())
            .await
            .expect("ingested")
            .expect("a report");
        assert_eq!(got.source, "a0");

        leader_tx.send_replace(false);
        let ended = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the stream ends")
            .unwrap();
        assert_eq!(
            ended.expect_err("ended by the server").code(),
            tonic::Code::Unavailable
        );
        until(|| async { (!connects(addr).await).then_some(()) }).await;

        // Leading again: listening again.
        leader_tx.send_replace(true);
        until(|| async { connects(addr).await.then_some(()) }).await;
        task.abort();
    }
}
