//! The activator's proxy path on loopback: real hyper clients → activator →
//! small hyper backends. Forwarding, headers, protocols, error statuses.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sluice_activator::{ActivatorConfig, RevisionConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Generous bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn proxies_to_the_instance_and_marks_the_request() {
    let backend = backend("one").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(key("hello-00001"), config(0));
    a.update_instances(&key("hello-00001"), &[backend.addr])
        .unwrap();

    let client = http1();
    let req = request(served.addr, "hello-00001", "/some/path?x=1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("x-kept", "kept")
        .body(empty())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-backend"], "one");
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(body.starts_with("GET /some/path?x=1\n"), "{body}");
    assert!(body.contains("k-proxy-request: activator\n"), "{body}");
    assert!(body.contains("host: hello.default.example.com\n"), "{body}");
    assert!(body.contains("x-kept: kept\n"), "{body}");
    assert!(
        !body.contains("x-hop"),
        "hop-by-hop header forwarded: {body}"
    );
    assert_eq!(backend.requests(), 1);

    // The request was counted for the revision.
    let reports = a.collect_stats(Instant::now());
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].revision, key("hello-00001"));
    assert_eq!(reports[0].stat.requests, 1);
    assert!(reports[0].stat.concurrency > 0.0);
    assert_eq!(a.in_flight(&key("hello-00001")), 0);
}

#[tokio::test]
async fn unknown_or_unnamed_revision_is_404() {
    let served = serve_activator(ActivatorConfig::default()).await;
    let client = http1();
    let resp = get(&client, served.addr, "nope-00001", "/").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.body, "unknown revision default/nope-00001\n");
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");

    let req = http::Request::builder()
        .uri(format!("http://{}/", served.addr))
        .body(empty())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn slow_instance_is_504() {
    let backend = backend("slow").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(
        key("slow"),
        RevisionConfig {
            timeout: Duration::from_millis(300),
            ..config(1)
        },
    );
    a.update_instances(&key("slow"), &[backend.addr]).unwrap();
    let start = Instant::now();
    let resp = get(&http1(), served.addr, "slow", "/?sleep=5000").await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        resp.body,
        "revision default/slow did not respond within 0.300s\n"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // The slot came back: the next request is admitted at once.
    let stats = a.throttler().revision_stats(&key("slow")).unwrap();
    assert_eq!(stats.instances, vec![(backend.addr, 0)]);
}

#[tokio::test]
async fn failing_instance_is_502() {
    let (rude, _task) = rude_backend().await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(key("rude"), config(0));
    a.update_instances(&key("rude"), &[rude]).unwrap();
    let resp = get(&http1(), served.addr, "rude", "/").await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(
        resp.body
            .starts_with("upstream of revision default/rude failed: "),
        "{}",
        resp.body
    );
    assert!(
        !resp.body.contains("127.0.0.1"),
        "no internal address: {}",
        resp.body
    );
}

#[tokio::test]
async fn unprobed_instance_down_is_502() {
    let dead = dead_addr().await;
    let served = serve_activator(ActivatorConfig {
        probe_interval: None,
        ..ActivatorConfig::default()
    })
    .await;
    let a = &served.activator;
    a.set_revision(key("down"), config(0));
    a.update_instances(&key("down"), &[dead]).unwrap();
    let resp = get(&http1(), served.addr, "down", "/").await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(resp.body.contains("Connection refused"), "{}", resp.body);
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_and_holds_its_slot() {
    let backend = backend("ws").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("ws"), config(1));
    a.update_instances(&key("ws"), &[backend.addr]).unwrap();

    let req = request(served.addr, "ws", "/socket")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(empty())
        .unwrap();
    let mut resp = http1().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "echo");
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    for msg in ["hello", "again"] {
        io.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(SOON, io.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, msg.as_bytes());
    }
    // While the socket is open its slot is taken (cc = 1).
    let stats = a.throttler().revision_stats(&key("ws")).unwrap();
    assert_eq!(stats.instances, vec![(backend.addr, 1)]);
    drop(io);
    let deadline = Instant::now() + SOON;
    loop {
        let stats = a.throttler().revision_stats(&key("ws")).unwrap();
        if stats.instances == vec![(backend.addr, 0)] {
            break;
        }
        assert!(Instant::now() < deadline, "slot not released: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn h2c_streaming_post_flows_both_ways_with_trailers() {
    let backend = backend("grpc").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(
        key("grpc"),
        RevisionConfig {
            h2c: true,
            ..config(0)
        },
    );
    a.update_instances(&key("grpc"), &[backend.addr]).unwrap();

    let (tx, body) = channel_body();
    let req = request(served.addr, "grpc", "/stream")
        .method("POST")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(SOON, h2c().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let mut body = resp.into_body();
    // Each chunk comes back before the next is sent: nothing is buffered whole.
    for chunk in ["ping-1", "ping-2", "ping-3"] {
        tx.send(Bytes::from(chunk)).await.unwrap();
        let frame = tokio::time::timeout(SOON, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    drop(tx);
    let trailers = tokio::time::timeout(SOON, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(trailers.into_trailers().unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn upstream_protocol_follows_the_revision_not_the_client() {
    let backend = backend("proto").await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(
        key("h2"),
        RevisionConfig {
            h2c: true,
            ..config(0)
        },
    );
    a.set_revision(key("h1"), config(0));
    a.update_instances(&key("h2"), &[backend.addr]).unwrap();
    a.update_instances(&key("h1"), &[backend.addr]).unwrap();

    // HTTP/1.1 in, h2 prior knowledge out (an h2c revision).
    let resp = get(&http1(), served.addr, "h2", "/").await;
    assert!(resp.body.contains("version: HTTP/2.0\n"), "{}", resp.body);
    assert!(
        resp.body.contains("host: hello.default.example.com\n"),
        "{}",
        resp.body
    );
    // h2c in, HTTP/1.1 out; Host comes from the h2 client's authority.
    let req = http::Request::builder()
        .uri(format!("http://{}/", served.addr))
        .header("knative-serving-namespace", "default")
        .header("knative-serving-revision", "h1")
        .body(empty())
        .unwrap();
    let resp = h2c().request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(body.contains("version: HTTP/1.1\n"), "{body}");
    assert!(body.contains(&format!("host: {}\n", served.addr)), "{body}");
}
