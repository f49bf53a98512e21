//! Predictive scaling: `sluice.knative.dev/predictive: "true"` forecasts a Revision's demand
//! over the look-ahead window from its own per-minute [`History`], so capacity is started
//! before a daily peak instead of after it.
//!
//! The method is seasonal with a daily period over the history's per-minute figures (the 90th
//! percentile of each minute's seconds): the forecast for a minute is the mean of the same
//! minute on each of the previous days kept (up to seven), and the forecast for the
//! look-ahead window is the largest such figure over its minutes. A margin is added: the
//! `predictive-quantile` (default 95th percentile) of the forecast's errors (actual minus
//! forecast) at the same time of day (±30 minutes) on each of the last seven days: the margin
//! follows the level and the spread of that hour (a night needs none, a busy morning some),
//! and a quiet Sunday does not shrink Monday's. The figure in instances is that demand divided by the
//! per-instance target, rounded up. In a decision it only ever raises the reactive figure.
//!
//! The default look-ahead is the Revision's observed start time (spawn → ready) plus 30 s:
//! capacity the forecast asks for now is ready when that demand arrives.

mod history;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use history::{HISTORY_DAYS, HISTORY_MINUTES, History, MINUTES_PER_DAY, minute_of};

use crate::annotations::AnnotationError;
use crate::duration;

/// `sluice.knative.dev/predictive`: `"true"` turns predictive scaling on.
pub const PREDICTIVE: &str = "sluice.knative.dev/predictive";
/// `sluice.knative.dev/predictive-quantile`: the error quantile added as margin (default 95).
pub const PREDICTIVE_QUANTILE: &str = "sluice.knative.dev/predictive-quantile";
/// `sluice.knative.dev/predictive-lookahead`: how far ahead to forecast (a duration).
pub const PREDICTIVE_LOOKAHEAD: &str = "sluice.knative.dev/predictive-lookahead";

/// The default error quantile, in percent.
pub const DEFAULT_QUANTILE: f64 = 95.0;
/// Added to the observed start time for the default look-ahead.
pub const LOOKAHEAD_SLACK: Duration = Duration::from_secs(30);
/// The longest look-ahead accepted.
pub const LOOKAHEAD_MAX: Duration = Duration::from_secs(3600);
/// Days of the same minute averaged for a forecast.
const SEASONS: i64 = 7;
/// Days of past forecast errors the margin is the quantile of.
pub const ERROR_DAYS: i64 = HISTORY_DAYS - 1;
/// Minutes either side of the time of day whose past errors make the margin.
pub const ERROR_SPAN: i64 = 30;

/// A Revision's predictive settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predictive {
    /// The error quantile added as margin, in percent.
    pub quantile: f64,
    /// The look-ahead; `None`: the observed start time plus [`LOOKAHEAD_SLACK`].
    pub lookahead: Option<Duration>,
}

impl Predictive {
    /// Reads the predictive annotations: `None` unless `predictive` is `"true"`. Invalid
    /// values are reported in `errors` and treated as absent.
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        errors: &mut Vec<AnnotationError>,
    ) -> Option<Predictive> {
        let get = |k: &str| annotations.get(k).map(String::as_str);
        let mut invalid = |key: &str, message: String| {
            errors.push(AnnotationError::Invalid {
                key: key.to_owned(),
                message,
            });
        };
        let on = match get(PREDICTIVE) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                invalid(
                    PREDICTIVE,
                    format!("{other:?} is neither \"true\" nor \"false\""),
                );
                false
            }
        };
        let quantile = match get(PREDICTIVE_QUANTILE) {
            None => DEFAULT_QUANTILE,
            Some(raw) => match raw.parse::<f64>() {
                Ok(q) if (1.0..=100.0).contains(&q) => q,
                _ => {
                    invalid(
                        PREDICTIVE_QUANTILE,
                        format!("{raw:?} is not a percentile from 1 to 100"),
                    );
                    DEFAULT_QUANTILE
                }
            },
        };
        let lookahead = get(PREDICTIVE_LOOKAHEAD).and_then(|raw| match duration::parse(raw) {
            Ok(ns) if ns >= 0 && ns as u128 <= LOOKAHEAD_MAX.as_nanos() => {
                Some(Duration::from_nanos(ns.unsigned_abs()))
            }
            _ => {
                invalid(
                    PREDICTIVE_LOOKAHEAD,
                    format!("{raw:?} is not a duration from 0s to 1h (e.g. \"90s\")"),
                );
                None
            }
        });
        on.then_some(Predictive {
            quantile,
            lookahead,
        })
    }

    /// The look-ahead in force, given the Revision's observed start time.
    pub fn lookahead(&self, observed_start: Option<Duration>) -> Duration {
        self.lookahead
            .unwrap_or_else(|| observed_start.unwrap_or_default() + LOOKAHEAD_SLACK)
    }
}

