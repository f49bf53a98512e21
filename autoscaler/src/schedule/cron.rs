//! Standard 5-field cron expressions (`minute hour day-of-month month day-of-week`), as
//! crontab(5) reads them, matched against one civil minute.
//!
//! Why not a crate: the cron crates on crates.io (`cron`, `croner`) compute *next
//! occurrences* on `chrono` time; a scale window needs only "does this minute match", in the
//! Revision's time zone, which `jiff` already gives. The grammar is small and every rule is
//! tested here.
//!
//! Each field is a comma-separated list of `*`, `N`, `N-M`, each optionally followed by
//! `/STEP` (`N/STEP` means `N-max/STEP`, as Vixie cron). Months and weekdays also take
//! three-letter English names (`JAN`, `mon`); day-of-week 0 and 7 are both Sunday. As in
//! Vixie cron, when both day-of-month and day-of-week are restricted (neither starts with
//! `*`), a day matches if *either* does.

use std::fmt;

use jiff::civil::DateTime;

/// One parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

/// Why a cron expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Cron {
    /// Parses a 5-field expression (fields separated by spaces or tabs).
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(CronError(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };
        let mut weekdays = bits(weekday, &WEEKDAY)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            minutes: bits(minute, &MINUTE)?,
            hours: narrow(bits(hour, &HOUR)?),
            days: narrow(bits(day, &DAY)?),
            months: narrow(bits(month, &MONTH)?),
            weekdays: narrow(weekdays & 0x7f),
            days_star: day.starts_with('*'),
            weekdays_star: weekday.starts_with('*'),
        })
    }

    /// Whether the minute containing `at` matches.
    pub fn matches(&self, at: DateTime) -> bool {
        let bit = |set: u64, v: i64| u32::try_from(v).is_ok_and(|v| v < 64 && set & (1 << v) != 0);
        if !bit(self.minutes, at.minute().into())
            || !bit(self.hours.into(), at.hour().into())
            || !bit(self.months.into(), at.month().into())
        {
            return false;
        }
        let day = bit(self.days.into(), at.day().into());
        let weekday = bit(
            self.weekdays.into(),
            at.weekday().to_sunday_zero_offset().into(),
        );
        match (self.days_star, self.weekdays_star) {
            (false, false) => day || weekday,
            _ => day && weekday,
        }
    }
}

fn narrow<T: TryFrom<u64> + Default>(v: u64) -> T {
    T::try_from(v).unwrap_or_default()
}

/// The set of values one field allows, as bits.
fn bits(text: &str, f: &Field) -> Result<u64, CronError> {
    let err = |what: String| Err(CronError(format!("{} field {text:?}: {what}", f.name)));
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(s) if s > 0 => (r, s),
                _ => return err(format!("step {s:?} is not a positive number")),
            },
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, f)?, value(b, f)?);
            if a > b {
                return err(format!("range {range:?} runs backwards"));
            }
            (a, b)
        } else if range.is_empty() {
            return err("empty item".into());
        } else {
            let a = value(range, f)?;
            // `N/STEP` runs to the end of the field.
            (a, if item.contains('/') { f.max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            set |= 1u64 << v;
            let Some(next) = v.checked_add(step) else {
                break;
            };
            v = next;
        }
    }
    Ok(set)
}

