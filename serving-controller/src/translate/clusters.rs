//! Clusters and their endpoints.
//!
//! A split names a Service and a port. For an ordinary Service the cluster `ns/svc:port` (the
//! Service's port number, however the split named it) gets its endpoints over EDS, so scale
//! events touch one ClusterLoadAssignment and never the cluster. A Service of type
//! ExternalName becomes a LOGICAL_DNS cluster to `spec.externalName` and the Service port.
//! The upstream speaks h2c (HTTP/2 without TLS) when the Service port is named `http2` or
//! `h2c`, or has appProtocol `kubernetes.io/h2c` — gRPC needs it.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Http2ProtocolOptions, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_xds::builders::{ads_source, any, duration};

use super::endpoints::{self, Endpoint as Addr};
use super::{TranslateError, names};
use crate::ingress::{IngressBackendSplit, IngressKey};
use crate::lookup::Lookup;

/// How long Envoy waits for an upstream TCP connection (net-kourier's value).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The key under which upstream HTTP options are set on a cluster.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The appProtocol that marks a Service port as h2c.
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// Envoy's circuit-breaker limits per cluster (connections, pending requests, requests,
/// retries) default to 1024: a busy revision would get 503s from the gateway itself, which
/// Knative users never see from Kourier's or Istio's gateways under load. Sluice lifts them to
/// the maximum, as Istio does; per-instance limits (`containerConcurrency`) are enforced
/// where requests reach instances, not here.
pub const UNLIMITED: u32 = u32::MAX;

/// The lifted circuit-breaker thresholds (see [`UNLIMITED`]).
pub fn circuit_breakers() -> CircuitBreakers {
    let max = Some(UInt32Value { value: UNLIMITED });
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: max,
            max_pending_requests: max,
            max_requests: max,
            max_retries: max,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Whether a Service port speaks h2c.
pub fn is_h2c(port: &ServicePort) -> bool {
    matches!(port.name.as_deref(), Some("http2" | "h2c"))
        || port.app_protocol.as_deref() == Some(H2C_APP_PROTOCOL)
}

fn base_cluster(
    name: &str,
    discovery: cluster::DiscoveryType,
    h2c: bool,
    per_endpoint: Option<u32>,
) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        circuit_breakers: Some(circuit_breakers()),
        ..Default::default()
    };
    if let (Some(limit), Some(cb)) = (per_endpoint, c.circuit_breakers.as_mut()) {
        // HTTP/1.1 carries one request per connection: `limit` connections per endpoint is
        // `limit` requests. h2c: one connection, `limit` streams (below).
        let connections = if h2c { 1 } else { limit };
        cb.per_host_thresholds = vec![circuit_breakers::Thresholds {
            max_connections: Some(UInt32Value { value: connections }),
            ..Default::default()
        }];
    }
    if h2c {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions {
                                    max_concurrent_streams: per_endpoint
                                        .map(|value| UInt32Value { value }),
                                    ..Default::default()
                                },
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(&opts));
    }
    c
}

/// A cluster whose endpoints come over EDS (the assignment is named like the cluster).
pub fn eds_cluster(name: &str, h2c: bool) -> Cluster {
    limited_eds_cluster(name, h2c, None)
}

/// [`eds_cluster`] with at most `per_endpoint` requests in flight to each endpoint (the
/// Service's [`crate::lookup::CONCURRENCY_ANNOTATION`]); the rest wait in Envoy's queue.
pub fn limited_eds_cluster(name: &str, h2c: bool, per_endpoint: Option<u32>) -> Cluster {
    let mut c = base_cluster(name, cluster::DiscoveryType::Eds, h2c, per_endpoint);
    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ads_source()),
        service_name: String::new(),
    });
    c
}

/// A cluster resolving `host` by DNS (an ExternalName Service), IPv4 preferred.
pub fn dns_cluster(name: &str, host: &str, port: u32, h2c: bool) -> Cluster {
    let mut c = base_cluster(name, cluster::DiscoveryType::LogicalDns, h2c, None);
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    c.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![lb_endpoint_at(host, port)],
            ..Default::default()
        }],
        ..Default::default()
    });
    c
}

