//! `sluice up`'s autoscaling over a hand-stepped clock.

use std::time::Duration;

use sluice_autoscaler::Usage;

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn config(pairs: &[(&str, &str)]) -> Config {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_map(&data).expect("valid config-autoscaler")
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn wall0() -> Timestamp {
    Timestamp::from_second(1_767_225_600).unwrap()
}

/// The runtime: every requested instance ready at once.
fn running(d: &Decision) -> Running {
    Running {
        standard_requested: d.scale,
        standard_ready: d.scale,
        reserved_running: d.reserved,
        reserved_ready: d.reserved,
    }
}

/// Ticks once a second for `secs` seconds with `concurrency` in flight, the runtime making
/// every requested instance ready at once and Envoy following every path decision.
fn run(a: &mut Autoscaling, key: &Key, t: &mut Instant, secs: u32, concurrency: f64) -> Decision {
    // Windows and forecasts are the autoscaler crate's to test: a fixed wall clock here.
    let wall = |_: &Instant| wall0();
    let mut d = a.tick(*t, wall(t), key, Running::default(), true).unwrap();
    for _ in 0..secs {
        *t += SEC;
        let stat = Stat {
            concurrency,
            requests: concurrency,
        };
        a.record(*t, wall(t), key, stat);
        d = a.tick(*t, wall(t), key, running(&d), d.in_path).unwrap();
    }
    d
}

fn track(a: &mut Autoscaling, t: Instant, key: &Key, ann: &[(&str, &str)], cc: u32) {
    a.track(t, key, &annotations(ann), cc, true, None).unwrap();
}

#[test]
fn a_new_revision_starts_one_instance_behind_the_activator() {
    let mut a = Autoscaling::new(Config::default());
    let key = Key::new("default", "hello-00001");
    let now = Instant::now();
    track(&mut a, now, &key, &[], 0);
    let d = a
        .tick(now, wall0(), &key, Running::default(), true)
        .unwrap();
    assert_eq!((d.scale, d.reserved, d.in_path), (1, 0, true));
}

#[test]
fn idle_revision_scales_to_zero_after_stable_window_and_grace() {
    let mut a = Autoscaling::new(config(&[
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "2s"),
    ]));
    let key = Key::new("default", "hello-00001");
    let mut t = Instant::now();
    track(&mut a, t, &key, &[], 0);
    let d = run(&mut a, &key, &mut t, 5, 0.0);
    assert_eq!(d.scale, 1);
    assert_eq!(a.view(&key).unwrap().reason, "stable-window");
    let d = run(&mut a, &key, &mut t, 10, 0.0);
    assert_eq!((d.scale, d.in_path), (0, true));
    let v = a.view(&key).unwrap();
    assert_eq!(v.reason, "scaled-to-zero");
    let steps = v.steps.unwrap();
    assert_eq!((steps.reactive, steps.clamped), (0, 0));
}

#[test]
fn traffic_at_zero_wakes_the_revision_at_once() {
    let mut a = Autoscaling::new(config(&[
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "1s"),
    ]));
    let key = Key::new("default", "hello-00001");
    let mut t = Instant::now();
    track(&mut a, t, &key, &[], 0);
    assert_eq!(run(&mut a, &key, &mut t, 20, 0.0).scale, 0);
    let stat = Stat {
        concurrency: 1.0,
        requests: 1.0,
    };
    a.record(t, wall0(), &key, stat);
    let d = a.tick(t, wall0(), &key, Running::default(), true).unwrap();
    assert_eq!(d.scale, 1, "woken by the request it holds");
    assert!(d.in_path, "no instance is ready yet");
}

#[test]
fn load_above_the_target_scales_out_and_back_in() {
    let mut a = Autoscaling::new(config(&[("stable-window", "6s")]));
    let key = Key::new("default", "hello-00001");
    let mut t = Instant::now();
    track(&mut a, t, &key, &[], 10);
    let d = run(&mut a, &key, &mut t, 12, 28.0);
    assert_eq!(d.scale, 4, "28 in flight / 7 per instance");
    let d = run(&mut a, &key, &mut t, 30, 0.0);
    assert!(d.scale < 4, "scales back in without load: {d:?}");
}

#[test]
fn min_scale_holds_only_while_reachable() {
    let mut a = Autoscaling::new(config(&[
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "1s"),
    ]));
    let key = Key::new("default", "hello-00001");
    let ann = annotations(&[("autoscaling.knative.dev/min-scale", "2")]);
    let mut t = Instant::now();
    a.track(t, &key, &ann, 0, true, None).unwrap();
    assert_eq!(run(&mut a, &key, &mut t, 30, 0.0).scale, 2);
    a.track(t, &key, &ann, 0, false, None).unwrap();
    assert_eq!(run(&mut a, &key, &mut t, 30, 0.0).scale, 0);
    assert_eq!(a.view(&key).unwrap().reason, "scaled-to-zero");
}

