//! Revision garbage collection, as Knative's `pkg/reconciler/gc` does it, from `config-gc`.
//!
//! A Configuration's non-active Revisions are collected once more than
//! `min-non-active-revisions` of them exist: oldest last activity first, those that are
//! stale (created longer ago than `retain-since-create-time` **and** last active longer ago than
//! `retain-since-last-active-time`), while more than the minimum remain; then, whatever their
//! age, the oldest beyond `max-non-active-revisions`. Active — never collected — are the
//! latest ready Revision, Revisions a Route sends traffic to (or that no Route has let go of
//! yet: routing state other than `reserve`), and those annotated
//! `serving.knative.dev/no-gc: "true"`. Each time setting and the maximum may be `disabled`;
//! with all three disabled nothing is collected.
//!
//! Times are Unix seconds, handed in by the caller (pure: tests and both run modes decide the
//! same way).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::ConfigError;

/// The ConfigMap's name.
pub const CONFIG_GC: &str = "config-gc";
/// The annotation that keeps a Revision from ever being collected.
pub const NO_GC_ANNOTATION: &str = "serving.knative.dev/no-gc";

/// `config-gc` as in force (`None`: `disabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcConfig {
    /// `retain-since-create-time` (default 48h).
    pub retain_since_create: Option<Duration>,
    /// `retain-since-last-active-time` (default 15h).
    pub retain_since_last_active: Option<Duration>,
    /// `min-non-active-revisions` (default 20).
    pub min_non_active: u64,
    /// `max-non-active-revisions` (default 1000).
    pub max_non_active: Option<u64>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            retain_since_create: Some(Duration::from_secs(48 * 3600)),
            retain_since_last_active: Some(Duration::from_secs(15 * 3600)),
            min_non_active: 20,
            max_non_active: Some(1000),
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        config_map: CONFIG_GC.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl GcConfig {
    /// Knative's parse: absent or empty keys keep their default; `disabled` (any case) turns
    /// a time or the maximum off; negative values and a minimum above the maximum are refused.
    pub fn parse(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let duration = |key: &str, current: Option<Duration>| -> Result<_, ConfigError> {
            match data.get(key).map(|v| v.trim()) {
                None | Some("") => Ok(current),
                Some(v) if v.eq_ignore_ascii_case("disabled") => Ok(None),
                Some(v) => {
                    let magnitude = v.strip_prefix('-').unwrap_or(v);
                    let d =
                        crate::kourier::go_duration(magnitude).map_err(|e| invalid(key, v, e))?;
                    if v.starts_with('-') && !d.is_zero() {
                        return Err(invalid(key, v, "must be non-negative"));
                    }
                    Ok(Some(d))
                }
            }
        };
        c.retain_since_create = duration("retain-since-create-time", c.retain_since_create)?;
        c.retain_since_last_active =
            duration("retain-since-last-active-time", c.retain_since_last_active)?;
        if let Some(v) = data.get("min-non-active-revisions").map(|v| v.trim())
            && !v.is_empty()
        {
            let n: i64 = v
                .parse()
                .map_err(|_| invalid("min-non-active-revisions", v, "not an integer"))?;
            c.min_non_active = u64::try_from(n)
                .map_err(|_| invalid("min-non-active-revisions", v, "must be non-negative"))?;
        }
        match data.get("max-non-active-revisions").map(|v| v.trim()) {
            None | Some("") => {}
            Some(v) if v.eq_ignore_ascii_case("disabled") => c.max_non_active = None,
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| invalid("max-non-active-revisions", v, "not an integer"))?;
                c.max_non_active =
                    Some(u64::try_from(n).map_err(|_| {
                        invalid("max-non-active-revisions", v, "must be non-negative")
                    })?);
            }
        }
        if let Some(max) = c.max_non_active
            && c.min_non_active > max
        {
            return Err(invalid(
                "min-non-active-revisions",
                &c.min_non_active.to_string(),
                format!("must be <= max-non-active-revisions ({max})"),
            ));
        }
        Ok(c)
    }
}

/// A Revision of one Configuration as the collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name.
    pub name: String,
    /// Created at (Unix seconds).
    pub created: i64,
    /// When its routing state last changed (Unix seconds), if it ever did.
    pub routing_state_modified: Option<i64>,
    /// Never collected: the latest ready Revision, one a Route still holds (routing state not
    /// `reserve`), or one annotated `no-gc`.
    pub active: bool,
}

impl Candidate {
    fn last_active(&self) -> i64 {
        self.routing_state_modified.unwrap_or(self.created)
    }

    fn stale(&self, c: &GcConfig, now: i64) -> bool {
        if c.retain_since_create.is_none() && c.retain_since_last_active.is_none() {
            return false;
        }
        let older = |since: i64, d: Duration| now.saturating_sub(since) >= d.as_secs() as i64;
        if let Some(d) = c.retain_since_create
            && !older(self.created, d)
        {
            return false;
        }
        if let Some(d) = c.retain_since_last_active
            && !older(self.last_active(), d)
        {
            return false;
        }
        true
    }
}

