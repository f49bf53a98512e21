//! The HTTP connection manager every listener runs, shaped by `config-kourier` as net-kourier
//! shapes it: access log to stdout (Envoy's default format or the operator's template),
//! `use_remote_address` and trusted hops, the stream idle timeout, the `server` header,
//! OpenTelemetry tracing, and the external authorization filter.
//!
//! Always: codec AUTO (HTTP/1.1 and h2c with prior knowledge downstream), websocket upgrades,
//! extended CONNECT for websockets over HTTP/2, no request timeout, scoped routes over ADS (see
//! [`super::scopes`]), and two small Lua filters: lower-casing a Host with capitals
//! ([`HOST_CASE_LUA`]) and sending unknown hosts to the catch-all ([`CATCH_ALL_LUA`]).

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, DataSource, GrpcService, HeaderValue, Http2ProtocolOptions, HttpUri,
    SubstitutionFormatString, data_source, grpc_service, http_uri, substitution_format_string,
};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationRequest, BufferSettings, CheckSettings, ExtAuthz as ExtAuthzFilter,
    ExtAuthzPerRoute, HttpService as AuthzHttpService, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::lua::v3::Lua;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use sluice_xds::builders::{any, duration};

use super::scopes::{RouteTable, scoped_routes};
use crate::kourier::{ExtAuthz, ExtAuthzProtocol, KourierConfig, Tracing, TracingProtocol};

/// The ext_authz HTTP filter's name (also the key of its per-route settings).
pub const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// The Lua filter lower-casing Hosts ([`HOST_CASE_LUA`]).
pub const HOST_CASE_FILTER: &str = "sluice.host_case";
/// The Lua filter sending unknown hosts to the catch-all ([`CATCH_ALL_LUA`]).
pub const CATCH_ALL_FILTER: &str = "sluice.catch_all";
/// The cluster of the external authorization service.
pub const EXT_AUTHZ_CLUSTER: &str = "sluice/ext-authz";
/// The cluster of the OpenTelemetry collector.
pub const OTEL_CLUSTER: &str = "sluice/otel-collector";

/// Runs first, on every request: host names are case-insensitive, but the scope of a request
/// (its host's small RouteConfiguration) is found by the exact `:authority`, so a Host with
/// capitals is lower-cased and the route looked up again.
///
/// Envoy's automatic route-cache clearing is off for both scripts: they say when to look the
/// route up again (`clearRouteCache`, then `metadata()`, which resolves the route — once per
/// script and request, hence two scripts).
pub const HOST_CASE_LUA: &str = r#"function envoy_on_request(handle)
  local headers = handle:headers()
  local host = headers:get(":authority")
  if host ~= nil and string.find(host, "%u") ~= nil then
    headers:replace(":authority", string.lower(host))
    handle:clearRouteCache()
    handle:metadata()
  end
end
"#;

/// Runs second, on every request: a host no rule serves falls to the catch-all, if this
/// listener has one (a KIngress rule without hosts, as in Kourier). Its scope and virtual host
/// are keyed `*`, so the route is looked up again with `:authority: *`, and the client's Host
/// is put back once that route is chosen (the backend, ext_authz and the access log see the
/// Host as sent). Without a catch-all the second lookup finds nothing either: Envoy's 404.
///
/// Every route Sluice writes has a name, so an empty route name means "no route".
pub const CATCH_ALL_LUA: &str = r#"function envoy_on_request(handle)
  if handle:streamInfo():routeName() ~= "" then
    return
  end
  local headers = handle:headers()
  local host = headers:get(":authority")
  if host == nil then
    return
  end
  headers:replace(":authority", "*")
  handle:clearRouteCache()
  handle:metadata()
  headers:replace(":authority", host)
end
"#;

/// A Lua filter running `code`, clearing the route cache only when the code asks.
fn lua_filter(name: &str, code: &str) -> HttpFilter {
    let lua = Lua {
        default_source_code: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(code.to_string())),
            ..Default::default()
        }),
        clear_route_cache: Some(BoolValue { value: false }),
        ..Default::default()
    };
    filter(name, any(&lua))
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The HTTP connection manager of a listener consulting `table`.
pub fn http_connection_manager(
    stat_prefix: &str,
    table: RouteTable,
    k: &KourierConfig,
) -> HttpConnectionManager {
    let mut http_filters = vec![
        lua_filter(HOST_CASE_FILTER, HOST_CASE_LUA),
        lua_filter(CATCH_ALL_FILTER, CATCH_ALL_LUA),
    ];
    if let Some(a) = &k.ext_authz {
        http_filters.push(filter(EXT_AUTHZ_FILTER, any(&ext_authz_filter(a))));
    }
    http_filters.push(filter("envoy.filters.http.router", any(&Router::default())));
    let mut hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
            scoped_routes(table),
        )),
        http_filters,
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http2_protocol_options: Some(Http2ProtocolOptions {
            allow_connect: true,
            ..Default::default()
        }),
        // 0 disables it (Envoy's default is 5 min), as Kourier's default 0s does.
        stream_idle_timeout: Some(duration(k.stream_idle_timeout)),
        // PROXY protocol carries the client's address: only with this does Envoy use it.
        use_remote_address: Some(BoolValue {
            value: k.use_remote_address || k.proxy_protocol,
        }),
        xff_num_trusted_hops: k.trusted_hops,
        ..Default::default()
    };
    if k.disable_server_header {
        hcm.server_header_transformation =
            http_connection_manager::ServerHeaderTransformation::PassThrough as i32;
    }
    if k.access_logging {
        hcm.access_log = vec![access_log_to_stdout(k.access_log_template.as_deref())];
    }
    if let Some(t) = &k.tracing {
        hcm.generate_request_id = Some(BoolValue { value: true });
        hcm.tracing = Some(tracing_config(t));
    }
    hcm
}

