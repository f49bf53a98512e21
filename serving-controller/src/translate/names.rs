//! Deterministic, readable names for everything translation emits, so users can find their
//! KIngress in Envoy's admin output and `sluice xds dump`. Virtual hosts and routes follow
//! net-kourier (`(ns/name).Rules[i]`, `(ns/name).Rules[i].Paths[/p]`); clusters are per
//! Service and port (`ns/svc:port`). Kubernetes names cannot contain `/`, so names built from
//! different objects never collide.

use crate::ingress::IngressKey;

use super::scopes::RouteTable;

/// The virtual host of `spec.rules[rule]`: `(ns/name).Rules[0]`.
pub fn virtual_host(ingress: &IngressKey, rule: usize) -> String {
    format!("({ingress}).Rules[{rule}]")
}

/// The route of one path of a rule: `(ns/name).Rules[0].Paths[/p]`.
pub fn route(ingress: &IngressKey, rule: usize, prefix: &str) -> String {
    format!("({ingress}).Rules[{rule}].Paths[{prefix}]")
}

/// The probe copy of that route: `(ns/name).Rules[0].Paths[/p].Probe`.
pub fn probe_route(ingress: &IngressKey, rule: usize, prefix: &str) -> String {
    format!("{}.Probe", route(ingress, rule, prefix))
}

/// The probe route answering probes on any path of a rule: `(ns/name).Rules[0].Probe`.
pub fn catch_all_probe_route(ingress: &IngressKey, rule: usize) -> String {
    format!("({ingress}).Rules[{rule}].Probe")
}

/// The route answering 404 for the paths of a host its rule does not route:
/// `(ns/name).Rules[0].NotFound`.
pub fn not_found_route(ingress: &IngressKey, rule: usize) -> String {
    format!("({ingress}).Rules[{rule}].NotFound")
}

/// The route configuration of a KIngress: `ns/name`.
pub fn route_configuration(ingress: &IngressKey) -> String {
    ingress.to_string()
}

/// The route configuration that redirects plain HTTP to HTTPS (`httpOption: Redirected`):
/// `ns/name/redirect`.
pub fn redirect_route_configuration(ingress: &IngressKey) -> String {
    format!("{ingress}/redirect")
}

/// The scope (SRDS) of a host in one route table: `external/host`, `internal/host`, …
pub fn scope(table: RouteTable, host: &str) -> String {
    format!("{}/{host}", table.name())
}

/// The cluster of a Service port: `ns/svc:80`.
pub fn cluster(namespace: &str, service: &str, port: i32) -> String {
    format!("{namespace}/{service}:{port}")
}

/// The Service (namespace, name) of the cluster [`cluster`]`(ns, svc, port)` as Envoy writes
/// it in stat names (`ns/svc_80`: the `:` becomes `_`), or `None` for another cluster or port.
pub fn service_of_stat_cluster(stat_cluster: &str, port: i32) -> Option<(&str, &str)> {
    let (namespace, service) = stat_cluster
        .strip_suffix(port.to_string().as_str())?
        .strip_suffix('_')?
        .split_once('/')?;
    (!namespace.is_empty() && !service.is_empty() && !service.contains('/'))
        .then_some((namespace, service))
}

/// The SDS secret of a Kubernetes Secret: `ns/name`.
pub fn secret(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The HTTPS filter chain of `spec.tls[index]`: `(ns/name).TLS[0]`.
pub fn filter_chain(ingress: &IngressKey, index: usize) -> String {
    format!("({ingress}).TLS[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_cluster_is_found_back_from_its_stat_name() {
        let stat = cluster("default", "hello-00001", 80).replace(':', "_");
        assert_eq!(
            service_of_stat_cluster(&stat, 80),
            Some(("default", "hello-00001"))
        );
        assert_eq!(
            service_of_stat_cluster("default/hello-00001_8080", 80),
            None
        );
        assert_eq!(service_of_stat_cluster("sluice_xds", 80), None);
        assert_eq!(service_of_stat_cluster("/x_80", 80), None);
    }
}
