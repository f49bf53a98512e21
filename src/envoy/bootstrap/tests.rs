//! The bootstrap renderer's tests.
use super::*;
use serde_yaml::Value;

fn parse(params: &BootstrapParams) -> Value {
    let yaml = render(params);
    assert!(!yaml.contains("{{"), "unfilled placeholder in:\n{yaml}");
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("invalid YAML ({e}):\n{yaml}"))
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[*key],
        })
}

fn socket_address(doc: &Value, path: &[&str]) -> (String, u64) {
    let sa = at(doc, path);
    (
        sa["address"].as_str().unwrap_or_default().to_owned(),
        sa["port_value"].as_u64().unwrap_or_default(),
    )
}

const XDS_ADDRESS: &[&str] = &[
    "static_resources",
    "clusters",
    "0",
    "load_assignment",
    "endpoints",
    "0",
    "lb_endpoints",
    "0",
    "endpoint",
    "address",
    "socket_address",
];

#[test]
fn default_params_render_delta_on_loopback() {
    let doc = parse(&BootstrapParams::default());
    assert_eq!(at(&doc, &["node", "id"]).as_str(), Some("sluice-gateway"));
    assert_eq!(at(&doc, &["node", "cluster"]).as_str(), Some("sluice"));
    let ads = at(&doc, &["dynamic_resources", "ads_config"]);
    assert_eq!(ads["api_type"].as_str(), Some("DELTA_GRPC"));
    assert_eq!(ads["transport_api_version"].as_str(), Some("V3"));
    assert_eq!(ads["set_node_on_first_message_only"].as_bool(), Some(true));
    assert_eq!(
        ads["grpc_services"][0]["envoy_grpc"]["cluster_name"].as_str(),
        Some("sluice_xds")
    );
    for source in ["cds_config", "lds_config"] {
        let config = at(&doc, &["dynamic_resources", source]);
        assert!(config["ads"].is_mapping(), "{source} must use ADS");
        assert_eq!(config["resource_api_version"].as_str(), Some("V3"));
    }
    let cluster = at(&doc, &["static_resources", "clusters", "0"]);
    assert_eq!(cluster["name"].as_str(), Some("sluice_xds"));
    assert_eq!(
        socket_address(&doc, XDS_ADDRESS),
        ("127.0.0.1".to_owned(), 18000)
    );
    assert_eq!(
        socket_address(&doc, &["admin", "address", "socket_address"]),
        ("127.0.0.1".to_owned(), 9901)
    );
}

#[test]
fn the_stats_listener_forwards_two_paths_to_the_admin_interface() {
    let doc = parse(&BootstrapParams {
        admin: "0.0.0.0:19901".parse().unwrap(),
        stats: Some("0.0.0.0:9000".parse().unwrap()),
        xds_tls: Some(XdsClientTls {
            cert: "c".into(),
            key: "k".into(),
            ca: "a".into(),
            server_name: None,
        }),
        ..BootstrapParams::default()
    });
    let listener = at(&doc, &["static_resources", "listeners"])
        .get(0)
        .expect("the stats listener");
    assert_eq!(listener["name"].as_str(), Some(STATS_LISTENER));
    assert_eq!(
        socket_address(listener, &["address", "socket_address"]),
        ("0.0.0.0".to_owned(), 9000)
    );
    let routes = &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    let paths: Vec<&str> = routes
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["match"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, STATS_PATHS);
    let clusters = at(&doc, &["static_resources", "clusters"]);
    assert_eq!(clusters[0]["name"].as_str(), Some("sluice_xds"));
    assert!(
        clusters[0].get("transport_socket").is_some(),
        "TLS stays on xDS"
    );
    assert!(clusters[1].get("transport_socket").is_none());
    assert_eq!(
        socket_address(
            &clusters[1],
            &[
                "load_assignment",
                "endpoints",
                "0",
                "lb_endpoints",
                "0",
                "endpoint",
                "address",
                "socket_address"
            ]
        ),
        ("127.0.0.1".to_owned(), 19901),
        "an unspecified admin address is reached on loopback"
    );
    // Without the flag: no listener at all.
    let plain = parse(&BootstrapParams::default());
    assert!(plain["static_resources"].get("listeners").is_none());
}

#[test]
fn sotw_mode_uses_grpc_api_type_and_custom_addresses() {
    let params = BootstrapParams {
        node_id: "edge-1".to_owned(),
        node_cluster: "edges".to_owned(),
        xds: "10.1.2.3:18001".parse().expect("valid address"),
        mode: XdsMode::Sotw,
        admin: "[::1]:19901".parse().expect("valid address"),
        xds_tls: None,
        xds_endpoints: Vec::new(),
        stats: None,
        metrics_sink: None,
    };
    let doc = parse(&params);
    assert_eq!(at(&doc, &["node", "id"]).as_str(), Some("edge-1"));
    assert_eq!(at(&doc, &["node", "cluster"]).as_str(), Some("edges"));
    assert_eq!(
        at(&doc, &["dynamic_resources", "ads_config", "api_type"]).as_str(),
        Some("GRPC")
    );
    assert_eq!(
        socket_address(&doc, XDS_ADDRESS),
        ("10.1.2.3".to_owned(), 18001)
    );
    assert_eq!(
        socket_address(&doc, &["admin", "address", "socket_address"]),
        ("::1".to_owned(), 19901)
    );
}

