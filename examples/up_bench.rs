//! `sluice up` scale benchmark: N Knative Services (one YAML file each, every revision a
//! process of the `hello` example app) served by `sluice up` and its real Envoy.
//!
//! Measures:
//! - cold start: from launching `sluice up` to every Service Ready (its revision process
//!   ready, its KIngress ACKed by Envoy and probed through it), and the time until Envoy
//!   answers for all of them;
//! - a YAML traffic edit (the Service file rewritten, 100/0 ↔ 0/100 between two running
//!   revisions) → Envoy serving the new split (the first request answered by the newly
//!   chosen revision, polled every millisecond), p50/p99 over `--edits` edits spread over
//!   `--edited` Services;
//! - `sluice up`'s RSS with N Services.
//!
//! ```text
//! cargo build --release --bin sluice --example up_bench --example hello
//! target/release/examples/up_bench [--services 1000] [--edits 50] [--edited 10]
//! ```

#[path = "support/bench.rs"]
mod bench;
use bench::{free_addr, host, rss_mb, write_atomic};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;

/// Service `svc-{i}`; `traffic` = percent to revision 1 (revision 2 gets the rest).
fn service_yaml(i: usize, hello: &Path, target: &str, traffic: Option<u32>) -> String {
    let mut s = format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: svc-{i}, namespace: bench}}
spec:
  template:
    spec:
      containers:
      - command: ["{hello}"]
        env: [{{name: TARGET, value: "{target}"}}]
"#,
        hello = hello.display()
    );
    if let Some(a) = traffic {
        s.push_str(&format!(
            "  traffic:\n  - {{revisionName: svc-{i}-00001, percent: {a}}}\n  - {{revisionName: svc-{i}-00002, percent: {b}}}\n",
            b = 100 - a
        ));
    }
    s
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `/` with `Host: host`; the answering revision (`x-revision`), or the status.
async fn revision_of(c: &Client, addr: SocketAddr, host: &str) -> anyhow::Result<String> {
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", host)
        .body(http_body_util::Empty::new())?;
    let resp = c.request(req).await?;
    let status = resp.status();
    let rev = resp
        .headers()
        .get("x-revision")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    use http_body_util::BodyExt;
    let _ = resp.into_body().collect().await;
    if status != 200 {
        bail!("status {status}");
    }
    Ok(rev)
}

async fn status(c: &Client, debug: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let resp = c.get(format!("http://{debug}/status").parse()?).await?;
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Services Ready=True in `/status`, and routes whose traffic lists both revisions.
fn ready_count(st: &serde_json::Value) -> usize {
    st["serving"]["services"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["ready"] == "True").count())
        .unwrap_or(0)
}

async fn run(
    n: usize,
    edits: usize,
    edited: usize,
    sluice: &Path,
    hello: &Path,
) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("sluice-up-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("services");
    std::fs::create_dir_all(&dir)?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("svc-{i}.yaml")),
            service_yaml(i, hello, "one", None),
        )?;
    }
    let (http, debug) = (free_addr()?, free_addr()?);
    let log = std::fs::File::create(root.join("sluice.log"))?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(sluice)
        .arg("up")
        .arg(&dir)
        .args(["--external-http", &http.to_string()])
        .args(["--internal-http", &free_addr()?.to_string()])
        .args(["--external-https", &free_addr()?.to_string()])
        .args(["--internal-https", &free_addr()?.to_string()])
        .args(["--xds", &free_addr()?.to_string()])
        .args(["--debug", &debug.to_string()])
        .args(["--envoy-admin", &free_addr()?.to_string()])
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice up")?;
    let pid = child.id().context("sluice up pid")?;
    let c = client();

    // Cold start: every Service Ready.
    let mut last_report = Instant::now();
    let all_ready = loop {
        if let Some(exit) = child.try_wait()? {
            bail!("sluice up exited ({exit}); log in {}", root.display());
        }
        if let Ok(st) = status(&c, debug).await {
            let ready = ready_count(&st);
            if ready == n {
                break started.elapsed();
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  … {ready}/{n} Services Ready after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "not all Services Ready within 10 min; log in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for i in 0..n {
        let rev = revision_of(&c, http, &host(i)).await?;
        if rev != format!("svc-{i}-00001") {
            bail!("svc-{i} answered by {rev:?}");
        }
    }
    let all_served = started.elapsed();
    let rss_cold = rss_mb(pid);
    println!(
        "N = {n}: cold start to all Services Ready {:.2} s; Envoy answering for all {:.2} s; sluice up RSS {:.0} MB",
        all_ready.as_secs_f64(),
        all_served.as_secs_f64(),
        rss_cold
    );

    // Give `edited` Services a second revision, both named in traffic (100/0).
    for i in 0..edited {
        write_atomic(
            &dir.join(format!("svc-{i}.yaml")),
            &service_yaml(i, hello, "two", Some(100)),
        )?;
    }
    let t = Instant::now();
    loop {
        let st = status(&c, debug).await?;
        let both = st["serving"]["routes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["ready"] == "True"
                            && r["traffic"].as_array().is_some_and(|t| t.len() == 2)
                    })
                    .count()
            })
            .unwrap_or(0);
        if both == edited {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("second revisions not ready within 2 min");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic edits: 100/0 ↔ 0/100, until Envoy answers from the newly chosen revision.
    let mut hist = Histogram::<u64>::new(3)?;
    for e in 0..edits {
        let i = e % edited;
        let round = e / edited;
        let to_second = round.is_multiple_of(2);
        let want = format!("svc-{i}-0000{}", if to_second { 2 } else { 1 });
        let began = Instant::now();
        write_atomic(
            &dir.join(format!("svc-{i}.yaml")),
            &service_yaml(i, hello, "two", Some(if to_second { 0 } else { 100 })),
        )?;
        loop {
            if revision_of(&c, http, &host(i)).await.ok().as_deref() == Some(want.as_str()) {
                break;
            }
            if began.elapsed() > Duration::from_secs(30) {
                bail!("edit {e} of svc-{i} not served within 30 s");
            }
            // 1 ms resolution; polling flat out would take a core from Sluice and Envoy.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hist.record(began.elapsed().as_micros() as u64)?;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "N = {n}: YAML traffic edit → Envoy serving it, {edits} edits: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    println!("N = {n}: sluice up RSS after edits {:.0} MB", rss_mb(pid));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let stopped = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(_) => println!(
            "N = {n}: shutdown (Envoy and {} processes) {:.2} s",
            n + edited,
            stopped.elapsed().as_secs_f64()
        ),
        Err(_) => {
            let _ = child.start_kill();
            bail!("sluice up did not stop within 60 s of SIGTERM");
        }
    }
    if std::env::var_os("SLUICE_BENCH_LOG").is_some() {
        println!("log kept in {}", root.join("sluice.log").display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n = 1000;
    let mut edits = 50;
    let mut edited = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value =
            || -> anyhow::Result<usize> { Ok(args.next().context("a number")?.parse()?) };
        match a.as_str() {
            "--services" => n = value()?,
            "--edits" => edits = value()?,
            "--edited" => edited = value()?,
            other => bail!(
                "unknown argument {other}; usage: up_bench [--services N] [--edits N] [--edited N]"
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
                "{} is missing: cargo build --release --bin sluice --example up_bench --example hello",
                p.display()
            );
        }
    }
    run(n, edits, edited.clamp(1, n), &sluice, &hello).await
}
