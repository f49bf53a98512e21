use std::collections::BTreeMap;
use std::ops::Range;

use proptest::prelude::*;
use tokio::time::advance;

use super::*;
use crate::config::Config;

const SEC: Duration = Duration::from_secs(1);

fn spec_with(config: &Config, pairs: &[(&str, &str)], cc: u32) -> RevisionScaling {
    let anns: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    RevisionScaling::resolve(config, &anns, cc).unwrap()
}

fn spec(pairs: &[(&str, &str)], cc: u32) -> RevisionScaling {
    spec_with(&Config::default(), pairs, cc)
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

/// Records `concurrency` once in each second of `secs`.
fn feed(d: &mut Decider, t0: Instant, secs: Range<u64>, concurrency: f64) {
    for s in secs {
        d.record(
            at(t0, s),
            Stat {
                concurrency,
                requests: 0.0,
            },
        );
    }
}

#[test]
fn cc10_util70_with_140_concurrent_over_the_stable_window_wants_20() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 140.0);
    let r = d.scale(at(t0, 59), 20);
    assert!(r.valid);
    assert_eq!(r.desired, 20);
    assert!(!r.panic);
    assert_eq!(r.observed_stable, 140.0);
    // 20 × 10 (total, not target) − 211 − 140.
    assert_eq!(r.excess_burst_capacity, -151);
    assert!(r.activator_in_path);
}

#[tokio::test(start_paused = true)]
async fn panic_holds_the_count_for_a_stable_window() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 7.0);
    assert_eq!(d.scale(at(t0, 59), 1).desired, 1);

    // A burst: 70 in flight over the 6 s panic window = 10 × ready.
    feed(&mut d, t0, 60..66, 70.0);
    advance(Duration::from_secs(65)).await;
    let r = d.scale(Instant::now(), 1);
    assert!(r.panic);
    assert_eq!(r.desired, 10);

    // The burst ends; the count holds for a whole stable window.
    for s in (67..=125).step_by(2) {
        feed(&mut d, t0, s - 1..s + 1, 0.0);
        advance(2 * SEC).await;
        assert_eq!(Instant::now(), at(t0, s));
        let r = d.scale(Instant::now(), 10);
        assert!(r.panic, "still panicking at {s} s");
        assert_eq!(r.desired, 10, "held at {s} s");
    }
    feed(&mut d, t0, 126..128, 0.0);
    advance(2 * SEC).await;
    let r = d.scale(Instant::now(), 10);
    assert!(!r.panic);
    assert_eq!(r.desired, 5, "scale-down resumes, halving at most");
}

#[tokio::test(start_paused = true)]
async fn panic_never_decreases_the_count_while_load_stays_high() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    feed(&mut d, t0, 0..10, 140.0);
    advance(9 * SEC).await;
    let first = d.scale(Instant::now(), 2);
    assert!(first.panic);
    assert_eq!(first.desired, 20);
    // Less load but still over the threshold for 2 instances: no decrease.
    feed(&mut d, t0, 10..20, 35.0);
    advance(10 * SEC).await;
    let r = d.scale(Instant::now(), 2);
    assert!(r.panic);
    assert_eq!(r.desired, 20);
}

#[test]
fn restarted_decider_starts_in_panic_holding_ready_instances() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 5);
    assert!(d.in_panic());
    feed(&mut d, t0, 0..10, 0.0);
    let r = d.scale(at(t0, 9), 5);
    assert_eq!((r.desired, r.panic), (5, true));
    feed(&mut d, t0, 10..62, 0.0);
    let r = d.scale(at(t0, 61), 5);
    assert_eq!((r.desired, r.panic), (2, false));
}

#[test]
fn scale_down_halves_at_most_per_tick() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 0.0);
    let mut ready = 100;
    let mut seen = vec![];
    while ready > 0 {
        ready = d.scale(at(t0, 59), ready).desired_scale().unwrap();
        seen.push(ready);
    }
    assert_eq!(seen, vec![50, 25, 12, 6, 3, 1, 0]);
}

