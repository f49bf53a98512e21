//! Gateway scale benchmark: N KIngresses (each one host, a 2-way split over two
//! Services with their EndpointSlices) as files, served by `sluice gateway
//! --dir` and a real Envoy.
//!
//! Measures, per N:
//! - cold start: from launching the gateway to every KIngress Ready (ACKed by
//!   Envoy and probed through it);
//! - one split edit (a file rewritten) → Envoy serving the new generation of
//!   that KIngress (its probe answers the new hash), p50/p99;
//! - bytes pushed over xDS per edit, and the gateway's RSS;
//! - where cold start goes: the CPU time the gateway and its Envoy each used
//!   until every KIngress was Ready (Envoy's own `update_duration` histograms
//!   stay empty under Delta ADS, so its CPU time is its share);
//! - where an edit's time goes: Envoy's push → ACK of the route change (from
//!   Sluice's `sluice_xds_push_to_ack_seconds`), the rest being the file
//!   watcher, translation, publish and the probe;
//! - in-process, the translation cost of one edit (p50 and p99 of 200 edits):
//!   Sluice's incremental path versus a full rebuild of every KIngress into one
//!   snapshot (net-kourier's approach), as a ratio.
//!
//! ```text
//! cargo build --release --bin sluice --example gateway_bench
//! target/release/examples/gateway_bench [--sizes 1000,10000] [--edits 50] [--in-process]
//! ```
//!
//! `--in-process` measures only the in-process translation cost (no Envoy, no gateway).
//!
//! `GATEWAY_BENCH_LOG=FILE` keeps the gateway's log (info, xDS debug) in FILE.

#[path = "support/bench.rs"]
mod bench;
use bench::{
    backing_yaml, children, cpu_seconds, expected_hash, free_addr, get, host, ingress_yaml, metric,
    rss_mb, write_atomic,
};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use sluice::gateway::documents::{Object, decode};
use sluice::gateway::probe::Prober;
use sluice::gateway::state::GatewayState;
use sluice_serving::{GatewayConfig, Objects, assemble, translate_ingress};
use sluice_xds::SnapshotCache;

/// In-process edits translated and published, for the p50 / p99 of one.
const IN_PROCESS_EDITS: usize = 200;

/// In-process: one edit, incremental (p50, p99 of [`IN_PROCESS_EDITS`]) vs full rebuild.
fn translation_cost(dir: &Path, n: usize) -> anyhow::Result<(Duration, Duration, Duration)> {
    let mut state = GatewayState::new(GatewayConfig::default());
    let mut objects = Objects::new();
    let mut ingresses = Vec::new();
    let mut changes = Vec::new();
    for (path, text) in sluice::files::scan(dir, &[])? {
        for (k, o) in decode(&path, &text).objects {
            match &o {
                Object::Service(s) => {
                    objects.add_service((**s).clone());
                }
                Object::EndpointSlice(s) => {
                    objects.add_endpoint_slice((**s).clone());
                }
                Object::Ingress(i) => {
                    let mut i = (**i).clone();
                    i.set_defaults();
                    ingresses.push(i);
                }
                _ => {}
            }
            changes.push((k, Some(o)));
        }
    }
    let cache = SnapshotCache::new();
    let (update, _) = state.apply(changes);
    cache.update("g", update)?;
    // A stream's view of the previous snapshot is held across each edit, as a connected
    // Envoy's stream would hold it, so the cache cannot update its maps in place.
    let mut hist = Histogram::<u64>::new(3)?;
    let mut edit_obj = Vec::new();
    for e in 0..IN_PROCESS_EDITS {
        let i = (e * 7919) % n;
        // 20/80, a split no file holds (they hold 50/50 or the Envoy edits' 10/90): never a
        // no-op.
        let edit = ingress_yaml(i, if e % 2 == 0 { 20 } else { 80 });
        edit_obj = decode(Path::new("e.yaml"), &edit).objects;
        let held = cache.snapshot("g");
        let t = Instant::now();
        let (update, _) = state.apply(
            edit_obj
                .iter()
                .map(|(k, o)| (k.clone(), Some(o.clone())))
                .collect(),
        );
        cache.update("g", update)?;
        hist.record(t.elapsed().as_nanos() as u64)?;
        drop(held);
    }
    let p50 = Duration::from_nanos(hist.value_at_quantile(0.5));
    let p99 = Duration::from_nanos(hist.value_at_quantile(0.99));

    // Full rebuild: translate every KIngress, assemble, replace the snapshot.
    let full_cache = SnapshotCache::new();
    let first: Vec<_> = ingresses
        .iter()
        .filter_map(|i| translate_ingress(i, &objects).ok())
        .collect();
    full_cache.set_snapshot("g", assemble(&first, &GatewayConfig::default()))?;
    if let Some(Object::Ingress(e)) = edit_obj.into_iter().next().map(|(_, o)| o) {
        let mut e = *e;
        e.set_defaults();
        if let Some(slot) = ingresses.iter_mut().find(|i| i.key() == e.key()) {
            *slot = e;
        }
    }
    let t = Instant::now();
    let all: Vec<_> = ingresses
        .iter()
        .filter_map(|i| translate_ingress(i, &objects).ok())
        .collect();
    full_cache.set_snapshot("g", assemble(&all, &GatewayConfig::default()))?;
    let full = t.elapsed();
    Ok((p50, p99, full))
}

