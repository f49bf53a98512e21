//! Route → KIngress (knative/serving `pkg/reconciler/route/resources/ingress.go`).
//!
//! For each target group in tag order (`""` first), a `ClusterLocal` rule on the cluster-local
//! names and, unless the Route is cluster-local, an `ExternalIP` rule on the external host.
//! Each rule has one path splitting traffic over the group's Revisions with a non-zero
//! percent; every split goes to the Revision's Service (named as the Revision, port 80) and
//! appends `Knative-Serving-Revision` and `Knative-Serving-Namespace`. With tag header routing
//! on, the main rules first match `Knative-Serving-Tag: <tag>` for each tag, and their default
//! path appends `Knative-Serving-Default-Route: true`; tag rules append `Knative-Serving-Tag`.
//!
//! Differences from upstream: the class annotation is always Sluice's (standalone has no
//! other ingress), h2c Revisions also use port 80 (the runtime names the Service port `h2c`,
//! which the translation reads), and no `networking.knative.dev/rollout` annotation is written
//! (gradual rollout is not implemented).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::ServingConfig;
use super::configuration::controller_ref;
use super::domains::{
    TemplateError, TemplateValues, check_host, cluster_local_domain, cluster_local_hosts,
};
use super::traffic::{DEFAULT_TARGET, TrafficConfig};
use super::types::{Route, TrafficTarget};
use super::{
    DEFAULT_ROUTE_HEADER, LAST_APPLIED_ANNOTATION, NAMESPACE_HEADER, REVISION_HEADER, ROUTE_LABEL,
    ROUTE_NAMESPACE_LABEL, TAG_HEADER, VISIBILITY_CLUSTER_LOCAL, VISIBILITY_LABEL,
};
use crate::ingress::{
    HeaderMatch, HttpIngressPath, HttpIngressRuleValue, INGRESS_CLASS_ANNOTATION, Ingress,
    IngressBackendSplit, IngressRule, IngressSpec, SLUICE_INGRESS_CLASS, Visibility,
};

/// The port of every Revision's Service.
pub const REVISION_SERVICE_PORT: i32 = 80;

/// Where one target group (the Route, or one tag) is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHosts {
    /// `{name}.{ns}`, `{name}.{ns}.svc`, `{name}.{ns}.svc.cluster.local`.
    pub cluster_local: Vec<String>,
    /// The external host; `None` when the Route is cluster-local (label
    /// `networking.knative.dev/visibility: cluster-local`, or no `config-domain` entry matches).
    pub external: Option<String>,
}

impl TargetHosts {
    /// The URL Knative reports: `http://` + the external host, else the cluster-local one.
    pub fn url(&self) -> String {
        let host = self
            .external
            .as_deref()
            .or(self.cluster_local.last().map(String::as_str))
            .unwrap_or_default();
        format!("http://{host}")
    }
}

/// Whether a Route is labelled cluster-local.
pub fn is_cluster_local(route: &Route) -> bool {
    route
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(VISIBILITY_LABEL))
        .is_some_and(|v| v == VISIBILITY_CLUSTER_LOCAL)
}

/// The first label of a Route's target group's hosts: the Route's name, or for a tag
/// `config-network`'s `tag-template` (`{tag}-{route}` by default). It is also the name of the
/// group's placeholder Service on a cluster.
pub fn host_name(route: &Route, tag: &str, cfg: &ServingConfig) -> String {
    if tag.is_empty() {
        return route.name().to_string();
    }
    let empty = BTreeMap::new();
    cfg.network.tag_template.render(&TemplateValues {
        name: route.name(),
        namespace: route.namespace(),
        domain: "",
        tag,
        labels: route.metadata.labels.as_ref().unwrap_or(&empty),
        annotations: route.metadata.annotations.as_ref().unwrap_or(&empty),
    })
}

/// The hosts of a Route's target group (`tag` = `""` for the Route itself).
pub fn target_hosts(
    route: &Route,
    tag: &str,
    cfg: &ServingConfig,
) -> Result<TargetHosts, TemplateError> {
    let empty = BTreeMap::new();
    let labels = route.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = route.metadata.annotations.as_ref().unwrap_or(&empty);
    let values = |name, domain| TemplateValues {
        name,
        namespace: route.namespace(),
        domain,
        tag,
        labels,
        annotations,
    };
    let host_name = host_name(route, tag, cfg);
    check_host(&cluster_local_domain(&host_name, route.namespace()))?;
    let external = match cfg.domain.lookup(labels) {
        Some(domain) if !is_cluster_local(route) => {
            let host = cfg
                .network
                .domain_template
                .render(&values(&host_name, domain));
            check_host(&host)?;
            Some(host)
        }
        _ => None,
    };
    Ok(TargetHosts {
        cluster_local: cluster_local_hosts(&host_name, route.namespace()),
        external,
    })
}

