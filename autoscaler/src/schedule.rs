//! Scheduled scale bounds: `sluice.knative.dev/scale-bounds`, a JSON list of windows
//! `{"cron": "* 7-9 * * *", "minScale": 5, "maxScale": 50}`, in the time zone of
//! `sluice.knative.dev/scale-bounds-timezone` (an IANA name, default UTC).
//!
//! A window is in force during every minute its cron expression matches, in that time zone;
//! the first window in force wins. While one is, its `minScale` / `maxScale` replace the
//! Revision's `min-scale` / `max-scale` (a window that leaves one out keeps the Revision's
//! own). Across a daylight-saving change the rule stays "the minutes that match": a window
//! on `* 2 * * *` is not in force on the day 02:00–02:59 does not exist, and is in force for
//! both 01:00–01:59 hours of the day that repeats them (for `* 1 * * *`).
//!
//! The time-zone database is bundled with the crate (`jiff`'s `tzdb-bundle-always`), so the
//! answer does not depend on the machine's `/usr/share/zoneinfo`.

mod cron;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

pub use cron::{Cron, CronError};

use crate::annotations::AnnotationError;

/// One window of `scale-bounds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleWindow {
    /// The cron expression as written.
    pub cron: String,
    parsed: Cron,
    /// Replaces `min-scale` while in force.
    pub min_scale: Option<u32>,
    /// Replaces `max-scale` while in force (0 = unlimited).
    pub max_scale: Option<u32>,
}

/// The windows of one Revision and their time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSchedule {
    /// The windows, in order (the first in force wins).
    pub windows: Vec<ScaleWindow>,
    /// The IANA name of the time zone the cron expressions are read in.
    pub timezone: String,
    tz: TimeZone,
}

/// The window in force at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowInForce {
    /// Its position in `scale-bounds` (0-based).
    pub index: usize,
    /// Its `minScale`, if it sets one.
    pub min_scale: Option<u32>,
    /// Its `maxScale`, if it sets one.
    pub max_scale: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    cron: String,
    #[serde(rename = "minScale")]
    min_scale: Option<u32>,
    #[serde(rename = "maxScale")]
    max_scale: Option<u32>,
}

impl ScaleSchedule {
    /// Parses `scale-bounds` (under annotation `key`), read in UTC until
    /// [`Self::set_time_zone`]. `max_scale_limit` is `config-autoscaler`'s `max-scale-limit`
    /// (0 = none).
    pub fn parse(key: &str, bounds: &str, max_scale_limit: u32) -> Result<Self, AnnotationError> {
        let invalid = |message: String| AnnotationError::Invalid {
            key: key.to_owned(),
            message,
        };
        let raw: Vec<RawWindow> = serde_json::from_str(bounds).map_err(|e| {
            invalid(format!(
                "expected a JSON list of {{\"cron\": \"* 7-9 * * *\", \"minScale\": N, \"maxScale\": N}}: {e}"
            ))
        })?;
        let mut windows = Vec::with_capacity(raw.len());
        for (i, w) in raw.into_iter().enumerate() {
            let parsed = Cron::parse(&w.cron)
                .map_err(|e| invalid(format!("window {i}: cron {:?}: {e}", w.cron)))?;
            if w.min_scale.is_none() && w.max_scale.is_none() {
                return Err(invalid(format!(
                    "window {i}: sets neither minScale nor maxScale"
                )));
            }
            if let (Some(min), Some(max)) = (w.min_scale, w.max_scale)
                && max != 0
                && max < min
            {
                return Err(invalid(format!(
                    "window {i}: maxScale={max} is less than minScale={min}"
                )));
            }
            if max_scale_limit > 0 {
                for (name, v) in [("minScale", w.min_scale), ("maxScale", w.max_scale)] {
                    if let Some(v) = v
                        && (v > max_scale_limit || (name == "maxScale" && v == 0))
                    {
                        return Err(invalid(format!(
                            "window {i}: {name}={v} is beyond max-scale-limit {max_scale_limit}"
                        )));
                    }
                }
            }
            windows.push(ScaleWindow {
                cron: w.cron,
                parsed,
                min_scale: w.min_scale,
                max_scale: w.max_scale,
            });
        }
        Ok(ScaleSchedule {
            windows,
            timezone: "UTC".to_owned(),
            tz: TimeZone::UTC,
        })
    }

    /// Reads the cron expressions in the IANA time zone `name`; on error nothing changes.
    pub fn set_time_zone(&mut self, name: &str) -> Result<(), String> {
        self.tz = time_zone(name)?;
        self.timezone = name.to_owned();
        Ok(())
    }

    /// The first window whose cron expression matches the minute of `at` (in the schedule's
    /// time zone).
    pub fn in_force(&self, at: Timestamp) -> Option<WindowInForce> {
        let civil = at.to_zoned(self.tz.clone()).datetime();
        self.windows
            .iter()
            .position(|w| w.parsed.matches(civil))
            .map(|index| WindowInForce {
                index,
                min_scale: self.windows[index].min_scale,
                max_scale: self.windows[index].max_scale,
            })
    }
}

/// An IANA time zone from the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\")")
    })
}

#[cfg(test)]
mod tests;
