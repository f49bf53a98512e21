//! `RevisionTemplateSpec.Validate` and the PodSpec / Container rules of
//! `pkg/apis/serving/k8s_validation.go` that matter without a cluster.

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{field_error, invalid_value, missing, out_of_bounds, via};
use crate::ingress::FieldError;
use crate::serving::config::{Defaults, ServingConfig};
use crate::serving::names::{dns1035_label, dns1123_subdomain, go_list};
use crate::serving::pod::{Container, RevisionSpec};
use crate::serving::types::RevisionTemplateSpec;

/// Ports the queue-proxy and its metrics use in Knative: an app may not claim them.
const RESERVED_PORTS: [i32; 6] = [8012, 8013, 8022, 9090, 9091, 8008];
/// Environment variables Knative sets itself.
const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// Validates a template (paths relative to it: `spec.containers[0].image`, `metadata.name`).
/// `parent` is the owning Service's or Configuration's metadata (revision names must start
/// with its name).
pub fn validate_template(
    t: &RevisionTemplateSpec,
    parent: &ObjectMeta,
    cfg: &ServingConfig,
) -> Vec<FieldError> {
    let mut errors = via(
        revision_spec(&t.spec, &cfg.defaults, cfg.features.multi_container),
        "spec",
    );
    errors.extend(revision_name(
        t.metadata.name.as_deref().unwrap_or_default(),
        parent,
    ));
    errors
}

/// `validateRevisionName`: DNS-1035 and prefixed with `{parent}-`.
fn revision_name(name: &str, parent: &ObjectMeta) -> Option<FieldError> {
    if name.is_empty() {
        return None;
    }
    let msgs = dns1035_label(name);
    if !msgs.is_empty() {
        let msg = format!("not a DNS 1035 label: {}", go_list(&msgs));
        return Some(invalid_value(msg, "metadata.name"));
    }
    let parent_name = parent.name.as_deref().unwrap_or_default();
    if parent_name.is_empty() && parent.generate_name.is_some() {
        return Some(field_error("must not set the field(s)", &["metadata.name"]));
    }
    let prefix = format!("{parent_name}-");
    (!name.starts_with(&prefix)).then(|| {
        invalid_value(
            format!("{name:?} must have prefix {prefix:?}"),
            "metadata.name",
        )
    })
}

/// `RevisionSpec.Validate`.
fn revision_spec(spec: &RevisionSpec, d: &Defaults, multi_container: bool) -> Vec<FieldError> {
    let mut errors = pod_spec(spec, multi_container);
    let max = d.max_revision_timeout_seconds;
    let bounded = |v: Option<i64>, high: i64, path: &str| {
        v.filter(|t| *t != 0 && (*t < 0 || *t > high))
            .map(|t| out_of_bounds(t, 0, high, path))
    };
    errors.extend(bounded(spec.timeout_seconds, max, "timeoutSeconds"));
    // A response must start within the request timeout.
    let request = spec
        .timeout_seconds
        .filter(|t| *t > 0 && *t <= max)
        .unwrap_or(max);
    errors.extend(bounded(
        spec.response_start_timeout_seconds,
        request,
        "responseStartTimeoutSeconds",
    ));
    errors.extend(bounded(
        spec.idle_timeout_seconds,
        max,
        "idleTimeoutSeconds",
    ));
    if let Some(cc) = spec.container_concurrency {
        let low = if d.allow_container_concurrency_zero {
            0
        } else {
            1
        };
        let high = d.container_concurrency_max_limit;
        if cc < low || cc > high {
            errors.push(out_of_bounds(cc, low, high, "containerConcurrency"));
        }
    }
    errors
}

