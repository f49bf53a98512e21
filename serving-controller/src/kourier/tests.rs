use super::*;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parsed(pairs: &[(&str, &str)]) -> KourierConfig {
    parse(&data(pairs), &KourierEnv::default(), "knative-serving")
        .unwrap()
        .0
}

fn error(pairs: &[(&str, &str)]) -> KourierConfigError {
    parse(&data(pairs), &KourierEnv::default(), "knative-serving").unwrap_err()
}

#[test]
fn absent_keys_take_kouriers_defaults() {
    let c = parsed(&[]);
    assert!(c.access_logging, "Kourier logs every request by default");
    assert_eq!(c.stream_idle_timeout, Duration::ZERO);
    assert!(!c.use_remote_address && !c.proxy_protocol && !c.disable_server_header);
    assert_eq!(c.trusted_hops, 0);
    assert!(c.tracing.is_none() && c.ext_authz.is_none() && c.default_cert.is_none());
    assert!(c.listen_ips.is_none() && c.cipher_suites.is_empty());
}

#[test]
fn booleans_follow_go_parse_bool_and_errors_name_the_key() {
    assert!(!parsed(&[("enable-service-access-logging", "F")]).access_logging);
    assert!(parsed(&[("use-remote-address", "TRUE")]).use_remote_address);
    let e = error(&[("enable-proxy-protocol", "yes")]);
    assert_eq!(e.key, "enable-proxy-protocol");
    assert!(e.message.contains("invalid syntax"), "{e}");
    // Present but empty is an error too, as in Kourier.
    assert_eq!(
        error(&[("use-remote-address", "")]).key,
        "use-remote-address"
    );
}

#[test]
fn the_first_error_in_kouriers_order_is_reported() {
    let e = error(&[("use-remote-address", "x"), ("enable-proxy-protocol", "y")]);
    assert_eq!(
        e.key, "enable-proxy-protocol",
        "proxy protocol is parsed first"
    );
}

#[test]
fn durations_counts_and_lists() {
    let c = parsed(&[
        ("stream-idle-timeout", "1h30m"),
        ("trusted-hops-count", "2"),
        (
            "cipher-suites",
            "ECDHE-RSA-AES128-GCM-SHA256, AES128-SHA,ECDHE-RSA-AES128-GCM-SHA256",
        ),
        ("listen-ip-addresses", "0.0.0.0, ::"),
        (
            "service-access-log-template",
            "%REQ(:METHOD)% %RESPONSE_CODE%\n",
        ),
    ]);
    assert_eq!(c.stream_idle_timeout, Duration::from_secs(5400));
    assert_eq!(c.trusted_hops, 2);
    assert_eq!(
        c.cipher_suites,
        ["AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256"],
        "sorted and deduplicated, as Kourier's string set"
    );
    assert_eq!(c.listen_ips.unwrap().len(), 2);
    assert_eq!(
        c.access_log_template.as_deref(),
        Some("%REQ(:METHOD)% %RESPONSE_CODE%\n"),
        "kept verbatim, trailing newline included"
    );
    assert_eq!(
        error(&[("stream-idle-timeout", "5")]).key,
        "stream-idle-timeout"
    );
    assert_eq!(
        error(&[("trusted-hops-count", "-1")]).key,
        "trusted-hops-count"
    );
    let e = error(&[("listen-ip-addresses", "0.0.0.0,")]);
    assert!(e.message.contains("invalid IP address \"\""), "{e}");
}

#[test]
fn go_durations() {
    assert_eq!(go_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(go_duration("0s").unwrap(), Duration::ZERO);
    assert_eq!(go_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(go_duration("2h45m").unwrap(), Duration::from_secs(9900));
    assert_eq!(go_duration("300ms").unwrap(), Duration::from_millis(300));
    assert_eq!(go_duration("-5s").unwrap(), Duration::ZERO);
    assert!(go_duration("5").is_err());
    assert!(go_duration("").is_err());
    assert!(go_duration("5d").is_err());
}

#[test]
fn tracing_needs_a_url_with_a_port() {
    let c = parsed(&[
        (
            "tracing-endpoint",
            "http://otel.observability.svc:4318/v1/traces",
        ),
        ("tracing-protocol", "http/protobuf"),
        ("tracing-sampling-rate", "0.25"),
    ]);
    let t = c.tracing.unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path.as_str()),
        ("otel.observability.svc", 4318, "/v1/traces")
    );
    assert_eq!(t.protocol, TracingProtocol::HttpProtobuf);
    assert_eq!(t.sampling_rate, 0.25);
    assert_eq!(t.service_name, "kourier-knative");
    let e = error(&[("tracing-endpoint", "otel-collector:4317")]);
    assert_eq!(e.key, "tracing-endpoint");
    assert_eq!(
        error(&[("tracing-endpoint", "http://otel")]).key,
        "tracing-endpoint"
    );
    assert_eq!(
        error(&[
            ("tracing-endpoint", "http://otel:4317"),
            ("tracing-sampling-rate", "2")
        ])
        .key,
        "tracing-sampling-rate"
    );
    assert_eq!(
        error(&[
            ("tracing-endpoint", "http://otel:4317"),
            ("tracing-protocol", "zipkin")
        ])
        .key,
        "tracing-protocol"
    );
}

