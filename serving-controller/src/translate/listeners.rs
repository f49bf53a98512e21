//! The gateway's four listeners and their HTTP connection managers.
//!
//! - external HTTP and internal HTTP: one filter chain, always present (an empty gateway
//!   answers 404);
//! - external HTTPS and internal HTTPS: a `tls_inspector` listener filter and one filter chain
//!   per `spec.tls` block of that visibility, matched on SNI (`server_names` = its hosts) and
//!   terminating TLS with the block's SDS secret. Present only when they have a chain: Envoy
//!   rejects a listener without filter chains.
//!
//! Every connection manager: codec AUTO (HTTP/1.1 and h2c with prior knowledge downstream),
//! websocket upgrades on every route, extended CONNECT for websockets over HTTP/2, a stream idle
//! timeout of one hour (above Knative's 600 s maximum revision timeout), no request timeout,
//! and scoped routes over ADS (see [`super::scopes`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::lua::v3::Lua;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::BoolValue;
use sluice_xds::builders::{any, duration, socket_address};

use super::scopes::{RouteTable, scoped_routes};
use super::tls;
use crate::ingress::Visibility;

/// Name of the external plain-HTTP listener.
pub const EXTERNAL_HTTP: &str = "external-http";
/// Name of the internal plain-HTTP listener.
pub const INTERNAL_HTTP: &str = "internal-http";
/// Name of the external HTTPS listener.
pub const EXTERNAL_HTTPS: &str = "external-https";
/// Name of the internal HTTPS listener.
pub const INTERNAL_HTTPS: &str = "internal-https";

/// Streams idle longer than this are closed (Envoy's default, 5 min, would cut a revision
/// allowed up to 600 s).
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the gateway listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// External plain HTTP (`--external-http`).
    pub external_http: SocketAddr,
    /// Internal plain HTTP (`--internal-http`).
    pub internal_http: SocketAddr,
    /// External HTTPS (`--external-https`).
    pub external_https: SocketAddr,
    /// Internal HTTPS (`--internal-https`).
    pub internal_https: SocketAddr,
}

impl Default for GatewayConfig {
    /// The `sluice gateway` defaults: 0.0.0.0 on 8080, 8081, 8443, 8444.
    fn default() -> Self {
        let at = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            external_http: at(8080),
            internal_http: at(8081),
            external_https: at(8443),
            internal_https: at(8444),
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

/// Host names are case-insensitive, but the scope of a request (its host's small
/// RouteConfiguration) is found by the exact `:authority`: a Host with capitals is lower-cased
/// before routing (and the route looked up again). Requests without capitals only pay the
/// check.
pub const HOST_CASE_LUA: &str = r#"function envoy_on_request(handle)
  local host = handle:headers():get(":authority")
  if host ~= nil and string.find(host, "%u") ~= nil then
    handle:headers():replace(":authority", string.lower(host))
    handle:clearRouteCache()
  end
end
"#;

/// The HTTP connection manager of a listener consulting `table`.
pub fn http_connection_manager(stat_prefix: &str, table: RouteTable) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
            scoped_routes(table),
        )),
        http_filters: vec![
            HttpFilter {
                name: "envoy.filters.http.lua".to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(&Lua {
                    default_source_code: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(
                            HOST_CASE_LUA.to_string(),
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))),
                ..Default::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(
                    any(&Router::default()),
                )),
                ..Default::default()
            },
        ],
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http2_protocol_options: Some(Http2ProtocolOptions {
            allow_connect: true,
            ..Default::default()
        }),
        stream_idle_timeout: Some(duration(STREAM_IDLE_TIMEOUT)),
        use_remote_address: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn hcm_filter(stat_prefix: &str, table: RouteTable) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            &http_connection_manager(stat_prefix, table),
        ))),
    }
}

/// A plain-HTTP listener on `addr` consulting `table`.
pub fn http_listener(name: &str, addr: SocketAddr, table: RouteTable) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(name, table)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An HTTPS listener on `addr` with one SNI filter chain per TLS chain, consulting `table`.
/// A server name already served by an earlier chain is dropped from later ones (Envoy rejects
/// two chains with the same match), and so is a chain left without names, or a second chain
/// that matches any SNI. `None` when no chain remains.
pub fn https_listener<'a>(
    name: &str,
    addr: SocketAddr,
    table: RouteTable,
    chains: impl IntoIterator<Item = &'a TlsChain>,
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
            filters: vec![hcm_filter(name, table)],
            transport_socket: Some(tls::transport_socket(&chain.secret)),
            ..Default::default()
        });
    }
    if filter_chains.is_empty() {
        return None;
    }
    Some(Listener {
        name: name.to_string(),
        address: Some(socket_address(addr)),
        listener_filters: vec![tls_inspector()],
        filter_chains,
        ..Default::default()
    })
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

/// All listeners of the gateway for the given TLS chains (in priority order).
pub fn listeners<'a>(
    config: &GatewayConfig,
    chains: impl IntoIterator<Item = &'a TlsChain> + Clone,
) -> Vec<Listener> {
    let of = |v: Visibility| {
        chains
            .clone()
            .into_iter()
            .filter(move |c| c.visibility == v)
    };
    let mut out = vec![
        http_listener(EXTERNAL_HTTP, config.external_http, RouteTable::External),
        http_listener(INTERNAL_HTTP, config.internal_http, RouteTable::Internal),
    ];
    out.extend(https_listener(
        EXTERNAL_HTTPS,
        config.external_https,
        RouteTable::ExternalTls,
        of(Visibility::ExternalIP),
    ));
    out.extend(https_listener(
        INTERNAL_HTTPS,
        config.internal_https,
        RouteTable::Internal,
        of(Visibility::ClusterLocal),
    ));
    out
}

#[cfg(test)]
mod tests;
