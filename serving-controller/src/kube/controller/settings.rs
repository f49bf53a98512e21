//! What the controller takes from `config-autoscaler` and `config-deployment` (besides the
//! [`ServingConfig`](crate::serving::ServingConfig) ConfigMaps): the cluster-wide
//! `initial-scale` (and `allow-zero-initial-scale`) for new Revisions' Deployments, and
//! `progress-deadline` for their `progressDeadlineSeconds`. A ConfigMap that does not parse
//! leaves the defaults in force and is shown as a problem.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::kube::runtime::RuntimeConfig;
use crate::serving::ServingConfig;

/// `config-autoscaler`.
pub const CONFIG_AUTOSCALER: &str = "config-autoscaler";
/// `config-deployment`.
pub const CONFIG_DEPLOYMENT: &str = "config-deployment";

/// The settings in force, and what was refused (ConfigMap name → why).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `config-autoscaler` (defaults when absent or invalid).
    pub autoscaler: sluice_autoscaler::Config,
    /// How Revisions become Deployments.
    pub runtime: RuntimeConfig,
    /// Refused ConfigMaps.
    pub errors: BTreeMap<String, String>,
}

/// `progress-deadline` as whole seconds (Go duration, > 0; Kubernetes counts in seconds).
fn progress_deadline(value: &str) -> Result<i32, String> {
    let d = crate::kourier::go_duration(value.trim())?;
    if d.is_zero() || d.subsec_nanos() != 0 {
        return Err(format!(
            "progress-deadline {value:?}: must be a positive whole number of seconds"
        ));
    }
    i32::try_from(d.as_secs()).map_err(|_| format!("progress-deadline {value:?}: too long"))
}

/// Reads the two ConfigMaps over `base` (the flags) and `serving` (`config-defaults`'
/// container name).
pub fn settings(
    config_maps: &BTreeMap<String, ConfigMap>,
    base: &RuntimeConfig,
    serving: &ServingConfig,
) -> Settings {
    let empty = BTreeMap::new();
    let data = |name: &str| {
        config_maps
            .get(name)
            .and_then(|cm| cm.data.as_ref())
            .unwrap_or(&empty)
    };
    let mut errors = BTreeMap::new();
    let autoscaler =
        sluice_autoscaler::Config::from_map(data(CONFIG_AUTOSCALER)).unwrap_or_else(|e| {
            errors.insert(CONFIG_AUTOSCALER.to_string(), e.to_string());
            sluice_autoscaler::Config::default()
        });
    let mut runtime = base.clone();
    runtime
        .user_container_name
        .clone_from(&serving.defaults.user_container_name);
    if let Some(v) = data(CONFIG_DEPLOYMENT).get("progress-deadline") {
        match progress_deadline(v) {
            Ok(seconds) => runtime.progress_deadline_seconds = seconds,
            Err(e) => {
                errors.insert(CONFIG_DEPLOYMENT.to_string(), e);
            }
        }
    }
    Settings {
        autoscaler,
        runtime,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, pairs: &[(&str, &str)]) -> (String, ConfigMap) {
        let c = ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        (name.to_string(), c)
    }

    #[test]
    fn initial_scale_and_progress_deadline_come_from_their_config_maps() {
        let maps = BTreeMap::from([
            cm(
                CONFIG_AUTOSCALER,
                &[("initial-scale", "0"), ("allow-zero-initial-scale", "true")],
            ),
            cm(CONFIG_DEPLOYMENT, &[("progress-deadline", "2m")]),
        ]);
        let s = settings(&maps, &RuntimeConfig::default(), &ServingConfig::default());
        assert_eq!(s.autoscaler.initial_scale, 0);
        assert_eq!(s.runtime.progress_deadline_seconds, 120);
        assert!(s.errors.is_empty());
    }

    #[test]
    fn refused_values_leave_the_defaults_and_say_why() {
        let maps = BTreeMap::from([
            cm(CONFIG_AUTOSCALER, &[("initial-scale", "0")]),
            cm(CONFIG_DEPLOYMENT, &[("progress-deadline", "1.5s")]),
        ]);
        let s = settings(&maps, &RuntimeConfig::default(), &ServingConfig::default());
        assert_eq!(s.autoscaler.initial_scale, 1);
        assert_eq!(s.runtime.progress_deadline_seconds, 600);
        assert!(
            s.errors[CONFIG_AUTOSCALER].contains("initial-scale"),
            "{s:?}"
        );
        assert!(s.errors[CONFIG_DEPLOYMENT].contains("progress-deadline"));
    }
}