#[test]
fn the_removed_zipkin_key_is_noted_not_refused() {
    let (c, notes) = parse(
        &data(&[(
            "tracing-collector-full-endpoint",
            "zipkin.default:9411/api/v2/spans",
        )]),
        &KourierEnv::default(),
        "knative-serving",
    )
    .unwrap();
    assert!(c.tracing.is_none());
    assert!(notes.notes[0].1.contains("tracing-endpoint"), "{notes:?}");
}

#[test]
fn ext_authz_from_the_config_map_requires_a_protocol() {
    let c = parsed(&[
        ("extauthz-host", "authz.default.svc:9000"),
        ("extauthz-protocol", "http"),
        ("extauthz-path-prefix", "/check"),
        ("extauthz-timeout", "500"),
        ("extauthz-failure-mode-allow", "true"),
    ]);
    let a = c.ext_authz.unwrap();
    assert_eq!((a.host.as_str(), a.port), ("authz.default.svc", 9000));
    assert_eq!(a.protocol, ExtAuthzProtocol::Http);
    assert_eq!(a.timeout, Duration::from_millis(500));
    assert!(a.failure_mode_allow);
    assert_eq!(a.max_request_bytes, 8192);
    let e = error(&[("extauthz-host", "authz:9000")]);
    assert_eq!(e.key, "extauthz-protocol");
    assert!(e.message.contains("protocol  is invalid"), "{e}");
    assert_eq!(
        error(&[("extauthz-host", "authz"), ("extauthz-protocol", "grpc")]).key,
        "extauthz-host"
    );
    assert_eq!(
        error(&[
            ("extauthz-host", "authz:1"),
            ("extauthz-protocol", "http"),
            ("extauthz-pack-as-bytes", "true")
        ])
        .key,
        "extauthz-pack-as-bytes"
    );
}

#[test]
fn the_environment_wins_for_ext_authz_and_fills_the_default_certificate() {
    let env = KourierEnv {
        certs_secret_name: "wildcard".into(),
        certs_secret_namespace: "kourier-system".into(),
        extauthz: BTreeMap::from([
            ("HOST".to_string(), "[::1]:7000".to_string()),
            ("TIMEOUT".to_string(), "100".to_string()),
        ]),
    };
    let (c, _) = parse(
        &data(&[
            ("extauthz-host", "ignored:1"),
            ("extauthz-protocol", "http"),
        ]),
        &env,
        "knative-serving",
    )
    .unwrap();
    let a = c.ext_authz.unwrap();
    assert_eq!((a.host.as_str(), a.port), ("::1", 7000));
    assert_eq!(
        a.protocol,
        ExtAuthzProtocol::Grpc,
        "the env default, not the key"
    );
    assert_eq!(a.timeout, Duration::from_millis(100));
    assert_eq!(
        c.default_cert,
        Some(SecretRef {
            namespace: "kourier-system".into(),
            name: "wildcard".into()
        })
    );
    // A key that is present overrides the environment, even empty.
    let (c, _) = parse(&data(&[("certs-secret-name", "")]), &env, "knative-serving").unwrap();
    assert!(c.default_cert.is_none());
}

#[test]
fn cluster_cert_secret_lives_in_the_system_namespace() {
    let c = parsed(&[("cluster-cert-secret", " server-certs ")]);
    assert_eq!(
        c.cluster_cert_secret,
        Some(SecretRef {
            namespace: "knative-serving".into(),
            name: "server-certs".into()
        })
    );
}

#[test]
fn cryptomb_is_accepted_and_said_to_have_no_effect() {
    let (c, notes) = parse(
        &data(&[("enable-cryptomb", "true")]),
        &KourierEnv::default(),
        "knative-serving",
    )
    .unwrap();
    assert!(c.cryptomb);
    assert!(notes.notes[0].1.contains("no effect"));
}
