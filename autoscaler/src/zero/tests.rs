use std::collections::BTreeMap;

use tokio::time::advance;

use super::*;
use crate::config::Config;

const SEC: Duration = Duration::from_secs(1);

fn spec(config: Config, pairs: &[(&str, &str)]) -> RevisionScaling {
    let anns: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    RevisionScaling::resolve(&config, &anns, 0).unwrap()
}

/// A revision idle for its whole stable window (the paused clock advances),
/// with the activator in path; returns when it turned inactive.
async fn idle_after_stable_window(spec: &RevisionScaling) -> (ScaleToZero, Instant) {
    let mut z = ScaleToZero::new(spec, Instant::now());
    advance(spec.stable_window).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert!(v.inactive);
    (z, Instant::now())
}

#[tokio::test(start_paused = true)]
async fn no_scale_to_zero_before_the_30s_grace_period() {
    let s = spec(Config::default(), &[]);
    let start = Instant::now();
    let mut z = ScaleToZero::new(&s, start);
    advance(s.stable_window).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!((v.scale, v.reason), (1, ZeroReason::GracePeriod));
    assert_eq!(v.recheck_at, Some(Instant::now() + 30 * SEC));
    advance(29 * SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 1);
    advance(SEC).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!((v.scale, v.reason), (0, ZeroReason::ScaledToZero));
}

#[tokio::test(start_paused = true)]
async fn a_woken_revision_keeps_an_instance_for_a_stable_window() {
    let s = spec(Config::default(), &[]);
    let mut z = ScaleToZero::new(&s, Instant::now());
    let v = z.decide(Instant::now(), 0, 3, true);
    assert_eq!(
        (v.scale, v.reason, v.inactive),
        (1, ZeroReason::StableWindow, false)
    );
    advance(59 * SEC).await;
    assert_eq!(
        z.decide(Instant::now(), 0, 1, true).reason,
        ZeroReason::StableWindow
    );
    advance(SEC).await;
    assert_eq!(
        z.decide(Instant::now(), 0, 1, true).reason,
        ZeroReason::GracePeriod
    );
}

#[tokio::test(start_paused = true)]
async fn the_grace_period_counts_from_when_the_activator_is_in_path() {
    let s = spec(Config::default(), &[]);
    let (mut z, _) = idle_after_stable_window(&s).await;
    // Envoy switched back to serving directly (e.g. still programming).
    advance(40 * SEC).await;
    let v = z.decide(Instant::now(), 0, 1, false);
    assert_eq!((v.scale, v.reason), (1, ZeroReason::AwaitingActivator));
    advance(5 * SEC).await;
    assert_eq!(
        z.decide(Instant::now(), 0, 1, true).reason,
        ZeroReason::GracePeriod
    );
    advance(29 * SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 1);
    advance(SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 0);
}

#[tokio::test(start_paused = true)]
async fn pod_retention_keeps_the_last_instance_longer() {
    let s = spec(
        Config::default(),
        &[(
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
            "2m",
        )],
    );
    let (mut z, inactive_at) = idle_after_stable_window(&s).await;
    advance(30 * SEC).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!((v.scale, v.reason), (1, ZeroReason::PodRetention));
    assert_eq!(v.recheck_at, Some(inactive_at + 120 * SEC));
    advance(89 * SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 1);
    advance(SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 0);
}

#[tokio::test(start_paused = true)]
async fn traffic_during_the_grace_period_starts_over() {
    let s = spec(Config::default(), &[]);
    let (mut z, _) = idle_after_stable_window(&s).await;
    advance(20 * SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 1);
    let v = z.decide(Instant::now(), 2, 1, true);
    assert_eq!(
        (v.scale, v.reason, v.inactive),
        (2, ZeroReason::Active, false)
    );
    assert!(!z.inactive());
    // Idle again: a new stable window, then a new grace period.
    advance(30 * SEC).await;
    assert_eq!(
        z.decide(Instant::now(), 0, 2, true).reason,
        ZeroReason::StableWindow
    );
}

#[tokio::test(start_paused = true)]
async fn disabled_scale_to_zero_keeps_one_instance() {
    let config = Config {
        enable_scale_to_zero: false,
        ..Config::default()
    };
    let s = spec(config, &[]);
    let mut z = ScaleToZero::new(&s, Instant::now());
    advance(Duration::from_secs(3600)).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!((v.scale, v.reason), (1, ZeroReason::Disabled));
}

#[tokio::test(start_paused = true)]
async fn holding_never_scales_up_from_zero() {
    let config = Config {
        allow_zero_initial_scale: true,
        initial_scale: 0,
        ..Config::default()
    };
    let s = spec(config, &[]);
    let mut z = ScaleToZero::new(&s, Instant::now());
    assert!(z.inactive());
    let v = z.decide(Instant::now(), 0, 0, false);
    assert_eq!((v.scale, v.reason), (0, ZeroReason::AwaitingActivator));
}

#[tokio::test(start_paused = true)]
async fn a_short_grace_from_config_map_is_honoured() {
    let mut data = BTreeMap::new();
    data.insert("scale-to-zero-grace-period".to_owned(), "2s".to_owned());
    data.insert("stable-window".to_owned(), "6s".to_owned());
    let s = spec(Config::from_map(&data).unwrap(), &[]);
    let (mut z, _) = idle_after_stable_window(&s).await;
    advance(SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 1);
    advance(SEC).await;
    assert_eq!(z.decide(Instant::now(), 0, 1, true).scale, 0);
}

#[tokio::test(start_paused = true)]
async fn endless_periods_never_scale_to_zero_and_never_panic() {
    let mut s = spec(Config::default(), &[]);
    s.scale_to_zero_pod_retention_period = Duration::MAX;
    let (mut z, _) = idle_after_stable_window(&s).await;
    advance(Duration::from_secs(86_400)).await;
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!(
        (v.scale, v.reason, v.recheck_at),
        (1, ZeroReason::PodRetention, None)
    );
    s.stable_window = Duration::MAX;
    let mut z = ScaleToZero::new(&s, Instant::now());
    let v = z.decide(Instant::now(), 0, 1, true);
    assert_eq!(
        (v.scale, v.reason, v.recheck_at),
        (1, ZeroReason::StableWindow, None)
    );
}
