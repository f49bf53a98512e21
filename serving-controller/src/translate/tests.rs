//! Table-driven tests of [`translate_ingress`]: each case builds the expected Envoy protos with
//! the same per-resource constructors and compares whole values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Secret, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::routes::{Forwarding, cluster_weight, exact_header, route_match};
use super::*;
use crate::ingress::{INGRESS_CLASS_ANNOTATION, IngressSpec};
use crate::lookup::{Objects, SERVICE_NAME_LABEL};

pub(crate) const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
pub(crate) const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub(crate) fn port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()).filter(|n: &String| !n.is_empty()),
        port,
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

pub(crate) fn service(ns: &str, name: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn slice(
    ns: &str,
    svc: &str,
    port_name: &str,
    port: i32,
    ready: &[&str],
    not_ready: &[&str],
) -> EndpointSlice {
    let ep = |a: &&str, r: bool| Endpoint {
        addresses: vec![a.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(r),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut m = meta(ns, &format!("{svc}-abcde"));
    m.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(
            ready
                .iter()
                .map(|a| ep(a, true))
                .chain(not_ready.iter().map(|a| ep(a, false)))
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(port),
            ..Default::default()
        }]),
    }
}

pub(crate) fn tls_secret(ns: &str, name: &str, cert: &str, key: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([("tls.crt".to_string(), ByteString(cert.into()))]);
    if let Some(k) = key {
        data.insert("tls.key".into(), ByteString(k.into()));
    }
    Secret {
        metadata: meta(ns, name),
        data: Some(data),
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    }
}

