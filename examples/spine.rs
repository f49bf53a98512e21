//! The xDS spine, live: Sluice's control plane drives a real Envoy.
//!
//! Starts two tiny HTTP backends ("blue" and "green"), the xDS server (ADS,
//! CSDS, dump service, reflection) on `--xds`, the debug HTTP server
//! (`/metrics`, `/healthz`, `/status`) on `--debug`, and Envoy with a listener
//! on `--http`. Then it shifts the split blue → green in steps, sending real
//! requests through Envoy at each step and printing who answered, and moves
//! the blue backend to a new port with an endpoint-only (EDS) change.
//!
//! `scripts/demo.sh` runs it. With `--hold` it keeps serving afterwards so you
//! can look around (`sluice xds nodes`, `sluice xds dump`, `grpcurl`, `curl`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use sluice_xds::builders::{
    eds_cluster, http_listener, load_assignment, route_config, virtual_host, weighted_route,
};
use sluice_xds::{Metrics, Resource, SnapshotCache, Update, XdsServer, single_group};

const GROUP: &str = "demo";
const HOST: &str = "hello.demo.example.com";

struct Args {
    http: SocketAddr,
    xds: SocketAddr,
    debug: SocketAddr,
    envoy_admin: SocketAddr,
    mode: XdsMode,
    hold: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        http: "127.0.0.1:8080".parse()?,
        xds: "127.0.0.1:18000".parse()?,
        debug: "127.0.0.1:9090".parse()?,
        envoy_admin: "127.0.0.1:9901".parse()?,
        mode: XdsMode::Delta,
        hold: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--http" => a.http = value()?.parse()?,
            "--xds" => a.xds = value()?.parse()?,
            "--debug" => a.debug = value()?.parse()?,
            "--envoy-admin" => a.envoy_admin = value()?.parse()?,
            "--xds-mode" => a.mode = value()?.parse()?,
            "--hold" => a.hold = true,
            other => bail!(
                "unknown flag {other}; flags: --http --xds --debug --envoy-admin ADDR, --xds-mode delta|sotw, --hold"
            ),
        }
    }
    Ok(a)
}

/// A backend answering `hello from NAME` with header `x-backend: NAME`.
async fn backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("x-backend", name)
                            .body(Full::new(Bytes::from(format!("hello from {name}\n"))))
                            .expect("static response"),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn routes(blue: u32, green: u32) -> Resource {
    Resource::new(
        "routes",
        &route_config(
            "routes",
            vec![virtual_host(
                "hello",
                &[HOST, &format!("{HOST}:*")],
                vec![weighted_route("/", &[("blue", blue), ("green", green)])],
            )],
        ),
    )
}

/// Sends `n` requests through Envoy; counts who answered.
async fn sample(http: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let req = hyper::Request::get(format!("http://{http}/"))
            .header("host", HOST)
            .body(Empty::new())?;
        let resp = client.request(req).await?;
        let who = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", resp.status()));
        resp.into_body().collect().await?;
        *seen.entry(who).or_default() += 1;
    }
    Ok(seen)
}

