//! Metric windows over 1 s buckets: the average the KPA scales on, and the
//! maximum that implements `scale-down-delay`.
//!
//! Time is a [`Duration`] since an origin the owner chooses (the decider uses
//! its creation instant), so these types are plain data and easy to test.
//! Semantics follow upstream's `aggregation.TimedFloat64Buckets`,
//! `WeightedFloat64Buckets` and `max.TimeWindow`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::WINDOW_MAX;

/// How the buckets of a window are averaged
/// (annotation `autoscaling.knative.dev/metric-aggregation-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Plain mean over the buckets that hold data (`linear`, the default).
    #[default]
    Linear,
    /// Exponentially weighted: recent seconds count more (`weighted-exponential`).
    WeightedExponential,
}

/// Upstream's smallest decay factor for weighted averaging.
const MIN_EXPONENT: f64 = 0.2;
/// Weighted averaging picks its factor so the weights over the window sum to this.
const WEIGHT_PRECISION: f64 = 0.9999;

/// A sliding window of 1 s buckets; each bucket holds the sum of the values
/// recorded in its second.
#[derive(Debug, Clone)]
pub struct AverageWindow {
    aggregation: Aggregation,
    /// Ring buffer indexed by `second % len`.
    buckets: Vec<f64>,
    /// First second with data since the window was last empty.
    first: u64,
    /// Latest second written; `None` before the first record.
    last: Option<u64>,
    /// Decay factor for [`Aggregation::WeightedExponential`].
    smoothing: f64,
}

impl AverageWindow {
    /// A window `window` long (rounded up to whole seconds, 1 s to 1 h).
    pub fn new(window: Duration, aggregation: Aggregation) -> Self {
        let n = bucket_count(window);
        Self {
            aggregation,
            buckets: vec![0.0; n],
            first: 0,
            last: None,
            smoothing: smoothing(n),
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.buckets.len() as u64)
    }

    /// How the window averages.
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    /// Whether anything was ever recorded.
    pub fn has_data(&self) -> bool {
        self.last.is_some()
    }

