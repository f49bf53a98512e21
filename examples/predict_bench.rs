//! Predictive scaling against the KPA alone: a **simulation** that drives the real, pure
//! per-Revision autoscaler (`sluice_autoscaler::RevisionAutoscaler`, the code `sluice up`
//! runs) with an accelerated clock over synthetic traffic with a daily peak.
//!
//! The model (each 100 ms step): Poisson arrivals at the hour's rate; each request holds one
//! of `containerConcurrency` (10) slots of a ready instance for 200 ms; a request that finds
//! no free slot waits (queued in the activator, or for a cold start) — it is counted as a
//! *waiting request*. Instances take 2 s from being asked for to ready; instance-seconds count
//! every instance asked for (starting ones included). Each second the autoscaler gets the
//! second's time-averaged concurrency and request count, decides, and the decision applies at
//! once (Envoy follows the activator path at once). Default `config-autoscaler` (60 s stable
//! window, 30 s grace). Two weeks are simulated with the same arrivals for both runs; the
//! first week builds the predictive history, the second is measured.
//!
//! ```text
//! cargo run --release --example predict_bench [-- --seed 7 --peak 300 --night 0.05 --weekend 1 --quantile 95]
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use sluice_autoscaler::{Config, Policy, RevisionAutoscaler, RevisionScaling, Running, Stat};
use tokio::time::Instant;

const STEP: Duration = Duration::from_millis(100);
const SERVICE: Duration = Duration::from_millis(200);
const START: Duration = Duration::from_secs(2);
const CC: u32 = 10;
const DAY: u64 = 86_400;

/// SplitMix64: a small deterministic generator (the same arrivals for every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson count with mean `lambda` (Knuth's method; λ per step stays small).
    fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            // Normal approximation for large means.
            let (u, v) = (self.unit().max(1e-12), self.unit());
            let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            return (lambda + z * lambda.sqrt()).round().max(0.0) as u32;
        }
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0u32, 1.0);
        loop {
            p *= self.unit();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

/// Requests per second at `second` of the day: quiet nights, a steep climb to the morning
/// peak at 09:00, a lunch dip, an afternoon plateau, a decline in the evening. `scale`
/// varies the day a little (weekends lower).
fn rate(second: u64, peak: f64, night: f64, scale: f64) -> f64 {
    let h = (second % DAY) as f64 / 3600.0;
    let shape = match h {
        h if h < 6.5 => 0.0,
        h if h < 8.5 => (h - 6.5) / 2.0 * 0.3,
        h if h < 9.0 => 0.3 + (h - 8.5) / 0.5 * 0.7,
        h if h < 11.5 => 1.0,
        h if h < 12.0 => 1.0 - (h - 11.5) / 0.5 * 0.5,
        h if h < 13.0 => 0.5,
        h if h < 13.25 => 0.5 + (h - 13.0) / 0.25 * 0.3,
        h if h < 18.0 => 0.8,
        h if h < 22.0 => 0.8 * (22.0 - h) / 4.0,
        _ => 0.0,
    };
    night + (peak - night) * shape * scale
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: u64,
    waited: u64,
    wait_seconds: f64,
    instance_seconds: f64,
    /// Waiting requests by hour of day.
    waited_by_hour: [u64; 24],
}

/// One simulated Revision under one policy.
struct Sim {
    auto: RevisionAutoscaler,
    /// Ready times of the instances asked for (earliest first).
    instances: Vec<Instant>,
    /// End times of requests in service.
    in_service: Vec<Instant>,
    /// Arrival times of waiting requests.
    queue: VecDeque<Instant>,
    in_path: bool,
}

impl Sim {
    fn new(annotations: &[(&str, &str)], t0: Instant) -> anyhow::Result<Sim> {
        let a: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = Config::default();
        let spec = RevisionScaling::resolve(&config, &a, CC).context("annotations")?;
        let (policy, errors) = Policy::parse(&a, &config);
        if !errors.is_empty() {
            bail!("{errors:?}");
        }
        Ok(Sim {
            auto: RevisionAutoscaler::new(spec, policy, t0, None),
            instances: Vec::new(),
            in_service: Vec::new(),
            queue: VecDeque::new(),
            in_path: true,
        })
    }

    fn ready(&self, now: Instant) -> usize {
        self.instances.iter().filter(|r| **r <= now).count()
    }

    /// One 100 ms step; returns the requests in flight (serving + waiting) after it.
    fn step(&mut self, now: Instant, hour: usize, arrivals: u32, totals: &mut Totals) -> usize {
        self.in_service.retain(|end| *end > now);
        let slots = self.ready(now) * CC as usize;
        while self.in_service.len() < slots
            && let Some(arrived) = self.queue.pop_front()
        {
            totals.wait_seconds += now.saturating_duration_since(arrived).as_secs_f64();
            self.in_service.push(now + SERVICE);
        }
        for _ in 0..arrivals {
            totals.requests += 1;
            if self.queue.is_empty() && self.in_service.len() < slots {
                self.in_service.push(now + SERVICE);
            } else {
                totals.waited += 1;
                totals.waited_by_hour[hour % 24] += 1;
                self.queue.push_back(now);
            }
        }
        totals.instance_seconds += self.instances.len() as f64 * STEP.as_secs_f64();
        self.in_service.len() + self.queue.len()
    }

    /// One autoscaler tick; the decision applies at once.
    fn tick(&mut self, now: Instant, wall: Timestamp, stat: Stat) {
        self.auto.record(now, wall, stat);
        let ready = u32::try_from(self.ready(now)).unwrap_or(u32::MAX);
        let running = Running {
            standard_requested: 0,
            standard_ready: ready,
            reserved_running: 0,
            reserved_ready: 0,
        };
        let plan = self
            .auto
            .decide(now, wall, running, self.in_path, Some(START));
        self.in_path = plan.activator_in_path;
        let want = plan.standard as usize;
        if want > self.instances.len() {
            self.instances.extend(std::iter::repeat_n(
                now + START,
                want - self.instances.len(),
            ));
        } else {
            // The newest (not yet ready first) go.
            self.instances.sort();
            self.instances.truncate(want);
        }
    }
}

/// The traffic: peak and night rates (req/s) and the weekend factor.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    seed: u64,
    peak: f64,
    night: f64,
    weekend: f64,
}

