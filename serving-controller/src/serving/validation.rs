//! Knative's validating webhook for Service, Configuration and Route (`*_validation.go`), with
//! its messages and field paths (`apis.FieldError`: `Traffic targets sum to 90, want 100:
//! spec.traffic`). Errors are reported as [`FieldError`]s; [`describe`] joins them the way
//! Knative prints them (same messages merged, sorted).
//!
//! [`admit_service`] / [`admit_configuration`] / [`admit_route`] do what the API server does
//! on create: default, then validate. Not checked (yet): autoscaling annotation values, volume
//! and volume-mount rules, image reference syntax, `VerifyNameChange` on updates, Knative's
//! `Details` lines (the messages are kept, their extra detail is dropped).
//!
//! [`describe`]: crate::ingress::describe

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::ServingConfig;
use super::defaults::{default_configuration, default_route, default_service};
use super::names::{dns1035_label, go_list, qualified_name};
use super::types::{Configuration, Route, Service, TrafficTarget};
use super::{
    CONFIG_UID_LABEL, GROUP_PREFIX, ROUTE_LABEL, SERVICE_LABEL, SERVICE_UID_LABEL,
    VISIBILITY_CLUSTER_LOCAL, VISIBILITY_LABEL,
};
use crate::ingress::FieldError;

mod template;

pub use template::validate_template;

/// The namespace objects without one land in (as `kubectl apply`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A Knative field error.
pub(crate) fn field_error(message: impl Into<String>, paths: &[&str]) -> FieldError {
    FieldError {
        message: message.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

/// `ErrMissingField`.
pub(crate) fn missing(path: &str) -> FieldError {
    field_error("missing field(s)", &[path])
}

/// `ErrOutOfBoundsValue`.
pub(crate) fn out_of_bounds(value: i64, low: i64, high: i64, path: &str) -> FieldError {
    field_error(format!("expected {low} <= {value} <= {high}"), &[path])
}

/// `ErrInvalidValue`.
pub(crate) fn invalid_value(value: impl std::fmt::Display, path: &str) -> FieldError {
    field_error(format!("invalid value: {value}"), &[path])
}

/// Joins a path under a prefix as knative/pkg's `flatten` does (`spec` + `[0].x` →
/// `spec[0].x`, `spec` + `` → `spec`).
pub(crate) fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ if path.starts_with('[') => format!("{prefix}{path}"),
        _ => format!("{prefix}.{path}"),
    }
}

/// `FieldError.ViaField(prefix)` for a list of errors.
pub(crate) fn via(errors: Vec<FieldError>, prefix: &str) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|mut e| {
            e.paths = e.paths.iter().map(|p| join(prefix, p)).collect();
            e
        })
        .collect()
}

fn result(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn set_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
}

/// Defaults (and the `default` namespace), then validates a Service.
pub fn admit_service(service: &Service, cfg: &ServingConfig) -> Result<Service, Vec<FieldError>> {
    let mut s = service.clone();
    set_namespace(&mut s.metadata);
    default_service(&mut s, &cfg.defaults);
    validate_service(&s, cfg).map(|()| s)
}

/// Defaults (and the `default` namespace), then validates a Configuration.
pub fn admit_configuration(
    config: &Configuration,
    cfg: &ServingConfig,
) -> Result<Configuration, Vec<FieldError>> {
    let mut c = config.clone();
    set_namespace(&mut c.metadata);
    default_configuration(&mut c, &cfg.defaults);
    validate_configuration(&c, cfg).map(|()| c)
}

/// Defaults (and the `default` namespace), then validates a Route.
pub fn admit_route(route: &Route) -> Result<Route, Vec<FieldError>> {
    let mut r = route.clone();
    set_namespace(&mut r.metadata);
    default_route(&mut r);
    validate_route(&r).map(|()| r)
}

