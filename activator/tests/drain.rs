//! Shutdown: draining finishes in-flight requests within a bounded grace.

mod support;

use std::time::Duration;

use http::StatusCode;
use sluice_activator::ActivatorConfig;
use support::*;
use tokio::time::Instant;

/// Generous bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn drain_finishes_in_flight_requests_and_refuses_new_ones() {
    let backend = backend("drain").await;
    let mut served = serve_activator(ActivatorConfig {
        drain_grace: Duration::from_secs(10),
        ..ActivatorConfig::default()
    })
    .await;
    let a = served.activator.clone();
    a.set_revision(key("drain"), config(0));
    a.update_instances(&key("drain"), &[backend.addr]).unwrap();

    let client = http1();
    let addr = served.addr;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, addr, "drain", "/?sleep=400").await }
    });
    while backend
        .counts
        .in_flight
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.shutdown();
    let resp = slow.await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "in-flight request finished");
    let done = served.done.take().unwrap();
    tokio::time::timeout(SOON, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn drain_grace_bounds_the_wait() {
    let backend = backend("stuck").await;
    let mut served = serve_activator(ActivatorConfig {
        drain_grace: Duration::from_millis(200),
        ..ActivatorConfig::default()
    })
    .await;
    let a = served.activator.clone();
    a.set_revision(key("stuck"), config(0));
    a.update_instances(&key("stuck"), &[backend.addr]).unwrap();
    let addr = served.addr;
    let _stuck = tokio::spawn(async move { get(&http1(), addr, "stuck", "/?sleep=60000").await });
    while backend
        .counts
        .in_flight
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    served.shutdown();
    served.done.take().unwrap().await.unwrap().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}
