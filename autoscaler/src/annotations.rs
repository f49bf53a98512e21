//! Per-revision `autoscaling.knative.dev/*` annotations: keys, parsing and
//! upstream's validation (`pkg/apis/autoscaling/annotation_validation.go`).
//!
//! Error messages render as Knative's `apis.FieldError` does
//! (`"<message>: <annotation key>"`), naming the key as the user wrote it
//! (the kebab-case name or its legacy camelCase alternative).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::{
    Config, HPA_CLASS, KPA_CLASS, PANIC_THRESHOLD_PERCENTAGE_MAX, PANIC_THRESHOLD_PERCENTAGE_MIN,
    PANIC_WINDOW_PERCENTAGE_MAX, PANIC_WINDOW_PERCENTAGE_MIN, TARGET_MIN, WINDOW_MAX, WINDOW_MIN,
};
use crate::duration;
use crate::window::Aggregation;

mod keys;
pub use keys::*;

/// The scaling metric of a KPA revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Requests in flight (`concurrency`, the default).
    #[default]
    Concurrency,
    /// Requests per second (`rps`).
    Rps,
}

impl Metric {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
        }
    }
}

/// One annotation that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The value cannot be used for this annotation (wrong type or unknown word).
    #[error("invalid value: {value}: {key}")]
    InvalidValue {
        /// The annotation key as written.
        key: String,
        /// The value as written.
        value: String,
    },
    /// The value is invalid for a reason upstream appends to the key
    /// (`initial-scale` below 0, or 0 where the cluster forbids it).
    #[error("invalid value: {value}: {key}{reason}")]
    InvalidValueBecause {
        /// The annotation key as written.
        key: String,
        /// The value as written.
        value: String,
        /// Upstream's suffix, e.g. `"=0 not allowed by cluster"`.
        reason: &'static str,
    },
    /// A number or duration outside its allowed range.
    #[error("expected {lower} <= {value} <= {upper}: {key}")]
    OutOfBounds {
        /// The annotation key as written.
        key: String,
        /// The value as written.
        value: String,
        /// Smallest allowed value.
        lower: String,
        /// Largest allowed value.
        upper: String,
    },
    /// The value breaks a rule, possibly across two annotations (then `key`
    /// lists both, comma separated).
    #[error("{message}: {key}")]
    Invalid {
        /// The annotation key(s).
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl AnnotationError {
    /// The annotation key (or keys, comma separated) the error is about.
    pub fn key(&self) -> &str {
        match self {
            AnnotationError::InvalidValue { key, .. }
            | AnnotationError::InvalidValueBecause { key, .. }
            | AnnotationError::OutOfBounds { key, .. }
            | AnnotationError::Invalid { key, .. } => key,
        }
    }

    /// What is wrong, without the key (the message reads `"{reason}: {key}"`).
    pub fn reason(&self) -> String {
        let text = self.to_string();
        let suffix = format!(": {}", self.key());
        match text.strip_suffix(&suffix) {
            Some(reason) => reason.to_owned(),
            None => text,
        }
    }
}

/// Every validation failure of one annotation set, in validation order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AnnotationErrors(pub Vec<AnnotationError>);

impl fmt::Display for AnnotationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The validated `autoscaling.knative.dev/*` annotations of one revision;
/// `None` where the annotation is absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingAnnotations {
    /// `class`, as written.
    pub class: Option<String>,
    /// `metric` (only `concurrency`/`rps` are kept; other classes' metrics are not ours).
    pub metric: Option<Metric>,
    /// `metric-aggregation-algorithm`.
    pub aggregation: Option<Aggregation>,
    /// `target`.
    pub target: Option<f64>,
    /// `target-utilization-percentage`, in percent.
    pub target_utilization_percentage: Option<f64>,
    /// `target-burst-capacity`.
    pub target_burst_capacity: Option<f64>,
    /// `window`.
    pub window: Option<Duration>,
    /// `panic-window-percentage`.
    pub panic_window_percentage: Option<f64>,
    /// `panic-threshold-percentage`.
    pub panic_threshold_percentage: Option<f64>,
    /// `min-scale`.
    pub min_scale: Option<u32>,
    /// `max-scale`.
    pub max_scale: Option<u32>,
    /// `initial-scale`.
    pub initial_scale: Option<u32>,
    /// `activation-scale`.
    pub activation_scale: Option<u32>,
    /// `scale-down-delay`.
    pub scale_down_delay: Option<Duration>,
    /// `scale-to-zero-pod-retention-period`.
    pub scale_to_zero_pod_retention_period: Option<Duration>,
}