/// The KIngress of a Route whose traffic resolved.
pub fn make_ingress(
    route: &Route,
    traffic: &TrafficConfig,
    cfg: &ServingConfig,
) -> Result<Ingress, TemplateError> {
    let ns = route.namespace();
    let tag_headers = cfg.features.tag_header_based_routing;
    let mut rules = Vec::new();
    for (name, targets) in &traffic.targets {
        let hosts = target_hosts(route, name, cfg)?;
        let mut groups = vec![(Visibility::ClusterLocal, hosts.cluster_local)];
        if let Some(external) = hosts.external {
            groups.push((Visibility::ExternalIP, vec![external]));
        }
        for (visibility, hosts) in groups {
            let mut path = base_path(ns, targets);
            let paths = match (tag_headers, name.as_str()) {
                (false, _) => vec![path],
                (true, DEFAULT_TARGET) => {
                    path.append_headers
                        .insert(DEFAULT_ROUTE_HEADER.into(), "true".into());
                    let mut paths: Vec<HttpIngressPath> = traffic
                        .targets
                        .iter()
                        .filter(|(tag, _)| !tag.is_empty())
                        .map(|(tag, targets)| {
                            let mut p = base_path(ns, targets);
                            p.headers
                                .insert(TAG_HEADER.into(), HeaderMatch { exact: tag.clone() });
                            p
                        })
                        .collect();
                    paths.push(path);
                    paths
                }
                (true, tag) => {
                    path.append_headers
                        .insert(TAG_HEADER.into(), tag.to_string());
                    vec![path]
                }
            };
            rules.push(IngressRule {
                hosts,
                visibility: Some(visibility),
                http: Some(HttpIngressRuleValue { paths }),
            });
        }
    }
    Ok(Ingress {
        metadata: ingress_meta(route),
        spec: IngressSpec {
            rules,
            ..IngressSpec::default()
        },
        ..Ingress::default()
    })
}

fn ingress_meta(route: &Route) -> ObjectMeta {
    let mut labels = route.metadata.labels.clone().unwrap_or_default();
    labels.insert(ROUTE_LABEL.into(), route.name().to_string());
    labels.insert(ROUTE_NAMESPACE_LABEL.into(), route.namespace().to_string());
    let mut annotations = route.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(LAST_APPLIED_ANNOTATION);
    annotations.insert(INGRESS_CLASS_ANNOTATION.into(), SLUICE_INGRESS_CLASS.into());
    ObjectMeta {
        name: route.metadata.name.clone(),
        namespace: route.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![controller_ref(Route::KIND, &route.metadata)]),
        ..ObjectMeta::default()
    }
}

/// One path splitting over the group's Revisions with a non-zero percent.
fn base_path(ns: &str, targets: &[TrafficTarget]) -> HttpIngressPath {
    let splits = targets
        .iter()
        .filter(|t| t.percent.unwrap_or(0) > 0)
        .map(|t| IngressBackendSplit {
            service_namespace: ns.to_string(),
            service_name: t.revision_name.clone(),
            service_port: IntOrString::Int(REVISION_SERVICE_PORT),
            percent: t.percent.unwrap_or(0),
            append_headers: BTreeMap::from([
                (REVISION_HEADER.to_string(), t.revision_name.clone()),
                (NAMESPACE_HEADER.to_string(), ns.to_string()),
            ]),
        })
        .collect();
    HttpIngressPath {
        splits,
        ..HttpIngressPath::default()
    }
}

/// The request timeout of each Revision the KIngress sends traffic to, keyed by (namespace,
/// Service name) as [`crate::Objects::timeouts`] (the Revision's `timeoutSeconds`, else the
/// configured default). The gateway makes the maximum over a route's splits its timeout.
pub fn revision_timeouts(
    route: &Route,
    traffic: &TrafficConfig,
    cfg: &ServingConfig,
) -> BTreeMap<(String, String), Duration> {
    traffic
        .targets
        .values()
        .flatten()
        .filter(|t| t.percent.unwrap_or(0) > 0)
        .filter_map(|t| {
            let rev = traffic.revisions.get(&t.revision_name)?;
            let secs = rev
                .spec
                .timeout_seconds
                .filter(|s| *s > 0)
                .unwrap_or(cfg.defaults.revision_timeout_seconds);
            let secs = u64::try_from(secs).unwrap_or(0);
            Some((
                (route.namespace().to_string(), t.revision_name.clone()),
                Duration::from_secs(secs),
            ))
        })
        .collect()
}