#[test]
fn ads_reconnects_with_a_backoff_capped_at_a_second() {
    let doc = parse(&BootstrapParams::default());
    let retry = &at(
        &doc,
        &[
            "dynamic_resources",
            "ads_config",
            "grpc_services",
            "0",
            "envoy_grpc",
        ],
    )["retry_policy"]["retry_back_off"];
    assert_eq!(retry["base_interval"].as_str(), Some("0.1s"));
    assert_eq!(retry["max_interval"].as_str(), Some("1s"));
}

#[test]
fn xds_tls_adds_a_client_certificate_transport_socket() {
    let doc = parse(&BootstrapParams {
        xds_tls: Some(XdsClientTls {
            cert: "/tls/tls.crt".into(),
            key: "/tls/tls.key".into(),
            ca: "/tls/ca.crt".into(),
            server_name: Some("sluice-xds.knative-serving.svc".into()),
        }),
        ..BootstrapParams::default()
    });
    let socket = &at(&doc, &["static_resources", "clusters", "0"])["transport_socket"];
    assert_eq!(socket["name"].as_str(), Some("envoy.transport_sockets.tls"));
    let ctx = &socket["typed_config"];
    assert_eq!(ctx["sni"].as_str(), Some("sluice-xds.knative-serving.svc"));
    let common = &ctx["common_tls_context"];
    assert_eq!(
        common["tls_certificates"][0]["private_key"]["filename"].as_str(),
        Some("/tls/tls.key")
    );
    assert_eq!(
        common["validation_context"]["trusted_ca"]["filename"].as_str(),
        Some("/tls/ca.crt")
    );
    assert_eq!(common["alpn_protocols"][0].as_str(), Some("h2"));
    // Everything else is as without TLS.
    assert_eq!(at(&doc, &["node", "id"]).as_str(), Some("sluice-gateway"));
    assert!(at(&doc, &["stats_config"]).is_mapping());
}

#[test]
fn several_or_named_control_planes_become_the_xds_endpoints() {
    let doc = parse(&BootstrapParams {
        xds_endpoints: vec![
            ("sluice-xds.knative-serving.svc".into(), 18000),
            ("10.0.0.9".into(), 18001),
        ],
        ..BootstrapParams::default()
    });
    let cluster = at(&doc, &["static_resources", "clusters", "0"]);
    assert_eq!(cluster["type"].as_str(), Some("STRICT_DNS"));
    let eps = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"];
    assert_eq!(
        eps[0]["endpoint"]["address"]["socket_address"]["address"].as_str(),
        Some("sluice-xds.knative-serving.svc")
    );
    assert_eq!(
        eps[1]["endpoint"]["address"]["socket_address"]["port_value"].as_u64(),
        Some(18001)
    );
    // The retry policy survives the rewrite.
    assert!(
        at(
            &doc,
            &[
                "dynamic_resources",
                "ads_config",
                "grpc_services",
                "0",
                "envoy_grpc"
            ]
        )["retry_policy"]
            .is_mapping()
    );
}

#[test]
fn odd_node_ids_stay_valid_yaml() {
    let params = BootstrapParams {
        node_id: "a \"quoted\" id: {x} \\ #not-a-comment\n".to_owned(),
        ..BootstrapParams::default()
    };
    let doc = parse(&params);
    assert_eq!(
        at(&doc, &["node", "id"]).as_str(),
        Some(params.node_id.as_str())
    );
}

#[test]
fn xds_mode_parses_and_displays() {
    assert_eq!("delta".parse::<XdsMode>(), Ok(XdsMode::Delta));
    assert_eq!("SotW".parse::<XdsMode>(), Ok(XdsMode::Sotw));
    assert_eq!(XdsMode::default(), XdsMode::Delta);
    for mode in [XdsMode::Delta, XdsMode::Sotw] {
        assert_eq!(mode.to_string().parse::<XdsMode>(), Ok(mode));
    }
    let err = "grpc".parse::<XdsMode>().expect_err("not a mode");
    assert!(err.to_string().contains("`delta`"), "{err}");
}

#[test]
fn fill_leaves_unknown_and_unterminated_placeholders() {
    let values = [("a", "1".to_owned())];
    assert_eq!(fill("x{{a}}y{{b}}z{{a", &values), "x1y{{b}}z{{a");
}

#[test]
fn a_metrics_sink_streams_stats_every_second_to_the_autoscaler() {
    let doc = parse(&BootstrapParams {
        metrics_sink: Some(("sluice-autoscaler.knative-serving".into(), 8080)),
        ..BootstrapParams::default()
    });
    assert_eq!(doc["stats_flush_interval"].as_str(), Some("1s"));
    let sink = &doc["stats_sinks"][0];
    assert_eq!(
        sink["name"].as_str(),
        Some("envoy.stat_sinks.metrics_service")
    );
    assert_eq!(
        sink["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"].as_str(),
        Some(metrics_sink::METRICS_CLUSTER)
    );
    let clusters = doc["static_resources"]["clusters"]
        .as_sequence()
        .expect("clusters");
    let cluster = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some(metrics_sink::METRICS_CLUSTER))
        .expect("the sink's cluster");
    assert_eq!(
        cluster["type"].as_str(),
        Some("STRICT_DNS"),
        "a Service name"
    );
    let plain = parse(&BootstrapParams::default());
    assert!(plain.get("stats_sinks").is_none());
}
