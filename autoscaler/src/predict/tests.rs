//! Forecasts over a given (paused) clock: a daily peak is forecast before it arrives, errors
//! become the margin, and bad annotations are reported.

use super::*;

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn at_minute(minute: i64) -> Timestamp {
    Timestamp::from_second(minute * 60).unwrap()
}

/// Demand with a daily peak: 40 from 09:00 to 10:59, 2 otherwise (per minute of day).
fn daily(minute_of_day: i64) -> f64 {
    if (540..660).contains(&minute_of_day) {
        40.0
    } else {
        2.0
    }
}

/// `days` days of per-second observations of `f`, starting at minute 0 (a midnight).
fn observed(days: i64, f: impl Fn(i64, i64) -> f64) -> Forecaster {
    let mut fc = Forecaster::new(History::new());
    for m in 0..days * MINUTES_PER_DAY {
        for s in (0..60).step_by(10) {
            fc.record(Timestamp::from_second(m * 60 + s).unwrap(), f(m, s));
        }
    }
    fc
}

#[test]
fn parse_defaults_and_settings() {
    let mut errors = Vec::new();
    assert_eq!(Predictive::parse(&anns(&[]), &mut errors), None);
    let p = Predictive::parse(&anns(&[(PREDICTIVE, "true")]), &mut errors).unwrap();
    assert_eq!((p.quantile, p.lookahead), (95.0, None));
    assert_eq!(p.lookahead(None), Duration::from_secs(30));
    assert_eq!(
        p.lookahead(Some(Duration::from_secs(2))),
        Duration::from_secs(32),
        "observed start + 30 s"
    );
    let p = Predictive::parse(
        &anns(&[
            (PREDICTIVE, "true"),
            (PREDICTIVE_QUANTILE, "80"),
            (PREDICTIVE_LOOKAHEAD, "2m"),
        ]),
        &mut errors,
    )
    .unwrap();
    assert_eq!(
        (p.quantile, p.lookahead),
        (80.0, Some(Duration::from_secs(120)))
    );
    assert_eq!(
        p.lookahead(Some(Duration::from_secs(9))),
        Duration::from_secs(120)
    );
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn invalid_settings_are_reported_and_defaulted() {
    let mut errors = Vec::new();
    let p = Predictive::parse(
        &anns(&[
            (PREDICTIVE, "true"),
            (PREDICTIVE_QUANTILE, "0"),
            (PREDICTIVE_LOOKAHEAD, "2h"),
        ]),
        &mut errors,
    )
    .unwrap();
    assert_eq!((p.quantile, p.lookahead), (95.0, None));
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "\"0\" is not a percentile from 1 to 100: sluice.knative.dev/predictive-quantile",
            "\"2h\" is not a duration from 0s to 1h (e.g. \"90s\"): sluice.knative.dev/predictive-lookahead",
        ]
    );
    let mut errors = Vec::new();
    assert_eq!(
        Predictive::parse(&anns(&[(PREDICTIVE, "yes")]), &mut errors),
        None
    );
    assert_eq!(errors.len(), 1);
}

#[test]
fn no_forecast_without_an_earlier_day() {
    let mut fc = observed(0, |_, _| 0.0);
    assert_eq!(
        fc.forecast(at_minute(0), Duration::from_secs(60), 95.0),
        None
    );
    let mut fc = observed(1, |m, _| daily(m % MINUTES_PER_DAY));
    // Within the first day there is no earlier day.
    assert_eq!(
        fc.forecast(at_minute(600), Duration::from_secs(60), 95.0),
        None
    );
    // The next day there is.
    assert!(
        fc.forecast(at_minute(MINUTES_PER_DAY + 600), Duration::ZERO, 95.0)
            .is_some()
    );
}

#[test]
fn the_daily_peak_is_forecast_a_lookahead_before_it_arrives() {
    let mut fc = observed(3, |m, _| daily(m % MINUTES_PER_DAY));
    let day4 = 3 * MINUTES_PER_DAY;
    // 08:58 with a 90 s look-ahead: the window ends at 08:59:30, still before the peak.
    let f = fc
        .forecast(at_minute(day4 + 538), Duration::from_secs(90), 95.0)
        .unwrap();
    assert_eq!(f.seasonal, 2.0);
    // 08:59 with 90 s: the window reaches 09:00.
    let f = fc
        .forecast(at_minute(day4 + 539), Duration::from_secs(90), 95.0)
        .unwrap();
    assert_eq!(f.seasonal, 40.0);
    assert_eq!(f.margin, 0.0, "every day alike: no error");
    assert_eq!(f.value, 40.0);
    // After the peak the forecast drops again.
    let f = fc
        .forecast(at_minute(day4 + 661), Duration::from_secs(30), 95.0)
        .unwrap();
    assert_eq!(f.value, 2.0);
}

#[test]
fn the_margin_is_the_quantile_of_past_errors_at_that_time_of_day() {
    // Days alternate 10 / 14 between 09:00 and 10:59 (else 0): the seasonal mean misses there,
    // and is exact at night.
    let mut fc = observed(4, |m, _| {
        let day = m / MINUTES_PER_DAY;
        let in_peak = (540..660).contains(&(m % MINUTES_PER_DAY));
        if in_peak {
            if day % 2 == 0 { 10.0 } else { 14.0 }
        } else {
            0.0
        }
    });
    // At 10:00 on day 4 the errors of 09:30–10:30 on days 1–3 (day 0 has no earlier day):
    // day 1: 14 − 10 = +4, day 2: 10 − 12 = −2, day 3: 14 − 11.33 = +2.67; 61 minutes each.
    let now = 4 * MINUTES_PER_DAY + 600;
    let f = fc.forecast(at_minute(now), Duration::ZERO, 99.0).unwrap();
    assert!((f.margin - 4.0).abs() < 1e-4, "{f:?}");
    assert!((f.seasonal - 12.0).abs() < 1e-4, "{f:?}");
    let f = fc.forecast(at_minute(now), Duration::ZERO, 50.0).unwrap();
    assert!((f.margin - (14.0 - 34.0 / 3.0)).abs() < 1e-4, "{f:?}");
    // At night there is no error: no margin.
    let f = fc
        .forecast(at_minute(4 * MINUTES_PER_DAY + 120), Duration::ZERO, 99.0)
        .unwrap();
    assert_eq!((f.value, f.margin), (0.0, 0.0));
}

#[test]
fn quantiles_by_nearest_rank() {
    let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
    assert_eq!(quantile_of(&mut v, 50.0), 3.0);
    assert_eq!(quantile_of(&mut v, 95.0), 5.0);
    assert_eq!(quantile_of(&mut v, 1.0), 1.0);
    assert_eq!(quantile_of(&mut [], 95.0), 0.0);
}
