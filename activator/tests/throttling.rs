//! Throttling through the real proxy: containerConcurrency per instance,
//! buffering at zero and the poke, queue bounds under floods, probing.

mod support;

use std::time::Duration;

use futures::future::join_all;
use http::StatusCode;
use sluice_activator::{ActivatorConfig, RevisionConfig, ThrottlerConfig};
use support::*;
use tokio::time::Instant;

/// Generous bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn container_concurrency_one_never_overlaps_on_an_instance() {
    let (b1, b2) = (backend("b1").await, backend("b2").await);
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(key("cc1"), config(1));
    a.update_instances(&key("cc1"), &[b1.addr, b2.addr])
        .unwrap();

    let client = http1();
    let results = join_all((0..30).map(|_| get(&client, served.addr, "cc1", "/?sleep=20"))).await;
    assert!(results.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(b1.requests() + b2.requests(), 30);
    assert_eq!(b1.max_in_flight(), 1, "b1 saw concurrent requests");
    assert_eq!(b2.max_in_flight(), 1, "b2 saw concurrent requests");
    assert!(b2.requests() > 0, "both instances used under load");
    let stats = a.throttler().stats();
    assert_eq!(stats.admitted, 30);
    assert!(
        stats.waited > 0,
        "at cc = 1 most requests waited their turn"
    );
}

#[tokio::test]
async fn requests_buffered_at_zero_complete_when_an_instance_arrives() {
    let mut served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("cold"), config(0));

    let client = http1();
    let addr = served.addr;
    let pending: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr, "cold", "/").await })
        })
        .collect();
    let poke = tokio::time::timeout(SOON, served.pokes.recv())
        .await
        .unwrap();
    assert_eq!(poke, Some(key("cold")));
    let deadline = Instant::now() + SOON;
    while a.throttler().stats().queued < 10 {
        assert!(Instant::now() < deadline, "requests did not queue");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        a.in_flight(&key("cold")),
        10,
        "waiting requests count as concurrency"
    );

    // "Scale from zero": the instance comes up and is registered.
    let backend = backend("warm").await;
    a.update_instances(&key("cold"), &[backend.addr]).unwrap();
    for p in pending {
        let resp = p.await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.headers["x-backend"], "warm");
    }
    assert!(served.pokes.try_recv().is_err(), "poked once");
    assert_eq!(a.throttler().stats().pokes, 1);
}

#[tokio::test]
async fn full_queue_is_503_at_once() {
    let served = serve_activator(ActivatorConfig {
        throttler: ThrottlerConfig {
            revision_queue: 2,
            global_queue: 100,
        },
        ..ActivatorConfig::default()
    })
    .await;
    let a = served.activator.clone();
    a.set_revision(key("full"), config(0));
    let client = http1();
    let addr = served.addr;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr, "full", "/").await })
        })
        .collect();
    while a.throttler().stats().queued < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let resp = get(&client, addr, "full", "/").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.body,
        "overloaded: queue full for revision default/full\n"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    for w in waiting {
        w.abort();
    }
}

#[tokio::test]
async fn no_capacity_within_the_timeout_is_503() {
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = &served.activator;
    a.set_revision(
        key("slow-start"),
        RevisionConfig {
            timeout: Duration::from_millis(200),
            ..config(0)
        },
    );
    let resp = get(&http1(), served.addr, "slow-start", "/").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        resp.body
            .starts_with("no capacity for revision default/slow-start within 0.2"),
        "{}",
        resp.body
    );
    assert_eq!(a.throttler().stats().timed_out, 1);
    assert_eq!(a.throttler().stats().queued, 0);
}

