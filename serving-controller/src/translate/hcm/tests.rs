//! The connection manager, compared as a whole value, and what each `config-kourier` key does
//! to it.

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, config_source,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    ScopedRds, ScopedRoutes, scoped_routes,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;

use super::*;
use crate::kourier::{ExtAuthz, ExtAuthzProtocol, KourierConfig, Tracing, TracingProtocol};

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: 2,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource::default(),
        )),
        ..Default::default()
    }
}

#[test]
fn connection_manager_serves_knative_traffic_with_kouriers_defaults() {
    let want = HttpConnectionManager {
        stat_prefix: "external-http".into(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
            ScopedRoutes {
                name: "external".into(),
                scope_key_builder: Some(super::super::scopes::scope_key_builder(
                    RouteTable::External,
                )),
                rds_config_source: Some(ads()),
                config_specifier: Some(scoped_routes::ConfigSpecifier::ScopedRds(ScopedRds {
                    scoped_rds_config_source: Some(ads()),
                    srds_resources_locator: String::new(),
                })),
            },
        )),
        http_filters: vec![
            // Host names are matched case-insensitively: capitals are lowered first; then
            // unknown hosts fall to the catch-all.
            lua_filter(HOST_CASE_FILTER, HOST_CASE_LUA),
            lua_filter(CATCH_ALL_FILTER, CATCH_ALL_LUA),
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(
                    any(&Router::default()),
                )),
                ..Default::default()
            },
        ],
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        http2_protocol_options: Some(Http2ProtocolOptions {
            allow_connect: true,
            ..Default::default()
        }),
        // Kourier's default: no stream idle timeout at all (0 disables Envoy's 5 min).
        stream_idle_timeout: Some(PbDuration {
            seconds: 0,
            nanos: 0,
        }),
        use_remote_address: Some(BoolValue { value: false }),
        // Kourier logs every request by default, in Envoy's default format.
        access_log: vec![access_log_to_stdout(None)],
        ..Default::default()
    };
    assert_eq!(
        http_connection_manager(
            "external-http",
            RouteTable::External,
            &KourierConfig::default()
        ),
        want
    );
    assert_eq!(want.request_timeout, None, "no request timeout");
}

#[test]
fn each_key_lands_where_kourier_puts_it() {
    let k = KourierConfig {
        access_logging: true,
        access_log_template: Some("%RESPONSE_CODE%\n".into()),
        proxy_protocol: true,
        trusted_hops: 2,
        stream_idle_timeout: Duration::from_secs(90),
        disable_server_header: true,
        ..KourierConfig::default()
    };
    let hcm = http_connection_manager("x", RouteTable::Internal, &k);
    assert_eq!(
        hcm.use_remote_address,
        Some(BoolValue { value: true }),
        "forced by PROXY"
    );
    assert_eq!(hcm.xff_num_trusted_hops, 2);
    assert_eq!(
        hcm.stream_idle_timeout,
        Some(duration(Duration::from_secs(90)))
    );
    assert_eq!(
        hcm.server_header_transformation,
        http_connection_manager::ServerHeaderTransformation::PassThrough as i32
    );
    let log = &hcm.access_log[0];
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("typed access log")
    };
    let file = FileAccessLog::decode(any.value.as_slice()).unwrap();
    assert_eq!(file.path, "/dev/stdout");
    let Some(file_access_log::AccessLogFormat::LogFormat(f)) = file.access_log_format else {
        panic!("the template")
    };
    assert!(format!("{f:?}").contains("%RESPONSE_CODE%"));
    let quiet = http_connection_manager(
        "x",
        RouteTable::Internal,
        &KourierConfig {
            access_logging: false,
            ..KourierConfig::default()
        },
    );
    assert!(quiet.access_log.is_empty());
}

#[test]
fn ext_authz_goes_before_the_router_and_tracing_is_opentelemetry() {
    let k = KourierConfig {
        ext_authz: Some(ExtAuthz {
            host: "authz".into(),
            port: 9000,
            protocol: ExtAuthzProtocol::Http,
            failure_mode_allow: false,
            max_request_bytes: 8192,
            timeout: Duration::from_secs(2),
            path_prefix: "/check".into(),
            pack_as_bytes: false,
        }),
        tracing: Some(Tracing {
            endpoint: "http://otel:4317".into(),
            host: "otel".into(),
            port: 4317,
            path: String::new(),
            protocol: TracingProtocol::Grpc,
            sampling_rate: 0.5,
            service_name: "edge".into(),
        }),
        ..KourierConfig::default()
    };
    let hcm = http_connection_manager("x", RouteTable::External, &k);
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            HOST_CASE_FILTER,
            CATCH_ALL_FILTER,
            EXT_AUTHZ_FILTER,
            "envoy.filters.http.router"
        ]
    );
    let authz = hcm
        .http_filters
        .iter()
        .find(|f| f.name == EXT_AUTHZ_FILTER)
        .expect("ext_authz");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &authz.config_type else {
        panic!()
    };
    let f = ExtAuthzFilter::decode(any.value.as_slice()).unwrap();
    let Some(ext_authz::Services::HttpService(h)) = f.services else {
        panic!("http service")
    };
    assert_eq!(h.server_uri.unwrap().uri, "http://authz:9000");
    assert_eq!(h.path_prefix, "/check");
    let t = hcm.tracing.unwrap();
    assert_eq!(t.overall_sampling.unwrap().value, 50.0);
    assert_eq!(t.provider.unwrap().name, "envoy.tracers.opentelemetry");
    assert_eq!(hcm.generate_request_id, Some(BoolValue { value: true }));
}