/// The Revisions of one Configuration to delete now, oldest last activity first.
pub fn collect(c: &GcConfig, revisions: &[Candidate], now: i64) -> Vec<String> {
    let min = c.min_non_active as usize;
    if c.max_non_active.is_none()
        && c.retain_since_create.is_none()
        && c.retain_since_last_active.is_none()
    {
        return Vec::new();
    }
    if revisions.len() <= min {
        return Vec::new();
    }
    let mut non_active: Vec<&Candidate> = revisions.iter().filter(|r| !r.active).collect();
    if non_active.len() <= min {
        return Vec::new();
    }
    non_active.sort_by_key(|r| (r.last_active(), r.created, r.name.clone()));
    let mut out = Vec::new();
    let mut remaining = non_active.len();
    let mut kept = Vec::new();
    for r in non_active {
        if remaining <= min {
            return out;
        }
        if r.stale(c, now) {
            remaining -= 1;
            out.push(r.name.clone());
        } else {
            kept.push(r);
        }
    }
    if let Some(max) = c.max_non_active.map(|m| m as usize)
        && kept.len() > max
    {
        out.extend(kept[..kept.len() - max].iter().map(|r| r.name.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rev(name: &str, created: i64, modified: Option<i64>, active: bool) -> Candidate {
        Candidate {
            name: name.into(),
            created,
            routing_state_modified: modified,
            active,
        }
    }

    #[test]
    fn config_gc_parses_as_knative() {
        assert_eq!(GcConfig::parse(&data(&[])), Ok(GcConfig::default()));
        let c = GcConfig::parse(&data(&[
            ("retain-since-create-time", "disabled"),
            ("retain-since-last-active-time", "1h"),
            ("min-non-active-revisions", "2"),
            ("max-non-active-revisions", "DISABLED"),
        ]))
        .unwrap();
        assert_eq!(c.retain_since_create, None);
        assert_eq!(c.retain_since_last_active, Some(Duration::from_secs(3600)));
        assert_eq!((c.min_non_active, c.max_non_active), (2, None));
        for (key, value, reason) in [
            ("retain-since-create-time", "-1h", "non-negative"),
            ("retain-since-create-time", "soon", "invalid duration"),
            ("min-non-active-revisions", "-1", "non-negative"),
            ("max-non-active-revisions", "x", "integer"),
        ] {
            let e = GcConfig::parse(&data(&[(key, value)])).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.reason.contains(reason), "{e}");
        }
        let e = GcConfig::parse(&data(&[
            ("min-non-active-revisions", "5"),
            ("max-non-active-revisions", "3"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("must be <= max-non-active-revisions (3)"),
            "{e}"
        );
    }

    #[test]
    fn stale_revisions_go_while_more_than_the_minimum_remain() {
        let c = GcConfig {
            retain_since_create: Some(Duration::from_secs(48 * H as u64)),
            retain_since_last_active: Some(Duration::from_secs(15 * H as u64)),
            min_non_active: 1,
            max_non_active: Some(1000),
        };
        let now = 100 * H;
        let revs = [
            // Old and long inactive: stale.
            rev("a-00001", 0, Some(10 * H), false),
            rev("a-00002", 0, Some(20 * H), false),
            // Old but active until 10 hours ago: kept.
            rev("a-00003", 0, Some(90 * H), false),
            // Created an hour ago: kept.
            rev("a-00004", 99 * H, None, false),
            // Active (latest ready, or routed): never.
            rev("a-00005", 0, Some(0), true),
        ];
        assert_eq!(collect(&c, &revs, now), ["a-00001", "a-00002"]);
        // With a minimum of 3 non-active, only one goes (the oldest).
        let c3 = GcConfig {
            min_non_active: 3,
            ..c
        };
        assert_eq!(collect(&c3, &revs, now), ["a-00001"]);
        // Below the minimum: nothing.
        let c4 = GcConfig {
            min_non_active: 4,
            ..c
        };
        assert!(collect(&c4, &revs, now).is_empty());
    }

    #[test]
    fn beyond_the_maximum_the_oldest_go_whatever_their_age() {
        let c = GcConfig {
            retain_since_create: None,
            retain_since_last_active: None,
            min_non_active: 0,
            max_non_active: Some(1),
        };
        let revs = [
            rev("b-00001", 10, Some(30), false),
            rev("b-00002", 20, Some(40), false),
            rev("b-00003", 30, None, true),
        ];
        assert_eq!(collect(&c, &revs, 50), ["b-00001"]);
        // Everything disabled: nothing, ever.
        let off = GcConfig {
            max_non_active: None,
            ..c
        };
        assert!(collect(&off, &revs, i64::MAX).is_empty());
    }
}