fn bar(seen: &BTreeMap<String, usize>, n: usize) -> String {
    seen.iter()
        .map(|(k, v)| format!("{k:>5} {:>3}% {}", v * 100 / n, "#".repeat(v * 40 / n)))
        .collect::<Vec<_>>()
        .join("\n      ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let _telemetry = sluice::telemetry::init_server();

    let blue = backend("blue").await?;
    let green = backend("green").await?;

    let cache = SnapshotCache::new();
    cache.set_snapshot(
        GROUP,
        [
            Resource::new("http", &http_listener("http", args.http, "routes")),
            routes(100, 0),
            Resource::new("blue", &eds_cluster("blue", false)),
            Resource::new("green", &eds_cluster("green", false)),
            Resource::new("blue", &load_assignment("blue", &[blue])),
            Resource::new("green", &load_assignment("green", &[green])),
        ],
    )?;

    let mut registry = sluice::debug::registry();
    let metrics = Metrics::register(&mut registry);
    let server = XdsServer::with_metrics(cache.clone(), single_group(GROUP), metrics);
    let xds_listener = tokio::net::TcpListener::bind(args.xds)
        .await
        .with_context(|| format!("bind --xds {}", args.xds))?;
    let debug_listener = tokio::net::TcpListener::bind(args.debug)
        .await
        .with_context(|| format!("bind --debug {}", args.debug))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let nodes = server.nodes().clone();
    let status: sluice::debug::StatusFn = Arc::new(move || {
        serde_json::json!({ "nodes": nodes.list().iter().map(|n| serde_json::json!({
            "id": n.node.id, "connected": n.connected, "mode": n.mode.as_str(),
        })).collect::<Vec<_>>() })
    });
    let mut rx = stop_rx.clone();
    tokio::spawn(sluice::debug::serve(
        debug_listener,
        Arc::new(registry),
        status,
        sluice::debug::always_ready(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let mut rx = stop_rx.clone();
    let xds_task = tokio::spawn(server.clone().serve(xds_listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));

    let envoy_bin = find_envoy(None)?;
    let work_dir = std::env::temp_dir().join(format!("sluice-spine-demo-{}", std::process::id()));
    let yaml = render(&BootstrapParams {
        node_id: "sluice-demo".into(),
        xds: args.xds,
        mode: args.mode,
        admin: args.envoy_admin,
        ..BootstrapParams::default()
    });
    let mut cfg = LaunchConfig::new(&envoy_bin, yaml, &work_dir);
    cfg.log_level = "warning".into();
    let envoy = Envoy::start(cfg).await?;
    println!(
        "sluice spine demo\n  xDS (ADS {}, CSDS, dump, reflection)  {}\n  debug (/metrics /healthz /status)     http://{}\n  Envoy admin                           http://{}\n  gateway listener                      http://{}  (Host: {HOST})",
        args.mode, args.xds, args.debug, args.envoy_admin, args.http
    );

    // Wait for Envoy to take the configuration and serve.
    let started = Instant::now();
    loop {
        if let Ok(seen) = sample(args.http, 1).await
            && seen.contains_key("blue")
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "Envoy did not serve the demo route within 60 s (is port {} free?)",
                args.http
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("\nEnvoy serving after {:?}\n", started.elapsed());

    // Applies a change and waits until every connected Envoy ACKed it.
    let apply = async |r: Resource| -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        let (type_url, name) = (r.type_url().to_string(), r.name().to_string());
        let applied = cache.update(GROUP, Update::new().upsert(r))?;
        if applied.changed_types.is_empty() {
            return Ok(None);
        }
        for node in server.nodes().connected() {
            server
                .nodes()
                .wait_acked(&node, &type_url, &name, applied.generation)
                .await;
        }
        Ok(Some(t.elapsed()))
    };

    const N: usize = 100;
    for (b, g) in [(100, 0), (90, 10), (50, 50), (0, 100)] {
        let acked = match apply(routes(b, g)).await? {
            Some(d) => format!("Envoy ACKed in {d:.1?}"),
            None => "unchanged".to_string(),
        };
        let seen = sample(args.http, N).await?;
        println!(
            "split blue {b:>3} / green {g:>3}  ({acked})\n      {}",
            bar(&seen, N)
        );
    }

    // An endpoint-only change: blue moves to a new port; only EDS is pushed.
    let blue2 = backend("blue").await?;
    apply(routes(100, 0)).await?;
    let mut events = server.nodes().events();
    apply(Resource::new("blue", &load_assignment("blue", &[blue2]))).await?;
    let mut pushed = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == sluice_xds::EventKind::Push {
            pushed.push(format!(
                "{} {:?} ({} bytes)",
                sluice_xds::resource::short_name(&e.type_url),
                e.resources,
                e.bytes
            ));
        }
    }
    println!(
        "\nblue moved {blue} → {blue2}: pushed {}",
        pushed.join(", ")
    );
    let seen = sample(args.http, 20).await?;
    println!("      {}", bar(&seen, 20));

    if args.hold {
        println!(
            "\nServing until Ctrl-C. Try:\n  curl -H 'Host: {HOST}' http://{}/\n  target/debug/sluice xds nodes --xds {}\n  target/debug/sluice xds dump --xds {} -o table\n  .venv/bin/grpcurl -plaintext {} list\n  curl http://{}/metrics",
            args.http, args.xds, args.xds, args.xds, args.debug
        );
        tokio::signal::ctrl_c().await?;
    }
    envoy.stop().await;
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), xds_task).await;
    let _ = std::fs::remove_dir_all(work_dir);
    Ok(())
}
