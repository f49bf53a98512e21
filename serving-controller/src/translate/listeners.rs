//! The gateway's four listeners and their HTTP connection managers.
//!
//! - external HTTP and internal HTTP: one filter chain, always present (an empty gateway
//!   answers 404);
//! - external HTTPS and internal HTTPS: a `tls_inspector` listener filter and one filter chain
//!   per `spec.tls` block of that visibility, matched on SNI (`server_names` = its hosts) and
//!   terminating TLS with the block's SDS secret. Present only when they have a chain: Envoy
//!   rejects a listener without filter chains.
//!
//! The connection managers are [`super::hcm`]'s. From `config-kourier`, as in net-kourier:
//! `listen-ip-addresses` replaces the listeners' IP (the first address, then
//! `additional_addresses`), `enable-proxy-protocol` requires a PROXY header on the external
//! HTTP and both HTTPS listeners, `cipher-suites` applies to every TLS chain,
//! `certs-secret-*` adds a default chain (any SNI) to the external HTTPS listener and
//! `cluster-cert-secret` one to the internal HTTPS listener.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::listener::v3::{
    AdditionalAddress, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
    listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use sluice_xds::builders::{any, socket_address};

use super::hcm::http_connection_manager;
use super::scopes::RouteTable;
use super::tls;
use crate::ingress::Visibility;
use crate::kourier::KourierConfig;

/// Name of the external plain-HTTP listener.
pub const EXTERNAL_HTTP: &str = "external-http";
/// Name of the internal plain-HTTP listener.
pub const INTERNAL_HTTP: &str = "internal-http";
/// Name of the external HTTPS listener.
pub const EXTERNAL_HTTPS: &str = "external-https";
/// Name of the internal HTTPS listener.
pub const INTERNAL_HTTPS: &str = "internal-https";

/// Where the gateway listens, and its `config-kourier`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// External plain HTTP (`--external-http`).
    pub external_http: SocketAddr,
    /// Internal plain HTTP (`--internal-http`).
    pub internal_http: SocketAddr,
    /// External HTTPS (`--external-https`).
    pub external_https: SocketAddr,
    /// Internal HTTPS (`--internal-https`).
    pub internal_https: SocketAddr,
    /// Envoy's admin interface (`--envoy-admin`), on loopback: the readiness route
    /// ([`super::gateway::READY_HOST`]) answers from its `/ready`.
    pub envoy_admin: SocketAddr,
    /// `config-kourier` in force.
    pub kourier: KourierConfig,
    /// Knative's `system-internal-tls` (`config-network`) is on.
    pub internal_tls: bool,
}

impl Default for GatewayConfig {
    /// The `sluice gateway` defaults: 0.0.0.0 on 8080, 8081, 8443, 8444; Envoy's admin on
    /// 127.0.0.1:9901; `config-kourier`'s defaults.
    fn default() -> Self {
        let at = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            external_http: at(8080),
            internal_http: at(8081),
            external_https: at(8443),
            internal_https: at(8444),
            envoy_admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            kourier: KourierConfig::default(),
            internal_tls: false,
        }
    }
}

/// One HTTPS filter chain, from one `spec.tls` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsChain {
    /// Chain name, `(ns/name).TLS[i]`.
    pub name: String,
    /// SNI names it serves (empty = any SNI).
    pub server_names: Vec<String>,
    /// The SDS secret with its certificate.
    pub secret: String,
    /// External or internal HTTPS listener.
    pub visibility: Visibility,
}

fn hcm_filter(stat_prefix: &str, table: RouteTable, k: &KourierConfig) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            &http_connection_manager(stat_prefix, table, k),
        ))),
    }
}

/// Where a listener binds: `addr`, or with `listen-ip-addresses` each of those IPs on `addr`'s
/// port (the first as the address, the rest as additional addresses).
fn bind(listener: &mut Listener, addr: SocketAddr, k: &KourierConfig) {
    match k.listen_ips.as_deref() {
        Some([first, rest @ ..]) => {
            listener.address = Some(socket_address(SocketAddr::new(*first, addr.port())));
            listener.additional_addresses = rest
                .iter()
                .map(|ip| AdditionalAddress {
                    address: Some(socket_address(SocketAddr::new(*ip, addr.port()))),
                    ..Default::default()
                })
                .collect();
        }
        _ => listener.address = Some(socket_address(addr)),
    }
}

