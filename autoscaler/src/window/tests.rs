use super::*;
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn linear_average_over_a_partial_window_uses_only_seconds_with_data() {
    let mut w = AverageWindow::new(secs(60), Aggregation::Linear);
    assert_eq!(w.average(secs(0)), 0.0);
    assert!(!w.has_data());
    w.record(secs(100), 10.0);
    w.record(secs(101), 20.0);
    // Two seconds of data in a 60 s window: their mean, not sum / 60.
    assert_eq!(w.average(secs(101)), 15.0);
    assert!(w.has_data_at(secs(101)));
}

#[test]
fn values_in_the_same_second_add_up() {
    let mut w = AverageWindow::new(secs(6), Aggregation::Linear);
    w.record(Duration::from_millis(1_100), 3.0);
    w.record(Duration::from_millis(1_900), 4.0);
    assert_eq!(w.average(secs(1)), 7.0);
}

#[test]
fn gaps_inside_the_window_count_as_zero() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    w.record(secs(0), 10.0);
    w.record(secs(4), 10.0); // seconds 1..=3 had no report
    assert_eq!(w.average(secs(4)), 4.0);
}

#[test]
fn trailing_seconds_without_reports_are_unknown_until_the_window_passes() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    for s in 0..10 {
        w.record(secs(s), 5.0);
    }
    assert_eq!(w.average(secs(15)), 5.0);
    assert!(w.has_data_at(secs(18)));
    assert_eq!(w.average(secs(19)), 0.0);
    assert!(!w.has_data_at(secs(19)));
}

#[test]
fn after_a_whole_empty_window_the_average_starts_over() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    for s in 0..10 {
        w.record(secs(s), 100.0);
    }
    w.record(secs(30), 2.0);
    assert_eq!(w.average(secs(30)), 2.0);
}

#[test]
fn records_older_than_the_window_are_dropped() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    w.record(secs(20), 1.0);
    w.record(secs(5), 1000.0);
    assert_eq!(w.average(secs(20)), 1.0);
    w.record(secs(15), 3.0); // late but inside the window: kept
    assert_eq!(w.average(secs(20)), 0.666666); // (3 + 1) over seconds 15..=20
}

#[test]
fn bad_values_are_sanitised() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    w.record(secs(1), f64::NAN);
    w.record(secs(1), f64::INFINITY);
    assert!(!w.has_data());
    w.record(secs(1), -5.0);
    assert_eq!(w.average(secs(1)), 0.0);
}

#[test]
fn averages_are_rounded_down_to_micro_units() {
    let mut w = AverageWindow::new(secs(3), Aggregation::Linear);
    for s in 0..3 {
        w.record(secs(s), 10.0 / 3.0 + 1e-9);
    }
    assert_eq!(w.average(secs(2)), 3.333333);
}

#[test]
fn weighted_average_favours_recent_seconds() {
    // Upstream's example: data [10, 10, 5, 5] (newest last).
    let mut rising = AverageWindow::new(secs(4), Aggregation::WeightedExponential);
    let mut falling = AverageWindow::new(secs(4), Aggregation::WeightedExponential);
    for (s, v) in [10.0, 10.0, 5.0, 5.0].into_iter().enumerate() {
        falling.record(secs(s as u64), v);
        rising.record(secs(s as u64), 15.0 - v);
    }
    assert!(falling.average(secs(3)) < rising.average(secs(3)));
    // 4 buckets: factor 1 - 0.0001^(1/4) = 0.9.
    let m: f64 = 0.9;
    let want =
        5.0 * m + 5.0 * m * (1.0 - m) + 10.0 * m * (1.0 - m).powi(2) + 10.0 * m * (1.0 - m).powi(3);
    assert!((falling.average(secs(3)) - want).abs() < 1e-9);
}

#[test]
fn resize_keeps_the_latest_seconds() {
    let mut w = AverageWindow::new(secs(10), Aggregation::Linear);
    for s in 0..10 {
        w.record(secs(s), s as f64);
    }
    w.resize(secs(4));
    assert_eq!(w.window(), secs(4));
    assert_eq!(w.average(secs(9)), (6.0 + 7.0 + 8.0 + 9.0) / 4.0);
    w.resize(secs(20));
    assert_eq!(w.average(secs(9)), (6.0 + 7.0 + 8.0 + 9.0) / 4.0);
    w.record(secs(10), 10.0);
    assert_eq!(w.average(secs(10)), 8.0);
}

#[test]
fn max_window_keeps_the_largest_value_for_its_length() {
    let mut w = MaxWindow::new(secs(10));
    assert_eq!(w.current(), 0);
    w.record(secs(0), 10);
    w.record(secs(2), 3);
    assert_eq!(w.current(), 10);
    w.record(secs(9), 2);
    assert_eq!(w.current(), 10);
    w.record(secs(10), 2); // second 0 has left the window
    assert_eq!(w.current(), 3);
    w.record(secs(12), 1);
    assert_eq!(w.current(), 2);
    w.record(secs(12), 7); // same second: the larger wins
    assert_eq!(w.current(), 7);
}

