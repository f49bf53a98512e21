use super::*;
use sluice_serving::FieldError;

const HANDOVER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hello-1, labels: {kubernetes.io/service-name: hello}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: http, port: 8080}]
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: first
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.example.com]
    http: {paths: [{splits: [{serviceName: hello, serviceNamespace: default, servicePort: 80}]}]}
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: second
  creationTimestamp: "2026-02-01T00:00:00Z"
  annotations: {networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.example.com]
    http: {paths: [{splits: [{serviceName: hello, serviceNamespace: default, servicePort: 80}]}]}
"#;

#[test]
fn a_host_handed_over_keeps_the_shared_cluster() {
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let mut state = GatewayState::new(GatewayConfig {
        external_http: addr(1),
        internal_http: addr(2),
        external_https: addr(3),
        internal_https: addr(4),
        ..Default::default()
    });
    let decoded = super::super::documents::decode(std::path::Path::new("x.yaml"), HANDOVER);
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    let (first, _) = state.apply(
        decoded
            .objects
            .into_iter()
            .map(|(k, o)| (k, Some(o)))
            .collect(),
    );
    let second = IngressKey::new("default", "second");
    assert_eq!(
        state.ingresses()[&second].reason.as_deref(),
        Some(sluice_serving::conflict::DOMAIN_CONFLICT)
    );
    // (The gateway's own cluster, Envoy's admin for the readiness route, is not counted.)
    let cluster = |u: &Update| {
        u.upserts
            .iter()
            .filter(|r| {
                r.type_url() == sluice_xds::resource::CLUSTER && !r.name().starts_with("sluice/")
            })
            .count()
    };
    assert_eq!(cluster(&first), 1);
    // The winner goes: the loser takes the host and the same cluster, which must stay.
    let (update, changed) = state.apply(vec![(
        ObjectKey {
            kind: Kind::Ingress,
            namespace: "default".into(),
            name: "first".into(),
        },
        None,
    )]);
    assert!(changed.contains(&second), "{changed:?}");
    assert_eq!(state.ingresses()[&second].error, None);
    assert!(
        !update
            .removals
            .iter()
            .any(|(t, _)| t == sluice_xds::resource::CLUSTER),
        "the shared cluster is not removed: {:?}",
        update.removals
    );
    let mut keys: Vec<(&str, &str)> = update
        .upserts
        .iter()
        .map(|r| (r.type_url(), r.name()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "each resource once");
    for (t, name) in &update.removals {
        assert!(
            !keys.contains(&(t.as_str(), name.as_str())),
            "{name} both upserted and removed"
        );
    }
    // And the cache accepts it as consistent.
    let cache = sluice_xds::SnapshotCache::new();
    cache.update("g", first).expect("first snapshot");
    cache.update("g", update).expect("handover is consistent");
}

#[test]
fn translation_errors_name_their_field() {
    let ingress = IngressKey::new("default", "live");
    let invalid = TranslateError::Invalid {
        ingress: ingress.clone(),
        errors: vec![
            FieldError {
                message: "traffic split percentage must total to 100, but was 90".into(),
                paths: vec!["spec.rules[0].http.paths[0].splits".into()],
            },
            FieldError {
                message: "missing field(s)".into(),
                paths: vec![
                    "spec.rules[1].hosts".into(),
                    "spec.rules[0].http.paths[0].splits".into(),
                ],
            },
        ],
    };
    assert_eq!(
        field_of(&invalid).as_deref(),
        Some("spec.rules[0].http.paths[0].splits, spec.rules[1].hosts")
    );
    let missing = TranslateError::ServiceNotFound {
        ingress: ingress.clone(),
        field: "spec.rules[0].http.paths[0].splits[0].serviceName".into(),
        namespace: "default".into(),
        name: "a".into(),
    };
    assert_eq!(
        field_of(&missing).as_deref(),
        Some("spec.rules[0].http.paths[0].splits[0].serviceName")
    );
    let other = TranslateError::OtherClass {
        ingress,
        class: None,
    };
    assert_eq!(field_of(&other), None);
}

#[test]
fn config_network_turns_internal_tls_on_and_a_bad_value_keeps_the_last_good() {
    let network = |value: &str| {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-network, namespace: knative-serving}}\ndata: {{system-internal-tls: {value:?}}}\n"
        );
        let decoded = super::super::documents::decode(std::path::Path::new("n.yaml"), &text);
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        decoded
            .objects
            .into_iter()
            .map(|(k, o)| (k, Some(o)))
            .collect::<Vec<_>>()
    };
    let mut state = GatewayState::new(GatewayConfig::default());
    state.apply(network("enabled"));
    assert!(state.config().internal_tls);
    let key = "config-network/system-internal-tls";
    assert_eq!(state.config_status().values[key], "enabled");
    // Refused with the key named; the previous setting stays in force.
    state.apply(network("on"));
    assert!(state.config().internal_tls);
    let problems = state.config_status().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("config-network: system-internal-tls = \"on\"")),
        "{problems:?}"
    );
    state.apply(network("disabled"));
    assert!(!state.config().internal_tls);
    assert!(state.config_status().problems.is_empty());
}
