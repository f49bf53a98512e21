//! The Envoy bootstrap shipped in `deploy/ingress/200-envoy-bootstrap.yaml` is exactly what
//! `sluice envoy bootstrap` renders for the command its comment gives (control plane by its
//! Service's DNS name, mutual TLS from the mounted client Secret). (tests/hardening_e2e.rs runs real
//! Envoy from bootstraps rendered the same way.)

use std::path::Path;

use sluice::envoy::{BootstrapParams, XdsClientTls, XdsMode, render};

fn deployed() -> String {
    bootstrap_in("deploy/ingress/200-envoy-bootstrap.yaml")
}

fn bootstrap_in(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).expect(file);
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("one YAML document");
    assert_eq!(doc["kind"].as_str(), Some("ConfigMap"));
    doc["data"]["envoy-bootstrap.yaml"]
        .as_str()
        .expect("data.envoy-bootstrap.yaml")
        .to_string()
}

/// `sluice envoy bootstrap --xds sluice-xds.knative-serving.svc:18000 --node-id sluice-gateway
/// --envoy-admin 127.0.0.1:9901 --envoy-stats 0.0.0.0:9000 --xds-tls-cert … --xds-tls-key …
/// --xds-tls-ca …
/// --xds-tls-server-name sluice-xds.knative-serving.svc`.
fn expected() -> String {
    let dir = "/etc/sluice/xds-tls";
    render(&BootstrapParams {
        node_id: "sluice-gateway".into(),
        mode: XdsMode::Delta,
        admin: "127.0.0.1:9901".parse().unwrap(),
        stats: Some("0.0.0.0:9000".parse().unwrap()),
        xds_endpoints: vec![("sluice-xds.knative-serving.svc".into(), 18000)],
        xds_tls: Some(XdsClientTls {
            cert: format!("{dir}/tls.crt"),
            key: format!("{dir}/tls.key"),
            ca: format!("{dir}/ca.crt"),
            server_name: Some("sluice-xds.knative-serving.svc".into()),
        }),
        ..BootstrapParams::default()
    })
}

#[test]
fn deployed_bootstrap_is_what_sluice_envoy_bootstrap_renders() {
    assert_eq!(
        deployed(),
        expected(),
        "deploy/ingress/200-envoy-bootstrap.yaml is stale: paste the output of the \
         `sluice envoy bootstrap` command in its comment (then bless deploy/full, see \
         serving-controller/tests/kube_runtime.rs)"
    );
}

/// The full profile's bootstrap (`deploy/full/450-envoy-bootstrap.yaml`): the same, plus
/// `--metrics-sink sluice-autoscaler.knative-serving.svc:8080`.
#[test]
fn full_profile_bootstrap_adds_the_autoscalers_metrics_sink() {
    let mut params = BootstrapParams {
        metrics_sink: Some(("sluice-autoscaler.knative-serving.svc".into(), 8080)),
        ..BootstrapParams::default()
    };
    let base = expected();
    // The same flags as the ingress profile's, plus the sink.
    let dir = "/etc/sluice/xds-tls";
    params.node_id = "sluice-gateway".into();
    params.admin = "127.0.0.1:9901".parse().unwrap();
    params.stats = Some("0.0.0.0:9000".parse().unwrap());
    params.xds_endpoints = vec![("sluice-xds.knative-serving.svc".into(), 18000)];
    params.xds_tls = Some(XdsClientTls {
        cert: format!("{dir}/tls.crt"),
        key: format!("{dir}/tls.key"),
        ca: format!("{dir}/ca.crt"),
        server_name: Some("sluice-xds.knative-serving.svc".into()),
    });
    let full = bootstrap_in("deploy/full/450-envoy-bootstrap.yaml");
    assert_eq!(
        full,
        render(&params),
        "deploy/full/450-envoy-bootstrap.yaml is stale: paste the output of the command in \
         its comment"
    );
    assert_ne!(full, base);
}
