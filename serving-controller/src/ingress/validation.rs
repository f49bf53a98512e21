//! Knative's KIngress validation (`ingress_validation.go`), with its messages and field paths.
//!
//! Knative reports errors as `apis.FieldError`s: a message plus the paths it applies to, e.g.
//! `missing field(s): spec.rules[0].http` or
//! `traffic split percentage must total to 100, but was 90: spec.rules[0].http.paths[0].splits`.
//! The checks, their order and their quirks (a failing split stops the checks of its path) are
//! Knative's, so a KIngress Knative accepts is accepted here and vice versa.

use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    HttpIngressPath, HttpIngressRuleValue, Ingress, IngressBackendSplit, IngressRule, IngressSpec,
    IngressTls,
};

/// One validation error: a message and the field paths it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong, in Knative's words.
    pub message: String,
    /// Where, as `spec.rules[0].http.paths[1].splits`.
    pub paths: Vec<String>,
}

impl FieldError {
    fn missing(path: String) -> Self {
        Self {
            message: "missing field(s)".into(),
            paths: vec![path],
        }
    }

    fn new(message: impl Into<String>, path: String) -> Self {
        Self {
            message: message.into(),
            paths: vec![path],
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message, self.paths.join(", "))
    }
}

/// Joins errors as Knative's `FieldError.Error()` does: errors with the same message are merged
/// (their paths listed together), then sorted by message, one per line.
pub fn describe(errors: &[FieldError]) -> String {
    let mut merged: Vec<FieldError> = Vec::new();
    for e in errors {
        match merged.iter_mut().find(|m| m.message == e.message) {
            Some(m) => {
                for p in &e.paths {
                    if !m.paths.contains(p) {
                        m.paths.push(p.clone());
                    }
                }
            }
            None => merged.push(e.clone()),
        }
    }
    for m in &mut merged {
        m.paths.sort();
    }
    merged.sort_by(|a, b| a.message.cmp(&b.message));
    merged
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validates a KIngress as Knative's webhook does. `Err` holds every error found, in the order
/// Knative finds them.
pub fn validate(ingress: &Ingress) -> Result<(), Vec<FieldError>> {
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or_default();
    let mut errors = Vec::new();
    spec(&ingress.spec, namespace, "spec", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn spec(s: &IngressSpec, namespace: &str, at: &str, errors: &mut Vec<FieldError>) {
    if s == &IngressSpec::default() {
        errors.push(FieldError::missing(at.to_string()));
        return;
    }
    if s.rules.is_empty() {
        errors.push(FieldError::missing(format!("{at}.rules")));
    }
    for (i, r) in s.rules.iter().enumerate() {
        rule(r, namespace, &format!("{at}.rules[{i}]"), errors);
    }
    for (i, t) in s.tls.iter().enumerate() {
        tls(t, &format!("{at}.tls[{i}]"), errors);
    }
}

fn rule(r: &IngressRule, namespace: &str, at: &str, errors: &mut Vec<FieldError>) {
    if r == &IngressRule::default() {
        errors.push(FieldError::missing(at.to_string()));
        return;
    }
    match &r.http {
        None => errors.push(FieldError::missing(format!("{at}.http"))),
        Some(h) => http(h, namespace, &format!("{at}.http"), errors),
    }
}

fn http(h: &HttpIngressRuleValue, namespace: &str, at: &str, errors: &mut Vec<FieldError>) {
    if h.paths.is_empty() {
        errors.push(FieldError::missing(format!("{at}.paths")));
        return;
    }
    for (i, p) in h.paths.iter().enumerate() {
        path(p, namespace, &format!("{at}.paths[{i}]"), errors);
    }
}

fn path(p: &HttpIngressPath, namespace: &str, at: &str, errors: &mut Vec<FieldError>) {
    if p == &HttpIngressPath::default() {
        errors.push(FieldError::missing(at.to_string()));
        return;
    }
    if p.splits.is_empty() {
        errors.push(FieldError::missing(format!("{at}.splits")));
        return;
    }
    let mut total: i64 = 0;
    for (i, s) in p.splits.iter().enumerate() {
        let split_errors = split(s, namespace, &format!("{at}.splits[{i}]"));
        if !split_errors.is_empty() {
            // Knative returns at the first failing split, dropping the path's other errors.
            errors.extend(split_errors);
            return;
        }
        total = total.saturating_add(s.percent);
    }
    // A single split may omit its percent: it gets 100%.
    if (p.splits.len() != 1 || total != 0) && total != 100 {
        errors.push(FieldError::new(
            format!("traffic split percentage must total to 100, but was {total}"),
            format!("{at}.splits"),
        ));
    }
}

fn split(s: &IngressBackendSplit, namespace: &str, at: &str) -> Vec<FieldError> {
    if s == &IngressBackendSplit::default() {
        return vec![FieldError::missing(at.to_string())];
    }
    let mut errors = Vec::new();
    if !(0..=100).contains(&s.percent) {
        errors.push(FieldError::new(
            format!("invalid value: {}", s.percent),
            format!("{at}.percent"),
        ));
    }
    // IngressBackend.Validate, on the split's own path (Go inlines the backend).
    let backend_empty = s.service_namespace.is_empty()
        && s.service_name.is_empty()
        && s.service_port == IntOrString::Int(0);
    if backend_empty {
        errors.push(FieldError::missing(at.to_string()));
        return errors;
    }
    if s.service_namespace.is_empty() {
        errors.push(FieldError::missing(format!("{at}.serviceNamespace")));
    } else if s.service_namespace != namespace {
        errors.push(FieldError::new(
            "service namespace must match ingress namespace",
            format!("{at}.serviceNamespace"),
        ));
    }
    if s.service_name.is_empty() {
        errors.push(FieldError::missing(format!("{at}.serviceName")));
    }
    if s.service_port == IntOrString::Int(0) {
        errors.push(FieldError::missing(format!("{at}.servicePort")));
    }
    errors
}

fn tls(t: &IngressTls, at: &str, errors: &mut Vec<FieldError>) {
    if t == &IngressTls::default() {
        errors.push(FieldError::missing(at.to_string()));
        return;
    }
    if t.secret_name.is_empty() {
        errors.push(FieldError::missing(format!("{at}.secretName")));
    }
    if t.secret_namespace.is_empty() {
        errors.push(FieldError::missing(format!("{at}.secretNamespace")));
    }
}
