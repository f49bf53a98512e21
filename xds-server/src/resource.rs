//! xDS resources: type URLs, the [`Resource`] value the cache stores, and the
//! references between resources that the consistency check follows.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, ScopedRouteConfiguration, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.config.route.v3.ScopedRouteConfiguration` (SRDS).
pub const SCOPED_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The order in which additions are pushed so that Envoy never sees a reference
/// to something it does not have yet ("make before break"): secrets and
/// clusters before the listeners and routes that use them, endpoints right after
/// their clusters. Removals go in the reverse order.
pub const PUSH_ORDER: [&str; 6] = [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE];

/// Type URLs every snapshot carries (empty when it has none of that type), so
/// that a wildcard request is answered even for a type with no resources.
pub const SNAPSHOT_TYPES: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET];

/// Whether a type is subscribed as a wildcard by default (LDS and CDS), as
/// opposed to by resource name (RDS, EDS, SDS, SRDS).
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER || type_url == SCOPED_ROUTE
}

/// Position of a type in [`PUSH_ORDER`]; unknown types go last.
pub fn push_rank(type_url: &str) -> usize {
    PUSH_ORDER
        .iter()
        .position(|t| *t == type_url)
        .unwrap_or(PUSH_ORDER.len())
}

/// Expands a short type name as users type it (`clusters`, `routes`,
/// `listeners`, `endpoints`, `secrets`, `scoped-routes`, also singular and the
/// xDS acronyms `cds`, `rds`, …) into a type URL. Full type URLs pass through.
pub fn type_url_from_short(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.trim_end_matches('s') {
        "cluster" | "cd" | "cds" => CLUSTER,
        "route" | "rd" | "rds" => ROUTE,
        "listener" | "ld" | "lds" => LISTENER,
        "endpoint" | "ed" | "eds" | "clusterloadassignment" => ENDPOINT,
        "secret" | "sd" | "sds" => SECRET,
        "scoped-route" | "scopedroute" | "srd" | "srds" => SCOPED_ROUTE,
        _ => return PUSH_ORDER.into_iter().find(|t| *t == name),
    })
}

/// The short, human name of a type URL (`clusters`, `routes`, …).
pub fn short_name(type_url: &str) -> &str {
    match type_url {
        CLUSTER => "clusters",
        ROUTE => "routes",
        LISTENER => "listeners",
        ENDPOINT => "endpoints",
        SECRET => "secrets",
        SCOPED_ROUTE => "scoped-routes",
        other => other.rsplit('/').next().unwrap_or(other),
    }
}

/// A reference from one resource to another, by type URL and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref {
    /// Type URL of the referenced resource.
    pub type_url: &'static str,
    /// Name of the referenced resource.
    pub name: String,
}

/// One named xDS resource, encoded, with a content version.
///
/// Cloning is cheap: the encoded body, name, version and references are shared (one copy
/// whether the resource sits in the cache, in an update, or in a caller's own index — at
/// 10k KIngresses that is tens of thousands of resources held in several places).
#[derive(Clone, PartialEq)]
pub struct Resource {
    shared: Arc<Shared>,
    pub(crate) generation: u64,
}

#[derive(PartialEq)]
struct Shared {
    name: String,
    /// The type URL: one of xDS's (static, not one copy per resource) or, for a type this
    /// crate does not know, its own.
    type_url: Cow<'static, str>,
    /// The encoded message.
    value: Vec<u8>,
    version: String,
    version_id: u64,
    refs: Box<[Ref]>,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("type", &short_name(&self.shared.type_url))
            .field("name", &self.shared.name)
            .field("version", &self.shared.version)
            .field("generation", &self.generation)
            .field("bytes", &self.shared.value.len())
            .finish()
    }
}

/// Why a resource could not be made from an encoded `Any`.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The bytes do not decode as the message the type URL names.
    #[error("resource {name:?} of type {type_url} does not decode: {source}")]
    Decode {
        /// Resource name.
        name: String,
        /// Its type URL.
        type_url: String,
        /// The protobuf error.
        source: prost::DecodeError,
    },
    /// An empty resource name: xDS resources are addressed by name.
    #[error("a resource of type {type_url} has an empty name")]
    EmptyName {
        /// Its type URL.
        type_url: String,
    },
}

