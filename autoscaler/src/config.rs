//! The cluster-wide `config-autoscaler` ConfigMap (namespace `knative-serving`).
//!
//! Keys, defaults and validation follow upstream's
//! `pkg/autoscaler/config/config.go`. Unknown keys are ignored, as upstream
//! does (`_example` always is); [`Config::unknown_keys`] lists them so a caller
//! can warn about typos.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration;

mod reader;
use reader::Reader;

/// Name of the ConfigMap this module reads.
pub const CONFIG_NAME: &str = "config-autoscaler";
/// Class value of the Knative Pod Autoscaler (the only class Sluice runs).
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// Class value of Kubernetes' Horizontal Pod Autoscaler (recognised, not run).
pub const HPA_CLASS: &str = "hpa.autoscaling.knative.dev";
/// The smallest target (concurrency or RPS) the autoscaler accepts.
pub const TARGET_MIN: f64 = 0.01;
/// The shortest stable window.
pub const WINDOW_MIN: Duration = Duration::from_secs(6);
/// The longest stable window (also the bound on delays and retention).
pub const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Bounds of the panic window as a percentage of the stable window.
pub const PANIC_WINDOW_PERCENTAGE_MIN: f64 = 1.0;
/// See [`PANIC_WINDOW_PERCENTAGE_MIN`].
pub const PANIC_WINDOW_PERCENTAGE_MAX: f64 = 100.0;
/// Bounds of the panic threshold, in percent of the target.
pub const PANIC_THRESHOLD_PERCENTAGE_MIN: f64 = 110.0;
/// See [`PANIC_THRESHOLD_PERCENTAGE_MIN`].
pub const PANIC_THRESHOLD_PERCENTAGE_MAX: f64 = 1000.0;
/// Width of one metric bucket.
pub const BUCKET_SIZE: Duration = Duration::from_secs(1);

/// Every key [`Config::from_map`] reads.
pub const KEYS: [&str; 20] = [
    "pod-autoscaler-class",
    "enable-scale-to-zero",
    "allow-zero-initial-scale",
    "max-scale-up-rate",
    "max-scale-down-rate",
    "container-concurrency-target-percentage",
    "container-concurrency-target-default",
    "requests-per-second-target-default",
    "target-burst-capacity",
    "panic-window-percentage",
    "activator-capacity",
    "panic-threshold-percentage",
    "initial-scale",
    "min-scale",
    "max-scale",
    "max-scale-limit",
    "stable-window",
    "scale-down-delay",
    "scale-to-zero-grace-period",
    "scale-to-zero-pod-retention-period",
];

/// A `config-autoscaler` ConfigMap that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The value is not of the key's type (float, integer, bool, Go duration).
    #[error("failed to parse {key:?}: {reason}")]
    Parse {
        /// The ConfigMap key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The value parsed but is outside what the key allows; the message is
    /// upstream's and names the key and the value.
    #[error("{message}")]
    Invalid {
        /// The ConfigMap key (the first one named when a rule spans two).
        key: &'static str,
        /// The offending value as written (or its default when not written).
        value: String,
        /// The full explanation.
        message: String,
    },
}