#[test]
fn scale_up_is_limited_by_max_scale_up_rate() {
    let mut data = BTreeMap::new();
    data.insert("max-scale-up-rate".to_owned(), "2".to_owned());
    let config = Config::from_map(&data).unwrap();
    let t0 = Instant::now();
    let mut d = Decider::new(spec_with(&config, &[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 7_000.0);
    assert_eq!(d.scale(at(t0, 59), 2).desired, 4);
    assert_eq!(d.scale(at(t0, 59), 4).desired, 8);
    // From zero ready instances the rate applies to one.
    let mut d = Decider::new(spec_with(&config, &[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 7_000.0);
    assert_eq!(d.scale(at(t0, 59), 0).desired, 2);
}

#[test]
fn min_and_max_scale_bound_the_decision() {
    let t0 = Instant::now();
    let s = spec(
        &[
            ("autoscaling.knative.dev/min-scale", "2"),
            ("autoscaling.knative.dev/max-scale", "3"),
        ],
        10,
    );
    let mut d = Decider::new(s, t0, 0);
    feed(&mut d, t0, 0..60, 140.0);
    assert_eq!(d.scale(at(t0, 59), 3).desired, 3);
    feed(&mut d, t0, 60..130, 0.0);
    assert_eq!(d.scale(at(t0, 129), 3).desired, 2);
    // Unreachable: min-scale no longer holds and the rate limit down is off.
    d.set_reachable(false);
    assert_eq!(d.scale(at(t0, 129), 3).desired, 0);
}

#[test]
fn activation_scale_wakes_to_at_least_that_many() {
    let t0 = Instant::now();
    let s = spec(&[("autoscaling.knative.dev/activation-scale", "3")], 10);
    let mut d = Decider::new(s, t0, 0);
    d.mark_initialized();
    assert_eq!(d.scale(at(t0, 0), 0).desired_scale(), None, "no data yet");
    d.record(
        at(t0, 1),
        Stat {
            concurrency: 1.0,
            requests: 1.0,
        },
    );
    assert_eq!(d.scale(at(t0, 1), 0).desired, 3);
    // With no load at all it may still go to zero.
    feed(&mut d, t0, 2..80, 0.0);
    assert_eq!(d.scale(at(t0, 79), 1).desired, 0);
}

#[test]
fn scale_down_delay_keeps_the_maximum_over_the_delay() {
    let t0 = Instant::now();
    let s = spec(
        &[
            ("autoscaling.knative.dev/window", "6s"),
            ("autoscaling.knative.dev/scale-down-delay", "10s"),
        ],
        10,
    );
    let mut d = Decider::new(s, t0, 0);
    feed(&mut d, t0, 0..6, 140.0);
    assert_eq!(d.scale(at(t0, 5), 20).desired, 20);
    feed(&mut d, t0, 6..16, 0.0);
    assert_eq!(d.scale(at(t0, 12), 20).desired, 20, "delayed");
    assert_eq!(d.scale(at(t0, 14), 20).desired, 20, "delayed");
    assert_eq!(
        d.scale(at(t0, 15), 20).desired,
        10,
        "10 s after the high point"
    );
}

#[test]
fn excess_burst_capacity_uses_total_capacity() {
    let t0 = Instant::now();
    let ebc = |pairs: &[(&str, &str)], cc: u32, ready: u32, concurrency: f64| {
        let mut d = Decider::new(spec(pairs, cc), t0, 0);
        feed(&mut d, t0, 0..6, concurrency);
        d.scale(at(t0, 5), ready).excess_burst_capacity
    };
    assert_eq!(ebc(&[], 0, 3, 50.0), 300 - 211 - 50);
    assert_eq!(
        ebc(
            &[("autoscaling.knative.dev/target-burst-capacity", "5")],
            10,
            2,
            10.0
        ),
        5
    );
    assert_eq!(
        ebc(
            &[("autoscaling.knative.dev/target-burst-capacity", "0")],
            10,
            2,
            99.0
        ),
        0
    );
    assert_eq!(
        ebc(
            &[("autoscaling.knative.dev/target-burst-capacity", "-1")],
            10,
            9,
            0.0
        ),
        -1
    );
    assert_eq!(
        ebc(
            &[("autoscaling.knative.dev/target-burst-capacity", "0.5")],
            0,
            1,
            0.25
        ),
        99
    );
}

#[tokio::test(start_paused = true)]
async fn activator_leaves_the_path_only_after_a_panic_window_of_surplus() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 0), t0, 0);
    assert!(d.activator_in_path());
    // 4 instances of 100 with 20 in flight: EBC = 400 − 211 − 20 = 169.
    for s in 0..6 {
        feed(&mut d, t0, s..s + 1, 20.0);
        let r = d.scale(Instant::now(), 4);
        assert!(r.excess_burst_capacity > 0);
        assert!(r.activator_in_path, "hold not over at {s} s");
        advance(SEC).await;
    }
    feed(&mut d, t0, 6..7, 20.0);
    assert!(!d.scale(Instant::now(), 4).activator_in_path);
    // A burst that eats the spare capacity: back in at once.
    feed(&mut d, t0, 7..8, 2_000.0);
    advance(SEC).await;
    let r = d.scale(Instant::now(), 4);
    assert!(r.excess_burst_capacity < 0);
    assert!(r.activator_in_path);
}

#[test]
fn a_new_revision_goes_to_its_initial_scale_without_data() {
    let t0 = Instant::now();
    let mut d = Decider::new(
        spec(&[("autoscaling.knative.dev/initial-scale", "3")], 0),
        t0,
        0,
    );
    for ready in 0..3 {
        let r = d.scale(at(t0, 1), ready);
        assert!(r.valid);
        assert_eq!(r.desired, 3, "ready {ready}");
    }
    // Reached once: the autoscaler takes over (no load, halve).
    feed(&mut d, t0, 0..61, 0.0);
    assert_eq!(d.scale(at(t0, 60), 3).desired, 1);
    assert_eq!(d.scale(at(t0, 62), 2).desired, 1);
}

#[test]
fn no_data_is_unknown_for_a_stable_window_then_zero() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 0), t0, 1);
    let r = d.scale(at(t0, 10), 1);
    assert!(!r.valid);
    assert_eq!(r.desired, -1);
    assert_eq!(r.desired_scale(), None);
    let r = d.scale(at(t0, 60), 1);
    assert!(r.valid);
    assert_eq!(r.desired, 0);
    assert!(r.activator_in_path);
}

