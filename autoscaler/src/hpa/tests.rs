//! The HPA class over paused time: tolerance, scale up at once, scale down over the window,
//! unready instances, and the settings read from annotations.

use super::*;
use crate::config::Config;

const SEC: Duration = Duration::from_secs(1);

fn spec(target: f64) -> HpaSpec {
    HpaSpec {
        metric: HpaMetric::Cpu,
        target,
        scale_up_window: Duration::ZERO,
        scale_down_window: SCALE_DOWN_WINDOW,
    }
}

fn usage(ready: u32, total: f64) -> Usage {
    Usage { ready, total }
}

#[test]
fn within_tolerance_nothing_changes() {
    let mut h = HpaDecider::new(spec(50.0));
    let now = Instant::now();
    h.record(usage(2, 108.0)); // 54 % each: 8 % over
    assert_eq!(h.decide(now, 2).desired, 2);
    h.record(usage(2, 90.0)); // 45 %: 10 % under
    assert_eq!(h.decide(now + SEC, 2).recommendation, 2);
}

#[test]
fn scales_up_at_once() {
    let mut h = HpaDecider::new(spec(50.0));
    let now = Instant::now();
    h.record(usage(1, 180.0)); // 1.8 cores on one instance, 50 % target
    let r = h.decide(now, 1);
    assert_eq!((r.recommendation, r.desired), (4, 4));
    assert_eq!(r.per_instance, Some(180.0));
}

#[tokio::test(start_paused = true)]
async fn scales_down_only_after_the_window() {
    let mut h = HpaDecider::new(spec(50.0));
    let t0 = Instant::now();
    h.record(usage(4, 200.0));
    assert_eq!(h.decide(t0, 4).desired, 4);
    // Idle now: the recommendation is 1, the count stays 4 for 300 s.
    h.record(usage(4, 0.0));
    let mut current = 4;
    let mut dropped_at = None;
    for s in 1..=400u64 {
        tokio::time::advance(SEC).await;
        let r = h.decide(Instant::now(), current);
        assert_eq!(r.recommendation, 1);
        if r.desired < current && dropped_at.is_none() {
            dropped_at = Some(s);
        }
        current = r.desired;
    }
    assert_eq!(
        dropped_at,
        Some(300),
        "the 4 recommended at t0 ages out after 300 s"
    );
    assert_eq!(current, 1, "never below one");
}

#[tokio::test(start_paused = true)]
async fn the_window_annotation_sets_both_windows() {
    let mut h = HpaDecider::new(HpaSpec {
        scale_up_window: Duration::from_secs(10),
        scale_down_window: Duration::from_secs(10),
        ..spec(50.0)
    });
    let t0 = Instant::now();
    h.record(usage(1, 50.0));
    assert_eq!(h.decide(t0, 1).desired, 1);
    // Load: up only once the higher recommendation held for the window.
    h.record(usage(1, 150.0));
    let mut current = 1;
    let mut up_at = None;
    for s in 1..=20u64 {
        tokio::time::advance(SEC).await;
        current = h.decide(Instant::now(), current).desired;
        if current > 1 && up_at.is_none() {
            up_at = Some(s);
        }
    }
    assert_eq!(up_at, Some(10));
    assert_eq!(current, 3);
}

#[test]
fn unready_instances_count_as_idle_up_and_as_on_target_down() {
    // 3 asked, 1 ready at 120 %: with the 2 missing at 0 the mean is 40 % of 50 → no scale up.
    assert_eq!(recommend(usage(1, 120.0), 3, 50.0), 3);
    // 3 asked, 1 ready at 400 %: even with 2 at 0 that is 133 % → 4 + (rounding) = 8.
    assert_eq!(recommend(usage(1, 400.0), 3, 50.0), 8);
    // 3 asked, 1 ready at 0 %: the 2 missing count at target → 67 % of target → 2.
    assert_eq!(recommend(usage(1, 0.0), 3, 50.0), 2);
}

#[test]
fn no_measurement_keeps_the_count() {
    let mut h = HpaDecider::new(spec(80.0));
    let r = h.decide(Instant::now(), 3);
    assert_eq!((r.per_instance, r.recommendation, r.desired), (None, 3, 3));
    h.record(usage(0, 0.0));
    assert_eq!(h.decide(Instant::now(), 0).desired, 1, "never zero");
}

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
        .collect()
}

fn resolve(pairs: &[(&str, &str)]) -> (HpaSpec, Vec<AnnotationError>) {
    let a = anns(pairs);
    let parsed = ScalingAnnotations::parse(&a, &Config::default()).expect("valid");
    let mut errors = Vec::new();
    (HpaSpec::resolve(&a, &parsed, &mut errors), errors)
}

#[test]
fn settings_from_annotations() {
    let hpa = ("class", "hpa.autoscaling.knative.dev");
    let (s, e) = resolve(&[hpa, ("metric", "cpu"), ("target", "20")]);
    assert!(e.is_empty());
    assert_eq!((s.metric, s.target), (HpaMetric::Cpu, 20.0));
    assert_eq!(
        (s.scale_up_window, s.scale_down_window),
        (Duration::ZERO, SCALE_DOWN_WINDOW)
    );
    let (s, _) = resolve(&[
        hpa,
        ("metric", "memory"),
        ("target", "256"),
        ("window", "30s"),
    ]);
    assert_eq!((s.metric, s.target), (HpaMetric::Memory, 256.0));
    assert_eq!(s.scale_up_window, Duration::from_secs(30));
    assert_eq!(s.scale_down_window, Duration::from_secs(30));
    // Without a target: an HPA without metrics, which Kubernetes runs at 80 % CPU.
    let (s, _) = resolve(&[hpa, ("metric", "memory")]);
    assert_eq!((s.metric, s.target), (HpaMetric::Cpu, 80.0));
    let (s, e) = resolve(&[hpa, ("metric", "queue-depth"), ("target", "5")]);
    assert_eq!(s.metric, HpaMetric::Cpu);
    assert_eq!(
        e[0].to_string(),
        "the HPA class under sluice up measures \"cpu\" or \"memory\", not \"queue-depth\": autoscaling.knative.dev/metric"
    );
}