/// The tunable autoscaler parameters, cluster-wide.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `enable-scale-to-zero` (default true).
    pub enable_scale_to_zero: bool,
    /// `container-concurrency-target-percentage` as a fraction (default 0.7).
    /// Values in (0, 1] are taken as fractions, larger ones as percentages.
    pub container_concurrency_target_fraction: f64,
    /// `container-concurrency-target-default`: per-instance capacity when
    /// `containerConcurrency` is 0 (default 100).
    pub container_concurrency_target_default: f64,
    /// Utilisation used for metrics other than concurrency (0.7; not a key
    /// upstream either, overridable per revision by annotation).
    pub target_utilization: f64,
    /// `requests-per-second-target-default` (default 200).
    pub rps_target_default: f64,
    /// `target-burst-capacity` (default 211; -1 = activator always in path).
    pub target_burst_capacity: f64,
    /// `activator-capacity`: requests one activator accepts (default 100).
    pub activator_capacity: f64,
    /// `allow-zero-initial-scale` (default false).
    pub allow_zero_initial_scale: bool,
    /// `initial-scale` (default 1).
    pub initial_scale: u32,
    /// `min-scale` (default 0).
    pub min_scale: u32,
    /// `max-scale` (default 0 = unlimited).
    pub max_scale: u32,
    /// `max-scale-limit` (default 0 = no limit on max-scale).
    pub max_scale_limit: u32,
    /// `max-scale-up-rate` (default 1000).
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate` (default 2).
    pub max_scale_down_rate: f64,
    /// `stable-window` (default 60 s; 6 s to 1 h in whole seconds).
    pub stable_window: Duration,
    /// `panic-window-percentage` (default 10).
    pub panic_window_percentage: f64,
    /// `panic-threshold-percentage` (default 200).
    pub panic_threshold_percentage: f64,
    /// `scale-to-zero-grace-period` (default 30 s).
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period` (default 0 s).
    pub scale_to_zero_pod_retention_period: Duration,
    /// `scale-down-delay` (default 0 s).
    pub scale_down_delay: Duration,
    /// `pod-autoscaler-class` (default [`KPA_CLASS`]).
    pub pod_autoscaler_class: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enable_scale_to_zero: true,
            container_concurrency_target_fraction: 0.7,
            container_concurrency_target_default: 100.0,
            target_utilization: 0.7,
            rps_target_default: 200.0,
            target_burst_capacity: 211.0,
            activator_capacity: 100.0,
            allow_zero_initial_scale: false,
            initial_scale: 1,
            min_scale: 0,
            max_scale: 0,
            max_scale_limit: 0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            scale_down_delay: Duration::ZERO,
            pod_autoscaler_class: KPA_CLASS.to_owned(),
        }
    }
}

impl Config {
    /// Reads the ConfigMap's `data`; absent keys keep their defaults.
    pub fn from_map(data: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let r = Reader { data };
        let d = Config::default();

        let pod_autoscaler_class = r
            .raw("pod-autoscaler-class")
            .map_or(d.pod_autoscaler_class, str::to_owned);
        let enable_scale_to_zero = r.boolean("enable-scale-to-zero", d.enable_scale_to_zero)?;
        let allow_zero_initial_scale =
            r.boolean("allow-zero-initial-scale", d.allow_zero_initial_scale)?;
        let max_scale_up_rate = r.float("max-scale-up-rate", d.max_scale_up_rate)?;
        let max_scale_down_rate = r.float("max-scale-down-rate", d.max_scale_down_rate)?;
        let mut cc_fraction = r.float(
            "container-concurrency-target-percentage",
            d.container_concurrency_target_fraction,
        )?;
        let cc_default = r.float(
            "container-concurrency-target-default",
            d.container_concurrency_target_default,
        )?;
        let rps_target_default =
            r.float("requests-per-second-target-default", d.rps_target_default)?;
        let target_burst_capacity = r.float("target-burst-capacity", d.target_burst_capacity)?;
        let panic_window_percentage =
            r.float("panic-window-percentage", d.panic_window_percentage)?;
        let activator_capacity = r.float("activator-capacity", d.activator_capacity)?;
        let panic_threshold_percentage =
            r.float("panic-threshold-percentage", d.panic_threshold_percentage)?;
        let initial_scale = r.int32("initial-scale", 1)?;
        let min_scale = r.int32("min-scale", 0)?;
        let max_scale = r.int32("max-scale", 0)?;
        let max_scale_limit = r.int32("max-scale-limit", 0)?;
        let stable_window = r.duration("stable-window", 60 * SECOND)?;
        let scale_down_delay = r.duration("scale-down-delay", 0)?;
        let grace = r.duration("scale-to-zero-grace-period", 30 * SECOND)?;
        let retention = r.duration("scale-to-zero-pod-retention-period", 0)?;

        // Percent ⇒ fraction; (0, 1] stays a fraction for legacy reasons.
        if cc_fraction > 1.0 {
            cc_fraction /= 100.0;
        }

        let invalid = |key: &'static str, fallback: String, message: &dyn Fn(&str) -> String| {
            let value = r.raw(key).map_or(fallback, str::to_owned);
            ConfigError::Invalid {
                key,
                message: message(&value),
                value,
            }
        };
        let show_d = |nanos: i64| duration::format(nanos);