/// Envoy's file access log to `/dev/stdout`: one line per request, in Envoy's default format
/// or `template` (kept verbatim: it carries its own newline, as in Kourier).
pub fn access_log_to_stdout(template: Option<&str>) -> AccessLog {
    let mut log = FileAccessLog {
        path: "/dev/stdout".to_string(),
        ..Default::default()
    };
    if let Some(t) = template {
        log.access_log_format = Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(t.to_string())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        ));
    }
    AccessLog {
        name: "envoy.file_access_log".to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(&log))),
        ..Default::default()
    }
}

/// OpenTelemetry tracing to the collector cluster; W3C trace context goes upstream.
fn tracing_config(t: &Tracing) -> http_connection_manager::Tracing {
    let mut otel = OpenTelemetryConfig {
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    match t.protocol {
        TracingProtocol::Grpc => {
            otel.grpc_service = Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: OTEL_CLUSTER.to_string(),
                        // (Else the cluster's name, whose '/' makes an invalid :authority.)
                        authority: authority(&t.host, t.port),
                        ..Default::default()
                    },
                )),
                timeout: Some(duration(Duration::from_millis(250))),
                ..Default::default()
            })
        }
        TracingProtocol::HttpProtobuf => {
            otel.http_service = Some(envoy_types::pb::envoy::config::core::v3::HttpService {
                http_uri: Some(HttpUri {
                    uri: t.endpoint.clone(),
                    timeout: Some(duration(Duration::from_secs(5))),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        OTEL_CLUSTER.to_string(),
                    )),
                }),
                ..Default::default()
            })
        }
    }
    http_connection_manager::Tracing {
        provider: Some(tracing::Http {
            name: "envoy.tracers.opentelemetry".to_string(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(any(&otel))),
        }),
        overall_sampling: Some(Percent {
            value: t.sampling_rate * 100.0,
        }),
        ..Default::default()
    }
}

/// The ext_authz filter, as Kourier configures it: the request's body buffered up to
/// `max_request_bytes` and sent along, `client: kourier` on every check.
fn ext_authz_filter(a: &ExtAuthz) -> ExtAuthzFilter {
    let client = HeaderValue {
        key: "client".to_string(),
        value: "kourier".to_string(),
        ..Default::default()
    };
    let services = match a.protocol {
        ExtAuthzProtocol::Grpc => ext_authz::Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: EXT_AUTHZ_CLUSTER.to_string(),
                    authority: authority(&a.host, a.port),
                    ..Default::default()
                },
            )),
            timeout: Some(duration(a.timeout)),
            initial_metadata: vec![client],
            ..Default::default()
        }),
        ExtAuthzProtocol::Http | ExtAuthzProtocol::Https => {
            let host = if a.host.contains(':') {
                format!("[{}]", a.host)
            } else {
                a.host.clone()
            };
            ext_authz::Services::HttpService(AuthzHttpService {
                server_uri: Some(HttpUri {
                    uri: format!("{}://{host}:{}", a.protocol.as_str(), a.port),
                    timeout: Some(duration(a.timeout)),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        EXT_AUTHZ_CLUSTER.to_string(),
                    )),
                }),
                path_prefix: a.path_prefix.clone(),
                authorization_request: Some(AuthorizationRequest {
                    headers_to_add: vec![client],
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
    };
    ExtAuthzFilter {
        transport_api_version: ApiVersion::V3 as i32,
        failure_mode_allow: a.failure_mode_allow,
        with_request_body: Some(BufferSettings {
            max_request_bytes: a.max_request_bytes,
            allow_partial_message: true,
            pack_as_bytes: a.pack_as_bytes,
        }),
        services: Some(services),
        ..Default::default()
    }
}

/// `host:port` (IPv6 in brackets): the `:authority` of gRPC calls to a service.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Per-route settings turning external authorization off (probe routes, the readiness route,
/// ACME HTTP-01 challenges).
pub fn ext_authz_disabled() -> (String, Any) {
    (
        EXT_AUTHZ_FILTER.to_string(),
        any(&ExtAuthzPerRoute {
            r#override: Some(ext_authz_per_route::Override::Disabled(true)),
        }),
    )
}

/// Per-virtual-host settings: the context extensions the service sees (`client: kourier`, the
/// rule's visibility, then the KIngress's labels, which win on a clash — as in Kourier).
pub fn ext_authz_context(visibility: &str, labels: &BTreeMap<String, String>) -> (String, Any) {
    let mut context_extensions = std::collections::HashMap::from([
        ("client".to_string(), "kourier".to_string()),
        ("visibility".to_string(), visibility.to_string()),
    ]);
    context_extensions.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    (
        EXT_AUTHZ_FILTER.to_string(),
        any(&ExtAuthzPerRoute {
            r#override: Some(ext_authz_per_route::Override::CheckSettings(
                CheckSettings {
                    context_extensions,
                    ..Default::default()
                },
            )),
        }),
    )
}

#[cfg(test)]
mod tests;