fn simulate(annotations: &[(&str, &str)], traffic: Traffic) -> anyhow::Result<Totals> {
    let Traffic {
        seed,
        peak,
        night,
        weekend: weekend_factor,
    } = traffic;
    let t0 = Instant::now();
    // A Monday, 00:00 UTC.
    let wall0: Timestamp = "2026-01-05T00:00:00Z".parse()?;
    let mut sim = Sim::new(annotations, t0)?;
    let mut rng = Rng(seed);
    let mut day_scale = 1.0;
    let mut measured = Totals::default();
    let mut warmup = Totals::default();
    let steps_per_second = (1.0 / STEP.as_secs_f64()) as u64;
    for second in 0..14 * DAY {
        if second % DAY == 0 {
            let weekday = (second / DAY) % 7;
            let weekend = if weekday >= 5 { weekend_factor } else { 1.0 };
            day_scale = weekend * (0.9 + 0.2 * rng.unit());
        }
        let totals = if second < 7 * DAY {
            &mut warmup
        } else {
            &mut measured
        };
        let lambda = rate(second, peak, night, day_scale) * STEP.as_secs_f64();
        let (mut area, mut requests) = (0.0, 0u32);
        for s in 0..steps_per_second {
            let now = t0 + Duration::from_secs(second) + STEP * u32::try_from(s)?;
            let arrivals = rng.poisson(lambda);
            requests += arrivals;
            let hour = usize::try_from((second % DAY) / 3600)?;
            area += sim.step(now, hour, arrivals, totals) as f64;
        }
        let now = t0 + Duration::from_secs(second + 1);
        let wall = wall0 + SignedDuration::from_secs(i64::try_from(second + 1)?);
        let stat = Stat {
            concurrency: area / steps_per_second as f64,
            requests: f64::from(requests),
        };
        sim.tick(now, wall, stat);
    }
    Ok(measured)
}

fn main() -> anyhow::Result<()> {
    let mut t = Traffic {
        seed: 7,
        peak: 300.0,
        night: 0.05,
        weekend: 1.0,
    };
    let mut quantile: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> anyhow::Result<String> { args.next().context("a value") };
        match a.as_str() {
            "--seed" => t.seed = value()?.parse()?,
            "--peak" => t.peak = value()?.parse()?,
            "--night" => t.night = value()?.parse()?,
            "--weekend" => t.weekend = value()?.parse()?,
            "--quantile" => quantile = Some(value()?),
            other => bail!(
                "unknown argument {other}; usage: predict_bench [--seed N] [--peak RPS] [--night RPS] [--weekend FACTOR] [--quantile PERCENT]"
            ),
        }
    }
    println!(
        "synthetic week (after a week of warm-up): peak {} req/s at 09:00–11:30, nights {} req/s, \
         weekends ×{}, each day ×0.9–1.1 (seed {}); 200 ms requests, containerConcurrency {CC}, 2 s start",
        t.peak, t.night, t.weekend, t.seed
    );
    let kpa = simulate(&[], t)?;
    let mut annotations = vec![("sluice.knative.dev/predictive", "true")];
    if let Some(q) = &quantile {
        annotations.push(("sluice.knative.dev/predictive-quantile", q.as_str()));
    }
    let predictive = simulate(&annotations, t)?;
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>14} {:>18}",
        "policy", "requests", "waited", "waited %", "mean wait ms", "instance-seconds"
    );
    for (name, t) in [("KPA alone", kpa), ("KPA + predictive", predictive)] {
        println!(
            "{:<24} {:>10} {:>10} {:>10.4} {:>14.1} {:>18.0}",
            name,
            t.requests,
            t.waited,
            100.0 * t.waited as f64 / t.requests.max(1) as f64,
            1000.0 * t.wait_seconds / t.waited.max(1) as f64,
            t.instance_seconds
        );
    }
    if std::env::var_os("BY_HOUR").is_some() {
        for h in 0..24 {
            println!(
                "{h:02}h waited: KPA {:>6}  predictive {:>6}",
                kpa.waited_by_hour[h], predictive.waited_by_hour[h]
            );
        }
    }
    let fewer = 100.0 * (1.0 - predictive.waited as f64 / kpa.waited.max(1) as f64);
    let more = 100.0 * (predictive.instance_seconds / kpa.instance_seconds - 1.0);
    println!(
        "predictive: {fewer:.1} % fewer waiting requests (goal ≥ 90 %), {more:+.1} % instance-seconds (goal ≤ +20 %)"
    );
    Ok(())
}
