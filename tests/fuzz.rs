//! Bounded fuzzing of the input path: YAML/JSON documents → decoding → Knative's validation →
//! translation to Envoy resources. Whatever the input, nothing panics, every failure is an
//! error naming the object, and what translation lets through is what Envoy takes (no CR, LF or
//! NUL in a header, no `Host` set by `appendHeaders`).
//!
//! A fixed number of cases per run (`SLUICE_FUZZ_CASES`, default 1500) keeps CI's time fixed;
//! raise it locally for a longer run. Cases come from proptest (shrunk on failure) in two
//! shapes: real documents with random byte edits, and KIngresses built field by field from
//! hostile strings.

use std::path::Path;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use proptest::prelude::*;
use serde_json::json;
use sluice::gateway::documents::{Object, decode};
use sluice_serving::{GatewayConfig, Ingress, Objects, assemble, translate_ingress};

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

const FIXTURES: [&str; 3] = [
    r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev}
spec:
  tls: [{hosts: [hello.example.com], secretName: tls, secretNamespace: default}]
  rules:
  - hosts: [hello.example.com, hello.default.svc.cluster.local]
    visibility: ExternalIP
    http:
      paths:
      - path: /api
        headers: {x-canary: {exact: "yes"}}
        appendHeaders: {K-Original: x}
        rewriteHost: hello.default.svc
        splits:
        - {serviceName: a, serviceNamespace: default, servicePort: 80, percent: 90, appendHeaders: {x-rev: a}}
        - {serviceName: a, serviceNamespace: default, servicePort: http, percent: 10}
"#,
    r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "default",
 "annotations": {"sluice.knative.dev/timeout-seconds": "30", "sluice.knative.dev/container-concurrency": "2"}},
 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
---
{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "a-x", "namespace": "default",
 "labels": {"kubernetes.io/service-name": "a"}}, "addressType": "IPv4",
 "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}], "ports": [{"name": "http", "port": 8080}]}
"#,
    r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/max-scale: "3"}
    spec:
      containerConcurrency: 2
      timeoutSeconds: 30
      containers: [{image: x, command: [python3]}]
  traffic:
  - {latestRevision: true, percent: 90}
  - {revisionName: hello-00001, percent: 10, tag: old}
"#,
];

/// What the fuzzed KIngresses may name: Service `default/a` (port 80 `http`) with endpoints
/// and a TLS Secret `default/tls`.
fn lookup() -> Objects {
    let mut o = Objects::new();
    o.add_service(
        serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap(),
    );
    o.add_endpoint_slice(
        serde_json::from_value(json!({
            "metadata": {"name": "a-x", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "a"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080}]
        }))
        .unwrap(),
    );
    let cert = include_str!("../xds-server/src/redact/test-cert.pem");
    let key = include_str!("../xds-server/src/redact/test-key.pem");
    o.add_secret(
        serde_json::from_value(json!({
            "metadata": {"name": "tls", "namespace": "default"},
            "data": {
                "tls.crt": base64(cert),
                "tls.key": base64(key),
            }
        }))
        .unwrap(),
    );
    o
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Translates, and checks what came out is what Envoy takes.
fn translate_and_check(mut ingress: Ingress, lookup: &Objects) {
    ingress.set_defaults();
    match translate_ingress(&ingress, lookup) {
        Ok(r) => {
            for rc in &r.route_configurations {
                check_headers(rc);
            }
            // Assembled with the listeners, every resource encodes and names only what exists.
            let resources = assemble(std::slice::from_ref(&r), &GatewayConfig::default());
            let cache = sluice_xds::SnapshotCache::new();
            cache
                .set_snapshot("g", resources)
                .expect("a translation is consistent");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            assert_eq!(e.ingress(), &ingress.key(), "the error names its KIngress");
        }
    }
}

fn check_headers(rc: &RouteConfiguration) {
    let bad = |s: &str| s.contains(['\r', '\n', '\0']);
    for vh in &rc.virtual_hosts {
        for d in &vh.domains {
            assert!(!bad(d), "domain {d:?}");
        }
        for r in &vh.routes {
            let mut headers: Vec<_> = r.request_headers_to_add.iter().collect();
            if let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) =
                &r.action
                && let Some(
                    envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::WeightedClusters(w),
                ) = &a.cluster_specifier
            {
                for c in &w.clusters {
                    headers.extend(c.request_headers_to_add.iter());
                }
            }
            for h in headers {
                let h = h.header.as_ref().unwrap();
                assert!(!bad(&h.key) && !bad(&h.value), "header {h:?}");
                assert!(
                    !h.key.eq_ignore_ascii_case("host") && !h.key.starts_with(':'),
                    "{h:?}"
                );
            }
            if let Some(m) = &r.r#match {
                for h in &m.headers {
                    assert!(!bad(&h.name), "{h:?}");
                }
            }
        }
    }
}