fn value(text: &str, f: &Field) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        // Names count from the field's first value (JAN = 1, SUN = 0).
        return Ok(f.min + u32::try_from(i).unwrap_or(0));
    }
    match text.parse::<u32>() {
        Ok(v) if (f.min..=f.max).contains(&v) => Ok(v),
        Ok(v) => Err(CronError(format!(
            "{} field: {v} is outside {}-{}",
            f.name, f.min, f.max
        ))),
        Err(_) => Err(CronError(format!(
            "{} field: {text:?} is not a number{}",
            f.name,
            if f.names.is_empty() { "" } else { " or a name" }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;
    use proptest::prelude::*;

    use super::*;

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> DateTime {
        date(y, mo, d).at(h, mi, 0, 0)
    }

    #[test]
    fn every_minute_matches_star() {
        let c = Cron::parse("* * * * *").unwrap();
        assert!(c.matches(at(2026, 1, 1, 0, 0)));
        assert!(c.matches(at(2026, 12, 31, 23, 59)));
    }

    #[test]
    fn hour_ranges_include_both_ends() {
        let c = Cron::parse("* 7-9 * * *").unwrap();
        assert!(!c.matches(at(2026, 3, 2, 6, 59)));
        assert!(c.matches(at(2026, 3, 2, 7, 0)));
        assert!(c.matches(at(2026, 3, 2, 9, 59)));
        assert!(!c.matches(at(2026, 3, 2, 10, 0)));
    }

    #[test]
    fn steps_lists_and_names() {
        let c = Cron::parse("*/15 0,12 * jan-mar MON-FRI").unwrap();
        // 2026-01-05 is a Monday.
        assert!(c.matches(at(2026, 1, 5, 12, 45)));
        assert!(!c.matches(at(2026, 1, 5, 12, 46)));
        assert!(!c.matches(at(2026, 1, 4, 12, 45)), "a Sunday");
        assert!(!c.matches(at(2026, 4, 6, 12, 45)), "April");
        let c = Cron::parse("5/20 * * * *").unwrap();
        let minutes: Vec<i8> = (0..60)
            .filter(|m| c.matches(at(2026, 1, 1, 0, *m)))
            .collect();
        assert_eq!(minutes, [5, 25, 45]);
        let c = Cron::parse("10-30/10 * * * *").unwrap();
        let minutes: Vec<i8> = (0..60)
            .filter(|m| c.matches(at(2026, 1, 1, 0, *m)))
            .collect();
        assert_eq!(minutes, [10, 20, 30]);
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        // 2026-01-04 is a Sunday.
        for expr in ["* * * * 0", "* * * * 7", "* * * * sun", "* * * * 6-7"] {
            let c = Cron::parse(expr).unwrap();
            assert!(c.matches(at(2026, 1, 4, 3, 0)), "{expr}");
        }
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 1st of the month, or any Friday.
        let c = Cron::parse("0 0 1 * 5").unwrap();
        assert!(c.matches(at(2026, 1, 1, 0, 0)), "the 1st (a Thursday)");
        assert!(c.matches(at(2026, 1, 2, 0, 0)), "a Friday");
        assert!(!c.matches(at(2026, 1, 3, 0, 0)));
        // With a star, both must hold.
        let c = Cron::parse("0 0 */2 * 5").unwrap();
        assert!(!c.matches(at(2026, 1, 2, 0, 0)), "day 2 is not */2 from 1");
        assert!(c.matches(at(2026, 1, 9, 0, 0)), "day 9, a Friday");
    }

    #[test]
    fn bad_expressions_say_which_field_and_why() {
        let cases = [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute field: 60 is outside 0-59"),
            ("* 24 * * *", "hour field: 24 is outside 0-23"),
            ("* * 0 * *", "day-of-month field: 0 is outside 1-31"),
            (
                "* * * foo *",
                "month field: \"foo\" is not a number or a name",
            ),
            ("* * * * 8", "day-of-week field: 8 is outside 0-7"),
            ("*/0 * * * *", "step \"0\" is not a positive number"),
            ("9-3 * * * *", "range \"9-3\" runs backwards"),
            ("1,,2 * * * *", "empty item"),
            ("@daily", "expected 5 fields"),
        ];
        for (expr, want) in cases {
            let err = Cron::parse(expr).unwrap_err().to_string();
            assert!(err.contains(want), "{expr}: {err}");
        }
    }

    proptest! {
        /// A single value matches exactly that minute, and parsing never panics.
        #[test]
        fn single_minutes_match_only_themselves(m in 0i8..60, other in 0i8..60) {
            let c = Cron::parse(&format!("{m} * * * *")).unwrap();
            prop_assert_eq!(c.matches(at(2026, 6, 1, 12, other)), m == other);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "[ */,0-9a-zA-Z-]{0,40}") {
            let _ = Cron::parse(&s);
        }
    }
}
