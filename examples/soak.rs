//! Soak benchmark: `sluice gateway --dir --no-envoy` with N KIngresses and a separate real
//! Envoy, traffic through Envoy at a fixed rate for minutes, one KIngress edit per second.
//!
//! Two modes:
//! - `edits`: the control plane runs throughout. Reports failed requests, edits served, and
//!   the gateway's RSS at minute 1 and at the end (a leak shows as growth).
//! - `kills`: the control plane is SIGKILLed and started again every `--kill-every` seconds
//!   while edits continue (edits made while it is down are read when it is back). Envoy keeps
//!   its configuration and reconnects. Reports failed requests and edits served.
//!
//! Every edit is checked: Envoy must serve its probe hash (within 60 s of the edit). In `kills`
//! mode the largest discovery request each control-plane process received (Envoy's reconnect)
//! is printed, by type. Envoy's access log is turned off (`config-kourier`).
//!
//! Each KIngress splits over two Services, so Envoy keeps up to two idle upstream connections
//! per KIngress: at 10k KIngresses keep `--rate` × duration under the open-file limit
//! (`ulimit -n`), or Envoy runs out of descriptors (503 UF) — a limit of this one-machine setup.
//! Traffic is open loop: one request every `1/rate` s to a random host, whatever the answers.
//!
//! ```text
//! cargo build --release --bin sluice --example soak
//! target/release/examples/soak --mode edits --ingresses 1000 --minutes 10
//! target/release/examples/soak --mode kills --ingresses 1000 --minutes 10 --kill-every 120
//! target/release/examples/soak --mode kills --ingresses 10000 --minutes 3 --kill-every 60 --rate 40
//! ```

#[path = "support/bench.rs"]
mod bench;
use bench::{backing_yaml, expected_hash, free_addr, host, ingress_yaml, rss_mb, write_atomic};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use sluice::envoy::{BootstrapParams, Envoy, LaunchConfig, XdsMode, find_envoy, render};
use sluice::gateway::probe::Prober;
use tokio::sync::Mutex;