/// One endpoint at `host:port` (an IP, or a name for DNS clusters).
pub(crate) fn lb_endpoint_at(host: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host.to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The EDS assignment of a cluster: one locality with every endpoint (none is valid: requests
/// then get 503 until endpoints appear).
pub fn load_assignment(cluster: &str, endpoints: &[Addr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|(ip, port)| lb_endpoint_at(&ip.to_string(), *port))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What one split resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The cluster.
    pub cluster: Cluster,
    /// Its EDS assignment (none for DNS clusters).
    pub assignment: Option<ClusterLoadAssignment>,
}

impl Upstream {
    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.cluster.name
    }
}

/// The cluster name: `ns/svc:port`, or `…/http1` for an h2c port forced to HTTP/1.1.
fn named(base: String, h2c: bool, http2_allowed: bool) -> String {
    if h2c && !http2_allowed {
        format!("{base}/http1")
    } else {
        base
    }
}

fn port_display(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}

/// Resolves the split at `field` (e.g. `spec.rules[0].http.paths[0].splits[1]`). With
/// `http2_allowed` false (the KIngress's `kourier.knative.dev/disable-http2`) the backend is
/// spoken to over HTTP/1.1 whatever its port says, through a cluster of its own
/// (`ns/svc:port/http1`, so KIngresses sharing the Service keep theirs).
pub(crate) fn upstream(
    lookup: &impl Lookup,
    ingress: &IngressKey,
    split: &IngressBackendSplit,
    field: &str,
    http2_allowed: bool,
    internal_tls_ca: Option<&[u8]>,
) -> Result<Upstream, TranslateError> {
    // Knative's system-internal-tls: the same cluster over TLS, named apart.
    let tls = |mut up: Upstream, h2: bool| {
        if let Some(ca) = internal_tls_ca {
            up.cluster.transport_socket = Some(super::internal_tls::transport_socket(
                ca,
                &split.service_namespace,
                h2,
            ));
        }
        up
    };
    let named = |base: String, h2c: bool, http2_allowed: bool| {
        let name = named(base, h2c, http2_allowed);
        match internal_tls_ca {
            Some(_) => super::internal_tls::cluster_name(&name),
            None => name,
        }
    };
    let (ns, name) = (&split.service_namespace, &split.service_name);
    let service = lookup
        .service(ns, name)
        .ok_or_else(|| TranslateError::ServiceNotFound {
            ingress: ingress.clone(),
            field: format!("{field}.serviceName"),
            namespace: ns.clone(),
            name: name.clone(),
        })?;
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    let matched = ports.iter().find(|p| match &split.service_port {
        IntOrString::Int(n) => p.port == *n,
        IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
    });
    let port_not_found = || TranslateError::PortNotFound {
        ingress: ingress.clone(),
        field: format!("{field}.servicePort"),
        service: format!("{ns}/{name}"),
        port: port_display(&split.service_port),
    };

    if spec.type_.as_deref() == Some("ExternalName") {
        let host = spec
            .external_name
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TranslateError::ExternalNameMissing {
                ingress: ingress.clone(),
                field: format!("{field}.serviceName"),
                service: format!("{ns}/{name}"),
            })?;
        // An ExternalName Service need not list ports: a numeric port is used as is.
        let number = match (matched, &split.service_port) {
            (Some(p), _) => p.port,
            (None, IntOrString::Int(n)) => *n,
            (None, IntOrString::String(_)) => return Err(port_not_found()),
        };
        let port = u32::try_from(number).map_err(|_| port_not_found())?;
        let h2c = matched.is_some_and(is_h2c);
        let cluster_name = named(names::cluster(ns, name, number), h2c, http2_allowed);
        return Ok(tls(
            Upstream {
                cluster: dns_cluster(&cluster_name, &host, port, h2c && http2_allowed),
                assignment: None,
            },
            h2c && http2_allowed,
        ));
    }

    let port = matched.ok_or_else(port_not_found)?;
    let h2c = is_h2c(port);
    let cluster_name = named(names::cluster(ns, name, port.port), h2c, http2_allowed);
    let addrs = endpoints::ready_endpoints(lookup, ns, name, port);
    Ok(tls(
        Upstream {
            cluster: limited_eds_cluster(
                &cluster_name,
                h2c && http2_allowed,
                crate::lookup::endpoint_concurrency(&service),
            ),
            assignment: Some(load_assignment(&cluster_name, &addrs)),
        },
        h2c && http2_allowed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_concurrency_limits_each_endpoint() {
        let http1 = limited_eds_cluster("ns/a:80", false, Some(3));
        let cb = http1.circuit_breakers.as_ref().expect("circuit breakers");
        assert_eq!(cb.per_host_thresholds.len(), 1);
        assert_eq!(
            cb.per_host_thresholds[0].max_connections.map(|v| v.value),
            Some(3),
            "HTTP/1.1: one request per connection"
        );
        let h2c = limited_eds_cluster("ns/b:80", true, Some(3));
        let cb = h2c.circuit_breakers.as_ref().expect("circuit breakers");
        assert_eq!(
            cb.per_host_thresholds[0].max_connections.map(|v| v.value),
            Some(1)
        );
        let opts = &h2c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        let opts: HttpProtocolOptions =
            prost::Message::decode(opts.value.as_slice()).expect("HttpProtocolOptions");
        let Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) =
            opts.upstream_protocol_options
        else {
            panic!("explicit HTTP config")
        };
        let Some(
            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2),
        ) = e.protocol_config
        else {
            panic!("h2")
        };
        assert_eq!(h2.max_concurrent_streams.map(|v| v.value), Some(3));
        // Unlimited: no per-endpoint limit at all.
        let free = eds_cluster("ns/c:80", false);
        assert!(
            free.circuit_breakers
                .expect("cb")
                .per_host_thresholds
                .is_empty()
        );
    }

    #[test]
    fn every_cluster_lifts_envoys_1024_circuit_breakers() {
        for c in [
            eds_cluster("ns/svc:80", false),
            eds_cluster("ns/grpc:80", true),
            dns_cluster("ns/ext:80", "example.org", 80, false),
        ] {
            let t = &c
                .circuit_breakers
                .as_ref()
                .expect("circuit breakers")
                .thresholds;
            assert_eq!(t.len(), 1, "{}", c.name);
            for limit in [
                &t[0].max_connections,
                &t[0].max_pending_requests,
                &t[0].max_requests,
                &t[0].max_retries,
            ] {
                assert_eq!(
                    limit.as_ref().map(|v| v.value),
                    Some(UNLIMITED),
                    "{}",
                    c.name
                );
            }
        }
    }
}