/// One forecast, in the metric's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Seasonal figure plus margin, at least 0: the demand to provision for.
    pub value: f64,
    /// The largest seasonal figure over the look-ahead window.
    pub seasonal: f64,
    /// The error quantile added.
    pub margin: f64,
}

/// The forecaster of one Revision: its history and the margin, recomputed once a minute.
#[derive(Debug, Clone, Default)]
pub struct Forecaster {
    history: History,
    /// The margin, the minute it is for and the quantile (as bits).
    margin: Option<(i64, f64, u64)>,
}

impl Forecaster {
    /// A forecaster over `history` (empty for a new Revision, else restored).
    pub fn new(history: History) -> Self {
        Self {
            history,
            margin: None,
        }
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Records one observation of demand.
    pub fn record(&mut self, at: Timestamp, value: f64) {
        self.history.record(at, value);
    }

    /// The seasonal figure for a minute: the mean of that minute on the previous days kept.
    pub fn seasonal(&self, minute: i64) -> Option<f64> {
        let (sum, n) = (1..=SEASONS)
            .filter_map(|d| self.history.get(minute - d * MINUTES_PER_DAY))
            .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// The forecast for `[at, at + lookahead]` with the `quantile` (percent) of past errors
    /// as margin; `None` while no earlier day covers that window.
    pub fn forecast(
        &mut self,
        at: Timestamp,
        lookahead: Duration,
        quantile: f64,
    ) -> Option<Forecast> {
        let first = minute_of(at);
        let ahead = SignedDuration::try_from(lookahead).unwrap_or(SignedDuration::ZERO);
        let last = at
            .checked_add(ahead)
            .map(minute_of)
            .unwrap_or(first)
            .max(first);
        let seasonal = (first..=last)
            .filter_map(|m| self.seasonal(m))
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })?;
        let margin = self.margin(first, quantile);
        Some(Forecast {
            value: (seasonal + margin).max(0.0),
            seasonal,
            margin,
        })
    }

    /// The `quantile` of the errors (actual − seasonal) at the time of day of `minute`
    /// (±[`ERROR_SPAN`] minutes) on each of the last [`ERROR_DAYS`] days; 0 when there is
    /// none.
    fn margin(&mut self, minute: i64, quantile: f64) -> f64 {
        let q_key = quantile.to_bits();
        if let Some((at, m, q)) = self.margin
            && at == minute
            && q == q_key
        {
            return m;
        }
        let mut errors: Vec<f64> = (1..=ERROR_DAYS)
            .flat_map(|d| {
                let center = minute - d * MINUTES_PER_DAY;
                (center - ERROR_SPAN)..=(center + ERROR_SPAN)
            })
            .filter(|m| *m < minute)
            .filter_map(|m| Some(self.history.get(m)? - self.seasonal(m)?))
            .collect();
        let m = quantile_of(&mut errors, quantile);
        self.margin = Some((minute, m, q_key));
        m
    }
}

/// The nearest-rank `q`th percentile of `values` (0 when empty).
pub fn quantile_of(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = ((q / 100.0) * n as f64).ceil() as usize;
    values[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests;