impl ScalingAnnotations {
    /// Parses and validates `annotations` against the cluster `config`
    /// (which supplies `max-scale-limit`, `allow-zero-initial-scale` and the
    /// default class). Keys outside `autoscaling.knative.dev/` are ignored.
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        config: &Config,
    ) -> Result<Self, AnnotationErrors> {
        let mut v = Validator {
            m: annotations,
            errors: Vec::new(),
        };
        let mut out = ScalingAnnotations::default();

        // Class: any *.knative.dev class must be one Knative knows.
        if let Some((k, c)) = CLASS.get(annotations) {
            if c.ends_with(".knative.dev") && c != KPA_CLASS && c != HPA_CLASS {
                v.invalid_value(k, c);
            }
            out.class = Some(c.to_owned());
        }
        let class = out.class.as_deref().unwrap_or(&config.pod_autoscaler_class);
        let is_kpa = class == KPA_CLASS;

        // Scale bounds.
        let min = v.int_ge0(MIN_SCALE);
        let max = v.int_ge0(MAX_SCALE);
        out.min_scale = min;
        out.max_scale = max;
        let (min0, max0) = (min.unwrap_or(0), max.unwrap_or(0));
        if max0 != 0 && max0 < min0 {
            v.errors.push(AnnotationError::Invalid {
                key: format!("{}, {}", MAX_SCALE.name, MIN_SCALE.name),
                message: format!("max-scale={max0} is less than min-scale={min0}"),
            });
        }
        if let Some((k, _)) = MAX_SCALE.get(annotations)
            && config.max_scale_limit > 0
        {
            let limit = config.max_scale_limit;
            if max0 > limit {
                v.out_of_bounds(k, &max0.to_string(), "1", &limit.to_string());
            }
            if max0 == 0 {
                v.errors.push(AnnotationError::Invalid {
                    key: k.to_owned(),
                    message: format!("max-scale=0 (unlimited), must be less than {limit}"),
                });
            }
        }
        if let Some((k, raw)) = ACTIVATION_SCALE.get(annotations) {
            match raw.parse::<i32>() {
                Err(_) => v.invalid_value(k, raw),
                Ok(a) => {
                    let message = if i64::from(min0) > i64::from(a) {
                        Some(format!(
                            "min-scale={min0} is greater than activation-scale={a}"
                        ))
                    } else if max0 != 0 && i64::from(max0) < i64::from(a) {
                        Some(format!(
                            "max-scale={max0} is less than activation-scale={a}"
                        ))
                    } else if a < 2 {
                        Some(format!("activation-scale={a} must be greater than 1"))
                    } else {
                        out.activation_scale = Some(a.unsigned_abs());
                        None
                    };
                    if let Some(message) = message {
                        v.errors.push(AnnotationError::Invalid {
                            key: k.to_owned(),
                            message,
                        });
                    }
                }
            }
        }

        // Floats.
        out.panic_window_percentage = v.float_in(
            PANIC_WINDOW_PERCENTAGE,
            PANIC_WINDOW_PERCENTAGE_MIN,
            PANIC_WINDOW_PERCENTAGE_MAX,
        );
        out.panic_threshold_percentage = v.float_in(
            PANIC_THRESHOLD_PERCENTAGE,
            PANIC_THRESHOLD_PERCENTAGE_MIN,
            PANIC_THRESHOLD_PERCENTAGE_MAX,
        );
        if let Some((k, raw, f)) = v.float(TARGET) {
            if f < TARGET_MIN {
                v.errors.push(AnnotationError::Invalid {
                    key: k.to_owned(),
                    message: format!("target {raw} should be at least {TARGET_MIN}"),
                });
            } else {
                out.target = Some(f);
            }
        }
        out.target_utilization_percentage = v.float_in(TARGET_UTILIZATION_PERCENTAGE, 1.0, 100.0);
        if let Some((k, raw)) = TARGET_BURST_CAPACITY.get(annotations) {
            match parse_finite(raw) {
                Some(f) if f >= 0.0 || f == -1.0 => out.target_burst_capacity = Some(f),
                _ => v.invalid_value(k, raw),
            }
        }

        // Durations.
        if let Some((_, raw)) = WINDOW.get(annotations) {
            let k = WINDOW.name;
            match duration::parse(raw) {
                Err(_) => v.invalid_value(k, raw),
                Ok(d) if d < nanos(WINDOW_MIN) || d > nanos(WINDOW_MAX) => v.out_of_bounds(
                    k,
                    raw,
                    &duration::format_std(WINDOW_MIN),
                    &duration::format_std(WINDOW_MAX),
                ),
                Ok(d) if d % SECOND != 0 => v.not_whole_seconds(k),
                Ok(d) => out.window = Some(to_std(d)),
            }
        }
        out.scale_to_zero_pod_retention_period =
            v.duration_up_to_window_max(SCALE_TO_ZERO_POD_RETENTION_PERIOD, false);
        out.scale_down_delay = v.duration_up_to_window_max(SCALE_DOWN_DELAY, true);

        // Metric: the KPA scales on concurrency or rps only.
        if let Some((_, raw)) = METRIC.get(annotations) {
            match raw {
                "concurrency" => out.metric = Some(Metric::Concurrency),
                "rps" => out.metric = Some(Metric::Rps),
                _ if is_kpa || (class == HPA_CLASS && raw.is_empty()) => {
                    v.invalid_value(METRIC.name, raw);
                }
                _ => {} // other classes' metrics are theirs to check
            }
        }

        // Aggregation algorithm (KPA only).
        if let Some((k, raw)) = METRIC_AGGREGATION_ALGORITHM.get(annotations)
            && is_kpa
            && !raw.is_empty()
        {
            match raw {
                "linear" => out.aggregation = Some(Aggregation::Linear),
                "weighted-exponential" | "weightedExponential" => {
                    out.aggregation = Some(Aggregation::WeightedExponential);
                }
                _ => v.invalid_value(k, raw),
            }
        }

        // Initial scale.
        if let Some((k, raw)) = INITIAL_SCALE.get(annotations) {
            match raw.parse::<i64>() {
                Err(_) => v.invalid_value(k, raw),
                Ok(i) if i < 0 => v.errors.push(AnnotationError::InvalidValueBecause {
                    key: k.to_owned(),
                    value: raw.to_owned(),
                    reason: " must be greater than 0",
                }),
                Ok(0) if !config.allow_zero_initial_scale => {
                    v.errors.push(AnnotationError::InvalidValueBecause {
                        key: k.to_owned(),
                        value: raw.to_owned(),
                        reason: "=0 not allowed by cluster",
                    });
                }
                Ok(i) => match u32::try_from(i) {
                    Ok(i) => out.initial_scale = Some(i),
                    Err(_) => v.invalid_value(k, raw),
                },
            }
        }

        if v.errors.is_empty() {
            Ok(out)
        } else {
            Err(AnnotationErrors(v.errors))
        }
    }
}

