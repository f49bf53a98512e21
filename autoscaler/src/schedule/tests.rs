//! Scheduled bounds over paused (given) time: window edges, a window across midnight, daylight
//! saving changes, the first window winning, and bad input.

use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::TimeZone;

use super::*;

const KEY: &str = "sluice.knative.dev/scale-bounds";

fn schedule(json: &str, tz: &str) -> ScaleSchedule {
    let mut s = ScaleSchedule::parse(KEY, json, 0).expect("valid scale-bounds");
    s.set_time_zone(tz).expect("known time zone");
    s
}

/// The instant of a civil time in `tz` (the earlier one when it is ambiguous).
fn at(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Timestamp {
    date(y, mo, d)
        .at(h, mi, s, 0)
        .to_zoned(TimeZone::get(tz).unwrap())
        .unwrap()
        .timestamp()
}

fn index(s: &ScaleSchedule, t: Timestamp) -> Option<usize> {
    s.in_force(t).map(|w| w.index)
}

#[test]
fn a_window_is_in_force_from_its_first_minute_to_the_end_of_its_last() {
    let s = schedule(
        r#"[{"cron": "* 7-9 * * *", "minScale": 5, "maxScale": 50}]"#,
        "UTC",
    );
    assert_eq!(index(&s, at("UTC", 2026, 3, 2, 6, 59, 59)), None);
    let w = s.in_force(at("UTC", 2026, 3, 2, 7, 0, 0)).unwrap();
    assert_eq!((w.index, w.min_scale, w.max_scale), (0, Some(5), Some(50)));
    assert_eq!(index(&s, at("UTC", 2026, 3, 2, 9, 59, 59)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 3, 2, 10, 0, 0)), None);
}

#[test]
fn the_time_zone_shifts_the_window() {
    let s = schedule(
        r#"[{"cron": "* 7-9 * * *", "minScale": 5}]"#,
        "Asia/Shanghai",
    );
    // 07:00 in Shanghai (UTC+8) is 23:00 UTC the day before.
    assert_eq!(index(&s, at("UTC", 2026, 3, 1, 23, 0, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 3, 2, 7, 0, 0)), None);
    assert_eq!(s.timezone, "Asia/Shanghai");
}

#[test]
fn a_window_spanning_midnight() {
    let s = schedule(r#"[{"cron": "* 22-23,0-1 * * *", "minScale": 2}]"#, "UTC");
    assert_eq!(index(&s, at("UTC", 2026, 5, 1, 21, 59, 0)), None);
    assert_eq!(index(&s, at("UTC", 2026, 5, 1, 22, 0, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 5, 1, 23, 59, 59)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 5, 2, 0, 0, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 5, 2, 1, 59, 59)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 5, 2, 2, 0, 0)), None);
    // Friday night into Saturday: weekday windows follow the civil day.
    let s = schedule(
        r#"[{"cron": "* 22-23 * * fri", "minScale": 2}, {"cron": "* 0-1 * * sat", "minScale": 2}]"#,
        "UTC",
    );
    // 2026-05-01 is a Friday.
    assert_eq!(index(&s, at("UTC", 2026, 5, 1, 23, 30, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 5, 2, 0, 30, 0)), Some(1));
    assert_eq!(index(&s, at("UTC", 2026, 5, 3, 0, 30, 0)), None, "Sunday");
}