/// `Service.Validate`.
pub fn validate_service(s: &Service, cfg: &ServingConfig) -> Result<(), Vec<FieldError>> {
    let mut meta = object_meta(&s.metadata);
    meta.extend(via(service_labels(&s.metadata), "labels"));
    meta.extend(via(no_autoscaling_annotations(&s.metadata), "annotations"));
    let mut errors = via(meta, "metadata");
    let spec = validate_template(&s.spec.template, &s.metadata, cfg);
    errors.extend(via(via(spec, "template"), "spec"));
    errors.extend(via(
        via(traffic_list(&s.spec.traffic, true), "traffic"),
        "spec",
    ));
    result(errors)
}

/// `Configuration.Validate`.
pub fn validate_configuration(
    c: &Configuration,
    cfg: &ServingConfig,
) -> Result<(), Vec<FieldError>> {
    let mut meta = object_meta(&c.metadata);
    meta.extend(via(configuration_labels(&c.metadata), "labels"));
    meta.extend(via(no_autoscaling_annotations(&c.metadata), "annotations"));
    let mut errors = via(meta, "metadata");
    let spec = validate_template(&c.spec.template, &c.metadata, cfg);
    errors.extend(via(via(spec, "template"), "spec"));
    result(errors)
}

/// `Route.Validate`.
pub fn validate_route(r: &Route) -> Result<(), Vec<FieldError>> {
    let mut meta = object_meta(&r.metadata);
    meta.extend(via(route_labels(&r.metadata), "labels"));
    let mut errors = via(meta, "metadata");
    errors.extend(via(
        via(traffic_list(&r.spec.traffic, false), "traffic"),
        "spec",
    ));
    result(errors)
}

/// knative/pkg `apis.ValidateObjectMetadata`: DNS-1035 names.
fn object_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let name = meta.name.as_deref().unwrap_or_default();
    let generate = meta.generate_name.as_deref().unwrap_or_default();
    if !generate.is_empty() {
        // NameIsDNS1035Label(prefix=true) allows a trailing '-'.
        let msgs = dns1035_label(generate.strip_suffix('-').unwrap_or(generate));
        if !msgs.is_empty() {
            let msg = format!("not a DNS 1035 label prefix: {}", go_list(&msgs));
            return vec![field_error(msg, &["generateName"])];
        }
    }
    if !name.is_empty() {
        let msgs = dns1035_label(name);
        if !msgs.is_empty() {
            return vec![field_error(
                format!("not a DNS 1035 label: {}", go_list(&msgs)),
                &["name"],
            )];
        }
    }
    if name.is_empty() && generate.is_empty() {
        return vec![field_error("name or generateName is required", &["name"])];
    }
    Vec::new()
}

fn labels(meta: &ObjectMeta) -> impl Iterator<Item = (&String, &String)> {
    meta.labels.iter().flat_map(BTreeMap::iter)
}

fn visibility_value(value: &str) -> Option<FieldError> {
    (value != VISIBILITY_CLUSTER_LOCAL).then(|| invalid_value(value, VISIBILITY_LABEL))
}

fn invalid_key(key: &str) -> FieldError {
    field_error(format!("invalid key name {key:?}"), &[""])
}

/// `verifyLabelOwnerRef`: a `serving.knative.dev/service` label needs a matching owner.
fn owner_matches(meta: &ObjectMeta, kind: &str, name: &str, label: &str) -> Option<FieldError> {
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == kind && o.name == name);
    (!owned).then(|| missing(label))
}

fn service_labels(meta: &ObjectMeta) -> Vec<FieldError> {
    labels(meta)
        .filter_map(|(k, v)| match k.as_str() {
            VISIBILITY_LABEL => visibility_value(v),
            _ if k.starts_with(GROUP_PREFIX) => Some(invalid_key(k)),
            _ => None,
        })
        .collect()
}

fn configuration_labels(meta: &ObjectMeta) -> Vec<FieldError> {
    labels(meta)
        .filter_map(|(k, v)| match k.as_str() {
            ROUTE_LABEL | CONFIG_UID_LABEL | SERVICE_UID_LABEL => None,
            SERVICE_LABEL => owner_matches(meta, Service::KIND, v, SERVICE_LABEL),
            _ if k.starts_with(GROUP_PREFIX) => Some(invalid_key(k)),
            _ => None,
        })
        .collect()
}