#[test]
fn rps_metric_scales_on_requests() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[("autoscaling.knative.dev/metric", "rps")], 0), t0, 0);
    for s in 0..60 {
        d.record(
            at(t0, s),
            Stat {
                concurrency: 1_000.0,
                requests: 280.0,
            },
        );
    }
    // 280 rps / (200 × 70 %).
    assert_eq!(d.scale(at(t0, 59), 2).desired, 2);
}

#[test]
fn a_request_at_zero_asks_for_a_poke() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 0), t0, 1);
    let idle = Stat::default();
    let busy = Stat {
        concurrency: 1.0,
        requests: 1.0,
    };
    assert!(!d.wants_poke(&busy), "no decision yet");
    assert_eq!(d.scale(at(t0, 60), 1).desired, 0);
    assert!(d.wants_poke(&busy));
    assert!(!d.wants_poke(&idle));
    d.record(at(t0, 61), busy);
    let r = d.scale(at(t0, 61), 0);
    assert_eq!(r.desired, 1);
    assert!(r.activator_in_path, "no instance ready yet");
}

#[test]
fn update_applies_a_new_target_and_keeps_data() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    feed(&mut d, t0, 0..60, 140.0);
    assert_eq!(d.scale(at(t0, 59), 20).desired, 20);
    d.update(spec(&[("autoscaling.knative.dev/target", "5")], 10));
    // 140 / (5 × 0.7) = 40 (asked with 40 ready, so no panic holds it).
    assert_eq!(d.scale(at(t0, 59), 40).desired, 40);
    d.update(spec(
        &[(
            "autoscaling.knative.dev/metric-aggregation-algorithm",
            "weighted-exponential",
        )],
        10,
    ));
    assert_eq!(
        d.spec().aggregation,
        crate::Aggregation::WeightedExponential
    );
    feed(&mut d, t0, 60..120, 140.0);
    assert_eq!(d.scale(at(t0, 119), 20).desired, 20);
}

