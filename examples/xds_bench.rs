//! Benchmark: push → ACK latency of one changed resource among N, against a
//! real Envoy, for Delta and SotW ADS.
//!
//! For each N (number of EDS clusters, each with its ClusterLoadAssignment,
//! plus one listener and one small RouteConfiguration) and each xDS variant it
//! starts our xDS server and a real Envoy, waits for the initial sync, then
//! repeatedly changes (a) one ClusterLoadAssignment and (b) the small
//! RouteConfiguration, measuring from `SnapshotCache::update` until Envoy's
//! ACK of that generation arrives, and the bytes sent per change.
//!
//! ```text
//! cargo run --release --example xds_bench -- [--sizes 100,1000,10000] [--iters 200] [--modes delta,sotw]
//! ```
//! Results are recorded in BENCHMARKS.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use sluice::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use sluice_xds::builders::{
    eds_cluster, http_listener, load_assignment, route_config, virtual_host, weighted_route,
};
use sluice_xds::resource::{CLUSTER, ENDPOINT, ROUTE};
use sluice_xds::{EventKind, Resource, SnapshotCache, Update, XdsServer, single_group};

const GROUP: &str = "bench";

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn endpoint(i: usize, salt: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], (10_000 + (i * 7 + salt) % 50_000) as u16))
}

fn route(target: usize) -> Resource {
    let c = format!("c{target}");
    Resource::new(
        "routes",
        &route_config(
            "routes",
            vec![virtual_host(
                "bench",
                &["bench.example.com"],
                vec![weighted_route("/", &[(&c, 100)])],
            )],
        ),
    )
}

struct Result {
    mode: XdsMode,
    n: usize,
    initial: Duration,
    eds: Histogram<u64>,
    eds_bytes: u64,
    rds: Histogram<u64>,
    rds_bytes: u64,
}

async fn run(mode: XdsMode, n: usize, iters: usize) -> anyhow::Result<Result> {
    let cache = SnapshotCache::new();
    let mut resources = vec![
        Resource::new("http", &http_listener("http", free_addr()?, "routes")),
        route(0),
    ];
    for i in 0..n {
        let name = format!("c{i}");
        resources.push(Resource::new(&name, &eds_cluster(&name, false)));
        resources.push(Resource::new(
            &name,
            &load_assignment(&name, &[endpoint(i, 0)]),
        ));
    }
    let first = cache.set_snapshot(GROUP, resources)?;

    let server = XdsServer::new(cache.clone(), single_group(GROUP));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let xds = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.clone().serve(listener, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let dir =
        std::env::temp_dir().join(format!("sluice-bench-{}-{}-{n}", std::process::id(), mode));
    let yaml = render(&BootstrapParams {
        node_id: "bench".into(),
        xds,
        mode,
        admin: free_addr()?,
        ..BootstrapParams::default()
    });
    let mut cfg = LaunchConfig::new(find_envoy(None)?, yaml, &dir);
    cfg.log_level = "error".into();
    cfg.extra_args = vec!["--concurrency".into(), "1".into()];
    let started = Instant::now();
    let envoy = Envoy::start(cfg).await?;
    let nodes = server.nodes().clone();
    let last = format!("c{}", n - 1);
    tokio::time::timeout(Duration::from_secs(300), async {
        nodes
            .wait_acked("bench", ENDPOINT, &last, first.generation)
            .await;
        nodes
            .wait_acked("bench", CLUSTER, &last, first.generation)
            .await;
        nodes
            .wait_acked("bench", ROUTE, "routes", first.generation)
            .await;
    })
    .await
    .context("Envoy did not ACK the initial snapshot within 300 s")?;
    let initial = started.elapsed();

    let mut eds = Histogram::<u64>::new(3)?;
    let mut rds = Histogram::<u64>::new(3)?;
    let (mut eds_bytes, mut rds_bytes) = (0u64, 0u64);
    for it in 0..iters {
        for (kind, hist, bytes) in [
            ("eds", &mut eds, &mut eds_bytes),
            ("rds", &mut rds, &mut rds_bytes),
        ] {
            let i = (it * 31) % n;
            let r = if kind == "eds" {
                let name = format!("c{i}");
                Resource::new(&name, &load_assignment(&name, &[endpoint(i, it + 1)]))
            } else {
                route(i)
            };
            let (type_url, name) = (r.type_url().to_string(), r.name().to_string());
            let mut events = nodes.events();
            let t = Instant::now();
            let applied = cache.update(GROUP, Update::new().upsert(r))?;
            if applied.changed == 0 {
                continue;
            }
            tokio::time::timeout(
                Duration::from_secs(30),
                nodes.wait_acked("bench", &type_url, &name, applied.generation),
            )
            .await
            .with_context(|| format!("no ACK for {kind} change {it}"))?;
            hist.record(t.elapsed().as_micros() as u64)?;
            while let Ok(e) = events.try_recv() {
                if e.kind == EventKind::Push {
                    *bytes += e.bytes as u64;
                }
            }
        }
    }
    envoy.stop().await;
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let _ = std::fs::remove_dir_all(dir);
    let (ne, nr) = (eds.len().max(1), rds.len().max(1));
    Ok(Result {
        mode,
        n,
        initial,
        eds,
        eds_bytes: eds_bytes / ne,
        rds,
        rds_bytes: rds_bytes / nr,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sizes = vec![100usize, 1000, 10_000];
    let mut iters = 200usize;
    let mut modes = vec![XdsMode::Delta, XdsMode::Sotw];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--sizes" => {
                sizes = v
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--iters" => iters = v.parse()?,
            "--modes" => {
                modes = v
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<std::result::Result<_, _>>()?
            }
            _ => bail!("unknown flag {a}: use --sizes, --iters, --modes"),
        }
    }
    println!(
        "| mode | N clusters (+N CLAs) | initial sync | CLA change p50 / p99 / max (ms) | bytes per CLA change | route change p50 / p99 / max (ms) | bytes per route change |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for &mode in &modes {
            eprintln!("running {mode} with N={n} ({iters} changes of each kind)…");
            let r = run(mode, n, iters).await?;
            println!(
                "| {} | {} | {:.2} s | {} / {} / {} | {} | {} / {} / {} | {} |",
                r.mode,
                r.n,
                r.initial.as_secs_f64(),
                ms(r.eds.value_at_quantile(0.5)),
                ms(r.eds.value_at_quantile(0.99)),
                ms(r.eds.max()),
                r.eds_bytes,
                ms(r.rds.value_at_quantile(0.5)),
                ms(r.rds.value_at_quantile(0.99)),
                ms(r.rds.max()),
                r.rds_bytes,
            );
        }
    }
    Ok(())
}
