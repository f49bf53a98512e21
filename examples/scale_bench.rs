//! Activator and scale-from-zero benchmark: `sluice up` with its real Envoy and activator,
//! every revision a process of the `hello` example app (a fast hyper server).
//!
//! Measures, in one run (2 cores are shared by everything: judge by the same-run ratios):
//! - **activator overhead**: an open-loop load at a fixed rate (latency counted from each
//!   request's scheduled send time, so a stall is not hidden) and the maximum closed-loop
//!   throughput, for three paths to the same app:
//!   `Envoy → app` (a Revision with target-burst-capacity 0: the activator leaves the path),
//!   `Envoy → activator → app` (target-burst-capacity -1: always in the path), and, as the
//!   reference hop, `Envoy → Envoy → app` (a `sluice gateway` in front of the first Envoy);
//! - **cold start**: from the first request to a Revision at zero until its response, minus
//!   the app's own start time (spawn → accepting connections, measured on its own), for one
//!   Revision at a time and for 10 and N Revisions woken at once.
//!
//! Each path also gets one client sending back to back (per-request latency without the load
//! generator's scheduling noise).
//!
//! ```text
//! cargo build --release --bin sluice --example scale_bench --example hello
//! target/release/examples/scale_bench [--rate 1000] [--seconds 10] [--wake 100]
//! ```

#[path = "support/bench.rs"]
mod bench;
use bench::free_addr;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use tokio::process::Child;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn client() -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(http)
}

const NS: &str = "bench";

fn host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

/// A Knative Service running `hello` with `autoscaling.knative.dev/*` annotations.
fn service_yaml(name: &str, hello: &Path, annotations: &[(&str, &str)]) -> String {
    let mut meta = String::new();
    if !annotations.is_empty() {
        meta.push_str("    metadata:\n      annotations:\n");
        for (k, v) in annotations {
            meta.push_str(&format!("        autoscaling.knative.dev/{k}: \"{v}\"\n"));
        }
    }
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  template:
{meta}    spec:
      containers:
      - command: ["{hello}"]
"#,
        hello = hello.display()
    )
}

const AUTOSCALER: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data:
  stable-window: "6s"
  scale-to-zero-grace-period: "1s"
"#;

/// The reference hop: a KIngress on a second gateway forwarding to the first Envoy.
fn hop_yaml(upstream: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hop
  namespace: {NS}
  annotations: {{networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [{hop}]
    visibility: ExternalIP
    http:
      paths:
      - rewriteHost: {direct}
        splits:
        - {{serviceName: hop, serviceNamespace: {NS}, servicePort: 80, percent: 100}}
---
apiVersion: v1
kind: Service
metadata: {{name: hop, namespace: {NS}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: hop, namespace: {NS}}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: http, port: {port}}}]
"#,
        hop = host("hop"),
        direct = host("direct"),
        port = upstream.port()
    )
}

/// GET `/` with `Host: host`; fails unless 200.
async fn get(c: &Client, addr: SocketAddr, host: &str) -> anyhow::Result<()> {
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", host)
        .body(http_body_util::Empty::new())?;
    let resp = c.request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status != 200 {
        bail!("status {status}");
    }
    Ok(())
}

