//! The test backends and clients of `tests/support`, exercised directly (no Envoy): every
//! end-to-end test relies on them, so their behaviour is pinned down here first.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use support::{
    Backend, BackendOptions, ServingStatus, free_addr, free_port, get, get_h2c, grpc_health,
    grpc_health_check, send, start, wait_for, websocket_connect, websocket_echo,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "hello.default.example.com";
/// Generous bound for conditions that should hold almost at once.
const SOON: Duration = Duration::from_secs(10);

async fn echo_backend(name: &str) -> Backend {
    start(BackendOptions::new(name)).await
}

#[tokio::test]
async fn echo_over_http1() -> anyhow::Result<()> {
    let backend = echo_backend("echo-h1").await;
    let response = get(
        backend.addr,
        HOST,
        "/some/path?a=1&b=two",
        &[("x-test", "one"), ("X-Test", "two")],
    )
    .await?;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_11);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.backend(), Some("echo-h1"));
    let json = response.json();
    assert_eq!(json["name"], "echo-h1");
    assert_eq!(json["host"], HOST);
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["query"], "a=1&b=two");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["proto"], "HTTP/1.1");
    assert_eq!(json["protoMajor"], 1);
    assert_eq!(json["headers"]["x-test"], serde_json::json!(["one", "two"]));
    assert_eq!(json["headers"]["host"], serde_json::json!([HOST]));
    assert_eq!(backend.requests(), 1);
    Ok(())
}

#[tokio::test]
async fn echo_over_h2c() -> anyhow::Result<()> {
    let backend = echo_backend("echo-h2").await;
    let response = get_h2c(backend.addr, HOST, "/h2", &[("x-test", "yes")]).await?;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_2);
    assert_eq!(response.backend(), Some("echo-h2"));
    let json = response.json();
    assert_eq!(json["name"], "echo-h2");
    assert_eq!(json["host"], HOST, ":authority is reported as the host");
    assert_eq!(json["path"], "/h2");
    assert_eq!(json["query"], "");
    assert_eq!(json["proto"], "HTTP/2.0");
    assert_eq!(json["protoMajor"], 2);
    assert_eq!(json["headers"]["x-test"], serde_json::json!(["yes"]));
    Ok(())
}

#[tokio::test]
async fn echo_other_methods_and_status_override() -> anyhow::Result<()> {
    let backend = echo_backend("echo-post").await;
    let request = Request::post(format!("http://{HOST}/submit?status=418"))
        .header("content-type", "text/plain")
        .body(bytes::Bytes::from_static(b"payload"))?;
    let response = send(backend.addr, Version::HTTP_11, request).await?;
    assert_eq!(response.status, StatusCode::IM_A_TEAPOT);
    let json = response.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/submit");
    Ok(())
}

#[tokio::test]
async fn initial_timeout_delays_the_response_head() -> anyhow::Result<()> {
    let backend = echo_backend("slow-head").await;
    for h2 in [false, true] {
        let response = if h2 {
            get_h2c(backend.addr, HOST, "/?initialTimeout=300", &[]).await?
        } else {
            get(backend.addr, HOST, "/?initialTimeout=300", &[]).await?
        };
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            response.head_elapsed >= Duration::from_millis(300),
            "head after {:?} (h2: {h2})",
            response.head_elapsed
        );
        assert_eq!(response.json()["name"], "slow-head");
    }
    Ok(())
}

#[tokio::test]
async fn timeout_sends_the_head_first_and_the_body_later() -> anyhow::Result<()> {
    let backend = echo_backend("slow-body").await;
    for h2 in [false, true] {
        let response = if h2 {
            get_h2c(backend.addr, HOST, "/?timeout=400", &[]).await?
        } else {
            get(backend.addr, HOST, "/?timeout=400", &[]).await?
        };
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            response.elapsed >= Duration::from_millis(400),
            "body after {:?} (h2: {h2})",
            response.elapsed
        );
        // The head must not have waited for the body: it came well before the delay ran out.
        assert!(
            response.head_elapsed + Duration::from_millis(200) <= response.elapsed,
            "head after {:?}, body after {:?} (h2: {h2})",
            response.head_elapsed,
            response.elapsed
        );
        assert_eq!(response.json()["query"], "timeout=400");
    }
    Ok(())
}