#[test]
fn garbage_stats_do_not_break_the_decision() {
    let t0 = Instant::now();
    let mut d = Decider::new(spec(&[], 10), t0, 0);
    d.record(
        at(t0, 0),
        Stat {
            concurrency: f64::NAN,
            requests: f64::INFINITY,
        },
    );
    d.record(
        at(t0, 1),
        Stat {
            concurrency: -50.0,
            requests: -1.0,
        },
    );
    d.record(
        at(t0, 2),
        Stat {
            concurrency: 1e300,
            requests: 0.0,
        },
    );
    let r = d.scale(at(t0, 2), 1);
    assert!(r.valid);
    assert_eq!(r.desired, 1_000, "capped by the scale-up rate");
    // Time before the decider's origin counts as its origin.
    d.record(
        t0 - Duration::from_secs(5),
        Stat {
            concurrency: 1.0,
            requests: 1.0,
        },
    );
    assert!(d.scale(t0, 1).valid);
}

proptest! {
    #[test]
    fn one_tick_stays_within_the_rate_limits(
        ready in 1u32..500,
        concurrency in 0.0f64..100_000.0,
        up in 1.01f64..10.0,
        down in 1.01f64..10.0,
        cc in 0u32..50,
    ) {
        let config = Config { max_scale_up_rate: up, max_scale_down_rate: down, ..Config::default() };
        let s = spec_with(&config, &[], cc);
        let target = s.target_value;
        let t0 = Instant::now();
        let mut d = Decider::new(s, t0, 0);
        feed(&mut d, t0, 0..60, concurrency);
        let r = d.scale(at(t0, 59), ready);
        let r_f = f64::from(ready.max(1));
        let lo = (r_f / down).floor();
        let hi = (up * r_f).ceil();
        let want = (r.observed_stable / target).ceil().max(lo).min(hi);
        prop_assert!(r.valid);
        prop_assert!(f64::from(r.desired) >= lo && f64::from(r.desired) <= hi);
        prop_assert_eq!(f64::from(r.desired), want);
    }

    #[test]
    fn idle_ticks_never_drop_faster_than_the_down_rate(
        start in 1u32..10_000,
        down in 1.01f64..8.0,
    ) {
        let config = Config { max_scale_down_rate: down, ..Config::default() };
        let t0 = Instant::now();
        let mut d = Decider::new(spec_with(&config, &[], 0), t0, 0);
        feed(&mut d, t0, 0..60, 0.0);
        let mut ready = start;
        for _ in 0..200 {
            let next = d.scale(at(t0, 59), ready).desired_scale().unwrap_or(u32::MAX);
            prop_assert!(next <= ready);
            prop_assert!(f64::from(next) >= (f64::from(ready) / down).floor());
            if next == 0 {
                break;
            }
            ready = next;
        }
    }
}

#[test]
fn a_hand_built_spec_with_absurd_values_does_not_panic() {
    let t0 = Instant::now();
    let mut s = spec(&[], 0);
    s.stable_window = Duration::MAX;
    s.panic_window = Duration::MAX;
    s.scale_down_delay = Duration::MAX;
    s.target_value = 0.0;
    s.max_scale_down_rate = 0.0;
    s.max_scale_up_rate = f64::INFINITY;
    s.panic_threshold = f64::NAN;
    let mut d = Decider::new(s, t0, 3);
    d.record(
        t0,
        Stat {
            concurrency: 5.0,
            requests: 5.0,
        },
    );
    let r = d.scale(at(t0, 1), u32::MAX);
    assert!(r.valid);
    assert!(r.desired >= 0);
}
