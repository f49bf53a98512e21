//! Constructors for the common Envoy resources of an HTTP gateway: a listener
//! whose routes come over RDS, a route configuration of weighted routes, an
//! EDS cluster, and its endpoints. Enough to drive Envoy from a few lines
//! (tests, the demo, users of this crate); a translator with richer needs
//! builds its own messages.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, Http2ProtocolOptions, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route,
    route_action, route_match, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

/// Packs a message into an `Any`.
pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A protobuf duration.
///
/// Saturates at protobuf's (and Envoy's) longest duration, 315,576,000,000 s: a longer one
/// would be refused by Envoy, and `as i64` would wrap a huge one to negative.
pub fn duration(d: Duration) -> PbDuration {
    const MAX_SECONDS: u64 = 315_576_000_000;
    if d.as_secs() >= MAX_SECONDS {
        return PbDuration {
            seconds: MAX_SECONDS as i64,
            nanos: 0,
        };
    }
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A socket address.
pub fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port() as u32)),
            ..Default::default()
        })),
    }
}

/// A config source pointing at the ADS stream.
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: 2, // V3
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource::default(),
        )),
        ..Default::default()
    }
}

/// An HTTP listener on `addr` (HTTP/1.1 and h2c, websocket upgrades allowed)
/// whose routes come from RouteConfiguration `route_config` over ADS.
pub fn http_listener(name: &str, addr: SocketAddr, route_config: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A route configuration with one virtual host per `(name, domains, routes)`.
pub fn route_config(name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// A virtual host.
pub fn virtual_host(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_string(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

/// A prefix route splitting traffic over `(cluster, weight)` pairs, with no
/// route timeout (Envoy's default would cut requests at 15 s).
pub fn weighted_route(prefix: &str, clusters: &[(&str, u32)]) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters: clusters
                        .iter()
                        .map(|(name, weight)| ClusterWeight {
                            name: name.to_string(),
                            weight: Some(UInt32Value { value: *weight }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
            timeout: Some(duration(Duration::ZERO)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A cluster whose endpoints come over EDS (assignment named like the
/// cluster); `h2c` makes the upstream protocol HTTP/2 without TLS.
pub fn eds_cluster(name: &str, h2c: bool) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration(Duration::from_secs(2))),
        ..Default::default()
    };
    if h2c {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            any(&opts),
        );
    }
    c
}

/// The endpoints of `cluster`: one locality with every address.
pub fn load_assignment(cluster: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(*a)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;
    use crate::resource::{CLUSTER, ENDPOINT, ROUTE};

    #[test]
    fn resources_reference_each_other() {
        let l = Resource::new(
            "http",
            &http_listener("http", "127.0.0.1:8080".parse().unwrap(), "rc"),
        );
        assert_eq!(l.refs()[0].type_url, ROUTE);
        assert_eq!(l.refs()[0].name, "rc");
        let c = Resource::new("a", &eds_cluster("a", true));
        assert_eq!(c.refs()[0].type_url, ENDPOINT);
        let rc = route_config(
            "rc",
            vec![virtual_host(
                "vh",
                &["*"],
                vec![weighted_route("/", &[("a", 1), ("b", 0)])],
            )],
        );
        let r = Resource::new("rc", &rc);
        assert_eq!(r.refs().iter().filter(|x| x.type_url == CLUSTER).count(), 2);
    }
}