/// The cluster state the cases translate against.
pub(crate) fn objects() -> Objects {
    let mut o = Objects::new();
    o.add_service(service("default", "hello-00001", vec![port("http", 80, 8012)]))
        .add_endpoint_slice(slice(
            "default",
            "hello-00001",
            "http",
            8012,
            &["10.0.0.2", "10.0.0.1"],
            &["10.0.0.3"],
        ))
        .add_service(service("default", "hello-00002", vec![port("http", 80, 8012)]))
        .add_endpoints(Endpoints {
            metadata: meta("default", "hello-00002"),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "10.0.1.1".into(),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.1.2".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![CorePort {
                    name: Some("http".into()),
                    port: 8012,
                    ..Default::default()
                }]),
            }]),
        })
        .add_service(service("default", "grpc-00001", vec![port("http2", 80, 8080)]))
        .add_endpoint_slice(slice("default", "grpc-00001", "http2", 8080, &["10.0.2.1"], &[]))
        .add_service(service(
            "default",
            "h2c-app",
            vec![ServicePort {
                app_protocol: Some("kubernetes.io/h2c".into()),
                ..port("web", 81, 9000)
            }],
        ))
        .add_service(Service {
            metadata: meta("default", "ext"),
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("example.org".into()),
                ports: Some(vec![port("http", 80, 80)]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .add_service(Service {
            metadata: meta("default", "ext-noports"),
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("example.org".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .add_service(Service {
            metadata: meta("default", "ext-broken"),
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .add_secret(tls_secret("default", "tls-cert", CERT, Some(KEY)))
        .add_secret(tls_secret("default", "no-key", CERT, None))
        .add_secret(tls_secret("default", "not-pem", "hello", Some(KEY)));
    o
}

/// A KIngress `default/hello` of Sluice's class with the given spec.
pub(crate) fn kingress(spec: &str) -> Ingress {
    let mut ing = Ingress::default();
    ing.metadata = meta("default", "hello");
    ing.metadata.annotations = Some(BTreeMap::from([(
        INGRESS_CLASS_ANNOTATION.to_string(),
        crate::ingress::SLUICE_INGRESS_CLASS.to_string(),
    )]));
    ing.spec = serde_yaml::from_str::<IngressSpec>(spec).expect("spec YAML");
    ing
}

fn key() -> IngressKey {
    IngressKey::new("default", "hello")
}

fn ep(ip: &str, port: u32) -> (IpAddr, u32) {
    (ip.parse().unwrap(), port)
}

fn rev_headers(rev: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("Knative-Serving-Namespace".to_string(), "default".to_string()),
        ("Knative-Serving-Revision".to_string(), rev.to_string()),
    ])
}

/// The probe route, then the forwarding route, of one path.
fn probe(rule: usize, prefix: &str, m: &RouteMatch, hash: &str) -> Route {
    routes::probe_route(&names::probe_route(&key(), rule, prefix), m.clone(), hash)
}

fn forward(
    rule: usize,
    prefix: &str,
    m: &RouteMatch,
    clusters: Vec<ClusterWeight>,
    fwd: &Forwarding,
) -> Route {
    routes::weighted_route(&names::route(&key(), rule, prefix), m.clone(), clusters, fwd)
}

use envoy_types::pb::envoy::config::route::v3::RouteMatch;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;

const REV1: &str = "default/hello-00001:80";
const REV2: &str = "default/hello-00002:80";

fn rev1_assignment() -> ClusterLoadAssignment {
    clusters::load_assignment(REV1, &[ep("10.0.0.1", 8012), ep("10.0.0.2", 8012)])
}

fn simple_vhost(rule: usize, hosts: &[&str], hash: &str) -> VirtualHost {
    let m = route_match("/", vec![]);
    routes::virtual_host(
        &names::virtual_host(&key(), rule),
        routes::domains(hosts.iter().copied()),
        vec![
            probe(rule, "/", &m, hash),
            forward(
                rule,
                "/",
                &m,
                vec![cluster_weight(REV1, 100, &rev_headers("hello-00001"))],
                &Forwarding::default(),
            ),
        ],
    )
}

const SIMPLE_SPLIT: &str = r#"
        - serviceName: hello-00001
          serviceNamespace: default
          servicePort: 80
          percent: 100
          appendHeaders:
            Knative-Serving-Namespace: default
            Knative-Serving-Revision: hello-00001
"#;

struct Case {
    name: &'static str,
    spec: String,
    want: fn(hash: &str) -> IngressResources,
}

fn base(hash: &str) -> IngressResources {
    IngressResources {
        ingress: key(),
        hash: hash.to_string(),
        route_configurations: vec![],
        scopes: vec![],
        clusters: vec![],
        load_assignments: vec![],
        secrets: vec![],
        tls: vec![],
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "external rule: probe first, host and host:*, EDS cluster from ready slice endpoints",
            spec: format!(
                "rules:\n- hosts: [hello.example.com]\n  visibility: ExternalIP\n  http:\n    paths:\n    - splits:{SIMPLE_SPLIT}"
            ),
            want: |h| IngressResources {
                route_configurations: vec![routes::route_configuration(
                    "default/hello",
                    vec![simple_vhost(0, &["hello.example.com"], h)],
                )],
                scopes: vec![
                    scopes::scope(RouteTable::External, "hello.example.com", "default/hello"),
                    scopes::scope(RouteTable::Internal, "hello.example.com", "default/hello"),
                ],
                clusters: vec![clusters::eds_cluster(REV1, false)],
                load_assignments: vec![rev1_assignment()],
                ..base(h)
            },
        },
        Case {
            name: "cluster-local rule: internal scopes only; Endpoints used when there is no slice",
            spec: r#"
rules:
- hosts: [hello.default, hello.default.svc]
  visibility: ClusterLocal
  http:
    paths:
    - splits:
      - {serviceName: hello-00002, serviceNamespace: default, servicePort: http}
"#
            .into(),
            want: |h| {
                let m = route_match("/", vec![]);
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![routes::virtual_host(
                            "(default/hello).Rules[0]",
                            routes::domains(["hello.default", "hello.default.svc"]),
                            vec![
                                probe(0, "/", &m, h),
                                forward(
                                    0,
                                    "/",
                                    &m,
                                    vec![cluster_weight(REV2, 100, &BTreeMap::new())],
                                    &Forwarding::default(),
                                ),
                            ],
                        )],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::Internal, "hello.default", "default/hello"),
                        scopes::scope(RouteTable::Internal, "hello.default.svc", "default/hello"),
                    ],
                    clusters: vec![clusters::eds_cluster(REV2, false)],
                    load_assignments: vec![clusters::load_assignment(
                        REV2,
                        &[ep("10.0.1.1", 8012)],
                    )],
                    ..base(h)
                }
            },
        },
        Case {
            name: "weighted splits: 0% kept at weight 0, split headers, h2c by port name and appProtocol",
            spec: r#"
rules:
- hosts: [split.example.com]
  http:
    paths:
    - splits:
      - {serviceName: grpc-00001, serviceNamespace: default, servicePort: 80, percent: 70, appendHeaders: {Knative-Serving-Revision: grpc-00001}}
      - {serviceName: h2c-app, serviceNamespace: default, servicePort: web, percent: 30}
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80, percent: 0}
"#
            .into(),
            want: |h| {
                let m = route_match("/", vec![]);
                let grpc = "default/grpc-00001:80";
                let app = "default/h2c-app:81";
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![routes::virtual_host(
                            "(default/hello).Rules[0]",
                            routes::domains(["split.example.com"]),
                            vec![
                                probe(0, "/", &m, h),
                                forward(
                                    0,
                                    "/",
                                    &m,
                                    vec![
                                        cluster_weight(
                                            grpc,
                                            70,
                                            &BTreeMap::from([(
                                                "Knative-Serving-Revision".into(),
                                                "grpc-00001".into(),
                                            )]),
                                        ),
                                        cluster_weight(app, 30, &BTreeMap::new()),
                                        cluster_weight(REV1, 0, &BTreeMap::new()),
                                    ],
                                    &Forwarding::default(),
                                ),
                            ],
                        )],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::External, "split.example.com", "default/hello"),
                        scopes::scope(RouteTable::Internal, "split.example.com", "default/hello"),
                    ],
                    clusters: vec![
                        clusters::eds_cluster(grpc, true),
                        clusters::eds_cluster(app, true),
                        clusters::eds_cluster(REV1, false),
                    ],
                    load_assignments: vec![
                        clusters::load_assignment(grpc, &[ep("10.0.2.1", 8080)]),
                        clusters::load_assignment(app, &[]),
                        rev1_assignment(),
                    ],
                    ..base(h)
                }
            },
        },
        Case {
            name: "paths: longest prefix first, header matches first, path headers set, rewriteHost",
            spec: r#"
rules:
- hosts: [paths.example.com]
  http:
    paths:
    - splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}
    - path: /api
      splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}
    - path: /api
      headers:
        Knative-Serving-Tag: {exact: canary}
      appendHeaders:
        Knative-Serving-Tag: canary
      rewriteHost: canary.internal
      splits:
      - {serviceName: hello-00002, serviceNamespace: default, servicePort: 80}