    /// Whether data was recorded within the window ending at `at`.
    pub fn has_data_at(&self, at: Duration) -> bool {
        self.last
            .is_some_and(|last| at.as_secs().saturating_sub(last) < self.len())
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn slot(&self, second: u64) -> usize {
        // The remainder is below `buckets.len()`, so it fits in usize.
        (second % self.len()) as usize
    }

    /// Adds `value` to the bucket of second `at`. Non-finite values are
    /// ignored and negative ones count as zero. A value older than the window
    /// (relative to the latest record) is dropped; a gap since the latest
    /// record is filled with zeros; after a gap of a whole window the average
    /// starts over from this second.
    pub fn record(&mut self, at: Duration, value: f64) {
        if !value.is_finite() {
            return;
        }
        let value = value.max(0.0);
        let b = at.as_secs();
        match self.last {
            None => {
                self.buckets.fill(0.0);
                self.first = b;
                self.last = Some(b);
            }
            Some(last) if b == last => {}
            Some(last) => {
                if b.saturating_add(self.len()) <= last {
                    return; // a window or more before the latest record
                }
                self.first = self.first.min(b);
                if b > last {
                    if b - last >= self.len() {
                        self.buckets.fill(0.0);
                        self.first = b;
                    } else {
                        for s in last + 1..=b {
                            let i = self.slot(s);
                            self.buckets[i] = 0.0;
                        }
                    }
                    self.last = Some(b);
                }
            }
        }
        let i = self.slot(b);
        self.buckets[i] += value;
    }

    /// The window's average at `at` (0 when no data lies within the window).
    ///
    /// Linear: the mean over the seconds from the first record (or the window
    /// start, whichever is later) to the latest record. Seconds after the
    /// latest record are unknown, not zero, as upstream treats them: report
    /// zeros explicitly to pull the average down.
    pub fn average(&self, at: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let now = at.as_secs().max(last);
        let gap = now - last;
        if gap >= self.len() {
            return 0.0;
        }
        match self.aggregation {
            Aggregation::Linear => {
                let lo = self
                    .first
                    .max(now.saturating_add(1).saturating_sub(self.len()));
                let sum: f64 = (lo..=last).map(|s| self.buckets[self.slot(s)]).sum();
                let count = (last - lo + 1) as f64;
                floor_to_micros(sum / count)
            }
            Aggregation::WeightedExponential => {
                let m = self.smoothing;
                let mut weight = m * (1.0 - m).powf(gap as f64);
                let valid = self.len() - gap;
                let lo = self.first.max(last.saturating_add(1).saturating_sub(valid));
                let mut sum = 0.0;
                for s in (lo..=last).rev() {
                    sum += self.buckets[self.slot(s)] * weight;
                    weight *= 1.0 - m;
                }
                sum
            }
        }
    }

    /// Changes the window's length, keeping the most recent data that fits.
    pub fn resize(&mut self, window: Duration) {
        let n = bucket_count(window);
        if n == self.buckets.len() {
            return;
        }
        let mut buckets = vec![0.0; n];
        if let Some(last) = self.last {
            let keep = n.min(self.buckets.len()) as u64;
            let lo = self.first.max(last.saturating_add(1).saturating_sub(keep));
            for s in lo..=last {
                buckets[(s % n as u64) as usize] = self.buckets[self.slot(s)];
            }
            self.first = lo;
        }
        self.buckets = buckets;
        self.smoothing = smoothing(n);
    }
}

/// Whole seconds in `window`, rounded up, within `[1, WINDOW_MAX]`: windows
/// are validated to at most an hour, and the clamp keeps a hand-built spec
/// from allocating without bound.
fn bucket_count(window: Duration) -> usize {
    let secs = window
        .as_secs()
        .saturating_add(u64::from(window.subsec_nanos() > 0));
    let secs = secs.clamp(1, WINDOW_MAX.as_secs());
    usize::try_from(secs).unwrap_or(1)
}

/// Upstream's `computeSmoothingCoeff`.
fn smoothing(buckets: usize) -> f64 {
    (1.0 - (1.0 - WEIGHT_PRECISION).powf(1.0 / buckets as f64)).max(MIN_EXPONENT)
}

/// Upstream rounds averages down to 6 decimal places, so float noise such as
/// 20.000000000001 does not turn into one more instance after `ceil`.
fn floor_to_micros(v: f64) -> f64 {
    (v * 1e6).floor() / 1e6
}

/// The maximum value recorded over a sliding window of whole seconds
/// (a monotonic deque: O(1) amortised per record).
#[derive(Debug, Clone)]
pub struct MaxWindow {
    len: u64,
    /// (second, value) with strictly decreasing values, oldest first.
    maxima: VecDeque<(u64, i32)>,
}

impl MaxWindow {
    /// A window `window` long (rounded up to whole seconds, 1 s to 1 h).
    pub fn new(window: Duration) -> Self {
        Self {
            len: bucket_count(window) as u64,
            maxima: VecDeque::new(),
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.len)
    }

    /// Records `value` at second `at`; times should not go backwards (an
    /// earlier time is treated as the latest one).
    pub fn record(&mut self, at: Duration, value: i32) {
        let latest = self.maxima.back().map_or(0, |(s, _)| *s);
        let s = at.as_secs().max(latest);
        let mut value = value;
        while self.maxima.back().is_some_and(|(_, v)| *v <= value) {
            self.maxima.pop_back();
        }
        while self
            .maxima
            .front()
            .is_some_and(|(first, _)| s - first >= self.len)
        {
            self.maxima.pop_front();
        }
        if let Some(&(last, v)) = self.maxima.back()
            && last == s
        {
            value = value.max(v);
            self.maxima.pop_back();
        }
        self.maxima.push_back((s, value));
    }

    /// The maximum over the window ending at the latest record (0 if none).
    pub fn current(&self) -> i32 {
        self.maxima.front().map_or(0, |(_, v)| *v)
    }
}

#[cfg(test)]
mod tests;