#[tokio::test]
async fn new_instances_get_traffic_only_once_they_accept_connections() {
    let live = backend("live").await;
    let later = dead_addr().await;
    let served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("probed"), config(0));
    a.update_instances(&key("probed"), &[later, live.addr])
        .unwrap();
    let client = http1();
    for _ in 0..10 {
        let resp = get(&client, served.addr, "probed", "/").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        assert_eq!(resp.headers["x-backend"], "live");
    }
    assert_eq!(a.probing(&key("probed")), vec![later]);

    // The instance starts listening: within a probe interval it is in use.
    let started = backend_on("started", later).await;
    let deadline = Instant::now() + SOON;
    while !a.probing(&key("probed")).is_empty() {
        assert!(Instant::now() < deadline, "probe never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = join_all((0..20).map(|_| get(&client, served.addr, "probed", "/"))).await;
    assert!(results.iter().all(|r| r.status == StatusCode::OK));
    assert!(started.requests() > 0, "probed instance gets traffic");
    // Still-listed instances are not probed again on updates.
    a.update_instances(&key("probed"), &[live.addr, later])
        .unwrap();
    assert!(a.probing(&key("probed")).is_empty());
    assert_eq!(
        a.throttler()
            .revision_stats(&key("probed"))
            .unwrap()
            .instances
            .len(),
        2
    );
}

#[tokio::test]
async fn a_flood_is_shed_fast_and_the_queue_stays_bounded() {
    const BOUND: usize = 20;
    const FLOOD: usize = 400;
    let served = serve_activator(ActivatorConfig {
        throttler: ThrottlerConfig {
            revision_queue: BOUND,
            global_queue: BOUND,
        },
        ..ActivatorConfig::default()
    })
    .await;
    let a = served.activator.clone();
    a.set_revision(key("flood"), config(1));

    let client = http1();
    let addr = served.addr;
    let start = Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr, "flood", "/").await })
        })
        .collect();
    // Everything beyond the bound is answered 503 while the rest wait.
    let deadline = Instant::now() + SOON;
    loop {
        let s = a.throttler().stats();
        assert!(s.queued <= BOUND, "queue {} over bound", s.queued);
        if s.rejected as usize == FLOOD - BOUND && s.queued == BOUND {
            break;
        }
        assert!(Instant::now() < deadline, "flood not settled: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed_in = start.elapsed();
    assert!(
        shed_in < Duration::from_secs(5),
        "shedding took {shed_in:?}"
    );
    let stats = a.throttler().stats();
    assert_eq!(stats.peak_queued, BOUND);

    // Capacity arrives: the waiting ones are served, the rest got 503.
    let backend = backend("flood").await;
    a.update_instances(&key("flood"), &[backend.addr]).unwrap();
    let mut ok = 0;
    let mut shed = 0;
    for r in join_all(flood).await {
        match r.unwrap().status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, shed), (BOUND, FLOOD - BOUND));
    assert_eq!(backend.max_in_flight(), 1);
    assert_eq!(a.throttler().stats().peak_queued, BOUND);
}

#[tokio::test]
async fn a_burst_of_100_at_zero_all_succeed_within_container_concurrency() {
    let mut served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    a.set_revision(key("burst"), config(1));
    let client = http1();
    let addr = served.addr;
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr, "burst", "/?sleep=5").await })
        })
        .collect();
    assert_eq!(
        tokio::time::timeout(SOON, served.pokes.recv())
            .await
            .unwrap(),
        Some(key("burst"))
    );
    let instances = [
        backend("i1").await,
        backend("i2").await,
        backend("i3").await,
    ];
    a.update_instances(
        &key("burst"),
        &instances.iter().map(|b| b.addr).collect::<Vec<_>>(),
    )
    .unwrap();
    for r in join_all(burst).await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    for b in &instances {
        assert_eq!(b.max_in_flight(), 1, "cc = 1 held");
    }
    assert_eq!(instances.iter().map(Backend::requests).sum::<usize>(), 100);
    assert!(served.pokes.try_recv().is_err(), "one poke for the burst");
}

#[tokio::test]
async fn twenty_revisions_woken_at_once_all_answer() {
    let mut served = serve_activator(ActivatorConfig::default()).await;
    let a = served.activator.clone();
    let names: Vec<String> = (0..20).map(|i| format!("svc{i}-00001")).collect();
    for n in &names {
        a.set_revision(key(n), config(0));
    }
    let client = http1();
    let addr = served.addr;
    let waiting: Vec<_> = names
        .iter()
        .map(|n| {
            let (client, n) = (client.clone(), n.clone());
            tokio::spawn(async move { get(&client, addr, &n, "/").await })
        })
        .collect();
    let mut poked = Vec::new();
    while poked.len() < 20 {
        let k = tokio::time::timeout(SOON, served.pokes.recv())
            .await
            .unwrap()
            .unwrap();
        poked.push(k.name);
    }
    poked.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(poked, expected, "each revision poked once");
    let backend = backend("shared").await;
    for n in &names {
        a.update_instances(&key(n), &[backend.addr]).unwrap();
    }
    for r in join_all(waiting).await {
        assert_eq!(r.unwrap().status, StatusCode::OK);
    }
    assert_eq!(backend.requests(), 20);
}