async fn run(n: usize, edits: usize, sluice_bin: &Path, in_process: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-gw-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ingresses"))?;
    std::fs::create_dir_all(dir.join("services"))?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("ingresses/svc-{i}.yaml")),
            ingress_yaml(i, 50),
        )?;
        std::fs::write(
            dir.join(format!("services/svc-{i}.yaml")),
            backing_yaml(i, 20_000 + (i % 1000) as u16, 30_000 + (i % 1000) as u16),
        )?;
    }
    if in_process {
        let (inc, inc99, full) = translation_cost(&dir, n)?;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "| {n} | {:.3} / {:.3} ms | {:.1} ms | {:.0}× |",
            inc.as_secs_f64() * 1000.0,
            inc99.as_secs_f64() * 1000.0,
            full.as_secs_f64() * 1000.0,
            full.as_secs_f64() / inc.as_secs_f64().max(1e-9),
        );
        return Ok(());
    }
    let (ext, int, exts, ints, xds, debug, admin) = (
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
        free_addr()?,
    );
    // GATEWAY_BENCH_LOG=FILE: the gateway's log (info, xDS debug) goes there.
    let log = match std::env::var_os("GATEWAY_BENCH_LOG") {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let started = Instant::now();
    let mut child = tokio::process::Command::new(sluice_bin)
        .arg("gateway")
        .arg("--dir")
        .arg(&dir)
        .args([
            "--external-http",
            &ext.to_string(),
            "--internal-http",
            &int.to_string(),
        ])
        .args([
            "--external-https",
            &exts.to_string(),
            "--internal-https",
            &ints.to_string(),
        ])
        .args([
            "--xds",
            &xds.to_string(),
            "--debug",
            &debug.to_string(),
            "--envoy-admin",
            &admin.to_string(),
        ])
        .env(
            "RUST_LOG",
            if log.is_some() {
                "info,sluice_xds=debug"
            } else {
                "warn"
            },
        )
        .stdout(Stdio::null())
        .stderr(match &log {
            Some(f) => Stdio::from(f.try_clone()?),
            None => Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .context("start sluice gateway")?;
    let pid = child.id().unwrap_or(0);
    loop {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not all {n} KIngresses Ready after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The metric, not `/status`: a 100k-entry document every 200 ms would be most of the
        // gateway's work.
        let Ok(body) = get(debug, "/metrics").await else {
            continue;
        };
        let ready = metric(&body, "sluice_gateway_kingresses{state=\"ready\"}");
        if ready as usize == n {
            break;
        }
    }
    let cold = started.elapsed();
    let rss = rss_mb(pid);
    // Who did the work: the gateway's CPU time and its Envoy's (the gateway's only child).
    let gateway_cpu = cpu_seconds(pid);
    let envoy_cpu: f64 = children(pid).into_iter().map(cpu_seconds).sum();
    let before = get(debug, "/metrics").await?;
    let prober = Prober::new();
    let mut hist = Histogram::<u64>::new(3)?;
    for e in 0..edits {
        let i = (e * 7919) % n;
        let yaml = ingress_yaml(i, if e % 2 == 0 { 10 } else { 90 });
        let want = expected_hash(&yaml)?;
        let t = Instant::now();
        write_atomic(&dir.join(format!("ingresses/svc-{i}.yaml")), &yaml)?;
        loop {
            if prober.probe(ext, &host(i), &want).await.is_ok() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("edit {e} not served after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    let after = get(debug, "/metrics").await?;
    let bytes = (metric(&after, "sluice_xds_push_bytes_total")
        - metric(&before, "sluice_xds_push_bytes_total"))
        / edits as f64;
    let ack = "sluice_xds_push_to_ack_seconds_sum{type=\"routes\"}";
    let ack_ms = (metric(&after, ack) - metric(&before, ack)) * 1000.0 / edits as f64;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let (inc, inc99, full) = translation_cost(&dir, n)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| {n} | {:.2} s (CPU: gateway {:.1} s, Envoy {:.1} s) | {:.1} / {:.1} / {:.1} ({:.1} push → ACK) | {:.0} | {:.0} MB | {:.3} / {:.3} ms | {:.1} ms | {:.0}× |",
        cold.as_secs_f64(),
        gateway_cpu,
        envoy_cpu,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        ack_ms,
        bytes,
        rss,
        inc.as_secs_f64() * 1000.0,
        inc99.as_secs_f64() * 1000.0,
        full.as_secs_f64() * 1000.0,
        full.as_secs_f64() / inc.as_secs_f64().max(1e-9),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sizes = vec![1000usize, 10_000];
    let mut edits = 50usize;
    let mut in_process = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--in-process" {
            in_process = true;
            continue;
        }
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--sizes" => {
                sizes = v
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--edits" => edits = v.parse()?,
            _ => bail!("unknown flag {a}: use --sizes, --edits, --in-process"),
        }
    }
    let exe = std::env::current_exe()?;
    let sluice_bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("sluice"))
        .context("locate the sluice binary next to this example")?;
    if !sluice_bin.exists() {
        bail!(
            "{} not found: cargo build --release --bin sluice first",
            sluice_bin.display()
        );
    }
    if in_process {
        println!(
            "| KIngresses | translate+publish one edit p50 / p99 (in-process) | same edit, full rebuild (Kourier approach) | ratio |"
        );
        println!("|---|---|---|---|");
    } else {
        println!(
            "| KIngresses | cold start → all Ready (CPU used by each process) | edit → Envoy serves it p50 / p99 / max (mean push → ACK), ms | xDS bytes per edit | gateway RSS | translate+publish one edit p50 / p99 (in-process) | same edit, full rebuild (Kourier approach) | ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    }
    for n in sizes {
        eprintln!("N = {n}…");
        run(n, edits, &sluice_bin, in_process).await?;
    }
    Ok(())
}
