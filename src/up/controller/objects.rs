//! What the controller hands the gateway and the runtime for a Revision: its
//! Kubernetes-shaped Service and Endpoints, and the process spec.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service as KubeService, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_serving::ingress::Ingress;
use sluice_serving::lookup::{CONCURRENCY_ANNOTATION, IDLE_TIMEOUT_ANNOTATION, TIMEOUT_ANNOTATION};
use sluice_serving::serving::kingress::REVISION_SERVICE_PORT;
use sluice_serving::serving::{Revision, ServingConfig};

use sluice_autoscaler::{Config as AutoscalerConfig, ScalingAnnotations};
use sluice_serving::kube::runtime::service_port_name as port_name;

use crate::runtime::{ReadinessProbe, RevisionSpec as ProcessSpec};

/// The Revisions a KIngress's splits send traffic to.
pub(super) fn split_revisions(ingress: &Ingress) -> BTreeSet<String> {
    ingress.split_services()
}

/// `autoscaling.knative.dev/min-scale` (or its legacy name), as the autoscaler reads it; 0
/// when absent (admission has rejected invalid values already).
pub(super) fn min_scale(revision: &Revision) -> u32 {
    let Some(annotations) = revision.metadata.annotations.as_ref() else {
        return 0;
    };
    ScalingAnnotations::parse(annotations, &AutoscalerConfig::default())
        .ok()
        .and_then(|a| a.min_scale)
        .unwrap_or(0)
}

/// The Configuration a Revision was created by (its label).
pub(super) fn configuration_label(revision: &Revision) -> Option<&str> {
    revision
        .metadata
        .labels
        .as_ref()?
        .get(sluice_serving::serving::CONFIGURATION_LABEL)
        .map(String::as_str)
}

/// The Kubernetes-shaped Service of a Revision (as Knative's private revision Service), with
/// its timeout and (when Envoy sends its traffic `direct`ly to the instances) its idle
/// timeout and `containerConcurrency` as annotations the gateway turns into the route timeout,
/// the route idle timeout and a per-instance request limit in Envoy. Through the activator the limit is the activator's to
/// keep: in Envoy it would cap the whole Revision at one instance's worth.
pub fn make_revision_service(
    revision: &Revision,
    cfg: &ServingConfig,
    direct: bool,
) -> KubeService {
    let timeout = revision_timeout(revision, cfg);
    let mut annotations = BTreeMap::from([(TIMEOUT_ANNOTATION.to_string(), timeout.to_string())]);
    // Through the activator, the activator enforces it (Envoy's would also run while the
    // activator holds the request for an instance).
    if let Some(idle) = revision.spec.idle_timeout().filter(|_| direct) {
        annotations.insert(
            IDLE_TIMEOUT_ANNOTATION.to_string(),
            idle.as_secs().to_string(),
        );
    }
    let concurrency = container_concurrency(revision, cfg);
    if concurrency > 0 && direct {
        annotations.insert(CONCURRENCY_ANNOTATION.to_string(), concurrency.to_string());
    }
    KubeService {
        metadata: ObjectMeta {
            name: revision.metadata.name.clone(),
            namespace: revision.metadata.namespace.clone(),
            labels: revision.metadata.labels.clone(),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some(port_name(revision).into()),
                port: REVISION_SERVICE_PORT,
                target_port: Some(IntOrString::Int(revision.spec.user_port())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}

/// The Endpoints of a Revision: one subset per ready instance (each has its own port).
pub fn make_endpoints(revision: &Revision, ready: &[SocketAddr]) -> Endpoints {
    let subsets = ready
        .iter()
        .map(|addr| EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: addr.ip().to_string(),
                ..EndpointAddress::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some(port_name(revision).into()),
                port: i32::from(addr.port()),
                ..EndpointPort::default()
            }]),
            ..EndpointSubset::default()
        })
        .collect::<Vec<_>>();
    Endpoints {
        metadata: ObjectMeta {
            name: revision.metadata.name.clone(),
            namespace: revision.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// How the process runtime runs a Revision: `containers[0]`'s command, args, env,
/// `workingDir` (relative paths, and the program when it is a relative path with a `/`, are
/// taken from Sluice's own working directory) and readiness probe.
pub fn process_spec(revision: &Revision, cfg: &ServingConfig) -> ProcessSpec {
    let mut spec = ProcessSpec::new(revision.namespace(), revision.name());
    let labels = revision.metadata.labels.clone().unwrap_or_default();
    spec.service = labels
        .get(sluice_serving::serving::SERVICE_LABEL)
        .cloned()
        .unwrap_or_default();
    spec.configuration = labels
        .get(sluice_serving::serving::CONFIGURATION_LABEL)
        .cloned()
        .unwrap_or_default();
    spec.container_concurrency = container_concurrency(revision, cfg);
    spec.container_port = u16::try_from(revision.spec.user_port()).unwrap_or(8080);
    if let Some(c) = revision.spec.container() {
        spec.command = c.command.clone();
        spec.args = c.args.clone();
        spec.env = c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        spec.working_dir = c.working_dir.as_ref().map(PathBuf::from);
        spec.readiness = match &c.readiness_probe {
            Some(p) => {
                if let Some(h) = &p.http_get {
                    ReadinessProbe::HttpGet {
                        path: h.path.clone().unwrap_or_else(|| "/".into()),
                        port: probe_port(&h.port),
                    }
                } else if let Some(t) = &p.tcp_socket {
                    ReadinessProbe::TcpSocket {
                        port: probe_port(&t.port),
                    }
                } else {
                    ReadinessProbe::Default
                }
            }
            None => ReadinessProbe::Default,
        };
    }
    spec
}

fn probe_port(port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) if *n > 0 => u16::try_from(*n).ok(),
        _ => None,
    }
}

/// `timeoutSeconds`, else `config-defaults`' `revision-timeout-seconds`.
pub(super) fn revision_timeout(revision: &Revision, cfg: &ServingConfig) -> i64 {
    revision
        .spec
        .timeout_seconds
        .filter(|s| *s > 0)
        .unwrap_or(cfg.defaults.revision_timeout_seconds)
}

/// `containerConcurrency`, else `config-defaults`' `container-concurrency`; 0 = unlimited.
fn container_concurrency(revision: &Revision, cfg: &ServingConfig) -> u32 {
    revision
        .spec
        .container_concurrency
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(u32::try_from(cfg.defaults.container_concurrency).unwrap_or(0))
}
