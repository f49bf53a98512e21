//! Prints what the route layout costs at scale: N KIngresses (one external host, three
//! cluster-local hosts, a 2-way split each, as Knative writes them) translated and assembled,
//! then one split edit.
//!
//! `cargo run --release -p sluice-serving --example translate_scale -- 10000`
//!
//! With scoped routes, a split edit changes one RouteConfiguration of a few KB; with one
//! RouteConfiguration for all hosts (net-kourier's layout) Envoy would re-parse all of them.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};
use sluice_serving::{GatewayConfig, Ingress, Objects, assemble, translate_ingress};
use sluice_xds::SnapshotCache;
use sluice_xds::resource::ROUTE;

fn service(ns: &str, name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn kingress(i: usize, first: u32) -> Ingress {
    let spec = format!(
        r#"
rules:
- hosts: [svc-{i}.default.example.com]
  visibility: ExternalIP
  http:
    paths:
    - splits:
      - {{serviceName: svc-{i}-00001, serviceNamespace: default, servicePort: 80, percent: {first}, appendHeaders: {{Knative-Serving-Revision: svc-{i}-00001, Knative-Serving-Namespace: default}}}}
      - {{serviceName: svc-{i}-00002, serviceNamespace: default, servicePort: 80, percent: {second}, appendHeaders: {{Knative-Serving-Revision: svc-{i}-00002, Knative-Serving-Namespace: default}}}}
- hosts: [svc-{i}.default, svc-{i}.default.svc, svc-{i}.default.svc.cluster.local]
  visibility: ClusterLocal
  http:
    paths:
    - splits:
      - {{serviceName: svc-{i}-00001, serviceNamespace: default, servicePort: 80, percent: {first}}}
      - {{serviceName: svc-{i}-00002, serviceNamespace: default, servicePort: 80, percent: {second}}}
"#,
        second = 100 - first
    );
    let mut ing = Ingress {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(format!("svc-{i}")),
            annotations: Some(
                [(
                    INGRESS_CLASS_ANNOTATION.to_string(),
                    SLUICE_INGRESS_CLASS.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    ing.spec = serde_yaml::from_str(&spec).expect("spec");
    ing
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut objects = Objects::new();
    for i in 0..n {
        objects.add_service(service("default", &format!("svc-{i}-00001")));
        objects.add_service(service("default", &format!("svc-{i}-00002")));
    }
    let mut ingresses: Vec<Ingress> = (0..n).map(|i| kingress(i, 50)).collect();
    let config = GatewayConfig::default();

    let t = Instant::now();
    let translated: Vec<_> = ingresses
        .iter()
        .map(|i| translate_ingress(i, &objects).expect("translates"))
        .collect();
    let translate_time = t.elapsed();
    let t = Instant::now();
    let resources = assemble(&translated, &config);
    let assemble_time = t.elapsed();
    let route_bytes: usize = resources
        .iter()
        .filter(|r| r.type_url() == ROUTE)
        .map(|r| r.encoded_len())
        .sum();
    let cache = SnapshotCache::new();
    let t = Instant::now();
    cache
        .set_snapshot("gateway", resources)
        .expect("consistent");
    let snapshot_time = t.elapsed();
    println!(
        "{n} KIngresses: translate {translate_time:?}, assemble {assemble_time:?}, snapshot {snapshot_time:?}"
    );
    println!(
        "route configurations: {n} totalling {route_bytes} bytes (one table would be all of them)"
    );

    // One split edit: re-translate that KIngress only.
    let edited = n / 2;
    ingresses[edited] = kingress(edited, 90);
    let t = Instant::now();
    let one = translate_ingress(&ingresses[edited], &objects).expect("translates");
    let edit_time = t.elapsed();
    let rc_bytes: usize = one
        .resources()
        .iter()
        .filter(|r| r.type_url() == ROUTE)
        .map(|r| r.encoded_len())
        .sum();
    let mut all = translated;
    all[edited] = one;
    let applied = cache
        .set_snapshot("gateway", assemble(&all, &config))
        .expect("consistent");
    println!(
        "one split edit: re-translated in {edit_time:?}; {} resource changed ({:?}), {rc_bytes} bytes of routes for Envoy to rebuild instead of {route_bytes}",
        applied.changed, applied.changed_types
    );
}