const SECOND: i64 = 1_000_000_000;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn to_std(nanos: i64) -> Duration {
    Duration::from_nanos(nanos.unsigned_abs())
}

fn parse_finite(raw: &str) -> Option<f64> {
    raw.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Collects errors while reading annotations.
struct Validator<'a> {
    m: &'a BTreeMap<String, String>,
    errors: Vec<AnnotationError>,
}

impl<'a> Validator<'a> {
    fn invalid_value(&mut self, key: &str, value: &str) {
        self.errors.push(AnnotationError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }

    fn out_of_bounds(&mut self, key: &str, value: &str, lower: &str, upper: &str) {
        self.errors.push(AnnotationError::OutOfBounds {
            key: key.to_owned(),
            value: value.to_owned(),
            lower: lower.to_owned(),
            upper: upper.to_owned(),
        });
    }

    fn not_whole_seconds(&mut self, key: &str) {
        self.errors.push(AnnotationError::Invalid {
            key: key.to_owned(),
            message: "must be specified with at most second precision".to_owned(),
        });
    }

    /// upstream `getIntGE0`: a non-negative int32.
    fn int_ge0(&mut self, key: AnnotationKey) -> Option<u32> {
        let (k, raw) = key.get(self.m)?;
        match raw.parse::<i32>() {
            Ok(i) if i >= 0 => Some(i.unsigned_abs()),
            Ok(_) => {
                self.out_of_bounds(k, raw, "0", &i32::MAX.to_string());
                None
            }
            Err(e) => {
                use std::num::IntErrorKind::{NegOverflow, PosOverflow};
                if matches!(e.kind(), PosOverflow | NegOverflow) {
                    self.out_of_bounds(k, raw, "0", &i32::MAX.to_string());
                } else {
                    self.invalid_value(k, raw);
                }
                None
            }
        }
    }

    /// A finite float, or an `InvalidValue` error.
    fn float(&mut self, key: AnnotationKey) -> Option<(&'a str, &'a str, f64)> {
        let (k, raw) = key.get(self.m)?;
        match parse_finite(raw) {
            Some(f) => Some((k, raw, f)),
            None => {
                self.invalid_value(k, raw);
                None
            }
        }
    }

    /// A finite float within `[lo, hi]`.
    fn float_in(&mut self, key: AnnotationKey, lo: f64, hi: f64) -> Option<f64> {
        let (k, raw, f) = self.float(key)?;
        if (lo..=hi).contains(&f) {
            Some(f)
        } else {
            self.out_of_bounds(k, raw, &lo.to_string(), &hi.to_string());
            None
        }
    }

    /// A duration in `[0s, 1h]`, optionally in whole seconds.
    fn duration_up_to_window_max(
        &mut self,
        key: AnnotationKey,
        whole_seconds: bool,
    ) -> Option<Duration> {
        let (k, raw) = key.get(self.m)?;
        match duration::parse(raw) {
            Err(_) => self.invalid_value(k, raw),
            Ok(d) if d < 0 || d > nanos(WINDOW_MAX) => {
                self.out_of_bounds(k, raw, "0s", &duration::format_std(WINDOW_MAX));
            }
            Ok(d) if whole_seconds && d % SECOND != 0 => self.not_whole_seconds(k),
            Ok(d) => return Some(to_std(d)),
        }
        None
    }
}

#[cfg(test)]
mod tests;