/// The PROXY protocol listener filter (v1 and v2; required, as in Kourier).
pub fn proxy_protocol() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.proxy_protocol".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &ProxyProtocol::default(),
        ))),
        ..Default::default()
    }
}

/// A plain-HTTP listener on `addr` consulting `table` (`proxy`: PROXY header required).
pub fn http_listener(
    name: &str,
    addr: SocketAddr,
    table: RouteTable,
    k: &KourierConfig,
    proxy: bool,
) -> Listener {
    let mut l = Listener {
        name: name.to_string(),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(name, table, k)],
            ..Default::default()
        }],
        listener_filters: if proxy {
            vec![proxy_protocol()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    bind(&mut l, addr, k);
    l
}

/// An HTTPS listener on `addr` with one SNI filter chain per TLS chain, consulting `table`,
/// then a default chain (any SNI) with SDS secret `default_secret` if given. A server name
/// already served by an earlier chain is dropped from later ones (Envoy rejects two chains with
/// the same match), and so is a chain left without names, or a second chain that matches any
/// SNI. `None` when no chain remains.
pub fn https_listener<'a>(
    name: &str,
    addr: SocketAddr,
    table: RouteTable,
    chains: impl IntoIterator<Item = &'a TlsChain>,
    default_secret: Option<&str>,
    k: &KourierConfig,
) -> Option<Listener> {
    let mut taken = BTreeSet::new();
    let mut catch_all = false;
    let mut filter_chains = Vec::new();
    for chain in chains {
        let server_names: Vec<String> = if chain.server_names.is_empty() {
            if std::mem::replace(&mut catch_all, true) {
                continue;
            }
            Vec::new()
        } else {
            let names: Vec<String> = chain
                .server_names
                .iter()
                .filter(|n| taken.insert(n.as_str().to_owned()))
                .cloned()
                .collect();
            if names.is_empty() {
                continue;
            }
            names
        };
        filter_chains.push(FilterChain {
            name: chain.name.clone(),
            filter_chain_match: Some(FilterChainMatch {
                server_names,
                ..Default::default()
            }),
            filters: vec![hcm_filter(name, table, k)],
            transport_socket: Some(tls::transport_socket(&chain.secret, &k.cipher_suites)),
            ..Default::default()
        });
    }
    if let Some(secret) = default_secret
        && !catch_all
    {
        filter_chains.push(FilterChain {
            name: format!("{name}/default"),
            filters: vec![hcm_filter(name, table, k)],
            transport_socket: Some(tls::transport_socket(secret, &k.cipher_suites)),
            ..Default::default()
        });
    }
    if filter_chains.is_empty() {
        return None;
    }
    let mut listener_filters = Vec::new();
    if k.proxy_protocol {
        listener_filters.push(proxy_protocol());
    }
    listener_filters.push(tls_inspector());
    let mut l = Listener {
        name: name.to_string(),
        listener_filters,
        filter_chains,
        ..Default::default()
    };
    bind(&mut l, addr, k);
    Some(l)
}

/// The listener filter that reads SNI for filter chain matching.
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// All listeners of the gateway for the given TLS chains (in priority order) and the SDS
/// secrets of the default certificates (`certs-secret-*` for the external HTTPS listener,
/// `cluster-cert-secret` for the internal one), when they are available.
pub fn listeners<'a>(
    config: &GatewayConfig,
    chains: impl IntoIterator<Item = &'a TlsChain> + Clone,
    default_external: Option<&str>,
    default_internal: Option<&str>,
) -> Vec<Listener> {
    let k = &config.kourier;
    let of = |v: Visibility| {
        chains
            .clone()
            .into_iter()
            .filter(move |c| c.visibility == v)
    };
    let mut out = vec![
        http_listener(
            EXTERNAL_HTTP,
            config.external_http,
            RouteTable::External,
            k,
            k.proxy_protocol,
        ),
        // Kubelet probes and cluster-internal clients speak to it directly: no PROXY header.
        http_listener(
            INTERNAL_HTTP,
            config.internal_http,
            RouteTable::Internal,
            k,
            false,
        ),
    ];
    out.extend(https_listener(
        EXTERNAL_HTTPS,
        config.external_https,
        RouteTable::ExternalTls,
        of(Visibility::ExternalIP),
        default_external,
        k,
    ));
    out.extend(https_listener(
        INTERNAL_HTTPS,
        config.internal_https,
        RouteTable::Internal,
        of(Visibility::ClusterLocal),
        default_internal,
        k,
    ));
    out
}

#[cfg(test)]
mod tests;
