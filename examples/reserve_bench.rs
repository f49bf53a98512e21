//! Reserved instances against scale-to-zero and always-on.
//!
//! 1. **First request after idle**, measured through a real `sluice up` and its Envoy: three
//!    Services run the `hello` example with `START_DELAY_MS=2000` (an app that takes 2 s to
//!    start): `reserved` (`knative.aliyun.com/reserve-instance: enable`), `zero` (the plain
//!    KPA: scale to zero) and `always` (`min-scale: 1`). Each round waits until every one is
//!    idle (the reserved one on its reserved instance, `zero` at zero), then times one request
//!    to each, one after the other. `config-autoscaler`: 6 s stable window, 1 s grace.
//! 2. **Instance-seconds over an idle hour**: a *simulation* driving the pure per-Revision
//!    autoscaler (`sluice_autoscaler::RevisionAutoscaler`, the code `sluice up` runs) with an
//!    accelerated clock and the default `config-autoscaler` (60 s stable window, 30 s grace):
//!    one request, then an hour of nothing; instances are ready 2 s after they are asked for.
//!
//! ```text
//! cargo build --release --bin sluice --example reserve_bench --example hello
//! target/release/examples/reserve_bench [--rounds 5]
//! ```

#[path = "support/bench.rs"]
mod bench;
use bench::free_addr;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use sluice_autoscaler::{Config, Policy, RevisionAutoscaler, RevisionScaling, Running, Stat};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

const MODES: [&str; 3] = ["reserved", "zero", "always"];

fn annotations(mode: &str) -> &'static [(&'static str, &'static str)] {
    match mode {
        "reserved" => &[("knative.aliyun.com/reserve-instance", "enable")],
        "always" => &[("autoscaling.knative.dev/min-scale", "1")],
        _ => &[],
    }
}

