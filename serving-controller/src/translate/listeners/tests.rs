//! Listener and connection-manager constructors, compared as whole values.

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, config_source,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    ScopedRds, ScopedRoutes, scoped_routes,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::*;

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: 2,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource::default(),
        )),
        ..Default::default()
    }
}

fn chain(name: &str, names: &[&str], v: Visibility) -> TlsChain {
    TlsChain {
        name: name.into(),
        server_names: names.iter().map(|s| s.to_string()).collect(),
        secret: format!("ns/{name}"),
        visibility: v,
    }
}

fn sni_chain(listener: &str, table: RouteTable, c: &TlsChain, names: &[&str]) -> FilterChain {
    FilterChain {
        name: c.name.clone(),
        filter_chain_match: Some(FilterChainMatch {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(
                &http_connection_manager(listener, table),
            ))),
        }],
        transport_socket: Some(tls::transport_socket(&c.secret)),
        ..Default::default()
    }
}

#[test]
fn connection_manager_serves_knative_traffic() {
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
            // Host names are matched case-insensitively: capitals are lowered first.
            HttpFilter {
                name: "envoy.filters.http.lua".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(&Lua {
                    default_source_code: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(HOST_CASE_LUA.into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))),
                ..Default::default()
            },
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
        stream_idle_timeout: Some(PbDuration {
            seconds: 3600,
            nanos: 0,
        }),
        use_remote_address: Some(BoolValue { value: true }),
        ..Default::default()
    };
    assert_eq!(
        http_connection_manager("external-http", RouteTable::External),
        want
    );
    // No request timeout, and more idle time than Knative's longest revision timeout.
    assert_eq!(want.request_timeout, None);
    assert!(STREAM_IDLE_TIMEOUT > Duration::from_secs(600));
}

#[test]
fn plain_listeners_always_exist() {
    let config = GatewayConfig::default();
    assert_eq!(
        listeners(&config, &[]),
        vec![
            http_listener(
                EXTERNAL_HTTP,
                "0.0.0.0:8080".parse().unwrap(),
                RouteTable::External
            ),
            http_listener(
                INTERNAL_HTTP,
                "0.0.0.0:8081".parse().unwrap(),
                RouteTable::Internal
            ),
        ]
    );
    let l = http_listener(EXTERNAL_HTTP, config.external_http, RouteTable::External);
    assert_eq!(l.filter_chains.len(), 1);
    assert!(l.listener_filters.is_empty());
}

#[test]
fn https_listeners_get_one_sni_chain_per_tls_block() {
    let config = GatewayConfig {
        external_https: "127.0.0.1:9443".parse().unwrap(),
        internal_https: "127.0.0.1:9444".parse().unwrap(),
        ..Default::default()
    };
    let a = chain("a", &["a.com", "www.a.com"], Visibility::ExternalIP);
    let b = chain("b", &["b.com"], Visibility::ExternalIP);
    let c = chain("c", &["c.local"], Visibility::ClusterLocal);
    let got = listeners(&config, &[a.clone(), c.clone(), b.clone()]);
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[2],
        Listener {
            name: EXTERNAL_HTTPS.into(),
            address: Some(socket_address(config.external_https)),
            listener_filters: vec![tls_inspector()],
            filter_chains: vec![
                sni_chain(
                    EXTERNAL_HTTPS,
                    RouteTable::ExternalTls,
                    &a,
                    &["a.com", "www.a.com"]
                ),
                sni_chain(EXTERNAL_HTTPS, RouteTable::ExternalTls, &b, &["b.com"]),
            ],
            ..Default::default()
        }
    );
    assert_eq!(
        got[3],
        Listener {
            name: INTERNAL_HTTPS.into(),
            address: Some(socket_address(config.internal_https)),
            listener_filters: vec![tls_inspector()],
            filter_chains: vec![sni_chain(
                INTERNAL_HTTPS,
                RouteTable::Internal,
                &c,
                &["c.local"]
            )],
            ..Default::default()
        }
    );
}

#[test]
fn contested_server_names_go_to_the_first_chain() {
    let addr: SocketAddr = "127.0.0.1:9443".parse().unwrap();
    let first = chain("first", &["a.com", "b.com"], Visibility::ExternalIP);
    let partial = chain("partial", &["b.com", "c.com"], Visibility::ExternalIP);
    let shadowed = chain("shadowed", &["a.com"], Visibility::ExternalIP);
    let any1 = chain("any1", &[], Visibility::ExternalIP);
    let any2 = chain("any2", &[], Visibility::ExternalIP);
    let got = https_listener(
        EXTERNAL_HTTPS,
        addr,
        RouteTable::ExternalTls,
        [&first, &partial, &shadowed, &any1, &any2],
    )
    .unwrap();
    let t = RouteTable::ExternalTls;
    assert_eq!(
        got.filter_chains,
        vec![
            sni_chain(EXTERNAL_HTTPS, t, &first, &["a.com", "b.com"]),
            sni_chain(EXTERNAL_HTTPS, t, &partial, &["c.com"]),
            sni_chain(EXTERNAL_HTTPS, t, &any1, &[]),
        ]
    );
    assert_eq!(https_listener(EXTERNAL_HTTPS, addr, t, []), None);
}