/// Strings that go wrong in different ways: control characters, separators, unicode, long.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,20}",
        "[a-zA-Z0-9 :/*?#\\r\\n\\x00é_.-]{0,24}",
        ".{0,12}",
        Just("a".repeat(300)),
        Just(String::new()),
    ]
}

/// Mostly well-formed values of one kind (so translation runs through), sometimes hostile.
fn mostly(good: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![14 => good, 1 => hostile()]
}

fn kingress() -> impl Strategy<Value = serde_json::Value> {
    let header = || {
        prop::collection::btree_map(
            mostly("[A-Za-z][A-Za-z0-9-]{0,10}"),
            mostly("[ -~]{0,12}"),
            0..3,
        )
    };
    let split = (
        prop_oneof![8 => Just("a".to_string()), 1 => hostile()],
        prop_oneof![10 => Just(None), 1 => any::<i64>().prop_map(|p| Some(p % 150))],
        header(),
    )
        .prop_map(|(name, percent, headers)| {
            let mut s = json!({"serviceName": name, "serviceNamespace": "default",
                "servicePort": 80, "appendHeaders": headers});
            if let Some(p) = percent {
                s["percent"] = json!(p);
            }
            s
        });
    let path = (
        mostly("(/[a-z]{0,5}){0,3}"),
        prop_oneof![4 => Just(String::new()), 2 => "[a-z]{1,8}\\.svc", 1 => hostile()],
        header(),
        prop::collection::btree_map(mostly("[a-z][a-z0-9-]{0,8}"), mostly("[ -~]{0,8}"), 0..2),
        prop::collection::vec(split, 1..4),
    )
        .prop_map(|(path, rewrite, append, matches, mut splits)| {
            // Usually a valid split: percentages summing to 100 (the last takes the rest).
            let n = splits.len() as i64;
            if splits.iter().all(|s| s.get("percent").is_none()) {
                for (i, s) in splits.iter_mut().enumerate() {
                    let share = if i as i64 == n - 1 {
                        100 - (n - 1) * (100 / n)
                    } else {
                        100 / n
                    };
                    s["percent"] = json!(share);
                }
            }
            let matches: serde_json::Map<String, serde_json::Value> = matches
                .into_iter()
                .map(|(k, v)| (k, json!({"exact": v})))
                .collect();
            json!({"path": path, "rewriteHost": rewrite, "appendHeaders": append,
                "headers": matches, "splits": splits})
        });
    let rule = (
        prop::collection::vec(mostly("[a-z]{1,8}\\.example\\.com"), 1..3),
        prop_oneof![4 => Just("ExternalIP"), 2 => Just("ClusterLocal"), 1 => Just("Bogus")],
        prop::collection::vec(path, 1..3),
    )
        .prop_map(|(hosts, visibility, paths)| {
            json!({"hosts": hosts, "visibility": visibility, "http": {"paths": paths}})
        });
    (
        prop::collection::vec(rule, 1..3),
        prop::collection::vec(mostly("[a-z]{1,8}\\.example\\.com"), 0..2),
        any::<bool>(),
    )
        .prop_map(|(rules, tls_hosts, redirect)| {
            let mut spec = json!({"rules": rules});
            if !tls_hosts.is_empty() {
                spec["tls"] = json!([{"hosts": tls_hosts, "secretName": "tls", "secretNamespace": "default"}]);
            }
            if redirect {
                spec["httpOption"] = json!("Redirected");
            }
            json!({
                "apiVersion": "networking.internal.knative.dev/v1alpha1",
                "kind": "Ingress",
                "metadata": {"name": "fuzz", "namespace": "default", "annotations":
                    {"networking.knative.dev/ingress.class": "sluice.ingress.networking.knative.dev"}},
                "spec": spec,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Real documents with random edits (replace, insert, delete bytes; deep nesting).
    #[test]
    fn edited_documents_decode_validate_and_translate_without_panic(
        fixture in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 0..6),
    ) {
        let mut bytes = FIXTURES[fixture].as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at as usize % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.splice(at..at, b"[{[{".iter().copied()).for_each(drop),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let decoded = decode(Path::new("fuzz.yaml"), &text);
        let lookup = lookup();
        for p in &decoded.problems {
            prop_assert!(!p.message.is_empty());
        }
        for (_, object) in decoded.objects {
            if let Object::Ingress(i) = object {
                translate_and_check(*i, &lookup);
            }
        }
    }

    /// KIngresses built field by field from hostile strings and numbers.
    #[test]
    fn hostile_kingresses_translate_or_fail_cleanly(doc in kingress()) {
        let text = serde_json::to_string(&doc).unwrap();
        let decoded = decode(Path::new("fuzz.json"), &text);
        let lookup = lookup();
        for (_, object) in decoded.objects {
            if let Object::Ingress(i) = object {
                translate_and_check(*i, &lookup);
            }
        }
    }
}