async fn status(c: &Client, debug: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let resp = c.get(format!("http://{debug}/status").parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Polls `/status` every 100 ms until `done` holds (at most `limit`).
async fn wait_status(
    c: &Client,
    debug: SocketAddr,
    what: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(st) = status(c, debug).await
            && done(&st)
        {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn revisions(st: &serde_json::Value) -> Vec<serde_json::Value> {
    st["serving"]["revisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn at_zero(st: &serde_json::Value, names: &[String]) -> bool {
    let revs = revisions(st);
    names.iter().all(|n| {
        revs.iter().any(|r| {
            r["name"] == format!("{n}-00001")
                && r["instances"].as_array().is_some_and(|i| i.is_empty())
                && r["scaling"]["reason"] == "scaled-to-zero"
        })
    })
}

struct Servers {
    up: Child,
    gateway: Child,
    up_http: SocketAddr,
    hop_http: SocketAddr,
    debug: SocketAddr,
    hop_debug: SocketAddr,
}

fn addr_args(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    cmd.args(["--internal-http", &free_addr()?.to_string()])
        .args(["--external-https", &free_addr()?.to_string()])
        .args(["--internal-https", &free_addr()?.to_string()])
        .args(["--xds", &free_addr()?.to_string()])
        .args(["--envoy-admin", &free_addr()?.to_string()]);
    Ok(())
}

async fn start(root: &Path, sluice: &Path) -> anyhow::Result<Servers> {
    let (up_http, debug, hop_http, hop_debug) =
        (free_addr()?, free_addr()?, free_addr()?, free_addr()?);
    let hop_dir = root.join("hop");
    std::fs::create_dir_all(&hop_dir)?;
    std::fs::write(hop_dir.join("hop.yaml"), hop_yaml(up_http))?;
    let log_level = std::env::var("SLUICE_BENCH_LOG").unwrap_or_else(|_| "warn".into());

    let log = std::fs::File::create(root.join("up.log"))?;
    let mut cmd = tokio::process::Command::new(sluice);
    cmd.arg("up")
        .arg(root.join("services"))
        .args(["--external-http", &up_http.to_string()])
        .args(["--debug", &debug.to_string()])
        .args(["--activator", &free_addr()?.to_string()])
        .args(["--node-id", "bench-up"]);
    addr_args(&mut cmd)?;
    let up = cmd
        .env("RUST_LOG", &log_level)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice up")?;

    let log = std::fs::File::create(root.join("gateway.log"))?;
    let mut cmd = tokio::process::Command::new(sluice);
    cmd.args(["gateway", "--dir"])
        .arg(&hop_dir)
        .args(["--external-http", &hop_http.to_string()])
        .args(["--debug", &hop_debug.to_string()])
        .args(["--node-id", "bench-hop"]);
    addr_args(&mut cmd)?;
    let gateway = cmd
        .env("RUST_LOG", &log_level)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice gateway")?;
    Ok(Servers {
        up,
        gateway,
        up_http,
        hop_http,
        debug,
        hop_debug,
    })
}

/// Open loop: one request every `1/rate` s for `secs`, each timed from its scheduled send.
async fn open_loop(
    c: &Client,
    addr: SocketAddr,
    host: &str,
    rate: u32,
    secs: u64,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let n = rate as u64 * secs;
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = begin + interval * (i as u32);
        tokio::time::sleep_until(at).await;
        let (c, host) = (c.clone(), host.to_string());
        tasks.push(tokio::spawn(async move {
            let ok = get(&c, addr, &host).await.is_ok();
            (at.elapsed(), ok)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut failed = 0;
    for t in tasks {
        let (d, ok) = t.await?;
        if ok {
            hist.record(d.as_micros() as u64)?;
        } else {
            failed += 1;
        }
    }
    Ok((hist, failed))
}

/// Closed loop: `conns` clients back to back for `secs`; requests per second.
async fn closed_loop(
    c: &Client,
    addr: SocketAddr,
    host: &str,
    conns: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs(secs);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (c, host, count) = (c.clone(), host.to_string(), count.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    if get(&c, addr, &host).await.is_ok() {
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok(count.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs as f64)
}

/// One client back to back for `secs`: each request's latency (no scheduling noise).
async fn serial(
    c: &Client,
    addr: SocketAddr,
    host: &str,
    secs: u64,
) -> anyhow::Result<Histogram<u64>> {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut hist = Histogram::<u64>::new(3)?;
    while Instant::now() < end {
        let t = Instant::now();
        get(c, addr, host).await?;
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    Ok(hist)
}

/// The app's own start: spawn → accepting a TCP connection, polled every 200 µs.
async fn app_start(hello: &Path, runs: usize) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..runs {
        let addr = free_addr()?;
        let t = Instant::now();
        let mut child = tokio::process::Command::new(hello)
            .env("PORT", addr.port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("hello did not listen within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        hist.record(t.elapsed().as_micros() as u64)?;
        let _ = child.kill().await;
    }
    Ok(hist)
}

/// Wakes `names` at once (one request each); each request's latency.
async fn wake(c: &Client, addr: SocketAddr, names: &[String]) -> anyhow::Result<Histogram<u64>> {
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (c, host) = (c.clone(), host(n));
            tokio::spawn(async move {
                let t = Instant::now();
                get(&c, addr, &host).await.map(|()| t.elapsed())
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.record(t.await??.as_micros() as u64)?;
    }
    Ok(hist)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn run(
    rate: u32,
    secs: u64,
    wake_n: usize,
    sluice: &Path,
    hello: &Path,
) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("sluice-scale-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("services");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config-autoscaler.yaml"), AUTOSCALER)?;
    let pinned = [("min-scale", "1"), ("max-scale", "1")];
    std::fs::write(
        dir.join("direct.yaml"),
        service_yaml(
            "direct",
            hello,
            &[pinned[0], pinned[1], ("target-burst-capacity", "0")],
        ),
    )?;
    std::fs::write(
        dir.join("proxied.yaml"),
        service_yaml(
            "proxied",
            hello,
            &[pinned[0], pinned[1], ("target-burst-capacity", "-1")],
        ),
    )?;
    let cold: Vec<String> = (0..wake_n.max(20)).map(|i| format!("cold-{i}")).collect();
    for n in &cold {
        std::fs::write(dir.join(format!("{n}.yaml")), service_yaml(n, hello, &[]))?;
    }
    let mut s = start(&root, sluice).await?;
    let c = client();
    let total = cold.len() + 2;
    wait_status(
        &c,
        s.debug,
        "all Services Ready",
        Duration::from_secs(120),
        |st| {
            st["serving"]["services"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|s| s["ready"] == "True").count() == total)
        },
    )
    .await?;
    wait_status(
        &c,
        s.debug,
        "direct served without the activator",
        Duration::from_secs(60),
        |st| {
            revisions(st)
                .iter()
                .any(|r| r["name"] == "direct-00001" && r["scaling"]["path"] == "direct")
        },
    )
    .await?;
    wait_status(
        &c,
        s.hop_debug,
        "the reference hop Ready",
        Duration::from_secs(60),
        |st| {
            st["ingresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["ready"] == "True"))
        },
    )
    .await?;
    for (addr, h) in [
        (s.up_http, host("direct")),
        (s.up_http, host("proxied")),
        (s.hop_http, host("hop")),
    ] {
        get(&c, addr, &h)
            .await
            .with_context(|| format!("{h} does not answer"))?;
    }

    // Activator overhead.
    println!(
        "open loop at {rate} req/s for {secs} s per path (latency from the scheduled send), then 32 clients back to back for {secs} s; 3 interleaved rounds:"
    );
    let paths = [
        ("Envoy → app", s.up_http, host("direct")),
        ("Envoy → activator → app", s.up_http, host("proxied")),
        ("Envoy → Envoy → app", s.hop_http, host("hop")),
    ];
    // Interleaved rounds, so a slow stretch of the machine hits every path alike.
    let rounds = 3;
    let mut results: Vec<(Histogram<u64>, u64, f64, Histogram<u64>)> = Vec::new();
    for (_, addr, h) in &paths {
        // Warm the connection pools.
        open_loop(&c, *addr, h, rate, 1).await?;
        results.push((Histogram::<u64>::new(3)?, 0, 0.0, Histogram::<u64>::new(3)?));
    }
    for _ in 0..rounds {
        for ((_, addr, h), r) in paths.iter().zip(results.iter_mut()) {
            let (hist, failed) = open_loop(&c, *addr, h, rate, secs.div_ceil(rounds)).await?;
            r.0.add(&hist)?;
            r.1 += failed;
            r.2 += closed_loop(&c, *addr, h, 32, secs.div_ceil(rounds)).await? / rounds as f64;
            r.3.add(serial(&c, *addr, h, secs.div_ceil(rounds)).await?)?;
        }
    }
    let mut p50s = Vec::new();
    for ((name, _, _), (hist, failed, rps, one)) in paths.iter().zip(results) {
        println!(
            "  {name:<26} 1 client back to back: p50 {:>6.3} ms  p99 {:>6.3} ms",
            ms(&one, 0.5),
            ms(&one, 0.99)
        );
        println!(
            "  {name:<26} p50 {:>6.3} ms  p90 {:>6.3} ms  p99 {:>6.3} ms  max {:>7.2} ms  failed {failed}  max throughput {rps:>7.0} req/s",
            ms(&hist, 0.5),
            ms(&hist, 0.9),
            ms(&hist, 0.99),
            hist.max() as f64 / 1000.0,
        );
        p50s.push((
            ms(&one, 0.5),
            ms(&one, 0.99),
            ms(&hist, 0.5),
            ms(&hist, 0.99),
        ));
    }
    for (what, i) in [("the activator", 1), ("an extra Envoy", 2)] {
        println!(
            "  added by {what}: 1 client p50 {:+.3} ms, p99 {:+.3} ms; open loop p50 {:+.3} ms, p99 {:+.3} ms",
            p50s[i].0 - p50s[0].0,
            p50s[i].1 - p50s[0].1,
            p50s[i].2 - p50s[0].2,
            p50s[i].3 - p50s[0].3,
        );
    }

    // Cold start.
    let own = app_start(hello, 20).await?;
    println!(
        "cold start: the app's own start (spawn → listening) p50 {:.2} ms, p90 {:.2} ms over 20 runs",
        ms(&own, 0.5),
        ms(&own, 0.9)
    );
    wait_status(
        &c,
        s.debug,
        "cold Revisions at zero",
        Duration::from_secs(120),
        |st| at_zero(st, &cold),
    )
    .await?;
    let mut single = Histogram::<u64>::new(3)?;
    for n in &cold[..10] {
        let h = wake(&c, s.up_http, std::slice::from_ref(n)).await?;
        single.record(h.max())?;
    }
    println!(
        "  1 Revision at a time (10 wakes): p50 {:.2} ms, max {:.2} ms → above the app's own start: p50 {:.2} ms",
        ms(&single, 0.5),
        single.max() as f64 / 1000.0,
        ms(&single, 0.5) - ms(&own, 0.5)
    );
    let ten = wake(&c, s.up_http, &cold[10..20]).await?;
    println!(
        "  10 Revisions at once: p50 {:.2} ms, max {:.2} ms",
        ms(&ten, 0.5),
        ten.max() as f64 / 1000.0
    );
    if wake_n > 10 {
        let group = &cold[..wake_n];
        wait_status(
            &c,
            s.debug,
            "cold Revisions at zero again",
            Duration::from_secs(120),
            |st| at_zero(st, group),
        )
        .await?;
        let all = wake(&c, s.up_http, group).await?;
        println!(
            "  {wake_n} Revisions at once: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            ms(&all, 0.5),
            ms(&all, 0.9),
            all.max() as f64 / 1000.0
        );
    }

    for child in [&mut s.up, &mut s.gateway] {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    if std::env::var_os("SLUICE_BENCH_LOG").is_some() {
        println!("logs kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut rate, mut secs, mut wake_n) = (1000u32, 10u64, 100usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> anyhow::Result<u64> { Ok(args.next().context("a number")?.parse()?) };
        match a.as_str() {
            "--rate" => rate = u32::try_from(value()?)?.max(1),
            "--seconds" => secs = value()?.max(1),
            "--wake" => wake_n = usize::try_from(value()?)?.max(10),
            other => bail!(
                "unknown argument {other}; usage: scale_bench [--rate N] [--seconds N] [--wake N]"
            ),
        }
    }
    let exe = std::env::current_exe()?;
    let examples = exe.parent().context("examples dir")?;
    let sluice: PathBuf = examples.parent().context("target dir")?.join("sluice");
    let hello = examples.join("hello");
    for p in [&sluice, &hello] {
        if !p.exists() {
            bail!(
                "{} is missing: cargo build --release --bin sluice --example scale_bench --example hello",
                p.display()
            );
        }
    }
    run(rate, secs, wake_n, &sluice, &hello).await
}
