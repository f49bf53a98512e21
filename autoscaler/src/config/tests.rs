use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn err(pairs: &[(&str, &str)]) -> String {
    match Config::from_map(&map(pairs)) {
        Ok(c) => panic!("{pairs:?} was accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_map_gives_upstream_defaults() {
    let c = Config::from_map(&BTreeMap::new()).unwrap();
    assert_eq!(c, Config::default());
    assert!(c.enable_scale_to_zero);
    assert_eq!(c.container_concurrency_target_fraction, 0.7);
    assert_eq!(c.container_concurrency_target_default, 100.0);
    assert_eq!(c.rps_target_default, 200.0);
    assert_eq!(c.target_burst_capacity, 211.0);
    assert_eq!(c.stable_window, Duration::from_secs(60));
    assert_eq!(c.panic_window_percentage, 10.0);
    assert_eq!(c.panic_threshold_percentage, 200.0);
    assert_eq!(c.max_scale_up_rate, 1000.0);
    assert_eq!(c.max_scale_down_rate, 2.0);
    assert_eq!(c.scale_to_zero_grace_period, Duration::from_secs(30));
    assert_eq!(c.scale_to_zero_pod_retention_period, Duration::ZERO);
    assert_eq!(c.activator_capacity, 100.0);
    assert_eq!(
        (c.initial_scale, c.min_scale, c.max_scale, c.max_scale_limit),
        (1, 0, 0, 0)
    );
    assert!(!c.allow_zero_initial_scale);
    assert_eq!(c.scale_down_delay, Duration::ZERO);
    assert_eq!(c.pod_autoscaler_class, KPA_CLASS);
}

#[test]
fn every_key_is_read() {
    let c = Config::from_map(&map(&[
        ("pod-autoscaler-class", "hpa.autoscaling.knative.dev"),
        ("enable-scale-to-zero", "false"),
        ("allow-zero-initial-scale", "true"),
        ("max-scale-up-rate", "10"),
        ("max-scale-down-rate", "4.5"),
        ("container-concurrency-target-percentage", "80"),
        ("container-concurrency-target-default", "50"),
        ("requests-per-second-target-default", "300"),
        ("target-burst-capacity", "-1"),
        ("panic-window-percentage", "20"),
        ("activator-capacity", "250"),
        ("panic-threshold-percentage", "300"),
        ("initial-scale", "0"),
        ("min-scale", "2"),
        ("max-scale", "8"),
        ("max-scale-limit", "10"),
        ("stable-window", "1m30s"),
        ("scale-down-delay", "15s"),
        ("scale-to-zero-grace-period", "500ms"),
        ("scale-to-zero-pod-retention-period", "1h"),
    ]))
    .unwrap();
    assert_eq!(c.pod_autoscaler_class, HPA_CLASS);
    assert!(!c.enable_scale_to_zero);
    assert!(c.allow_zero_initial_scale);
    assert_eq!(c.max_scale_up_rate, 10.0);
    assert_eq!(c.max_scale_down_rate, 4.5);
    assert!((c.container_concurrency_target_fraction - 0.8).abs() < 1e-12);
    assert_eq!(c.container_concurrency_target_default, 50.0);
    assert_eq!(c.rps_target_default, 300.0);
    assert_eq!(c.target_burst_capacity, -1.0);
    assert_eq!(c.panic_window_percentage, 20.0);
    assert_eq!(c.activator_capacity, 250.0);
    assert_eq!(c.panic_threshold_percentage, 300.0);
    assert_eq!(
        (c.initial_scale, c.min_scale, c.max_scale, c.max_scale_limit),
        (0, 2, 8, 10)
    );
    assert_eq!(c.stable_window, Duration::from_secs(90));
    assert_eq!(c.scale_down_delay, Duration::from_secs(15));
    assert_eq!(c.scale_to_zero_grace_period, Duration::from_millis(500));
    assert_eq!(
        c.scale_to_zero_pod_retention_period,
        Duration::from_secs(3600)
    );
}

#[test]
fn target_percentage_accepts_legacy_fractions() {
    let frac = |v: &str| {
        Config::from_map(&map(&[("container-concurrency-target-percentage", v)]))
            .unwrap()
            .container_concurrency_target_fraction
    };
    assert_eq!(frac("0.7"), 0.7);
    assert_eq!(frac("1"), 1.0);
    assert_eq!(frac("100"), 1.0);
    assert!((frac("1.5") - 0.015).abs() < 1e-12);
}

#[test]
fn parse_errors_name_key_and_value() {
    assert_eq!(
        err(&[("max-scale-up-rate", "fast")]),
        r#"failed to parse "max-scale-up-rate": "fast" is not a valid number"#
    );
    assert_eq!(
        err(&[("max-scale-up-rate", "NaN")]),
        r#"failed to parse "max-scale-up-rate": "NaN" is not a finite number"#
    );
    assert_eq!(
        err(&[("initial-scale", "1.5")]),
        r#"failed to parse "initial-scale": "1.5" is not a valid 32-bit integer"#
    );
    assert_eq!(
        err(&[("enable-scale-to-zero", "yes")]),
        r#"failed to parse "enable-scale-to-zero": "yes" is not a valid bool"#
    );
    assert_eq!(
        err(&[("stable-window", "60")]),
        r#"failed to parse "stable-window": time: missing unit in duration "60""#
    );
    assert_eq!(
        err(&[("scale-down-delay", "1d")]),
        r#"failed to parse "scale-down-delay": time: unknown unit "d" in duration "1d""#
    );
}

#[test]
fn validation_messages_match_upstream() {
    for (pairs, want) in [
        (
            vec![("scale-to-zero-grace-period", "0s")],
            "scale-to-zero-grace-period must be positive, was: 0s",
        ),
        (
            vec![("scale-down-delay", "-1s")],
            "scale-down-delay cannot be negative, was: -1s",
        ),
        (
            vec![("scale-down-delay", "1.5s")],
            "scale-down-delay = 1.5s, must be specified with at most second precision",
        ),
        (
            vec![("scale-to-zero-pod-retention-period", "-1m")],
            "scale-to-zero-pod-retention-period cannot be negative, was: -1m",
        ),
        (
            vec![("target-burst-capacity", "-2")],
            "target-burst-capacity must be either non-negative or -1 (for unlimited), was: -2",
        ),
        (
            vec![("container-concurrency-target-percentage", "0")],
            "container-concurrency-target-percentage = 0 is outside of valid range of (0, 100]",
        ),
        (
            vec![("container-concurrency-target-percentage", "150")],
            "container-concurrency-target-percentage = 150 is outside of valid range of (0, 100]",
        ),
        (
            vec![
                ("container-concurrency-target-percentage", "1.5"),
                ("container-concurrency-target-default", "0.5"),
            ],
            "container-concurrency-target-percentage and container-concurrency-target-default \
             yield target concurrency of 0.0075, can't be less than 0.01",
        ),
        (
            vec![("requests-per-second-target-default", "0")],
            "requests-per-second-target-default must be at least 0.01, was: 0",
        ),
        (
            vec![("activator-capacity", "0.5")],
            "activator-capacity = 0.5, must be at least 1",
        ),
        (
            vec![("max-scale-up-rate", "1")],
            "max-scale-up-rate = 1, must be greater than 1.0",
        ),
        (
            vec![("max-scale-down-rate", "0.5")],
            "max-scale-down-rate = 0.5, must be greater than 1.0",
        ),
        (
            vec![("stable-window", "5s")],
            "stable-window = 5s, must be in [6s; 1h0m0s] range",
        ),
        (
            vec![("stable-window", "2h")],
            "stable-window = 2h, must be in [6s; 1h0m0s] range",
        ),
        (
            vec![("stable-window", "60.5s")],
            "stable-window = 60.5s, must be specified with at most second precision",
        ),
        (
            vec![("panic-window-percentage", "0.5")],
            "panic-window-percentage = 0.5, must be in [1, 100] interval",
        ),
        (
            vec![("panic-threshold-percentage", "100")],
            "panic-threshold-percentage = 100, must be in [110, 1000] interval",
        ),
        (
            vec![("initial-scale", "0")],
            "initial-scale = 0, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)",
        ),
        (
            vec![
                ("initial-scale", "-1"),
                ("allow-zero-initial-scale", "true"),
            ],
            "initial-scale = -1, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)",
        ),
        (
            vec![("max-scale", "-1")],
            "max-scale = -1, must be in [0, max-scale-limit(0)] range",
        ),
        (
            vec![("max-scale-limit", "10")],
            "max-scale = 0, must be in [1, max-scale-limit(10)] range",
        ),
        (
            vec![("max-scale-limit", "10"), ("max-scale", "11")],
            "max-scale = 11, must be in [1, max-scale-limit(10)] range",
        ),
        (
            vec![("max-scale-limit", "-1")],
            "max-scale-limit = -1, must be at least 0",
        ),
        (
            vec![("min-scale", "-1")],
            "min-scale = -1, must be at least 0",
        ),
        (
            vec![("min-scale", "5"), ("max-scale", "3")],
            "min-scale = 5, must be less than or equal to max-scale (3)",
        ),
    ] {
        assert_eq!(err(&pairs), want, "{pairs:?}");
    }
}

#[test]
fn invalid_error_carries_key_and_value() {
    let e = Config::from_map(&map(&[("stable-window", "5s")])).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::Invalid { key: "stable-window", ref value, .. } if value == "5s"
    ));
}

#[test]
fn values_are_trimmed_and_zero_initial_scale_needs_opt_in() {
    let c = Config::from_map(&map(&[
        ("stable-window", " 30s\n"),
        ("initial-scale", "0"),
        ("allow-zero-initial-scale", "true"),
    ]))
    .unwrap();
    assert_eq!(c.stable_window, Duration::from_secs(30));
    assert_eq!(c.initial_scale, 0);
}

#[test]
fn unknown_keys_are_listed_not_rejected() {
    let data = map(&[
        ("_example", "docs"),
        ("tick-interval", "2s"),
        ("stable-windw", "30s"),
        ("stable-window", "30s"),
    ]);
    assert!(Config::from_map(&data).is_ok());
    assert_eq!(
        Config::unknown_keys(&data),
        vec!["stable-windw", "tick-interval"]
    );
}