proptest! {
    #[test]
    fn average_of_constant_input_is_the_constant(
        c in 0.0f64..10_000.0,
        window in 1u64..120,
        start in 0u64..10_000,
        seconds in 1u64..300,
        agg_linear in any::<bool>(),
    ) {
        let agg = if agg_linear { Aggregation::Linear } else { Aggregation::WeightedExponential };
        let mut w = AverageWindow::new(secs(window), agg);
        for s in start..start + seconds {
            w.record(secs(s), c);
        }
        let avg = w.average(secs(start + seconds - 1));
        match agg {
            Aggregation::Linear => prop_assert!((avg - c).abs() <= 1e-6 * c.max(1.0), "{avg} vs {c}"),
            Aggregation::WeightedExponential => {
                // Weights sum to at most 1, and to ≥ 0.9999 once the window is full.
                prop_assert!(avg <= c * (1.0 + 1e-9));
                if seconds >= window {
                    prop_assert!(avg >= c * 0.9999 - 1e-9, "{avg} vs {c}");
                }
            }
        }
    }

    #[test]
    fn average_stays_within_the_recorded_range(
        values in proptest::collection::vec((0u64..200, 0.0f64..1_000.0), 1..200),
        window in 1u64..60,
        probe in 0u64..400,
        agg_linear in any::<bool>(),
    ) {
        let agg = if agg_linear { Aggregation::Linear } else { Aggregation::WeightedExponential };
        let mut w = AverageWindow::new(secs(window), agg);
        let mut sorted = values.clone();
        sorted.sort_by_key(|(s, _)| *s);
        for (s, v) in &sorted {
            w.record(secs(*s), *v);
        }
        // A bucket is a per-second sum, so the bound is the largest per-second sum.
        let mut per_second = std::collections::BTreeMap::<u64, f64>::new();
        for (s, v) in &sorted {
            *per_second.entry(*s).or_default() += v;
        }
        let max = per_second.values().cloned().fold(0.0, f64::max);
        let avg = w.average(secs(probe));
        prop_assert!(avg >= 0.0);
        prop_assert!(avg <= max * (1.0 + 1e-9) + 1e-9, "{avg} > {max}");
    }

    #[test]
    fn old_buckets_age_out(
        c in 1.0f64..1_000.0,
        window in 1u64..60,
        seconds in 1u64..100,
        idle in 0u64..200,
    ) {
        let mut w = AverageWindow::new(secs(window), Aggregation::Linear);
        for s in 0..seconds {
            w.record(secs(s), c);
        }
        // Zeros reported after the load: the load leaves the average once a
        // whole window of zeros has been recorded.
        for s in seconds..seconds + idle {
            w.record(secs(s), 0.0);
        }
        let end = seconds + idle - 1;
        let avg = w.average(secs(end));
        if idle >= window {
            prop_assert_eq!(avg, 0.0);
        } else {
            prop_assert!(avg > 0.0);
        }
        // With no reports at all, a window after the last one the average is 0.
        prop_assert_eq!(w.average(secs(end + window)), 0.0);
    }

    #[test]
    fn linear_average_equals_the_mean_of_the_last_window(
        values in proptest::collection::vec(0.0f64..1_000.0, 1..200),
        window in 1usize..60,
    ) {
        let mut w = AverageWindow::new(secs(window as u64), Aggregation::Linear);
        for (s, v) in values.iter().enumerate() {
            w.record(secs(s as u64), *v);
        }
        let tail = &values[values.len().saturating_sub(window)..];
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        let avg = w.average(secs(values.len() as u64 - 1));
        prop_assert!((avg - mean).abs() <= 1e-6 + 1e-9 * mean, "{avg} vs {mean}");
    }

    #[test]
    fn max_window_equals_brute_force(
        steps in proptest::collection::vec((0u64..4, -5i32..100), 1..200),
        window in 1u64..30,
    ) {
        let mut w = MaxWindow::new(secs(window));
        let mut history: Vec<(u64, i32)> = Vec::new();
        let mut now = 0u64;
        for (dt, v) in steps {
            now += dt;
            w.record(secs(now), v);
            history.push((now, v));
            let want = history
                .iter()
                .filter(|(s, _)| now - s < window)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            prop_assert_eq!(w.current(), want);
        }
    }
}

#[test]
fn extreme_times_and_lengths_do_not_panic() {
    let mut w = AverageWindow::new(Duration::MAX, Aggregation::WeightedExponential);
    assert_eq!(w.window(), WINDOW_MAX);
    w.record(Duration::MAX, 1.0);
    w.record(Duration::ZERO, 1.0);
    assert!(w.average(Duration::MAX) >= 0.0);
    w.resize(Duration::ZERO);
    assert_eq!(w.window(), secs(1));
    let mut linear = AverageWindow::new(secs(5), Aggregation::Linear);
    linear.record(Duration::MAX, 2.0);
    assert_eq!(linear.average(Duration::MAX), 2.0);
    let mut m = MaxWindow::new(Duration::MAX);
    m.record(Duration::MAX, 3);
    m.record(Duration::ZERO, 1); // earlier time: counted as the latest second
    assert_eq!(m.current(), 3);
}
