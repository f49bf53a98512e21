use super::*;

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn errors_with(config: &Config, pairs: &[(&str, &str)]) -> Vec<String> {
    match ScalingAnnotations::parse(&anns(pairs), config) {
        Ok(a) => panic!("{pairs:?} was accepted: {a:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn error(pairs: &[(&str, &str)]) -> String {
    let errs = errors_with(&Config::default(), pairs);
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap_or_default()
}

#[test]
fn no_annotations_parse_to_nothing() {
    let a = ScalingAnnotations::parse(&BTreeMap::new(), &Config::default()).unwrap();
    assert_eq!(a, ScalingAnnotations::default());
}

#[test]
fn every_annotation_is_read() {
    let a = ScalingAnnotations::parse(
        &anns(&[
            (
                "autoscaling.knative.dev/class",
                "kpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/metric", "rps"),
            ("autoscaling.knative.dev/target", "25.5"),
            (
                "autoscaling.knative.dev/target-utilization-percentage",
                "80",
            ),
            ("autoscaling.knative.dev/target-burst-capacity", "0"),
            ("autoscaling.knative.dev/window", "2m"),
            ("autoscaling.knative.dev/panic-window-percentage", "20"),
            ("autoscaling.knative.dev/panic-threshold-percentage", "300"),
            ("autoscaling.knative.dev/min-scale", "1"),
            ("autoscaling.knative.dev/max-scale", "10"),
            ("autoscaling.knative.dev/initial-scale", "2"),
            ("autoscaling.knative.dev/activation-scale", "3"),
            ("autoscaling.knative.dev/scale-down-delay", "30s"),
            (
                "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
                "1m5s",
            ),
            (
                "autoscaling.knative.dev/metric-aggregation-algorithm",
                "linear",
            ),
            ("serving.knative.dev/other", "ignored"),
        ]),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(a.class.as_deref(), Some(KPA_CLASS));
    assert_eq!(a.metric, Some(Metric::Rps));
    assert_eq!(a.target, Some(25.5));
    assert_eq!(a.target_utilization_percentage, Some(80.0));
    assert_eq!(a.target_burst_capacity, Some(0.0));
    assert_eq!(a.window, Some(Duration::from_secs(120)));
    assert_eq!(a.panic_window_percentage, Some(20.0));
    assert_eq!(a.panic_threshold_percentage, Some(300.0));
    assert_eq!((a.min_scale, a.max_scale), (Some(1), Some(10)));
    assert_eq!((a.initial_scale, a.activation_scale), (Some(2), Some(3)));
    assert_eq!(a.scale_down_delay, Some(Duration::from_secs(30)));
    assert_eq!(
        a.scale_to_zero_pod_retention_period,
        Some(Duration::from_secs(65))
    );
    assert_eq!(a.aggregation, Some(Aggregation::Linear));
}

#[test]
fn legacy_camel_case_keys_are_accepted_and_named_in_errors() {
    let a = ScalingAnnotations::parse(
        &anns(&[
            ("autoscaling.knative.dev/minScale", "2"),
            ("autoscaling.knative.dev/targetBurstCapacity", "-1"),
            (
                "autoscaling.knative.dev/metricAggregationAlgorithm",
                "weightedExponential",
            ),
        ]),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(a.min_scale, Some(2));
    assert_eq!(a.target_burst_capacity, Some(-1.0));
    assert_eq!(a.aggregation, Some(Aggregation::WeightedExponential));
    assert_eq!(
        error(&[("autoscaling.knative.dev/maxScale", "-3")]),
        "expected 0 <= -3 <= 2147483647: autoscaling.knative.dev/maxScale"
    );
    // The current name wins over the legacy one.
    let a = ScalingAnnotations::parse(
        &anns(&[
            ("autoscaling.knative.dev/min-scale", "1"),
            ("autoscaling.knative.dev/minScale", "7"),
        ]),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(a.min_scale, Some(1));
}

#[test]
fn validation_messages_match_upstream() {
    for (pairs, want) in [
        (
            vec![("autoscaling.knative.dev/class", "foo.knative.dev")],
            "invalid value: foo.knative.dev: autoscaling.knative.dev/class",
        ),
        (
            vec![("autoscaling.knative.dev/min-scale", "two")],
            "invalid value: two: autoscaling.knative.dev/min-scale",
        ),
        (
            vec![("autoscaling.knative.dev/min-scale", "3000000000")],
            "expected 0 <= 3000000000 <= 2147483647: autoscaling.knative.dev/min-scale",
        ),
        (
            vec![
                ("autoscaling.knative.dev/min-scale", "5"),
                ("autoscaling.knative.dev/max-scale", "2"),
            ],
            "max-scale=2 is less than min-scale=5: \
             autoscaling.knative.dev/max-scale, autoscaling.knative.dev/min-scale",
        ),
        (
            vec![("autoscaling.knative.dev/activation-scale", "1")],
            "activation-scale=1 must be greater than 1: autoscaling.knative.dev/activation-scale",
        ),
        (
            vec![
                ("autoscaling.knative.dev/min-scale", "4"),
                ("autoscaling.knative.dev/activation-scale", "3"),
            ],
            "min-scale=4 is greater than activation-scale=3: \
             autoscaling.knative.dev/activation-scale",
        ),
        (
            vec![
                ("autoscaling.knative.dev/max-scale", "2"),
                ("autoscaling.knative.dev/activation-scale", "3"),
            ],
            "max-scale=2 is less than activation-scale=3: autoscaling.knative.dev/activation-scale",
        ),
        (
            vec![("autoscaling.knative.dev/panic-window-percentage", "0.5")],
            "expected 1 <= 0.5 <= 100: autoscaling.knative.dev/panic-window-percentage",
        ),
        (
            vec![("autoscaling.knative.dev/panic-threshold-percentage", "105")],
            "expected 110 <= 105 <= 1000: autoscaling.knative.dev/panic-threshold-percentage",
        ),
        (
            vec![("autoscaling.knative.dev/panicThresholdPercentage", "lots")],
            "invalid value: lots: autoscaling.knative.dev/panicThresholdPercentage",
        ),
        (
            vec![("autoscaling.knative.dev/target", "0")],
            "target 0 should be at least 0.01: autoscaling.knative.dev/target",
        ),
        (
            vec![("autoscaling.knative.dev/target", "NaN")],
            "invalid value: NaN: autoscaling.knative.dev/target",
        ),
        (
            vec![(
                "autoscaling.knative.dev/target-utilization-percentage",
                "101",
            )],
            "expected 1 <= 101 <= 100: autoscaling.knative.dev/target-utilization-percentage",
        ),
        (
            vec![("autoscaling.knative.dev/target-burst-capacity", "-2")],
            "invalid value: -2: autoscaling.knative.dev/target-burst-capacity",
        ),
        (
            vec![("autoscaling.knative.dev/window", "5s")],
            "expected 6s <= 5s <= 1h0m0s: autoscaling.knative.dev/window",
        ),
        (
            vec![("autoscaling.knative.dev/window", "10.5s")],
            "must be specified with at most second precision: autoscaling.knative.dev/window",
        ),
        (
            vec![("autoscaling.knative.dev/window", "soon")],
            "invalid value: soon: autoscaling.knative.dev/window",
        ),
        (
            vec![("autoscaling.knative.dev/scale-down-delay", "2h")],
            "expected 0s <= 2h <= 1h0m0s: autoscaling.knative.dev/scale-down-delay",
        ),
        (
            vec![("autoscaling.knative.dev/scale-down-delay", "1.5s")],
            "must be specified with at most second precision: \
             autoscaling.knative.dev/scale-down-delay",
        ),
        (
            vec![(
                "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
                "-1s",
            )],
            "expected 0s <= -1s <= 1h0m0s: \
             autoscaling.knative.dev/scale-to-zero-pod-retention-period",
        ),
        (
            vec![("autoscaling.knative.dev/metric", "cpu")],
            "invalid value: cpu: autoscaling.knative.dev/metric",
        ),
        (
            vec![(
                "autoscaling.knative.dev/metric-aggregation-algorithm",
                "median",
            )],
            "invalid value: median: autoscaling.knative.dev/metric-aggregation-algorithm",
        ),
        (
            vec![("autoscaling.knative.dev/initial-scale", "-1")],
            "invalid value: -1: autoscaling.knative.dev/initial-scale must be greater than 0",
        ),
        (
            vec![("autoscaling.knative.dev/initial-scale", "0")],
            "invalid value: 0: autoscaling.knative.dev/initial-scale=0 not allowed by cluster",
        ),
        (
            vec![("autoscaling.knative.dev/initialScale", "x")],
            "invalid value: x: autoscaling.knative.dev/initialScale",
        ),
    ] {
        assert_eq!(error(&pairs), want, "{pairs:?}");
    }
}

#[test]
fn max_scale_limit_bounds_max_scale() {
    let config = Config {
        max_scale_limit: 10,
        max_scale: 5,
        ..Config::default()
    };
    assert_eq!(
        errors_with(&config, &[("autoscaling.knative.dev/max-scale", "20")]),
        vec!["expected 1 <= 20 <= 10: autoscaling.knative.dev/max-scale"]
    );
    assert_eq!(
        errors_with(&config, &[("autoscaling.knative.dev/max-scale", "0")]),
        vec!["max-scale=0 (unlimited), must be less than 10: autoscaling.knative.dev/max-scale"]
    );
    assert!(
        ScalingAnnotations::parse(
            &anns(&[("autoscaling.knative.dev/max-scale", "10")]),
            &config
        )
        .is_ok()
    );
}

#[test]
fn zero_initial_scale_is_allowed_when_the_cluster_allows_it() {
    let config = Config {
        allow_zero_initial_scale: true,
        ..Config::default()
    };
    let a = ScalingAnnotations::parse(
        &anns(&[("autoscaling.knative.dev/initial-scale", "0")]),
        &config,
    )
    .unwrap();
    assert_eq!(a.initial_scale, Some(0));
}

#[test]
fn all_errors_are_reported_together() {
    let errs = ScalingAnnotations::parse(
        &anns(&[
            ("autoscaling.knative.dev/window", "1s"),
            ("autoscaling.knative.dev/metric", "memory"),
            ("autoscaling.knative.dev/target", "-5"),
        ]),
        &Config::default(),
    )
    .unwrap_err();
    assert_eq!(errs.0.len(), 3);
    assert_eq!(errs.to_string().lines().count(), 3);
}

#[test]
fn other_classes_keep_their_own_metrics_and_algorithms() {
    let a = ScalingAnnotations::parse(
        &anns(&[
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/metric", "cpu"),
            (
                "autoscaling.knative.dev/metric-aggregation-algorithm",
                "anything",
            ),
        ]),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(a.metric, None);
    assert_eq!(a.aggregation, None);
    assert_eq!(
        error(&[
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev"
            ),
            ("autoscaling.knative.dev/metric", ""),
        ]),
        "invalid value: : autoscaling.knative.dev/metric"
    );
    // A custom class outside knative.dev is not ours to judge.
    assert!(
        ScalingAnnotations::parse(
            &anns(&[
                ("autoscaling.knative.dev/class", "example.com/my-scaler"),
                ("autoscaling.knative.dev/metric", "queue-depth"),
            ]),
            &Config::default(),
        )
        .is_ok()
    );
}

#[test]
fn errors_split_into_key_and_reason() {
    let e = AnnotationError::InvalidValue {
        key: "autoscaling.knative.dev/min-scale".into(),
        value: "lots".into(),
    };
    assert_eq!(e.key(), "autoscaling.knative.dev/min-scale");
    assert_eq!(e.reason(), "invalid value: lots");
    let e = AnnotationError::Invalid {
        key: "k".into(),
        message: "bad: really".into(),
    };
    assert_eq!((e.key(), e.reason().as_str()), ("k", "bad: really"));
}
