//! Knative's defaulting webhook (`*_defaults.go`), applied before validation.
//!
//! - Revision spec: `timeoutSeconds` unset or 0 → `revision-timeout-seconds` (300);
//!   `containerConcurrency` unset → `container-concurrency` (0 = unlimited);
//!   `responseStartTimeoutSeconds` / `idleTimeoutSeconds` from `config-defaults` when configured;
//!   an unnamed container → `user-container` (`user-container-{i}` with several).
//! - Service: no traffic → `[{percent: 100, latestRevision: true}]`.
//! - Every traffic target: `latestRevision` unset → `revisionName == ""`.
//!
//! Not applied: Knative's default readiness probe (`tcpSocket` on the user port), which the
//! runtime implements instead, and resource requests/limits (none are configured by default).

use super::config::Defaults;
use super::pod::RevisionSpec;
use super::types::{Configuration, Route, Service, TrafficTarget};

/// Defaults a Service as the webhook does.
pub fn default_service(service: &mut Service, defaults: &Defaults) {
    default_revision_spec(&mut service.spec.template.spec, defaults);
    if service.spec.traffic.is_empty() {
        service.spec.traffic = vec![TrafficTarget {
            percent: Some(100),
            latest_revision: Some(true),
            ..TrafficTarget::default()
        }];
    }
    default_traffic(&mut service.spec.traffic);
}

/// Defaults a Configuration as the webhook does.
pub fn default_configuration(config: &mut Configuration, defaults: &Defaults) {
    default_revision_spec(&mut config.spec.template.spec, defaults);
}

/// Defaults a Route as the webhook does.
pub fn default_route(route: &mut Route) {
    default_traffic(&mut route.spec.traffic);
}

/// `TrafficTarget.SetDefaults` for each target.
pub fn default_traffic(traffic: &mut [TrafficTarget]) {
    for t in traffic {
        if t.latest_revision.is_none() {
            t.latest_revision = Some(t.revision_name.is_empty());
        }
    }
}

/// `RevisionSpec.SetDefaults`.
pub fn default_revision_spec(spec: &mut RevisionSpec, defaults: &Defaults) {
    if spec.timeout_seconds.is_none_or(|t| t == 0) {
        spec.timeout_seconds = Some(defaults.revision_timeout_seconds);
    }
    if spec.container_concurrency.is_none() {
        spec.container_concurrency = Some(defaults.container_concurrency);
    }
    if spec.response_start_timeout_seconds.is_none() {
        spec.response_start_timeout_seconds = defaults.revision_response_start_timeout_seconds;
    }
    if spec.idle_timeout_seconds.is_none() {
        spec.idle_timeout_seconds = defaults.revision_idle_timeout_seconds;
    }
    let several = spec.containers.len() > 1;
    for (i, c) in spec.containers.iter_mut().enumerate() {
        if c.name.is_empty() {
            c.name = if several {
                format!("{}-{i}", defaults.user_container_name)
            } else {
                defaults.user_container_name.clone()
            };
        }
    }
}