impl Resource {
    /// Wraps a typed Envoy message. References to other resources (RDS names in
    /// listeners, clusters in routes, EDS assignments of clusters, SDS secrets)
    /// are recorded for the consistency check.
    pub fn new<M: Message + Name>(name: impl Into<String>, message: &M) -> Self {
        let body = Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        };
        let name = name.into();
        // Decoding our own encoding of a known type cannot fail; fall back to no refs.
        let refs = references(&name, &body).unwrap_or_default();
        Self::with_refs(name, body, refs)
    }

    /// Wraps an already encoded resource. Known Envoy types are decoded once to
    /// find their references; other types are carried as opaque bytes.
    pub fn from_any(name: impl Into<String>, body: Any) -> Result<Self, ResourceError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ResourceError::EmptyName {
                type_url: body.type_url,
            });
        }
        let refs = references(&name, &body).map_err(|source| ResourceError::Decode {
            name: name.clone(),
            type_url: body.type_url.clone(),
            source,
        })?;
        Ok(Self::with_refs(name, body, refs))
    }

    fn with_refs(name: String, body: Any, mut refs: Vec<Ref>) -> Self {
        refs.sort();
        refs.dedup();
        let version = content_version(&body);
        let type_url = match PUSH_ORDER.into_iter().find(|t| *t == body.type_url) {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(body.type_url),
        };
        Self {
            shared: Arc::new(Shared {
                name,
                type_url,
                value: body.value,
                version_id: version_id(&version),
                version,
                refs: refs.into_boxed_slice(),
            }),
            generation: 0,
        }
    }

    /// Resource name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Type URL.
    pub fn type_url(&self) -> &str {
        &self.shared.type_url
    }

    /// The encoded resource, as the `Any` a response carries (a copy of its bytes).
    pub fn body(&self) -> Any {
        Any {
            type_url: self.shared.type_url.to_string(),
            value: self.shared.value.clone(),
        }
    }

    /// The encoded message's size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.shared.value.len()
    }

    /// Content version: a stable hash of type and bytes. Equal content gives the
    /// same version across restarts, so a reconnecting Delta client that already
    /// has a resource is not sent it again.
    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// The content version as a number ([`version_id`] of [`Self::version`]), for maps that
    /// track what each client holds without a string per name.
    pub fn version_id(&self) -> u64 {
        self.shared.version_id
    }

    /// Cache generation at which this resource last changed (0 until stored).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Resources this one refers to.
    pub fn refs(&self) -> &[Ref] {
        &self.shared.refs
    }

    /// Decodes the resource as `M`.
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.shared.value.as_slice())
    }
}

/// A version string as a number: ours are 16 hex digits and map to their value; any other
/// (a version a reconnecting client reports from another server) to a hash of it, which
/// equals none of ours in practice, so that resource is sent again.
pub fn version_id(version: &str) -> u64 {
    match u64::from_str_radix(version, 16) {
        Ok(n) if version.len() == 16 => n,
        _ => xxhash_rust::xxh3::xxh3_64(version.as_bytes()),
    }
}

fn content_version(body: &Any) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(body.type_url.as_bytes());
    h.update(&[0]);
    h.update(&body.value);
    format!("{:016x}", h.digest())
}