#[tokio::test]
async fn both_delays_add_up() -> anyhow::Result<()> {
    let backend = echo_backend("slow-both").await;
    let response = get(backend.addr, HOST, "/?initialTimeout=200&timeout=200", &[]).await?;
    assert!(response.head_elapsed >= Duration::from_millis(200));
    assert!(response.elapsed >= Duration::from_millis(400));
    assert!(response.head_elapsed < response.elapsed);
    Ok(())
}

#[tokio::test]
async fn malformed_query_gets_400_and_the_backend_keeps_serving() -> anyhow::Result<()> {
    let backend = echo_backend("strict").await;
    for path in [
        "/?initialTimeout=soon",
        "/?timeout=-1",
        "/?status=99",
        "/?status=abc",
    ] {
        let response = get(backend.addr, HOST, path, &[]).await?;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(response.backend(), Some("strict"));
    }
    let response = get(backend.addr, HOST, "/?unknown=whatever&flag", &[]).await?;
    assert_eq!(response.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn fail_first_fails_exactly_the_first_requests() -> anyhow::Result<()> {
    let backend = start(BackendOptions::new("flaky").fail_first(2)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = get(backend.addr, HOST, "/", &[]).await?;
        assert_eq!(response.backend(), Some("flaky"));
        statuses.push(response.status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);
    assert_eq!(backend.requests(), 4);
    Ok(())
}

#[tokio::test]
async fn probe_echoes_the_hash() -> anyhow::Result<()> {
    // Probes are answered even while the backend fails its first requests or is slow.
    let backend = start(
        BackendOptions::new("probed")
            .fail_first(5)
            .delay(Duration::from_secs(30)),
    )
    .await;
    let response = get(
        backend.addr,
        HOST,
        "/healthz",
        &[
            ("K-Network-Probe", "probe"),
            ("K-Network-Hash", "abc123"),
            ("User-Agent", "Knative-Ingress-Probe"),
        ],
    )
    .await?;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("k-network-hash"), Some("abc123"));
    assert_eq!(response.text(), "probe ok");
    assert_eq!(response.backend(), Some("probed"));

    let h2 = get_h2c(
        backend.addr,
        HOST,
        "/healthz",
        &[("k-network-probe", "probe"), ("k-network-hash", "h2hash")],
    )
    .await?;
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.header("k-network-hash"), Some("h2hash"));
    Ok(())
}

#[tokio::test]
async fn websocket_echoes_exactly() -> anyhow::Result<()> {
    let backend = echo_backend("ws").await;
    let reply = websocket_echo(backend.addr, HOST, "/ws", "hello websocket").await?;
    assert_eq!(reply, "hello websocket");

    // Several messages, text and binary, on one connection.
    let mut ws = websocket_connect(backend.addr, HOST, "/any/path").await?;
    ws.send(Message::text("first")).await?;
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await?;
    ws.send(Message::text("")).await?;
    let mut replies = Vec::new();
    while replies.len() < 3 {
        match ws.next().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => replies.push(message),
            Some(Ok(_)) => {}
            other => anyhow::bail!("unexpected websocket event: {other:?}"),
        }
    }
    assert_eq!(
        replies,
        [
            Message::text("first"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text(""),
        ]
    );
    ws.close(None).await?;
    Ok(())
}

#[tokio::test]
async fn websocket_handshake_without_key_gets_400() -> anyhow::Result<()> {
    let backend = echo_backend("ws-strict").await;
    let response = get(
        backend.addr,
        HOST,
        "/ws",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
    )
    .await?;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn grpc_health_reports_serving_and_the_backend() -> anyhow::Result<()> {
    let backend = echo_backend("grpc-a").await;
    let (status, who) = grpc_health(backend.addr, HOST).await?;
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(who.as_deref(), Some("grpc-a"));

    backend.set_grpc_status(ServingStatus::NotServing).await;
    let (status, _) = grpc_health(backend.addr, HOST).await?;
    assert_eq!(status, ServingStatus::NotServing);

    // The :authority is the requested host, not the address connected to.
    let health = grpc_health_check(backend.addr, "grpc.default.example.com:8080", "").await?;
    assert_eq!(
        health.authority.as_deref(),
        Some("grpc.default.example.com:8080")
    );
    assert_eq!(health.backend.as_deref(), Some("grpc-a"));

    // Unknown services are a gRPC error (NOT_FOUND), not a transport failure.
    let err = grpc_health_check(backend.addr, HOST, "no.such.Service")
        .await
        .expect_err("unknown service");
    assert!(
        format!("{err:#}").contains("service not registered"),
        "{err:#}"
    );
    assert_eq!(backend.requests(), 4);
    Ok(())
}

#[tokio::test]
async fn max_in_flight_counts_concurrent_requests() -> anyhow::Result<()> {
    // Long enough that all six overlap even on a loaded machine.
    let delay = Duration::from_secs(1);
    let backend = start(BackendOptions::new("slow").delay(delay)).await;
    let addr = backend.addr;
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        calls.spawn(async move {
            if i % 2 == 0 {
                get(addr, HOST, "/", &[]).await
            } else {
                get_h2c(addr, HOST, "/", &[]).await
            }
        });
    }
    // While they all sleep in the backend, all six are in flight.
    wait_for("six requests in flight", SOON, || async {
        (backend.in_flight() == 6).then_some(())
    })
    .await;
    while let Some(result) = calls.join_next().await {
        let response = result??;
        assert_eq!(response.status, StatusCode::OK);
        assert!(response.elapsed >= delay);
    }
    assert!(started.elapsed() >= delay);
    assert_eq!(backend.requests(), 6);
    assert_eq!(backend.max_in_flight(), 6);
    wait_for("no request in flight", SOON, || async {
        (backend.in_flight() == 0).then_some(())
    })
    .await;

    // Sequential requests never overlap.
    let backend = echo_backend("sequential").await;
    for _ in 0..3 {
        get(backend.addr, HOST, "/", &[]).await?;
        wait_for("the request to finish", SOON, || async {
            (backend.in_flight() == 0).then_some(())
        })
        .await;
    }
    assert_eq!(backend.max_in_flight(), 1);
    assert_eq!(backend.requests(), 3);
    backend.reset_counters();
    assert_eq!((backend.requests(), backend.max_in_flight()), (0, 0));
    Ok(())
}

#[tokio::test]
async fn streaming_body_stays_in_flight_until_sent() -> anyhow::Result<()> {
    let backend = echo_backend("stream").await;
    let addr = backend.addr;
    let call = tokio::spawn(async move { get(addr, HOST, "/?timeout=300", &[]).await });
    wait_for("the request to be in flight", SOON, || async {
        (backend.in_flight() == 1).then_some(())
    })
    .await;
    call.await??;
    wait_for("the body to be finished", SOON, || async {
        (backend.in_flight() == 0).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn shutdown_releases_the_port_and_bind_restarts_on_it() -> anyhow::Result<()> {
    let backend = echo_backend("first").await;
    let addr = backend.addr;
    get(addr, HOST, "/", &[]).await?;
    backend.shutdown().await;
    assert!(
        get(addr, HOST, "/", &[]).await.is_err(),
        "port still serving"
    );

    let again = start(BackendOptions::new("second").bind(addr)).await;
    assert_eq!(again.addr, addr);
    let response = get(addr, HOST, "/", &[]).await?;
    assert_eq!(response.backend(), Some("second"));

    drop(again);
    wait_for("the dropped backend to stop", SOON, || async {
        match get(addr, HOST, "/", &[]).await {
            Ok(response) => Err(format!("still answering: {}", response.status)),
            Err(_) => Ok(()),
        }
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn free_ports_are_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    let addr = free_addr();
    let backend = start(BackendOptions::new("on-free-addr").bind(addr)).await;
    assert_eq!(backend.addr, addr);
}

#[tokio::test]
#[should_panic(expected = "waiting for the impossible")]
async fn wait_for_panics_with_the_last_error() {
    wait_for("the impossible", Duration::from_millis(100), || async {
        Err::<(), _>("never")
    })
    .await;
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_backend_keeps_serving() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(bytes).await?;
        let mut reply = Vec::new();
        // The server answers and closes: reading to the end must not hang.
        tokio::time::timeout(SOON, stream.read_to_end(&mut reply)).await??;
        Ok(reply)
    }

    let backend = echo_backend("sturdy").await;
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let reply = exchange(backend.addr, garbage).await?;
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "unexpected reply to {garbage:?}: {reply}"
        );
    }
    // A broken h2c frame after a valid preface: the server sends its SETTINGS, then GOAWAY
    // and closes.
    let reply = exchange(
        backend.addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04garbage-frame",
    )
    .await?;
    assert!(!reply.is_empty());

    let response = get(backend.addr, HOST, "/", &[]).await?;
    assert_eq!(response.status, StatusCode::OK);
    Ok(())
}
