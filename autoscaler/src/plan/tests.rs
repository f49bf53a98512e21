//! One Revision's whole decision over paused time: reserved instances from idle to busy and
//! back, a scheduled window, a forecast ahead of a daily peak, the HPA class, and the order of
//! the steps.

use std::collections::BTreeMap;

use super::*;
use crate::config::{Config, HPA_CLASS};
use crate::predict::MINUTES_PER_DAY;

const SEC: Duration = Duration::from_secs(1);

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A 6 s stable window and a 2 s grace period keep the scenarios short.
fn config() -> Config {
    let data = [
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "2s"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    Config::from_map(&data).unwrap()
}

fn autoscaler(pairs: &[(&str, &str)], cc: u32, now: Instant) -> RevisionAutoscaler {
    autoscaler_with(pairs, cc, now, None)
}

fn autoscaler_with(
    pairs: &[(&str, &str)],
    cc: u32,
    now: Instant,
    history: Option<History>,
) -> RevisionAutoscaler {
    let a = anns(pairs);
    let spec = RevisionScaling::resolve(&config(), &a, cc).unwrap();
    let (policy, errors) = Policy::parse(&a, &config());
    assert!(errors.is_empty(), "{errors:?}");
    RevisionAutoscaler::new(spec, policy, now, history)
}

/// A runtime that does what it is asked at once (instances ready when asked for, unless
/// `standard_start` says how many ticks a standard instance takes), and an Envoy that follows
/// the path at once.
struct World {
    t: Instant,
    wall: Timestamp,
    running: Running,
    /// Ticks until standard instances asked for are ready.
    standard_start: u32,
    starting_for: u32,
    in_path: bool,
}

impl World {
    fn new(t: Instant, standard_start: u32) -> Self {
        World {
            t,
            wall: Timestamp::from_second(1_767_225_600).unwrap(), // 2026-01-01T00:00:00Z
            running: Running::default(),
            standard_start,
            starting_for: 0,
            in_path: true,
        }
    }

    /// One second: record `concurrency`, decide, carry the plan out.
    async fn tick(&mut self, a: &mut RevisionAutoscaler, concurrency: f64) -> Plan {
        tokio::time::advance(SEC).await;
        self.t = Instant::now();
        self.wall += jiff::SignedDuration::from_secs(1);
        let stat = Stat {
            concurrency,
            requests: concurrency,
        };
        a.record(self.t, self.wall, stat);
        let plan = a.decide(self.t, self.wall, self.running, self.in_path, None);
        self.apply(&plan);
        plan
    }

    fn apply(&mut self, plan: &Plan) {
        if plan.standard > self.running.standard_ready {
            self.starting_for += 1;
            if self.starting_for > self.standard_start {
                self.running.standard_ready = plan.standard;
                self.starting_for = 0;
            }
        } else {
            self.running.standard_ready = plan.standard;
            self.starting_for = 0;
        }
        self.running.reserved_running = plan.reserved;
        self.running.reserved_ready = plan.reserved;
        self.in_path = plan.activator_in_path;
    }

    async fn run(&mut self, a: &mut RevisionAutoscaler, secs: u32, concurrency: f64) -> Plan {
        let mut last = None;
        for _ in 0..secs {
            last = Some(self.tick(a, concurrency).await);
        }
        last.expect("at least one tick")
    }
}

#[tokio::test(start_paused = true)]
async fn reserved_instances_replace_zero_serve_the_first_request_and_hand_over() {
    let mut a = autoscaler(
        &[("knative.aliyun.com/reserve-instance", "enable")],
        0,
        Instant::now(),
    );
    let mut w = World::new(Instant::now(), 2);
    // A new Revision starts one standard instance, no reserved one.
    let p = w.run(&mut a, 3, 0.0).await;
    assert_eq!((p.standard, p.reserved), (1, 0));
    // Idle: after the stable window and the grace period the reserved instance starts, made
    // before the standard one breaks.
    let mut saw_both = false;
    let mut p = p;
    for _ in 0..30 {
        p = w.tick(&mut a, 0.0).await;
        saw_both |= p.standard == 1 && p.reserved == 1 && !p.reserved_serving;
        if p.standard == 0 {
            break;
        }
    }
    assert!(
        saw_both,
        "the reserved instance started before the last standard one went"
    );
    assert_eq!((p.standard, p.reserved, p.reserved_serving), (0, 1, true));
    assert_eq!(p.reason, PlanReason::Kpa(ZeroReason::ScaledToZero));
    assert!(p.activator_in_path);
    let idle = w.run(&mut a, 20, 0.0).await;
    assert_eq!(
        (idle.standard, idle.reserved, idle.reserved_serving),
        (0, 1, true)
    );

    // The first request: the reserved instance serves it, and the Revision wants a standard
    // instance (reserved ones are not ready capacity).
    let p = w.tick(&mut a, 1.0).await;
    assert_eq!((p.standard, p.reserved, p.reserved_serving), (1, 1, true));
    // While the standard instance starts (2 ticks) the reserved one keeps serving.
    let p = w.tick(&mut a, 1.0).await;
    assert_eq!((p.reserved, p.reserved_serving), (1, true));
    // Ready: handed over.
    let p = w.run(&mut a, 2, 1.0).await;
    assert_eq!(w.running.standard_ready, 1);
    assert_eq!((p.standard, p.reserved, p.reserved_serving), (1, 0, false));
    // Busy for a while: no reserved instance comes back.
    let p = w.run(&mut a, 10, 1.0).await;
    assert_eq!((p.standard, p.reserved), (1, 0));
    // Idle again: back to the reserved instance.
    let p = w.run(&mut a, 30, 0.0).await;
    assert_eq!((p.standard, p.reserved, p.reserved_serving), (0, 1, true));
}

#[tokio::test(start_paused = true)]
async fn reserved_replicas_and_reachability() {
    let mut a = autoscaler(
        &[
            ("knative.aliyun.com/reserve-instance", "enable"),
            ("knative.aliyun.com/reserve-instance-replicas", "2"),
        ],
        0,
        Instant::now(),
    );
    let mut w = World::new(Instant::now(), 0);
    let p = w.run(&mut a, 40, 0.0).await;
    assert_eq!((p.standard, p.reserved), (0, 2));
    // No Route reaches it: nothing runs, not even reserved instances.
    a.set_reachable(false);
    let p = w.run(&mut a, 5, 0.0).await;
    assert_eq!((p.standard, p.reserved), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_window_raises_then_releases_the_count() {
    // 2026-01-01 00:00 UTC is where the world's clock starts; the window is 00:01–00:01.
    let mut a = autoscaler(
        &[
            (
                "sluice.knative.dev/scale-bounds",
                r#"[{"cron": "1 0 * * *", "minScale": 3}]"#,
            ),
            ("autoscaling.knative.dev/max-scale", "5"),
        ],
        0,
        Instant::now(),
    );
    let mut w = World::new(Instant::now(), 0);
    let p = w.run(&mut a, 59, 0.0).await;
    assert_eq!(p.window, None);
    assert_eq!(p.standard, 0, "idle: scaled to zero");
    // 00:01:00: the window is in force.
    let p = w.tick(&mut a, 0.0).await;
    let steps = p.steps.unwrap();
    assert_eq!(p.window.map(|w| w.index), Some(0));
    assert_eq!(
        (
            steps.reactive,
            steps.bounds.min,
            steps.bounds.max,
            steps.clamped
        ),
        (0, 3, 5, 3)
    );
    assert_eq!(p.standard, 3);
    let p = w.run(&mut a, 59, 0.0).await;
    assert_eq!(p.standard, 3, "all through the minute");
    // 00:02:00: released; the KPA scales down (at most halving per tick) and to zero.
    let p = w.tick(&mut a, 0.0).await;
    assert_eq!(p.window, None);
    assert!(p.standard < 3, "{p:?}");
    let p = w.run(&mut a, 30, 0.0).await;
    assert_eq!(p.standard, 0);
}

#[tokio::test(start_paused = true)]
async fn a_forecast_starts_capacity_before_the_daily_peak() {
    // Yesterday: 20 in flight from 00:10 to 00:19 (containerConcurrency 10: 7 per instance).
    let start = Timestamp::from_second(1_767_225_600).unwrap();
    let today = crate::predict::minute_of(start);
    let mut h = History::new();
    for m in (today - MINUTES_PER_DAY)..today {
        let offset = m - (today - MINUTES_PER_DAY);
        h.close(
            m,
            if (10..20).contains(&offset) {
                20.0
            } else {
                0.0
            },
        );
    }
    let mut a = autoscaler_with(
        &[
            ("sluice.knative.dev/predictive", "true"),
            ("sluice.knative.dev/predictive-lookahead", "60s"),
        ],
        10,
        Instant::now(),
        Some(h),
    );
    let mut w = World::new(Instant::now(), 0);
    // Until 00:08:59 the window [now, now + 60 s] does not reach 00:10: the KPA alone (idle → 0).
    let p = w.run(&mut a, 8 * 60 + 58, 0.0).await;
    assert_eq!(p.standard, 0);
    assert_eq!(p.forecast.map(|f| f.value), Some(0.0));
    // At 00:09:00 it does: three instances for 20 in flight, before any request.
    let p = w.run(&mut a, 2, 0.0).await;
    let steps = p.steps.unwrap();
    assert_eq!(
        (steps.reactive, steps.forecast, steps.clamped),
        (0, Some(3), 3)
    );
    assert_eq!(p.standard, 3);
    assert_eq!(p.forecast.map(|f| f.value), Some(20.0));
    // Held through the idle minute before the peak; then the actual load matches: the count
    // stays (no error, no margin).
    let p = w.run(&mut a, 60, 0.0).await;
    assert_eq!(p.standard, 3);
    let p = w.run(&mut a, 5 * 60, 20.0).await;
    assert_eq!(p.standard, 3);
    assert_eq!(p.forecast.map(|f| f.margin), Some(0.0));
    // The history now has today's minutes.
    assert!(a.history().unwrap().get(today + 12).is_some());
}

#[tokio::test(start_paused = true)]
async fn the_hpa_class_never_scales_to_zero_and_is_never_the_kpas() {
    let mut a = autoscaler(
        &[
            ("autoscaling.knative.dev/class", HPA_CLASS),
            ("autoscaling.knative.dev/metric", "cpu"),
            ("autoscaling.knative.dev/target", "50"),
            ("autoscaling.knative.dev/max-scale", "4"),
        ],
        0,
        Instant::now(),
    );
    assert!(a.is_hpa());
    let mut w = World::new(Instant::now(), 0);
    // Request figures are not the HPA's: no scale-out from concurrency.
    let p = w.run(&mut a, 10, 500.0).await;
    assert_eq!((p.standard, p.reason), (1, PlanReason::Hpa));
    assert!(!p.activator_in_path, "an instance is ready: direct");
    // 1.5 cores on one instance at a 50 % target: three instances at once.
    a.record_usage(
        w.wall,
        Usage {
            ready: 1,
            total: 150.0,
        },
    );
    let p = w.tick(&mut a, 0.0).await;
    assert_eq!(p.standard, 3);
    assert_eq!(p.observed, 150.0);
    // Idle: down only after 300 s, and never to zero.
    a.record_usage(
        w.wall,
        Usage {
            ready: 3,
            total: 0.0,
        },
    );
    let p = w.run(&mut a, 299, 0.0).await;
    assert_eq!(p.standard, 3);
    let p = w.run(&mut a, 2, 0.0).await;
    assert_eq!(p.standard, 1);
    let p = w.run(&mut a, 600, 0.0).await;
    assert_eq!(p.standard, 1);
}

#[tokio::test(start_paused = true)]
async fn changing_the_class_starts_the_other_autoscaler() {
    let now = Instant::now();
    let mut a = autoscaler(&[], 0, now);
    assert!(!a.is_hpa());
    let hpa = anns(&[("autoscaling.knative.dev/class", HPA_CLASS)]);
    let spec = RevisionScaling::resolve(&config(), &hpa, 0).unwrap();
    let (policy, _) = Policy::parse(&hpa, &config());
    a.update(spec, policy, now);
    assert!(a.is_hpa());
    let (policy, _) = Policy::parse(&anns(&[]), &config());
    a.update(
        RevisionScaling::resolve(&config(), &anns(&[]), 0).unwrap(),
        policy,
        now,
    );
    assert!(!a.is_hpa());
}