/// References of a known resource type; unknown types have none.
fn references(name: &str, body: &Any) -> Result<Vec<Ref>, prost::DecodeError> {
    let bytes = body.value.as_slice();
    let mut refs = Vec::new();
    match body.type_url.as_str() {
        LISTENER => {
            let l = Listener::decode(bytes)?;
            let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
            for chain in chains {
                for f in &chain.filters {
                    filter_refs(f, &mut refs)?;
                }
                if let Some(ts) = &chain.transport_socket {
                    transport_socket_refs(ts, &mut refs)?;
                }
            }
        }
        ROUTE => {
            let rc = RouteConfiguration::decode(bytes)?;
            for vh in &rc.virtual_hosts {
                for r in &vh.routes {
                    if let Some(Action::Route(ra)) = &r.action {
                        match &ra.cluster_specifier {
                            Some(ClusterSpecifier::Cluster(c)) => refs.push(cluster_ref(c)),
                            Some(ClusterSpecifier::WeightedClusters(w)) => {
                                refs.extend(w.clusters.iter().map(|c| cluster_ref(&c.name)))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        SCOPED_ROUTE => {
            let s = ScopedRouteConfiguration::decode(bytes)?;
            if !s.route_configuration_name.is_empty() {
                refs.push(Ref {
                    type_url: ROUTE,
                    name: s.route_configuration_name,
                });
            }
        }
        CLUSTER => {
            let c = Cluster::decode(bytes)?;
            // DiscoveryType::Eds = 3.
            if let Some(ClusterDiscoveryType::Type(3)) = c.cluster_discovery_type {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(name);
                refs.push(Ref {
                    type_url: ENDPOINT,
                    name: service.to_string(),
                });
            }
            if let Some(ts) = &c.transport_socket {
                transport_socket_refs(ts, &mut refs)?;
            }
        }
        ENDPOINT => {
            ClusterLoadAssignment::decode(bytes)?;
        }
        SECRET => {
            Secret::decode(bytes)?;
        }
        _ => {}
    }
    Ok(refs)
}

fn cluster_ref(name: &str) -> Ref {
    Ref {
        type_url: CLUSTER,
        name: name.to_string(),
    }
}

fn filter_refs(f: &Filter, refs: &mut Vec<Ref>) -> Result<(), prost::DecodeError> {
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return Ok(());
    };
    if any.type_url != HttpConnectionManager::type_url() {
        return Ok(());
    }
    let hcm = HttpConnectionManager::decode(any.value.as_slice())?;
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => refs.push(Ref {
            type_url: ROUTE,
            name: rds.route_config_name,
        }),
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let any = Any {
                type_url: ROUTE.to_string(),
                value: rc.encode_to_vec(),
            };
            refs.extend(references(&rc.name, &any)?);
        }
        _ => {}
    }
    Ok(())
}

fn transport_socket_refs(
    ts: &TransportSocket,
    refs: &mut Vec<Ref>,
) -> Result<(), prost::DecodeError> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Ok(());
    };
    let common = if any.type_url == DownstreamTlsContext::type_url() {
        DownstreamTlsContext::decode(any.value.as_slice())?.common_tls_context
    } else if any.type_url == UpstreamTlsContext::type_url() {
        UpstreamTlsContext::decode(any.value.as_slice())?.common_tls_context
    } else {
        None
    };
    if let Some(common) = common {
        common_tls_refs(&common, refs);
    }
    Ok(())
}

fn common_tls_refs(common: &CommonTlsContext, refs: &mut Vec<Ref>) {
    // Only secrets fetched over ADS are ours to check.
    let from_ads =
        |c: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig| {
            c.sds_config.as_ref().is_some_and(|s| {
            matches!(
                s.config_source_specifier,
                Some(envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_))
            )
        })
        };
    for c in &common.tls_certificate_sds_secret_configs {
        if from_ads(c) {
            refs.push(Ref {
                type_url: SECRET,
                name: c.name.clone(),
            });
        }
    }
    if let Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) =
        &common.validation_context_type
        && from_ads(c)
    {
        refs.push(Ref {
            type_url: SECRET,
            name: c.name.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::route::v3::{
        Route, RouteAction, VirtualHost, WeightedCluster, weighted_cluster::ClusterWeight,
    };

    fn weighted_route(clusters: &[&str]) -> RouteConfiguration {
        RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(
                            WeightedCluster {
                                clusters: clusters
                                    .iter()
                                    .map(|c| ClusterWeight {
                                        name: c.to_string(),
                                        weight: Some(
                                            envoy_types::pb::google::protobuf::UInt32Value {
                                                value: 50,
                                            },
                                        ),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn routes_refer_to_their_weighted_clusters() {
        let r = Resource::new("rc", &weighted_route(&["b", "a", "b"]));
        assert_eq!(r.refs(), &[cluster_ref("a"), cluster_ref("b")]);
    }

    #[test]
    fn eds_cluster_refers_to_its_assignment() {
        let c = Cluster {
            name: "default/hello:80".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(3)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        let r = Resource::new(c.name.clone(), &c);
        assert_eq!(
            r.refs(),
            &[Ref {
                type_url: ENDPOINT,
                name: "default/hello:80".into()
            }]
        );
    }

    #[test]
    fn version_follows_content_only() {
        let a = Resource::new("rc", &weighted_route(&["a"]));
        let b = Resource::new("rc", &weighted_route(&["a"]));
        let c = Resource::new("rc", &weighted_route(&["c"]));
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn garbage_bytes_are_an_error_naming_the_resource() {
        let err = Resource::from_any(
            "bad",
            Any {
                type_url: CLUSTER.into(),
                value: vec![0xff, 0xff, 0xff],
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"bad\""), "{err}");
    }

    #[test]
    fn short_names_expand() {
        assert_eq!(type_url_from_short("clusters"), Some(CLUSTER));
        assert_eq!(type_url_from_short("EDS"), Some(ENDPOINT));
        assert_eq!(type_url_from_short(ROUTE), Some(ROUTE));
        assert_eq!(type_url_from_short("widgets"), None);
    }
}