fn service_yaml(name: &str, hello: &Path) -> String {
    let mut meta = String::new();
    let a = annotations(name);
    if !a.is_empty() {
        meta.push_str("    metadata:\n      annotations:\n");
        for (k, v) in a {
            meta.push_str(&format!("        {k}: \"{v}\"\n"));
        }
    }
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec:
  template:
{meta}    spec:
      containers:
      - command: ["{hello}"]
        env: [{{name: START_DELAY_MS, value: "2000"}}]
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

async fn status(c: &Client, debug: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let resp = c.get(format!("http://{debug}/status").parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Whether every Service is idle as its mode makes it.
fn idle(st: &serde_json::Value) -> bool {
    let revs = st["serving"]["revisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    MODES.iter().all(|mode| {
        let Some(r) = revs.iter().find(|r| r["name"] == format!("{mode}-00001")) else {
            return false;
        };
        let instances = r["instances"].as_array().cloned().unwrap_or_default();
        let ready = |reserved: bool| {
            instances
                .iter()
                .filter(|i| i["ready"] == true && i["reserved"] == reserved)
                .count()
        };
        match *mode {
            "reserved" => {
                r["scaling"]["reason"] == "reserved" && ready(true) == 1 && instances.len() == 1
            }
            "zero" => instances.is_empty() && r["scaling"]["reason"] == "scaled-to-zero",
            _ => ready(false) == 1,
        }
    })
}

/// One GET; its latency and whether a reserved instance answered.
async fn timed_get(c: &Client, addr: SocketAddr, mode: &str) -> anyhow::Result<(Duration, bool)> {
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", format!("{mode}.bench.example.com"))
        .body(http_body_util::Empty::new())?;
    let start = Instant::now();
    let resp = c.request(req).await?;
    let status = resp.status();
    let reserved = resp.headers().get("x-reserved").is_some();
    let _ = resp.into_body().collect().await;
    let took = start.elapsed();
    if status != 200 {
        bail!("{mode}: status {status}");
    }
    Ok((took, reserved))
}

async fn measure(sluice: &Path, hello: &Path, rounds: usize) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("sluice-reserve-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("services");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config-autoscaler.yaml"), AUTOSCALER)?;
    for mode in MODES {
        std::fs::write(dir.join(format!("{mode}.yaml")), service_yaml(mode, hello))?;
    }
    let (http, debug) = (free_addr()?, free_addr()?);
    let log = std::fs::File::create(root.join("up.log"))?;
    let mut up = tokio::process::Command::new(sluice)
        .arg("up")
        .arg(&dir)
        .args(["--external-http", &http.to_string()])
        .args(["--debug", &debug.to_string()])
        .args(["--activator", &free_addr()?.to_string()])
        .args(["--internal-http", &free_addr()?.to_string()])
        .args(["--external-https", &free_addr()?.to_string()])
        .args(["--internal-https", &free_addr()?.to_string()])
        .args(["--xds", &free_addr()?.to_string()])
        .args(["--envoy-admin", &free_addr()?.to_string()])
        .args(["--node-id", "bench-reserve"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice up")?;
    let c: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut by_reserved = 0;
    for round in 0..rounds {
        let t = Instant::now();
        loop {
            if let Ok(st) = status(&c, debug).await
                && idle(&st)
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!(
                    "round {round}: not idle within 120 s; see {}",
                    root.join("up.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for mode in MODES {
            let (took, reserved) = timed_get(&c, http, mode).await?;
            if mode == "reserved" && reserved {
                by_reserved += 1;
            }
            latencies.entry(mode).or_default().push(took);
        }
    }
    let _ = up.kill().await;
    println!("first request after idle (app start 2 s), {rounds} rounds, through Envoy:");
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "mode", "p50 ms", "min ms", "max ms"
    );
    for mode in MODES {
        let mut v = latencies.remove(mode).unwrap_or_default();
        v.sort();
        let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        println!(
            "{mode:<10} {:>10.1} {:>10.1} {:>10.1}",
            ms(v.get(v.len() / 2)),
            ms(v.first()),
            ms(v.last())
        );
    }
    println!("(answered by the reserved instance: {by_reserved} of {rounds})");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Instance-seconds (standard, reserved) over one request then an idle hour, simulated.
fn idle_hour(mode: &str) -> anyhow::Result<(f64, f64)> {
    let a: BTreeMap<String, String> = annotations(mode)
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = Config::default();
    let spec = RevisionScaling::resolve(&config, &a, 0).context("annotations")?;
    let (policy, _) = Policy::parse(&a, &config);
    let t0 = tokio::time::Instant::now();
    let wall0: Timestamp = "2026-01-05T00:00:00Z".parse()?;
    let mut auto = RevisionAutoscaler::new(spec, policy, t0, None);
    // Asked-for instances and when each is ready.
    let (mut standard, mut reserved): (Vec<u64>, Vec<u64>) = (vec![0], vec![]);
    let (mut std_s, mut res_s) = (0.0, 0.0);
    let mut in_path = true;
    for s in 1..=3600u64 {
        let now = t0 + Duration::from_secs(s);
        let wall = wall0 + SignedDuration::from_secs(i64::try_from(s)?);
        let concurrency = if s == 1 { 1.0 } else { 0.0 };
        auto.record(
            now,
            wall,
            Stat {
                concurrency,
                requests: concurrency,
            },
        );
        let ready = |v: &[u64]| u32::try_from(v.iter().filter(|r| **r <= s).count()).unwrap_or(0);
        let running = Running {
            standard_requested: 0,
            standard_ready: ready(&standard),
            reserved_running: u32::try_from(reserved.len())?,
            reserved_ready: ready(&reserved),
        };
        let plan = auto.decide(now, wall, running, in_path, Some(Duration::from_secs(2)));
        in_path = plan.activator_in_path;
        for (v, want) in [
            (&mut standard, plan.standard),
            (&mut reserved, plan.reserved),
        ] {
            let want = want as usize;
            if want > v.len() {
                v.extend(std::iter::repeat_n(s + 2, want - v.len()));
            }
            v.truncate(want);
        }
        std_s += standard.len() as f64;
        res_s += reserved.len() as f64;
    }
    Ok((std_s, res_s))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("a number")?.parse()?,
            other => bail!("unknown argument {other}; usage: reserve_bench [--rounds N]"),
        }
    }
    println!(
        "instance-seconds over one request then an idle hour (simulated, default config-autoscaler):"
    );
    println!(
        "{:<10} {:>18} {:>18}",
        "mode", "standard inst·s", "reserved inst·s"
    );
    for mode in MODES {
        let (s, r) = idle_hour(mode)?;
        println!("{mode:<10} {s:>18.0} {r:>18.0}");
    }
    let exe = std::env::current_exe()?;
    let examples = exe.parent().context("examples dir")?;
    let sluice: PathBuf = examples.parent().context("target dir")?.join("sluice");
    let hello = examples.join("hello");
    for p in [&sluice, &hello] {
        if !p.exists() {
            bail!(
                "{} is missing: cargo build --release --bin sluice --example reserve_bench --example hello",
                p.display()
            );
        }
    }
    measure(&sluice, &hello, rounds).await
}
