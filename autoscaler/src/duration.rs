//! Go `time.Duration` text: the format Knative's ConfigMaps and annotations use
//! (`"60s"`, `"1m30s"`, `"1.5h"`, `"500ms"`).
//!
//! Parsing follows Go's `time.ParseDuration` exactly (signed, a sequence of
//! decimal numbers each with a unit, `"0"` alone allowed); formatting follows
//! `Duration.String()` so validation messages read as upstream's do
//! (`1h0m0s`, `6s`, `500ms`).

use std::fmt;

/// Nanoseconds per unit; a unit is matched whole.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µs, micro sign
    ("\u{3bc}s", 1_000), // μs, Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Why a duration string was rejected (Go's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`.
    Invalid,
    /// A number without a unit, e.g. `"60"`.
    MissingUnit,
    /// A unit Go does not know, e.g. `"1d"`.
    UnknownUnit(String),
    /// Does not fit in a signed 64-bit count of nanoseconds.
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("invalid duration"),
            Self::MissingUnit => f.write_str("missing unit in duration"),
            Self::UnknownUnit(u) => write!(f, "unknown unit {u:?} in duration"),
            Self::Overflow => f.write_str("duration out of range"),
        }
    }
}

/// Parses a Go duration into signed nanoseconds.
pub(crate) fn parse(text: &str) -> Result<i64, DurationError> {
    let mut s = text.as_bytes();
    let mut neg = false;
    if let Some((&c, rest)) = s.split_first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(DurationError::Invalid);
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(DurationError::Invalid);
        }
        // Integer part.
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &c in &s[..digits] {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u64::from(c - b'0')))
                .filter(|w| *w <= 1 << 63)
                .ok_or(DurationError::Overflow)?;
        }
        let pre = digits > 0;
        s = &s[digits..];
        // Fraction part: digits past u64 precision are dropped, as in Go.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..digits] {
                if overflow {
                    continue;
                }
                if frac > (i64::MAX as u64) / 10 {
                    overflow = true;
                    continue;
                }
                let next = frac * 10 + u64::from(c - b'0');
                if next > 1 << 63 {
                    overflow = true;
                    continue;
                }
                frac = next;
                scale *= 10.0;
            }
            post = digits > 0;
            s = &s[digits..];
        }
        if !pre && !post {
            return Err(DurationError::Invalid);
        }
        // Unit: everything up to the next number.
        let unit_len = s
            .iter()
            .take_while(|c| !(**c == b'.' || c.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit_text = &s[..unit_len];
        s = &s[unit_len..];
        let unit = UNITS
            .iter()
            .find(|(name, _)| name.as_bytes() == unit_text)
            .map(|(_, n)| *n)
            .ok_or_else(|| {
                DurationError::UnknownUnit(String::from_utf8_lossy(unit_text).into_owned())
            })?;
        if whole > (1u64 << 63) / unit {
            return Err(DurationError::Overflow);
        }
        let mut value = whole * unit;
        if frac > 0 {
            // Go computes the fraction in float64 too (exact to the nanosecond for hours).
            let extra = (frac as f64 * (unit as f64 / scale)) as u64;
            value = value.checked_add(extra).ok_or(DurationError::Overflow)?;
            if value > 1 << 63 {
                return Err(DurationError::Overflow);
            }
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= 1 << 63)
            .ok_or(DurationError::Overflow)?;
    }
    if neg {
        // 1 << 63 is exactly i64::MIN's magnitude.
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| DurationError::Overflow)
}

/// Formats signed nanoseconds as Go's `Duration.String()` does.
pub(crate) fn format(nanos: i64) -> String {
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        return "0s".to_owned();
    } else if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        let div = 10u64.pow(prec);
        format!("{}{}{unit}", u / div, fraction(u % div, prec))
    } else {
        let secs = u / 1_000_000_000;
        let frac = fraction(u % 1_000_000_000, 9);
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}{frac}s")
        } else if secs >= 60 {
            format!("{m}m{s}{frac}s")
        } else {
            format!("{s}{frac}s")
        }
    };
    if neg { format!("-{body}") } else { body }
}

/// Formats a `std::time::Duration` as Go would (saturating past ~292 years).
pub(crate) fn format_std(d: std::time::Duration) -> String {
    format(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `.ddd` with trailing zeros trimmed; empty when `v` is zero.
fn fraction(v: u64, prec: u32) -> String {
    if v == 0 {
        return String::new();
    }
    let digits = format!("{v:0width$}", width = prec as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_what_go_parses() {
        for (text, want) in [
            ("0", 0),
            ("-0", 0),
            ("60s", 60 * S),
            ("1m30s", 90 * S),
            ("1h", 3600 * S),
            ("1.5h", 5400 * S),
            ("+5s", 5 * S),
            ("-5s", -5 * S),
            ("500ms", S / 2),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("7ns", 7),
            (".5s", S / 2),
            ("5.s", 5 * S),
            ("1h2m3.25s", 3723 * S + S / 4),
            ("0s", 0),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(parse(""), Err(DurationError::Invalid));
        assert_eq!(parse("-"), Err(DurationError::Invalid));
        assert_eq!(parse("s"), Err(DurationError::Invalid));
        assert_eq!(parse(".s"), Err(DurationError::Invalid));
        assert_eq!(parse("60"), Err(DurationError::MissingUnit));
        assert_eq!(parse("1d"), Err(DurationError::UnknownUnit("d".into())));
        assert_eq!(parse("60s "), Err(DurationError::UnknownUnit("s ".into())));
        assert_eq!(parse(" 60s"), Err(DurationError::Invalid));
        assert_eq!(parse("3000000h"), Err(DurationError::Overflow));
        assert_eq!(parse("9223372036854775808ns"), Err(DurationError::Overflow));
        assert_eq!(parse("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn formats_like_go() {
        for (nanos, want) in [
            (0, "0s"),
            (6 * S, "6s"),
            (60 * S, "1m0s"),
            (90 * S, "1m30s"),
            (3600 * S, "1h0m0s"),
            (S + S / 2, "1.5s"),
            (S / 2, "500ms"),
            (1_500, "1.5\u{b5}s"),
            (7, "7ns"),
            (-5 * S, "-5s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(format(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [1, 999, 1_000, 123_456_789, 59 * S, 61 * S + 7, 7200 * S + 1] {
            assert_eq!(parse(&format(nanos)), Ok(nanos), "{nanos}");
        }
    }
}