#[test]
fn a_config_change_applies_to_tracked_revisions() {
    let mut a = Autoscaling::new(Config::default());
    let key = Key::new("default", "hello-00001");
    let mut t = Instant::now();
    track(&mut a, t, &key, &[], 0);
    assert_eq!(run(&mut a, &key, &mut t, 20, 0.0).scale, 1, "60 s window");
    a.set_config(config(&[("enable-scale-to-zero", "false")]));
    assert_eq!(run(&mut a, &key, &mut t, 200, 0.0).scale, 1);
    assert_eq!(a.view(&key).unwrap().reason, "scale-to-zero-disabled");
}

#[test]
fn invalid_kpa_annotations_are_refused_others_are_reported() {
    let mut a = Autoscaling::new(Config::default());
    let key = Key::new("default", "hello-00001");
    let ann = annotations(&[("autoscaling.knative.dev/min-scale", "lots")]);
    let err = a
        .track(Instant::now(), &key, &ann, 0, true, None)
        .unwrap_err();
    assert!(err.to_string().contains("min-scale"), "{err}");
    assert!(!a.tracks(&key));
    let ann = annotations(&[
        (
            "sluice.knative.dev/scale-bounds",
            "[{\"cron\": \"every day\"}]",
        ),
        ("knative.aliyun.com/reserve-instance", "enable"),
    ]);
    a.track(Instant::now(), &key, &ann, 0, true, None).unwrap();
    let problems = a.problems(&key);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key(), "sluice.knative.dev/scale-bounds");
    assert!(a.reserve(&key).is_some(), "the rest applies");
}

#[test]
fn reserved_instances_at_idle_and_the_view_shows_them() {
    let mut a = Autoscaling::new(config(&[
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "1s"),
    ]));
    let key = Key::new("default", "hello-00001");
    let mut t = Instant::now();
    track(
        &mut a,
        t,
        &key,
        &[
            ("knative.aliyun.com/reserve-instance", "enable"),
            ("knative.aliyun.com/reserve-instance-type", "ecs"),
        ],
        0,
    );
    let d = run(&mut a, &key, &mut t, 30, 0.0);
    assert_eq!((d.scale, d.reserved, d.reserved_serving), (0, 1, true));
    assert!(a.reserved_serving(&key));
    let v = a.view(&key).unwrap();
    assert_eq!(
        (v.reason.as_str(), v.reserved, v.reserve_type.as_deref()),
        ("reserved", 1, Some("ecs"))
    );
}

#[test]
fn hpa_revisions_scale_on_usage_not_on_requests() {
    let mut a = Autoscaling::new(Config::default());
    let key = Key::new("default", "cpu-00001");
    let mut t = Instant::now();
    track(
        &mut a,
        t,
        &key,
        &[
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/target", "30"),
        ],
        0,
    );
    assert_eq!(a.hpa_metric(&key), Some(sluice_autoscaler::HpaMetric::Cpu));
    assert_eq!(run(&mut a, &key, &mut t, 10, 50.0).scale, 1);
    a.record_usage(
        wall0(),
        &key,
        Usage {
            ready: 1,
            total: 95.0,
        },
    );
    let d = run(&mut a, &key, &mut t, 1, 0.0);
    assert_eq!(d.scale, 4, "95 % of a core at a 30 % target");
    let v = a.view(&key).unwrap();
    assert_eq!(
        (v.class.as_str(), v.metric.as_str(), v.reason.as_str()),
        ("hpa", "cpu", "hpa")
    );
}

#[test]
fn predictive_histories_are_listed_with_their_metric() {
    let mut a = Autoscaling::new(Config::default());
    let key = Key::new("default", "p-00001");
    let mut t = Instant::now();
    let mut h = History::new();
    h.close(1, 5.0);
    a.track(
        t,
        &key,
        &annotations(&[("sluice.knative.dev/predictive", "true")]),
        0,
        true,
        Some(("concurrency".into(), h.clone())),
    )
    .unwrap();
    run(&mut a, &key, &mut t, 3, 1.0);
    let listed: Vec<_> = a
        .histories()
        .map(|(k, m, h)| (k.clone(), m, h.get(1)))
        .collect();
    assert_eq!(listed, [(key.clone(), "concurrency", Some(5.0))]);
    let v = a.view(&key).unwrap();
    assert_eq!(v.forecast.map(|f| f.lookahead_s), Some(30.0));
    // A history in another metric is not used.
    let other = Key::new("default", "p-00002");
    a.track(
        t,
        &other,
        &annotations(&[
            ("sluice.knative.dev/predictive", "true"),
            ("autoscaling.knative.dev/metric", "rps"),
        ]),
        0,
        true,
        Some(("concurrency".into(), h)),
    )
    .unwrap();
    let h2 = a
        .histories()
        .find(|(k, _, _)| **k == other)
        .map(|(_, m, h)| (m, h.get(1)));
    assert_eq!(h2, Some(("rps", None)));
}