"#
            .into(),
            want: |h| {
                let root = route_match("/", vec![]);
                let api = route_match("/api", vec![]);
                let tagged = route_match("/api", vec![exact_header("Knative-Serving-Tag", "canary")]);
                let none = BTreeMap::new();
                let tag_fwd = Forwarding {
                    rewrite_host: Some("canary.internal".into()),
                    set_headers: BTreeMap::from([(
                        "Knative-Serving-Tag".into(),
                        "canary".into(),
                    )]),
                    ..Default::default()
                };
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![routes::virtual_host(
                            "(default/hello).Rules[0]",
                            routes::domains(["paths.example.com"]),
                            vec![
                                probe(0, "/api", &tagged, h),
                                probe(0, "/api", &api, h),
                                probe(0, "/", &root, h),
                                forward(0, "/api", &tagged, vec![cluster_weight(REV2, 100, &none)], &tag_fwd),
                                forward(0, "/api", &api, vec![cluster_weight(REV1, 100, &none)], &Forwarding::default()),
                                forward(0, "/", &root, vec![cluster_weight(REV1, 100, &none)], &Forwarding::default()),
                            ],
                        )],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::External, "paths.example.com", "default/hello"),
                        scopes::scope(RouteTable::Internal, "paths.example.com", "default/hello"),
                    ],
                    clusters: vec![
                        clusters::eds_cluster(REV1, false),
                        clusters::eds_cluster(REV2, false),
                    ],
                    load_assignments: vec![
                        rev1_assignment(),
                        clusters::load_assignment(REV2, &[ep("10.0.1.1", 8012)]),
                    ],
                    ..base(h)
                }
            },
        },
        Case {
            name: "ExternalName service: DNS cluster to the external name and service port",
            spec: r#"
rules:
- hosts: [ext.example.com]
  http:
    paths:
    - rewriteHost: example.org
      splits:
      - {serviceName: ext, serviceNamespace: default, servicePort: http}
    - path: /raw
      splits:
      - {serviceName: ext-noports, serviceNamespace: default, servicePort: 8443}
"#
            .into(),
            want: |h| {
                let root = route_match("/", vec![]);
                let raw = route_match("/raw", vec![]);
                let none = BTreeMap::new();
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![routes::virtual_host(
                            "(default/hello).Rules[0]",
                            routes::domains(["ext.example.com"]),
                            vec![
                                probe(0, "/raw", &raw, h),
                                probe(0, "/", &root, h),
                                forward(
                                    0,
                                    "/raw",
                                    &raw,
                                    vec![cluster_weight("default/ext-noports:8443", 100, &none)],
                                    &Forwarding::default(),
                                ),
                                forward(
                                    0,
                                    "/",
                                    &root,
                                    vec![cluster_weight("default/ext:80", 100, &none)],
                                    &Forwarding {
                                        rewrite_host: Some("example.org".into()),
                                        ..Default::default()
                                    },
                                ),
                            ],
                        )],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::External, "ext.example.com", "default/hello"),
                        scopes::scope(RouteTable::Internal, "ext.example.com", "default/hello"),
                    ],
                    clusters: vec![
                        clusters::dns_cluster("default/ext-noports:8443", "example.org", 8443, false),
                        clusters::dns_cluster("default/ext:80", "example.org", 80, false),
                    ],
                    ..base(h)
                }
            },
        },
        Case {
            name: "httpOption Redirected with TLS: external HTTP redirects (after probes), HTTPS and internal serve",
            spec: format!(
                r#"
httpOption: Redirected
tls:
- hosts: [secure.example.com, secure.example.com]
  secretName: tls-cert
  secretNamespace: default
rules:
- hosts: [secure.example.com]
  visibility: ExternalIP
  http:
    paths:
    - splits:{SIMPLE_SPLIT}
- hosts: [secure.default]
  visibility: ClusterLocal
  http:
    paths:
    - splits:{SIMPLE_SPLIT}
"#
            ),
            want: |h| {
                let m = route_match("/", vec![]);
                IngressResources {
                    route_configurations: vec![
                        routes::route_configuration(
                            "default/hello",
                            vec![
                                simple_vhost(0, &["secure.example.com"], h),
                                simple_vhost(1, &["secure.default"], h),
                            ],
                        ),
                        routes::route_configuration(
                            "default/hello/redirect",
                            vec![routes::virtual_host(
                                "(default/hello).Rules[0]",
                                routes::domains(["secure.example.com"]),
                                vec![
                                    probe(0, "/", &m, h),
                                    routes::redirect_route("(default/hello).Rules[0].Paths[/]", m.clone()),
                                ],
                            )],
                        ),
                    ],
                    scopes: vec![
                        // Sorted by name: "external-tls/" sorts before "external/".
                        scopes::scope(RouteTable::ExternalTls, "secure.example.com", "default/hello"),
                        scopes::scope(RouteTable::External, "secure.example.com", "default/hello/redirect"),
                        scopes::scope(RouteTable::Internal, "secure.default", "default/hello"),
                        scopes::scope(RouteTable::Internal, "secure.example.com", "default/hello"),
                    ],
                    clusters: vec![clusters::eds_cluster(REV1, false)],
                    load_assignments: vec![rev1_assignment()],
                    secrets: vec![tls::sds_secret("default/tls-cert", CERT.as_bytes(), KEY.as_bytes())],
                    tls: vec![TlsChain {
                        name: "(default/hello).TLS[0]".into(),
                        server_names: vec!["secure.example.com".into()],
                        secret: "default/tls-cert".into(),
                        visibility: Visibility::ExternalIP,
                    }],
                    ..base(h)
                }
            },
        },
        Case {
            name: "a host in two rules belongs to the first: one vhost domain, one scope per table",
            spec: format!(
                r#"
rules:
- hosts: [a.example.com]
  http:
    paths:
    - splits:{SIMPLE_SPLIT}
- hosts: [a.example.com, b.default]
  visibility: ClusterLocal
  http:
    paths:
    - splits:{SIMPLE_SPLIT}
"#
            ),
            want: |h| IngressResources {
                route_configurations: vec![routes::route_configuration(
                    "default/hello",
                    vec![
                        simple_vhost(0, &["a.example.com"], h),
                        simple_vhost(1, &["b.default"], h),
                    ],
                )],
                scopes: vec![
                    scopes::scope(RouteTable::External, "a.example.com", "default/hello"),
                    scopes::scope(RouteTable::Internal, "a.example.com", "default/hello"),
                    scopes::scope(RouteTable::Internal, "b.default", "default/hello"),
                ],
                clusters: vec![clusters::eds_cluster(REV1, false)],
                load_assignments: vec![rev1_assignment()],
                ..base(h)
            },
        },
    ]
}