        if grace <= 0 {
            return Err(invalid("scale-to-zero-grace-period", show_d(grace), &|v| {
                format!("scale-to-zero-grace-period must be positive, was: {v}")
            }));
        }
        if scale_down_delay < 0 {
            return Err(invalid(
                "scale-down-delay",
                show_d(scale_down_delay),
                &|v| format!("scale-down-delay cannot be negative, was: {v}"),
            ));
        }
        if scale_down_delay % SECOND != 0 {
            return Err(invalid(
                "scale-down-delay",
                show_d(scale_down_delay),
                &|v| {
                    format!(
                        "scale-down-delay = {v}, must be specified with at most second precision"
                    )
                },
            ));
        }
        if retention < 0 {
            return Err(invalid(
                "scale-to-zero-pod-retention-period",
                show_d(retention),
                &|v| format!("scale-to-zero-pod-retention-period cannot be negative, was: {v}"),
            ));
        }
        if target_burst_capacity < 0.0 && target_burst_capacity != -1.0 {
            return Err(invalid(
                "target-burst-capacity",
                format!("{target_burst_capacity}"),
                &|v| {
                    format!(
                        "target-burst-capacity must be either non-negative or -1 (for unlimited), was: {v}"
                    )
                },
            ));
        }
        if cc_fraction <= 0.0 || cc_fraction > 1.0 {
            return Err(invalid(
                "container-concurrency-target-percentage",
                format!("{cc_fraction}"),
                &|v| {
                    format!(
                        "container-concurrency-target-percentage = {v} is outside of valid range of (0, 100]"
                    )
                },
            ));
        }
        let target = cc_fraction * cc_default;
        if target < TARGET_MIN {
            return Err(invalid(
                "container-concurrency-target-default",
                format!("{cc_default}"),
                &|_| {
                    format!(
                        "container-concurrency-target-percentage and container-concurrency-target-default \
                     yield target concurrency of {target}, can't be less than {TARGET_MIN}"
                    )
                },
            ));
        }
        if rps_target_default < TARGET_MIN {
            return Err(invalid(
                "requests-per-second-target-default",
                format!("{rps_target_default}"),
                &|v| {
                    format!(
                        "requests-per-second-target-default must be at least {TARGET_MIN}, was: {v}"
                    )
                },
            ));
        }
        if activator_capacity < 1.0 {
            return Err(invalid(
                "activator-capacity",
                format!("{activator_capacity}"),
                &|v| format!("activator-capacity = {v}, must be at least 1"),
            ));
        }
        if max_scale_up_rate <= 1.0 {
            return Err(invalid(
                "max-scale-up-rate",
                format!("{max_scale_up_rate}"),
                &|v| format!("max-scale-up-rate = {v}, must be greater than 1.0"),
            ));
        }
        if max_scale_down_rate <= 1.0 {
            return Err(invalid(
                "max-scale-down-rate",
                format!("{max_scale_down_rate}"),
                &|v| format!("max-scale-down-rate = {v}, must be greater than 1.0"),
            ));
        }
        if stable_window < nanos(WINDOW_MIN) || stable_window > nanos(WINDOW_MAX) {
            return Err(invalid("stable-window", show_d(stable_window), &|v| {
                format!(
                    "stable-window = {v}, must be in [{}; {}] range",
                    duration::format_std(WINDOW_MIN),
                    duration::format_std(WINDOW_MAX)
                )
            }));
        }
        if stable_window % SECOND != 0 {
            return Err(invalid("stable-window", show_d(stable_window), &|v| {
                format!("stable-window = {v}, must be specified with at most second precision")
            }));
        }
        if !(PANIC_WINDOW_PERCENTAGE_MIN..=PANIC_WINDOW_PERCENTAGE_MAX)
            .contains(&panic_window_percentage)
        {
            return Err(invalid(
                "panic-window-percentage",
                format!("{panic_window_percentage}"),
                &|v| {
                    format!(
                        "panic-window-percentage = {v}, must be in [{PANIC_WINDOW_PERCENTAGE_MIN}, \
                     {PANIC_WINDOW_PERCENTAGE_MAX}] interval"
                    )
                },
            ));
        }
        // Upstream bounds this only on the annotation; a cluster default outside
        // them would make every revision always (or never) panic.
        if !(PANIC_THRESHOLD_PERCENTAGE_MIN..=PANIC_THRESHOLD_PERCENTAGE_MAX)
            .contains(&panic_threshold_percentage)
        {
            return Err(invalid(
                "panic-threshold-percentage",
                format!("{panic_threshold_percentage}"),
                &|v| {
                    format!(
                        "panic-threshold-percentage = {v}, must be in [{PANIC_THRESHOLD_PERCENTAGE_MIN}, \
                     {PANIC_THRESHOLD_PERCENTAGE_MAX}] interval"
                    )
                },
            ));
        }
        if initial_scale < 0 || (initial_scale == 0 && !allow_zero_initial_scale) {
            return Err(invalid("initial-scale", format!("{initial_scale}"), &|v| {
                format!(
                    "initial-scale = {v}, must be at least 0 (or at least 1 when \
                     allow-zero-initial-scale is false)"
                )
            }));
        }
        let min_max_scale = if max_scale_limit > 0 { 1 } else { 0 };
        if max_scale < min_max_scale || (max_scale_limit > 0 && max_scale > max_scale_limit) {
            return Err(invalid("max-scale", format!("{max_scale}"), &|v| {
                format!(
                    "max-scale = {v}, must be in [{min_max_scale}, max-scale-limit({max_scale_limit})] range"
                )
            }));
        }
        if max_scale_limit < 0 {
            return Err(invalid(
                "max-scale-limit",
                format!("{max_scale_limit}"),
                &|v| format!("max-scale-limit = {v}, must be at least 0"),
            ));
        }
        if min_scale < 0 {
            return Err(invalid("min-scale", format!("{min_scale}"), &|v| {
                format!("min-scale = {v}, must be at least 0")
            }));
        }
        if max_scale > 0 && min_scale > max_scale {
            return Err(invalid("min-scale", format!("{min_scale}"), &|v| {
                format!("min-scale = {v}, must be less than or equal to max-scale ({max_scale})")
            }));
        }

