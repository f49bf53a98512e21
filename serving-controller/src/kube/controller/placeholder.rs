//! The per-Route placeholder Services, as Knative's route reconciler makes them
//! (`pkg/reconciler/route/resources/service.go`): one Service per target group of a Route —
//! the Route itself and each traffic tag — named like the group's first host label
//! (`{route}`, `{tag}-{route}` by default), so that `{route}.{ns}.svc.cluster.local` (and each
//! tag's) resolves inside the cluster.
//!
//! Each is `type: ExternalName` pointing at the internal gateway: the `domainInternal` of the
//! KIngress's `status.privateLoadBalancer` once the gateway wrote it, else the default
//! internal gateway Service (`sluice-internal.knative-serving.svc.cluster.local`), so the name
//! resolves before the KIngress is ready too. `sessionAffinity: None`, one port `http` 80 → 80,
//! the Route's labels plus `serving.knative.dev/route`, owned by the Route (deleted with it by
//! the Kubernetes garbage collector).
//!
//! A tag removed from the Route removes its Service. What was applied is remembered per
//! process: after a restart every Route's placeholders are applied once more (server-side
//! apply: a no-op when unchanged), and a tag removed while the controller was down keeps its
//! Service until its Route is deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ingress::Ingress;
use crate::kube::status::LoadBalancers;
use crate::serving::configuration::controller_ref;
use crate::serving::kingress::host_name;
use crate::serving::{Route, ServingConfig};

/// Label on a placeholder Service: its Route's name (Knative's `serving.knative.dev/route`).
pub const ROUTE_LABEL: &str = "serving.knative.dev/route";
/// The port a placeholder Service exposes (Knative's `ServiceHTTPPort`).
pub const PLACEHOLDER_PORT: i32 = 80;

/// Where a Route's placeholder Services point: the KIngress's private load balancer as the
/// gateway wrote it, else the default internal gateway Service.
pub fn internal_gateway(ingress: Option<&Ingress>) -> String {
    ingress
        .and_then(|i| i.status.private_load_balancer.as_ref())
        .and_then(|lb| lb.ingress.iter().find(|i| !i.domain_internal.is_empty()))
        .map(|i| i.domain_internal.clone())
        .unwrap_or_else(|| LoadBalancers::default().private)
}

/// The placeholder Services of `route` (one per target group, sorted by name), pointing at
/// `gateway`.
pub fn placeholder_services(route: &Route, cfg: &ServingConfig, gateway: &str) -> Vec<Service> {
    let mut names: Vec<String> = std::iter::once(String::new())
        .chain(
            route
                .spec
                .traffic
                .iter()
                .filter(|t| !t.tag.is_empty())
                .map(|t| t.tag.clone()),
        )
        .map(|tag| host_name(route, &tag, cfg))
        .collect();
    names.sort();
    names.dedup();
    names.retain(|name| {
        let valid = is_service_name(name);
        if !valid {
            tracing::warn!(route = %route.key(), service = %name, "no placeholder Service: not a valid Service name (a DNS-1035 label)");
        }
        valid
    });
    let mut labels: BTreeMap<String, String> = route.metadata.labels.clone().unwrap_or_default();
    labels.insert(ROUTE_LABEL.into(), route.name().into());
    names
        .into_iter()
        .map(|name| Service {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(route.namespace().to_string()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_ref("Route", &route.metadata)]),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(gateway.to_string()),
                session_affinity: Some("None".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: PLACEHOLDER_PORT,
                    target_port: Some(IntOrString::Int(PLACEHOLDER_PORT)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        })
        .collect()
}

/// Whether `name` can name a Kubernetes Service (an RFC 1035 label: at most 63 lowercase
/// letters, digits and `-`, starting with a letter, not ending with `-`).
fn is_service_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::types::TrafficTarget;

    fn route() -> Route {
        let mut route = Route::default();
        route.metadata.name = Some("hello".into());
        route.metadata.namespace = Some("default".into());
        route.metadata.uid = Some("route-uid".into());
        route.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        route.spec.traffic = vec![
            TrafficTarget {
                revision_name: "hello-00001".into(),
                percent: Some(90),
                ..TrafficTarget::default()
            },
            TrafficTarget {
                revision_name: "hello-00002".into(),
                tag: "canary".into(),
                percent: Some(10),
                ..TrafficTarget::default()
            },
        ];
        route
    }

    #[test]
    fn one_external_name_service_per_target_group_owned_by_the_route() {
        let services =
            placeholder_services(&route(), &ServingConfig::default(), &internal_gateway(None));
        let names: Vec<_> = services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["canary-hello", "hello"]);
        let s = &services[1];
        let spec = s.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert_eq!(
            spec.external_name.as_deref(),
            Some("sluice-internal.knative-serving.svc.cluster.local")
        );
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        let port = &spec.ports.as_ref().expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 80));
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get(ROUTE_LABEL).map(String::as_str), Some("hello"));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Route", "route-uid")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_name_kubernetes_would_refuse_gets_no_placeholder() {
        let mut r = route();
        r.metadata.name = Some("1hello".into());
        let names: Vec<_> = placeholder_services(&r, &ServingConfig::default(), "gw")
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(names, ["canary-1hello"]);
    }

    #[test]
    fn the_kingress_private_load_balancer_wins_once_written() {
        let mut ingress = Ingress::default();
        ingress.status.private_load_balancer = Some(crate::ingress::LoadBalancerStatus {
            ingress: vec![crate::ingress::LoadBalancerIngressStatus {
                domain_internal: "gw-internal.sluice-system.svc.cluster.local".into(),
                ..Default::default()
            }],
        });
        assert_eq!(
            internal_gateway(Some(&ingress)),
            "gw-internal.sluice-system.svc.cluster.local"
        );
        assert_eq!(
            internal_gateway(Some(&Ingress::default())),
            "sluice-internal.knative-serving.svc.cluster.local"
        );
    }
}
