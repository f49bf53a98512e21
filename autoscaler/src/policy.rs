//! Everything a Revision asks of the autoscaler beyond the KPA's own annotations: reserved
//! instances, scheduled bounds, predictive scaling and the HPA class.
//!
//! Unlike the `autoscaling.knative.dev/*` annotations (Knative's webhook refuses a Revision
//! with an invalid one), an invalid annotation here is reported and treated as absent: the
//! Revision still runs and scales.

use std::collections::BTreeMap;

use crate::annotations::{AnnotationError, CLASS, ScalingAnnotations};
use crate::config::{Config, HPA_CLASS};
use crate::hpa::HpaSpec;
use crate::predict::Predictive;
use crate::reserve::Reserve;
use crate::schedule::ScaleSchedule;

/// `sluice.knative.dev/scale-bounds`: a JSON list of scheduled windows.
pub const SCALE_BOUNDS: &str = "sluice.knative.dev/scale-bounds";
/// `sluice.knative.dev/scale-bounds-timezone`: the IANA time zone of the windows (UTC).
pub const SCALE_BOUNDS_TIMEZONE: &str = "sluice.knative.dev/scale-bounds-timezone";

/// A Revision's reserved instances, scheduled bounds, predictive settings and HPA class.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Reserved instances, when enabled.
    pub reserve: Option<Reserve>,
    /// Scheduled bounds, when given.
    pub schedule: Option<ScaleSchedule>,
    /// Predictive scaling, when enabled.
    pub predictive: Option<Predictive>,
    /// The HPA's settings, when the Revision's class is HPA.
    pub hpa: Option<HpaSpec>,
}

impl Policy {
    /// Reads the annotations (with `config`'s default class and `max-scale-limit`); invalid
    /// ones come back as errors and are left out of the policy.
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        config: &Config,
    ) -> (Policy, Vec<AnnotationError>) {
        let mut errors = Vec::new();
        let reserve = Reserve::parse(annotations, &mut errors);
        let predictive = Predictive::parse(annotations, &mut errors);
        let schedule = match annotations.get(SCALE_BOUNDS) {
            None => None,
            Some(raw) => match ScaleSchedule::parse(SCALE_BOUNDS, raw, config.max_scale_limit) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let schedule = match (schedule, annotations.get(SCALE_BOUNDS_TIMEZONE)) {
            (Some(mut s), Some(tz)) => {
                if let Err(message) = s.set_time_zone(tz) {
                    errors.push(AnnotationError::Invalid {
                        key: SCALE_BOUNDS_TIMEZONE.to_owned(),
                        message: format!("{message}; the windows are read in UTC"),
                    });
                }
                Some(s)
            }
            (s, _) => s,
        };
        let class = CLASS
            .get(annotations)
            .map_or(config.pod_autoscaler_class.as_str(), |(_, c)| c);
        let hpa = (class == HPA_CLASS).then(|| {
            // The KPA annotations' own errors are reported by their parser.
            let scaling = ScalingAnnotations::parse(annotations, config).unwrap_or_default();
            HpaSpec::resolve(annotations, &scaling, &mut errors)
        });
        (
            Policy {
                reserve,
                schedule,
                predictive,
                hpa,
            },
            errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::HpaMetric;
    use crate::reserve::{RESERVE_INSTANCE, RESERVE_INSTANCE_REPLICAS};

    fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_set_is_the_plain_kpa() {
        let (p, errors) = Policy::parse(&anns(&[]), &Config::default());
        assert_eq!(p, Policy::default());
        assert!(errors.is_empty());
    }

    #[test]
    fn all_four_read_together() {
        let (p, errors) = Policy::parse(
            &anns(&[
                (RESERVE_INSTANCE, "enable"),
                (RESERVE_INSTANCE_REPLICAS, "2"),
                (SCALE_BOUNDS, r#"[{"cron": "* 7-9 * * *", "minScale": 5}]"#),
                (SCALE_BOUNDS_TIMEZONE, "Europe/Berlin"),
                ("sluice.knative.dev/predictive", "true"),
                ("autoscaling.knative.dev/class", HPA_CLASS),
                ("autoscaling.knative.dev/target", "40"),
            ]),
            &Config::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.reserve.map(|r| r.replicas), Some(2));
        assert_eq!(p.schedule.map(|s| s.timezone), Some("Europe/Berlin".into()));
        assert!(p.predictive.is_some());
        let hpa = p.hpa.unwrap();
        assert_eq!((hpa.metric, hpa.target), (HpaMetric::Cpu, 40.0));
    }

    #[test]
    fn an_invalid_annotation_is_reported_and_the_rest_applies() {
        let (p, errors) = Policy::parse(
            &anns(&[
                (RESERVE_INSTANCE, "enable"),
                (SCALE_BOUNDS, r#"[{"cron": "61 * * * *", "minScale": 5}]"#),
            ]),
            &Config::default(),
        );
        assert!(p.reserve.is_some());
        assert_eq!(p.schedule, None);
        assert_eq!(errors.len(), 1);
        let e = errors[0].to_string();
        assert!(e.ends_with(SCALE_BOUNDS), "{e}");
        assert!(e.contains("minute field: 61 is outside 0-59"), "{e}");
        // A bad time zone keeps the windows, in UTC.
        let (p, errors) = Policy::parse(
            &anns(&[
                (SCALE_BOUNDS, r#"[{"cron": "* * * * *", "minScale": 1}]"#),
                (SCALE_BOUNDS_TIMEZONE, "Nowhere/Town"),
            ]),
            &Config::default(),
        );
        assert_eq!(p.schedule.map(|s| s.timezone), Some("UTC".into()));
        assert!(errors[0].to_string().ends_with(SCALE_BOUNDS_TIMEZONE));
    }

    #[test]
    fn the_cluster_default_class_counts() {
        let config = Config {
            pod_autoscaler_class: HPA_CLASS.into(),
            ..Config::default()
        };
        let (p, _) = Policy::parse(&anns(&[]), &config);
        assert!(p.hpa.is_some());
    }
}