        // Every count is now known to be non-negative and every duration positive
        // or zero; the conversions below cannot fail, but stay total.
        Ok(Config {
            enable_scale_to_zero,
            container_concurrency_target_fraction: cc_fraction,
            container_concurrency_target_default: cc_default,
            target_utilization: d.target_utilization,
            rps_target_default,
            target_burst_capacity,
            activator_capacity,
            allow_zero_initial_scale,
            initial_scale: initial_scale.unsigned_abs(),
            min_scale: min_scale.unsigned_abs(),
            max_scale: max_scale.unsigned_abs(),
            max_scale_limit: max_scale_limit.unsigned_abs(),
            max_scale_up_rate,
            max_scale_down_rate,
            stable_window: to_std(stable_window),
            panic_window_percentage,
            panic_threshold_percentage,
            scale_to_zero_grace_period: to_std(grace),
            scale_to_zero_pod_retention_period: to_std(retention),
            scale_down_delay: to_std(scale_down_delay),
            pod_autoscaler_class,
        })
    }

    /// Keys in `data` that this module does not read (apart from `_example`):
    /// typos, or keys of retired features such as `tick-interval`.
    pub fn unknown_keys(data: &BTreeMap<String, String>) -> Vec<&str> {
        data.keys()
            .map(String::as_str)
            .filter(|k| *k != "_example" && !KEYS.contains(k))
            .collect()
    }
}

const SECOND: i64 = 1_000_000_000;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn to_std(nanos: i64) -> Duration {
    Duration::from_nanos(nanos.unsigned_abs())
}

#[cfg(test)]
mod tests;