#[test]
fn translates() {
    let objects = objects();
    for case in cases() {
        let ing = kingress(&case.spec);
        let got = translate_ingress(&ing, &objects)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want = (case.want)(&probe_hash(&ing));
        assert_eq!(got.hash, probe_hash(&ing), "{}", case.name);
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn route_timeout_is_the_longest_known_revision_timeout() {
    let mut objects = objects();
    objects
        .timeouts
        .insert(("default".into(), "hello-00001".into()), Duration::from_secs(300));
    objects
        .timeouts
        .insert(("default".into(), "hello-00002".into()), Duration::from_secs(600));
    let ing = kingress(
        r#"
rules:
- hosts: [t.example.com]
  http:
    paths:
    - splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80, percent: 50}
      - {serviceName: hello-00002, serviceNamespace: default, servicePort: 80, percent: 50}
"#,
    );
    let got = translate_ingress(&ing, &objects).unwrap();
    let route = &virtual_hosts(&got)[0].routes[1];
    let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) = &route.action
    else {
        panic!("not forwarding");
    };
    assert_eq!(a.timeout, Some(sluice_xds::builders::duration(Duration::from_secs(600))));
}

#[test]
fn slices_win_over_endpoints() {
    let mut objects = objects();
    objects.add_endpoint_slice(slice("default", "hello-00002", "http", 9999, &["10.9.9.9"], &[]));
    let ing = kingress(
        "rules:\n- hosts: [a.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00002, serviceNamespace: default, servicePort: 80}\n",
    );
    let got = translate_ingress(&ing, &objects).unwrap();
    assert_eq!(
        got.load_assignments,
        vec![clusters::load_assignment(REV2, &[ep("10.9.9.9", 9999)])]
    );
}

