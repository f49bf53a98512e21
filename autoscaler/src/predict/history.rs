//! A bounded per-minute history of one Revision's observed demand (the autoscaler's metric:
//! concurrency, requests per second, or the HPA's CPU/memory), for forecasting.
//!
//! Each minute keeps the 90th percentile of its observations (one per second under `sluice
//! up`), not its mean: capacity planned from a minute's mean is short for its busier seconds —
//! requests arrive in bursts, and those seconds are when requests queue. Nor its busiest
//! second: one outlier second would then set the capacity of the whole minute, every day after
//! (the benchmark in BENCHMARKS.md: −99.5 % waiting requests for +23.6 % instance-seconds with
//! the busiest second, −94.4 % for +16.3 % with the 90th percentile).

use std::collections::VecDeque;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The percentile of a minute's observations that stands for the minute.
pub const MINUTE_PERCENTILE: f64 = 90.0;
/// Observations kept for the minute being observed (one per second is 60).
const MAX_OPEN_OBSERVATIONS: usize = 600;

/// Minutes in a day: the seasonal period.
pub const MINUTES_PER_DAY: i64 = 1440;
/// Days of history kept: a week of seasons, plus the day whose forecast errors give the margin.
pub const HISTORY_DAYS: i64 = 8;
/// Minutes of history kept (11 520; as JSON about 60 KB per Revision).
pub const HISTORY_MINUTES: usize = (HISTORY_DAYS * MINUTES_PER_DAY) as usize;

/// The minute `at` falls in, counted from the Unix epoch.
pub fn minute_of(at: Timestamp) -> i64 {
    at.as_second().div_euclid(60)
}

/// The minute still being observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    minute: i64,
    #[serde(default)]
    observations: Vec<f64>,
}

impl Open {
    fn figure(mut self) -> f64 {
        super::quantile_of(&mut self.observations, MINUTE_PERCENTILE)
    }
}

/// Per-minute figures ([`MINUTE_PERCENTILE`]) of the observed demand, the last [`HISTORY_MINUTES`] minutes at most.
/// Minutes nobody observed (Sluice was not running) are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// The minute of `values[0]`.
    start: i64,
    values: VecDeque<Option<f32>>,
    open: Option<Open>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one observation (e.g. one second's concurrency) at `at`. An observation in an
    /// earlier minute than the last one (the wall clock stepped back) is dropped.
    pub fn record(&mut self, at: Timestamp, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let minute = minute_of(at);
        match &mut self.open {
            Some(open) if open.minute == minute => {
                if open.observations.len() < MAX_OPEN_OBSERVATIONS {
                    open.observations.push(value);
                }
                return;
            }
            Some(open) if open.minute > minute => return,
            _ => {}
        }
        // An open minute without observations (read from an older file) stays unobserved.
        if let Some(open) = self.open.take()
            && !open.observations.is_empty()
        {
            let minute = open.minute;
            self.close(minute, open.figure());
        }
        self.open = Some(Open {
            minute,
            observations: vec![value],
        });
    }

    /// Stores a finished minute's figure (used by [`Self::record`], and to build histories).
    pub fn close(&mut self, minute: i64, figure: f64) {
        let value = Some(figure as f32);
        let end = self.start + self.values.len() as i64;
        if self.values.is_empty() || minute - end >= HISTORY_MINUTES as i64 || minute < self.start {
            if minute < self.start && !self.values.is_empty() {
                // Before what is kept: too old to matter.
                return;
            }
            self.values.clear();
            self.start = minute;
            self.values.push_back(value);
            return;
        }
        if minute < end {
            if let Some(slot) = usize::try_from(minute - self.start)
                .ok()
                .and_then(|i| self.values.get_mut(i))
            {
                *slot = value;
            }
            return;
        }
        for _ in end..minute {
            self.values.push_back(None);
        }
        self.values.push_back(value);
        while self.values.len() > HISTORY_MINUTES {
            self.values.pop_front();
            self.start += 1;
        }
    }

    /// The figure ([`MINUTE_PERCENTILE`] of its observations) of a finished minute, if
    /// observed.
    pub fn get(&self, minute: i64) -> Option<f64> {
        let i = usize::try_from(minute.checked_sub(self.start)?).ok()?;
        self.values.get(i).copied().flatten().map(f64::from)
    }

    /// The last finished minute.
    pub fn last_closed(&self) -> Option<i64> {
        (!self.values.is_empty()).then(|| self.start + self.values.len() as i64 - 1)
    }

    /// The figure so far of the minute being observed, and that minute.
    pub fn current(&self) -> Option<(i64, f64)> {
        self.open
            .clone()
            .filter(|o| !o.observations.is_empty())
            .map(|o| (o.minute, o.figure()))
    }

    /// Finished minutes kept (observed or not).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.open.is_none()
    }

    /// Drops what lies beyond the bounds (a history read from a file someone edited).
    pub fn trim(&mut self) {
        while self.values.len() > HISTORY_MINUTES {
            self.values.pop_front();
            self.start += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minute: i64, second: i64) -> Timestamp {
        Timestamp::from_second(minute * 60 + second).unwrap()
    }

    #[test]
    fn minutes_close_with_the_90th_percentile_of_their_seconds() {
        let mut h = History::new();
        // Seconds 1..=60 of a minute: values 1..=60, with one outlier second of 500.
        for s in 0..59 {
            h.record(t(100, s), (s + 1) as f64);
        }
        h.record(t(100, 59), 500.0);
        assert_eq!(h.get(100), None, "still open");
        // Nearest rank: the 54th of 60 sorted values.
        assert_eq!(h.current(), Some((100, 54.0)));
        h.record(t(101, 0), 1.0);
        assert_eq!(
            h.get(100),
            Some(54.0),
            "an outlier second does not set the minute"
        );
        assert_eq!(h.last_closed(), Some(100));
    }

    #[test]
    fn an_older_files_open_minute_is_left_unobserved() {
        let old = r#"{"start": 100, "values": [1.0], "open": {"minute": 101, "peak": 7.0}}"#;
        let mut h: History = serde_json::from_str(old).expect("an older history still reads");
        h.record(t(105, 0), 2.0);
        assert_eq!(h.get(100), Some(1.0));
        assert_eq!(h.get(101), None, "not a false zero");
    }

    #[test]
    fn gaps_are_unobserved_and_old_minutes_go() {
        let mut h = History::new();
        h.record(t(0, 0), 1.0);
        h.record(t(5, 0), 2.0);
        h.record(t(6, 0), 2.0);
        assert_eq!(h.get(0), Some(1.0));
        assert_eq!(h.get(3), None);
        assert_eq!(h.get(5), Some(2.0));
        // A clock stepping back is ignored.
        h.record(t(2, 0), 9.0);
        assert_eq!(h.current(), Some((6, 2.0)));
        for m in 7..(HISTORY_MINUTES as i64 + 50) {
            h.record(t(m, 0), 1.0);
        }
        assert_eq!(h.len(), HISTORY_MINUTES, "bounded");
        assert_eq!(h.get(5), None, "aged out");
        // A jump beyond the whole history starts afresh.
        h.record(t(10 * HISTORY_MINUTES as i64, 0), 1.0);
        h.record(t(10 * HISTORY_MINUTES as i64 + 1, 0), 1.0);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn round_trips_through_json() {
        let mut h = History::new();
        for m in 0..10 {
            h.record(t(m, 0), m as f64);
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert!(History::new().is_empty());
    }
}
