//! Listener and connection-manager constructors, compared as whole values.

use super::*;

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
                &http_connection_manager(listener, table, &KourierConfig::default()),
            ))),
        }],
        transport_socket: Some(tls::transport_socket(&c.secret, &[])),
        ..Default::default()
    }
}

#[test]
fn plain_listeners_always_exist() {
    let config = GatewayConfig::default();
    let k = KourierConfig::default();
    assert_eq!(
        listeners(&config, &[], None, None),
        vec![
            http_listener(
                EXTERNAL_HTTP,
                "0.0.0.0:8080".parse().unwrap(),
                RouteTable::External,
                &k,
                false
            ),
            http_listener(
                INTERNAL_HTTP,
                "0.0.0.0:8081".parse().unwrap(),
                RouteTable::Internal,
                &k,
                false
            ),
        ]
    );
    let l = http_listener(
        EXTERNAL_HTTP,
        config.external_http,
        RouteTable::External,
        &k,
        false,
    );
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
    let got = listeners(&config, &[a.clone(), c.clone(), b.clone()], None, None);
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
    let k = KourierConfig::default();
    let got = https_listener(
        EXTERNAL_HTTPS,
        addr,
        RouteTable::ExternalTls,
        [&first, &partial, &shadowed, &any1, &any2],
        None,
        &k,
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
    assert_eq!(https_listener(EXTERNAL_HTTPS, addr, t, [], None, &k), None);
}

#[test]
fn config_kourier_shapes_the_listeners() {
    use crate::kourier::KourierConfig;
    let config = GatewayConfig {
        kourier: KourierConfig {
            proxy_protocol: true,
            listen_ips: Some(vec!["10.0.0.5".parse().unwrap(), "::".parse().unwrap()]),
            cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            ..KourierConfig::default()
        },
        ..GatewayConfig::default()
    };
    let got = listeners(&config, &[], Some("sluice/default-certificate"), None);
    let external = &got[0];
    assert_eq!(
        external.listener_filters,
        vec![proxy_protocol()],
        "PROXY required"
    );
    assert_eq!(
        external.address,
        Some(socket_address("10.0.0.5:8080".parse().unwrap()))
    );
    assert_eq!(
        external.additional_addresses[0].address,
        Some(socket_address("[::]:8080".parse().unwrap()))
    );
    assert!(
        got[1].listener_filters.is_empty(),
        "the internal HTTP listener takes no PROXY header"
    );
    // A default certificate makes the external HTTPS listener exist with no KIngress TLS.
    let https = &got[2];
    assert_eq!(https.name, EXTERNAL_HTTPS);
    assert_eq!(
        https.listener_filters,
        vec![proxy_protocol(), tls_inspector()]
    );
    assert_eq!(https.filter_chains.len(), 1);
    assert_eq!(https.filter_chains[0].filter_chain_match, None, "any SNI");
    assert_eq!(
        https.filter_chains[0].transport_socket,
        Some(tls::transport_socket(
            "sluice/default-certificate",
            &["ECDHE-RSA-AES128-GCM-SHA256".to_string()]
        ))
    );
}