#[test]
fn hosts_per_table() {
    let ing = kingress(&cases()[5].spec);
    let got = translate_ingress(&ing, &objects()).unwrap();
    assert_eq!(got.hosts(RouteTable::External), vec!["secure.example.com"]);
    assert_eq!(got.hosts(RouteTable::ExternalTls), vec!["secure.example.com"]);
    assert_eq!(
        got.hosts(RouteTable::Internal),
        vec!["secure.default", "secure.example.com"]
    );
}

fn split_spec(split: &str) -> String {
    format!("rules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {split}\n")
}

#[test]
fn errors_name_the_object_and_field() {
    let k = key;
    let split0 = "spec.rules[0].http.paths[0].splits[0]";
    let cases: Vec<(&str, Ingress, TranslateError, &str)> = vec![
        (
            "other class",
            {
                let mut i = kingress(&split_spec("{serviceName: hello-00001, serviceNamespace: default, servicePort: 80}"));
                i.metadata.annotations = None;
                i
            },
            TranslateError::OtherClass { ingress: k(), class: None },
            "ingress default/hello has ingress class None, not \"sluice.ingress.networking.knative.dev\"",
        ),
        (
            "invalid percent sum",
            kingress(
                "rules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: a, serviceNamespace: default, servicePort: 80, percent: 50}\n      - {serviceName: b, serviceNamespace: default, servicePort: 80, percent: 40}\n",
            ),
            TranslateError::Invalid {
                ingress: k(),
                errors: vec![FieldError {
                    message: "traffic split percentage must total to 100, but was 90".into(),
                    paths: vec!["spec.rules[0].http.paths[0].splits".into()],
                }],
            },
            "ingress default/hello is invalid: traffic split percentage must total to 100, but was 90: spec.rules[0].http.paths[0].splits",
        ),
        (
            "unknown service",
            kingress(&split_spec("{serviceName: nope, serviceNamespace: default, servicePort: 80}")),
            TranslateError::ServiceNotFound {
                ingress: k(),
                field: format!("{split0}.serviceName"),
                namespace: "default".into(),
                name: "nope".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].serviceName: service default/nope not found",
        ),
        (
            "unknown port number",
            kingress(&split_spec("{serviceName: hello-00001, serviceNamespace: default, servicePort: 8080}")),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/hello-00001".into(),
                port: "8080".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/hello-00001 has no port 8080",
        ),
        (
            "unknown port name",
            kingress(&split_spec("{serviceName: hello-00001, serviceNamespace: default, servicePort: grpc}")),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/hello-00001".into(),
                port: "\"grpc\"".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/hello-00001 has no port \"grpc\"",
        ),
        (
            "ExternalName without that port name",
            kingress(&split_spec("{serviceName: ext-noports, serviceNamespace: default, servicePort: http}")),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/ext-noports".into(),
                port: "\"http\"".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/ext-noports has no port \"http\"",
        ),
        (
            "ExternalName without externalName",
            kingress(&split_spec("{serviceName: ext-broken, serviceNamespace: default, servicePort: 80}")),
            TranslateError::ExternalNameMissing {
                ingress: k(),
                field: format!("{split0}.serviceName"),
                service: "default/ext-broken".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].serviceName: service default/ext-broken is of type ExternalName but has no spec.externalName",
        ),
        (
            "missing secret",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: gone, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretNotFound {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                namespace: "default".into(),
                name: "gone".into(),
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/gone not found",
        ),
        (
            "secret without tls.key",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: no-key, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretKeyMissing {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                secret: "default/no-key".into(),
                key: "tls.key",
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/no-key has no \"tls.key\"",
        ),
        (
            "secret that is not PEM",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: not-pem, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretNotPem {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                secret: "default/not-pem".into(),
                key: "tls.crt",
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/not-pem key \"tls.crt\" is not PEM",
        ),
        (
            "rule without hosts",
            kingress("rules:\n- http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n"),
            TranslateError::NoHosts { ingress: k(), field: "spec.rules[0].hosts".into() },
            "ingress default/hello: spec.rules[0].hosts: a rule needs at least one host",
        ),
        (
            "wildcard host",
            kingress("rules:\n- hosts: [ok.example.com, '*.example.com']\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n"),
            TranslateError::UnsupportedHost {
                ingress: k(),
                field: "spec.rules[0].hosts[1]".into(),
                host: "*.example.com".into(),
                reason: "wildcard hosts are not supported; Knative hosts are exact",
            },
            "ingress default/hello: spec.rules[0].hosts[1]: host \"*.example.com\" is not supported: wildcard hosts are not supported; Knative hosts are exact",
        ),
    ];
    let objects = objects();
    for (name, ing, want, message) in cases {
        let got = translate_ingress(&ing, &objects).expect_err(name);
        assert_eq!(got, want, "{name}");
        assert_eq!(got.to_string(), message, "{name}");
        assert_eq!(got.ingress(), &key(), "{name}");
    }
}

#[test]
fn stringdata_secrets_work_for_files() {
    let mut objects = objects();
    objects.add_secret(Secret {
        metadata: meta("default", "from-file"),
        string_data: Some(BTreeMap::from([
            ("tls.crt".to_string(), CERT.to_string()),
            ("tls.key".to_string(), KEY.to_string()),
        ])),
        ..Default::default()
    });
    let ing = kingress(
        "tls:\n- {hosts: [e.example.com], secretName: from-file, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
    );
    let got = translate_ingress(&ing, &objects).unwrap();
    assert_eq!(
        got.secrets,
        vec![tls::sds_secret("default/from-file", CERT.as_bytes(), KEY.as_bytes())]
    );
}

#[test]
fn the_hash_changes_with_the_spec_and_reaches_every_probe() {
    let objects = objects();
    let a = kingress(&cases()[3].spec);
    let mut b = a.clone();
    b.spec.rules[0].hosts.push("more.example.com".into());
    let ta = translate_ingress(&a, &objects).unwrap();
    let tb = translate_ingress(&b, &objects).unwrap();
    assert_ne!(ta.hash, tb.hash);
    for rc in &tb.route_configurations {
        for vh in &rc.virtual_hosts {
            let probes: Vec<_> = vh
                .routes
                .iter()
                .filter(|r| r.name.ends_with(".Probe"))
                .collect();
            assert_eq!(probes.len(), 3);
            for p in probes {
                assert_eq!(
                    p.response_headers_to_add,
                    vec![routes::set_header("K-Network-Hash", &tb.hash)]
                );
            }
        }
    }
}