#[test]
fn minute_by_minute_across_a_window_counts_exactly_its_minutes() {
    let s = schedule(r#"[{"cron": "30-44 12 * * *", "maxScale": 3}]"#, "UTC");
    let start = at("UTC", 2026, 7, 1, 0, 0, 30);
    let minutes = (0..1440)
        .filter(|m| {
            s.in_force(start + jiff::SignedDuration::from_mins(*m))
                .is_some()
        })
        .count();
    assert_eq!(minutes, 15);
}

#[test]
fn spring_forward_skips_the_missing_hour() {
    // Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST.
    let s = schedule(r#"[{"cron": "* 2 * * *", "minScale": 4}]"#, "Europe/Berlin");
    // 01:59:59 CET = 00:59:59 UTC; one second later it is 03:00 CEST.
    assert_eq!(index(&s, at("UTC", 2026, 3, 29, 0, 59, 59)), None);
    assert_eq!(index(&s, at("UTC", 2026, 3, 29, 1, 0, 0)), None);
    // Every UTC minute of that day: the 02:xx hour never happens.
    let day = at("UTC", 2026, 3, 28, 22, 0, 0);
    let minutes = (0..1440)
        .filter(|m| {
            s.in_force(day + jiff::SignedDuration::from_mins(*m))
                .is_some()
        })
        .count();
    assert_eq!(minutes, 0);
    // The next day it is back: 02:00 CEST = 00:00 UTC.
    assert_eq!(index(&s, at("UTC", 2026, 3, 30, 0, 0, 0)), Some(0));
}

#[test]
fn fall_back_repeats_the_hour_and_the_window_with_it() {
    // Europe/Berlin: 2026-10-25 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
    let s = schedule(r#"[{"cron": "* 2 * * *", "minScale": 4}]"#, "Europe/Berlin");
    // 02:00 CEST = 00:00 UTC; 02:00 CET = 01:00 UTC.
    assert_eq!(index(&s, at("UTC", 2026, 10, 24, 23, 59, 0)), None);
    assert_eq!(index(&s, at("UTC", 2026, 10, 25, 0, 0, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 10, 25, 1, 59, 0)), Some(0));
    assert_eq!(index(&s, at("UTC", 2026, 10, 25, 2, 0, 0)), None);
    let day = at("UTC", 2026, 10, 24, 22, 0, 0);
    let minutes = (0..1500)
        .filter(|m| {
            s.in_force(day + jiff::SignedDuration::from_mins(*m))
                .is_some()
        })
        .count();
    assert_eq!(minutes, 120, "two hours of 02:xx that day");
}

#[test]
fn the_first_window_in_force_wins() {
    let s = schedule(
        r#"[{"cron": "* 9 * * *", "minScale": 10}, {"cron": "* 8-17 * * *", "minScale": 3, "maxScale": 5}]"#,
        "UTC",
    );
    let w = s.in_force(at("UTC", 2026, 1, 5, 9, 30, 0)).unwrap();
    assert_eq!((w.index, w.min_scale, w.max_scale), (0, Some(10), None));
    let w = s.in_force(at("UTC", 2026, 1, 5, 10, 0, 0)).unwrap();
    assert_eq!((w.index, w.min_scale, w.max_scale), (1, Some(3), Some(5)));
}

#[test]
fn bad_bounds_name_the_annotation_and_the_reason() {
    let cases = [
        ("{}", "expected a JSON list"),
        (
            r#"[{"cron": "* * *", "minScale": 1}]"#,
            "window 0: cron \"* * *\": expected 5 fields",
        ),
        (
            r#"[{"cron": "* * * * *"}]"#,
            "window 0: sets neither minScale nor maxScale",
        ),
        (
            r#"[{"cron": "* * * * *", "minScale": -1}]"#,
            "invalid value: integer `-1`",
        ),
        (
            r#"[{"cron": "* * * * *", "minscale": 1}]"#,
            "unknown field `minscale`",
        ),
        (
            r#"[{"cron": "* * * * *", "minScale": 1}, {"cron": "* * * * *", "minScale": 5, "maxScale": 2}]"#,
            "window 1: maxScale=2 is less than minScale=5",
        ),
    ];
    for (json, want) in cases {
        let err = ScaleSchedule::parse(KEY, json, 0).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
        assert!(err.ends_with(KEY), "{err}");
    }
    let err = ScaleSchedule::parse(KEY, r#"[{"cron": "* * * * *", "maxScale": 0}]"#, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond max-scale-limit 10"), "{err}");
    let mut s = schedule(r#"[{"cron": "* * * * *", "minScale": 1}]"#, "UTC");
    let err = s.set_time_zone("Mars/Olympus").unwrap_err();
    assert!(err.contains("unknown time zone \"Mars/Olympus\""), "{err}");
    assert_eq!(s.timezone, "UTC", "unchanged");
}