fn route_labels(meta: &ObjectMeta) -> Vec<FieldError> {
    labels(meta)
        .filter_map(|(k, v)| match k.as_str() {
            VISIBILITY_LABEL => visibility_value(v),
            // Set by the Service on its Route (as upstream's MakeRoute does).
            SERVICE_UID_LABEL => None,
            SERVICE_LABEL => owner_matches(meta, Service::KIND, v, SERVICE_LABEL),
            _ if k.starts_with(GROUP_PREFIX) => Some(invalid_key(k)),
            _ => None,
        })
        .collect()
}

/// `ValidateHasNoAutoscalingAnnotation`: autoscaling annotations belong on the template.
fn no_autoscaling_annotations(meta: &ObjectMeta) -> Vec<FieldError> {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("autoscaling.knative.dev"))
        .map(|(k, _)| invalid_key(k))
        .collect()
}

/// `validateTrafficList`; `default_configuration` is true inside a Service.
fn traffic_list(traffic: &[TrafficTarget], default_configuration: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sum: i64 = 0;
    for (i, t) in traffic.iter().enumerate() {
        errors.extend(via(
            traffic_target(t, default_configuration),
            &format!("[{i}]"),
        ));
        sum = sum.saturating_add(t.percent.unwrap_or(0));
        if t.tag.is_empty() {
            continue;
        }
        let msgs = dns1035_label(&t.tag);
        if !msgs.is_empty() {
            // ErrInvalidArrayValue: the index lands on the field name (`tag[1]`), as upstream.
            let msg = format!("not a DNS 1035 label: {}", go_list(&msgs));
            errors.push(invalid_value(msg, &format!("tag[{i}]")));
        }
        match tags.get(t.tag.as_str()) {
            Some(first) => errors.push(field_error(
                format!("Multiple definitions for {:?}", t.tag),
                &[&format!("[{i}].tag"), &format!("[{first}].tag")],
            )),
            None => {
                tags.insert(&t.tag, i);
            }
        }
    }
    if sum != 100 {
        errors.push(field_error(
            format!("Traffic targets sum to {sum}, want 100"),
            &[""],
        ));
    }
    errors
}

/// `TrafficTarget.Validate` within a spec.
fn traffic_target(t: &TrafficTarget, default_configuration: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(latest) = t.latest_revision {
        let pinned = !t.revision_name.is_empty();
        if pinned == latest {
            errors.push(field_error(
                format!(
                    "may not set revisionName {:?} when latestRevision is {latest}",
                    t.revision_name
                ),
                &["latestRevision"],
            ));
        }
    }
    let name_error = |name: &str, field: &str| {
        let msgs = qualified_name(name);
        (!msgs.is_empty()).then(|| field_error(format!("invalid key name {name:?}"), &[field]))
    };
    if default_configuration && !t.configuration_name.is_empty() {
        errors.push(field_error(
            "must not set the field(s)",
            &["configurationName"],
        ));
    } else if !t.revision_name.is_empty() && !t.configuration_name.is_empty() {
        errors.push(field_error(
            "expected exactly one, got both",
            &["revisionName", "configurationName"],
        ));
    } else if !t.revision_name.is_empty() {
        errors.extend(name_error(&t.revision_name, "revisionName"));
    } else if !t.configuration_name.is_empty() {
        errors.extend(name_error(&t.configuration_name, "configurationName"));
    } else if !default_configuration {
        errors.push(field_error(
            "expected exactly one, got neither",
            &["revisionName", "configurationName"],
        ));
    }
    if let Some(p) = t.percent
        && !(0..=100).contains(&p)
    {
        errors.push(out_of_bounds(p, 0, 100, "percent"));
    }
    if t.url.is_some() {
        errors.push(field_error("must not set the field(s)", &["url"]));
        if t.tag.is_empty() {
            errors.push(field_error("must not set the field(s)", &["url"]));
        }
    }
    errors
}