/// `ValidatePodSpec` (other feature flags at their defaults). With several containers
/// (`multi-container` enabled), exactly one has a port: the serving container.
fn pod_spec(spec: &RevisionSpec, multi_container: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let disallowed = spec.disallowed_fields();
    if !disallowed.is_empty() {
        errors.push(field_error("must not set the field(s)", &disallowed));
    }
    let ports: usize = spec.containers.iter().map(|c| c.ports.len()).sum();
    if ports > 1 {
        errors.push(field_error(
            "more than one container port is set",
            &["containers[*].ports"],
        ));
    }
    match spec.containers.as_slice() {
        [] => errors.push(missing("containers")),
        [c] => errors.extend(via(container(c), "containers[0]")),
        many if !multi_container => errors.push(field_error(
            format!(
                "multi-container is off, but found {} containers",
                many.len()
            ),
            &[],
        )),
        many => {
            if ports == 0 {
                errors.push(missing("containers.ports"));
            }
            for (i, c) in many.iter().enumerate() {
                errors.extend(via(container(c), &format!("containers[{i}]")));
            }
        }
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        && !dns1123_subdomain(sa).is_empty()
    {
        errors.push(invalid_value(sa, "serviceAccountName"));
    }
    errors
}

/// `ValidateContainer` for the serving container.
fn container(c: &Container) -> Vec<FieldError> {
    if c == &Container::default() {
        return vec![missing("")];
    }
    let port_name = c
        .ports
        .first()
        .and_then(|p| p.name.clone())
        .unwrap_or_else(|| "http".into());
    let mut errors = via(
        probe(c.liveness_probe.as_ref(), &port_name),
        "livenessProbe",
    );
    errors.extend(via(
        probe(c.readiness_probe.as_ref(), &port_name),
        "readinessProbe",
    ));
    let disallowed = c.disallowed_fields();
    if !disallowed.is_empty() {
        errors.push(field_error("must not set the field(s)", &disallowed));
    }
    if c.name == "queue-proxy" {
        errors.push(field_error(
            format!("{:?} is a reserved container name", c.name),
            &["name"],
        ));
    }
    for (i, env) in c.env.iter().enumerate() {
        let at = format!("env[{i}].name");
        if env.name.is_empty() {
            errors.push(missing(&at));
        } else if RESERVED_ENV.contains(&env.name.as_str()) {
            errors.push(field_error(
                format!("{:?} is a reserved environment variable", env.name),
                &[&at],
            ));
        }
    }
    // Knative requires an image; Sluice's standalone runtime runs `command` instead, so a
    // container with a command may omit it.
    if c.image.is_empty() && c.command.is_empty() {
        errors.push(missing("image"));
    }
    errors.extend(via(container_ports(&c.ports), "ports"));
    if let Some(p) = c.termination_message_policy.as_deref()
        && !matches!(p, "File" | "FallbackToLogsOnError" | "")
    {
        errors.push(invalid_value(p, "terminationMessagePolicy"));
    }
    errors
}

/// `validateContainerPorts`: only the first port is checked, on the `ports` path itself.
fn container_ports(ports: &[ContainerPort]) -> Vec<FieldError> {
    let Some(p) = ports.first() else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    if RESERVED_PORTS.contains(&p.container_port) {
        errors.push(invalid_value(
            format!("{} is a reserved port", p.container_port),
            "containerPort",
        ));
    }
    if !(0..=65535).contains(&p.container_port) {
        errors.push(out_of_bounds(
            p.container_port.into(),
            0,
            65535,
            "containerPort",
        ));
    }
    if let Some(proto) = p
        .protocol
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "TCP")
    {
        errors.push(invalid_value(proto, "protocol"));
    }
    let name = p.name.as_deref().unwrap_or_default();
    if !matches!(name, "" | "h2c" | "http1") {
        errors.push(field_error(
            format!("Port name {name} is not allowed"),
            &[""],
        ));
    }
    errors
}

/// `validateProbe`: exactly one handler; a named probe port must be the container's port.
fn probe(p: Option<&Probe>, port_name: &str) -> Vec<FieldError> {
    let Some(p) = p else { return Vec::new() };
    let mut errors = Vec::new();
    let mut handlers = Vec::new();
    let named = |port: &IntOrString, path: &str| match port {
        IntOrString::String(s) if !s.is_empty() && s != port_name => Some(invalid_value(s, path)),
        _ => None,
    };
    if let Some(h) = &p.http_get {
        handlers.push("httpGet");
        errors.extend(named(&h.port, "httpGet.port"));
    }
    if let Some(t) = &p.tcp_socket {
        handlers.push("tcpSocket");
        errors.extend(named(&t.port, "tcpSocket.port"));
    }
    if p.exec.is_some() {
        handlers.push("exec");
    }
    if p.grpc.is_some() {
        handlers.push("gRPC");
    }
    match handlers.len() {
        0 => errors.push(field_error(
            "expected exactly one, got neither",
            &["httpGet", "tcpSocket", "exec", "grpc"],
        )),
        1 => {}
        _ => errors.push(field_error("expected exactly one, got both", &handlers)),
    }
    errors
}
