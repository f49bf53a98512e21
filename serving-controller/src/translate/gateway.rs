//! What the gateway's own configuration contributes, whatever the KIngresses: its listeners,
//! the default certificates of `config-kourier` (as SDS secrets), the clusters of the external
//! authorization service and of the OpenTelemetry collector, and the readiness route.
//!
//! The readiness route answers `GET /ready` with `Host: internalkourier` on the internal HTTP
//! listener from Envoy's own admin `/ready` (as Kourier's gateway does): it exists only once
//! Envoy has its listeners and routes from the control plane, so a kubelet probe on it says
//! "this Envoy is configured", not merely "this process runs".

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteMatch, route, route_action, route_match,
};
use sluice_xds::Resource;
use sluice_xds::builders::duration;

use super::hcm::{EXT_AUTHZ_CLUSTER, OTEL_CLUSTER, ext_authz_disabled};
use super::listeners::{GatewayConfig, TlsChain, listeners};
use super::scopes::{self, RouteTable};
use super::{clusters, routes, tls};
use crate::kourier::{ExtAuthzProtocol, SecretRef, TracingProtocol};
use crate::lookup::Lookup;

/// The host of the readiness route (Kourier's, so existing probes keep working).
pub const READY_HOST: &str = "internalkourier";
/// The readiness route's path.
pub const READY_PATH: &str = "/ready";
/// The readiness route configuration.
pub const READY_ROUTE_CONFIG: &str = "sluice/ready";
/// The cluster of Envoy's own admin interface (on loopback).
pub const ENVOY_ADMIN_CLUSTER: &str = "sluice/envoy-admin";
/// The SDS secret of `certs-secret-*` (the external HTTPS listener's default certificate).
pub const DEFAULT_EXTERNAL_CERT: &str = "sluice/default-certificate";
/// The SDS secret of `cluster-cert-secret` (the internal HTTPS listener's certificate).
pub const CLUSTER_CERT: &str = "sluice/cluster-certificate";

/// A setting of the gateway's configuration that could not take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The `config-kourier` key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The gateway's own resources, and what in its configuration could not be applied.
#[derive(Debug, Default)]
pub struct GatewayResources {
    /// Listeners, config clusters, default-certificate secrets, the readiness route and scope.
    pub resources: Vec<Resource>,
    /// Settings that could not take effect (a default certificate's Secret missing, …).
    pub problems: Vec<ConfigProblem>,
}

/// The gateway's own resources for `config` and the KIngresses' TLS chains.
pub fn gateway_resources<'a>(
    config: &GatewayConfig,
    chains: impl IntoIterator<Item = &'a TlsChain> + Clone,
    lookup: &impl Lookup,
) -> GatewayResources {
    let k = &config.kourier;
    let mut out = GatewayResources::default();
    let mut cert = |key: &str, r: &Option<SecretRef>, sds: &str| -> Option<String> {
        let r = r.as_ref()?;
        match tls::config_secret(lookup, &r.namespace, &r.name, sds) {
            Ok(s) => {
                out.resources.push(Resource::new(s.name.clone(), &s));
                Some(sds.to_string())
            }
            Err(message) => {
                out.problems.push(ConfigProblem {
                    key: key.to_string(),
                    message,
                });
                None
            }
        }
    };
    let external = cert("certs-secret-name", &k.default_cert, DEFAULT_EXTERNAL_CERT);
    let internal = cert("cluster-cert-secret", &k.cluster_cert_secret, CLUSTER_CERT);
    out.resources.extend(
        listeners(config, chains, external.as_deref(), internal.as_deref())
            .into_iter()
            .map(|l| Resource::new(l.name.clone(), &l)),
    );
    // The readiness route, from Envoy's own admin `/ready`.
    let admin = {
        let mut a = config.envoy_admin;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a
    };
    out.resources.push(Resource::new(
        ENVOY_ADMIN_CLUSTER,
        &static_cluster(
            ENVOY_ADMIN_CLUSTER,
            &admin.ip().to_string(),
            admin.port().into(),
        ),
    ));
    let mut ready = Route {
        name: format!("{READY_ROUTE_CONFIG}/ready"),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path(READY_PATH.to_string())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                ENVOY_ADMIN_CLUSTER.to_string(),
            )),
            timeout: Some(duration(std::time::Duration::from_secs(1))),
            ..Default::default()
        })),
        ..Default::default()
    };
    if k.ext_authz.is_some() {
        ready.typed_per_filter_config.extend([ext_authz_disabled()]);
    }
    let rc = routes::route_configuration(
        READY_ROUTE_CONFIG,
        vec![routes::virtual_host(
            READY_ROUTE_CONFIG,
            routes::domains([READY_HOST]),
            vec![ready],
        )],
    );
    out.resources.push(Resource::new(READY_ROUTE_CONFIG, &rc));
    let scope = scopes::scope(RouteTable::Internal, READY_HOST, READY_ROUTE_CONFIG);
    out.resources
        .push(Resource::new(scope.name.clone(), &scope));
    if let Some(a) = &k.ext_authz {
        let mut c = clusters::dns_cluster(
            EXT_AUTHZ_CLUSTER,
            &a.host,
            a.port.into(),
            a.protocol == ExtAuthzProtocol::Grpc,
        );
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        out.resources.push(Resource::new(EXT_AUTHZ_CLUSTER, &c));
    }
    if let Some(t) = &k.tracing {
        let mut c = clusters::dns_cluster(
            OTEL_CLUSTER,
            &t.host,
            t.port.into(),
            t.protocol == TracingProtocol::Grpc,
        );
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        out.resources.push(Resource::new(OTEL_CLUSTER, &c));
    }
    out
}

/// A cluster with one fixed endpoint.
fn static_cluster(name: &str, host: &str, port: u32) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(std::time::Duration::from_millis(250))),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![clusters::lb_endpoint_at(host, port)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