/// A tiny HTTP/1.1 backend answering 200 with its name.
async fn backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(name.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

struct Addrs {
    ext: SocketAddr,
    int: SocketAddr,
    exts: SocketAddr,
    ints: SocketAddr,
    xds: SocketAddr,
    debug: SocketAddr,
    admin: SocketAddr,
}

async fn start_gateway(bin: &Path, dir: &Path, a: &Addrs) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(bin)
        .args(["gateway", "--no-envoy", "--dir"])
        .arg(dir)
        .args(["--external-http", &a.ext.to_string()])
        .args(["--internal-http", &a.int.to_string()])
        .args(["--external-https", &a.exts.to_string()])
        .args(["--internal-https", &a.ints.to_string()])
        .args(["--xds", &a.xds.to_string()])
        .args(["--debug", &a.debug.to_string()])
        .args(["--envoy-admin", &a.admin.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start sluice gateway")?;
    let t = Instant::now();
    while bench::get(a.debug, "/healthz").await.is_err() {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the gateway's debug server did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

async fn ready_count(debug: SocketAddr) -> usize {
    let Ok(body) = bench::get(debug, "/status").await else {
        return 0;
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["ingresses"]
                .as_array()
                .map(|a| a.iter().filter(|i| i["ready"] == "True").count())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
    examples: Mutex<Vec<String>>,
}

struct Args {
    mode: String,
    ingresses: usize,
    minutes: f64,
    rate: u64,
    kill_every: u64,
}

async fn run(args: Args, bin: PathBuf) -> anyhow::Result<()> {
    let n = args.ingresses;
    let a = backend("a").await?;
    let b = backend("b").await?;
    let dir = std::env::temp_dir().join(format!("sluice-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ingresses"))?;
    std::fs::create_dir_all(dir.join("services"))?;
    // Envoy's access log (on by default, as in Kourier) would print every request on this
    // program's stdout, between the table's lines.
    write_atomic(
        &dir.join("config-kourier.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-kourier, namespace: knative-serving}\ndata: {enable-service-access-logging: \"false\"}\n",
    )?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("ingresses/svc-{i}.yaml")),
            ingress_yaml(i, 50),
        )?;
        std::fs::write(
            dir.join(format!("services/svc-{i}.yaml")),
            backing_yaml(i, a.port(), b.port()),
        )?;
    }
    let addrs = Addrs {
        ext: free_addr()?,
        int: free_addr()?,
        exts: free_addr()?,
        ints: free_addr()?,
        xds: free_addr()?,
        debug: free_addr()?,
        admin: free_addr()?,
    };
    let mut gateway = start_gateway(&bin, &dir, &addrs).await?;
    let envoy_dir = dir.join("envoy");
    std::fs::create_dir_all(&envoy_dir)?;
    let yaml = render(&BootstrapParams {
        xds: addrs.xds,
        admin: addrs.admin,
        mode: XdsMode::Delta,
        ..BootstrapParams::default()
    });
    let mut cfg = LaunchConfig::new(find_envoy(None)?, yaml, &envoy_dir);
    cfg.log_level = "error".into();
    let envoy = Envoy::start(cfg).await?;
    let t = Instant::now();
    while ready_count(addrs.debug).await < n {
        if t.elapsed() > Duration::from_secs(300) {
            bail!("not all {n} KIngresses Ready after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{n} KIngresses Ready after {:.1} s; soaking for {} min…",
        t.elapsed().as_secs_f64(),
        args.minutes
    );

    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http::<Empty<Bytes>>();
    let load = {
        let traffic = traffic.clone();
        let ext = addrs.ext;
        let rate = args.rate.max(1);
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut k: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.notified() => return,
                }
                k += 1;
                let i = (k.wrapping_mul(2_654_435_761) % n as u64) as usize;
                let req = hyper::Request::get(format!("http://{ext}/"))
                    .header(hyper::header::HOST, host(i))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let client = client.clone();
                let traffic = traffic.clone();
                tokio::spawn(async move {
                    let outcome = match client.request(req).await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.into_body().collect().await;
                            Ok(())
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e}")),
                    };
                    match outcome {
                        Ok(()) => traffic.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let mut ex = traffic.examples.lock().await;
                            if ex.len() < 10 {
                                ex.push(e);
                            }
                            traffic.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                });
            }
        })
    };

    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut edit_checks = tokio::task::JoinSet::new();
    let mut rss_minute1 = None;
    let mut kills = 0;
    let mut next_kill = Duration::from_secs(args.kill_every);
    let largest: Arc<Mutex<std::collections::BTreeMap<String, f64>>> = Arc::default();
    let mut e: usize = 0;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < total {
        second.tick().await;
        let i = (e * 7919) % n;
        let yaml = ingress_yaml(i, if (e / n).is_multiple_of(2) { 10 } else { 90 });
        let want = expected_hash(&yaml)?;
        write_atomic(&dir.join(format!("ingresses/svc-{i}.yaml")), &yaml)?;
        let ext = addrs.ext;
        edit_checks.spawn(async move {
            let prober = Prober::new();
            let t = Instant::now();
            while prober.probe(ext, &host(i), &want).await.is_err() {
                if t.elapsed() > Duration::from_secs(60) {
                    return Err(format!("edit of svc-{i} not served within 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(t.elapsed())
        });
        e += 1;
        if rss_minute1.is_none() && started.elapsed() >= Duration::from_secs(60) {
            rss_minute1 = gateway.id().map(rss_mb);
        }
        if args.mode == "kills" && started.elapsed() >= next_kill {
            next_kill += Duration::from_secs(args.kill_every);
            // What this process was sent since it started: the reconnect of Envoy's stream.
            record_largest(&largest, addrs.debug).await;
            if let Some(pid) = gateway.id() {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )?;
            }
            let _ = gateway.wait().await;
            kills += 1;
            gateway = start_gateway(&bin, &dir, &addrs).await?;
            eprintln!(
                "  {:>4.0} s: control plane SIGKILLed and started again ({kills})",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let rss_end = gateway.id().map(rss_mb);
    record_largest(&largest, addrs.debug).await;
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    let mut missed = Vec::new();
    while let Some(r) = edit_checks.join_next().await {
        match r? {
            Ok(d) => {
                served += 1;
                slowest = slowest.max(d);
            }
            Err(m) => missed.push(m),
        }
    }
    stop.notify_waiters();
    let _ = load.await;
    // Requests in flight at the stop are allowed to finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = traffic.ok.load(Ordering::Relaxed);
    let failed = traffic.failed.load(Ordering::Relaxed);
    let _ = gateway.start_kill();
    envoy.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| {} | {n} | {:.0} min | {} | {ok} | {failed} | {served} / {e} | {:.0} ms | {} | {} |",
        args.mode,
        args.minutes,
        if args.mode == "kills" {
            kills.to_string()
        } else {
            "-".into()
        },
        slowest.as_secs_f64() * 1000.0,
        rss_minute1.map_or("-".into(), |r| format!("{r:.0} MB")),
        rss_end.map_or("-".into(), |r| format!("{r:.0} MB")),
    );
    let sizes = largest.lock().await;
    if !sizes.is_empty() {
        eprintln!("largest discovery request after a reconnect, by type (bytes): {sizes:?}");
    }
    let examples = traffic.examples.lock().await;
    if !examples.is_empty() {
        eprintln!("failed requests, first ones: {examples:?}");
    }
    if !missed.is_empty() {
        eprintln!("edits not served: {missed:?}");
    }
    Ok(())
}

/// Keeps, per type, the largest discovery request the gateway at `debug` has received
/// (`sluice_xds_largest_request_bytes`; after a restart that is the reconnect, where a Delta
/// client lists every resource it holds).
async fn record_largest(
    largest: &Mutex<std::collections::BTreeMap<String, f64>>,
    debug: SocketAddr,
) {
    let Ok(text) = bench::get(debug, "/metrics").await else {
        return;
    };
    let mut largest = largest.lock().await;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("sluice_xds_largest_request_bytes{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let kind = labels
            .trim_start_matches("type=\"")
            .trim_end_matches('"')
            .to_string();
        let entry = largest.entry(kind).or_default();
        *entry = entry.max(value);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut a = Args {
        mode: "edits".into(),
        ingresses: 1000,
        minutes: 10.0,
        rate: 200,
        kill_every: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" if v == "edits" || v == "kills" => a.mode = v,
            "--ingresses" => a.ingresses = v.parse()?,
            "--minutes" => a.minutes = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--kill-every" => a.kill_every = v.parse()?,
            _ => bail!(
                "unknown flag {flag} {v}: use --mode edits|kills, --ingresses, --minutes, --rate, --kill-every"
            ),
        }
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("sluice"))
        .context("locate the sluice binary next to this example")?;
    if !bin.exists() {
        bail!(
            "{} not found: cargo build --release --bin sluice first",
            bin.display()
        );
    }
    println!(
        "| mode | KIngresses | duration | control-plane kills | requests OK | requests failed | edits served | slowest edit | gateway RSS at 1 min | at the end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    run(a, bin).await
}
