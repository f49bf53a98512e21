//! The table of KIngresses and the exact Envoy protos each translates to.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteMatch;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;

use super::fixtures::*;
use crate::translate::routes::{Forwarding, cluster_weight, exact_header, route_match};
use crate::translate::*;

/// The probe route, then the forwarding route, of one path.
pub(crate) fn probe(rule: usize, prefix: &str, m: &RouteMatch, hash: &str) -> Route {
    routes::probe_route(&names::probe_route(&key(), rule, prefix), m.clone(), hash)
}

pub(crate) fn forward(
    rule: usize,
    prefix: &str,
    m: &RouteMatch,
    clusters: Vec<ClusterWeight>,
    fwd: &Forwarding,
) -> Route {
    routes::weighted_route(
        &names::route(&key(), rule, prefix),
        m.clone(),
        clusters,
        fwd,
    )
}

pub(crate) const REV1: &str = "default/hello-00001:80";
pub(crate) const REV2: &str = "default/hello-00002:80";

pub(crate) fn rev1_assignment() -> ClusterLoadAssignment {
    clusters::load_assignment(REV1, &[ep("10.0.0.1", 8012), ep("10.0.0.2", 8012)])
}

pub(crate) fn simple_vhost(rule: usize, hosts: &[&str], hash: &str) -> VirtualHost {
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

pub(crate) const SIMPLE_SPLIT: &str = r#"
        - serviceName: hello-00001
          serviceNamespace: default
          servicePort: 80
          percent: 100
          appendHeaders:
            Knative-Serving-Namespace: default
            Knative-Serving-Revision: hello-00001
"#;

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) spec: String,
    pub(crate) want: fn(hash: &str) -> IngressResources,
}

pub(crate) fn base(hash: &str) -> IngressResources {
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

pub(crate) fn cases() -> Vec<Case> {
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
            name: "a rule without a plain / path gets a catch-all probe after the path probes, and a 404 after its routes",
            spec: r#"
rules:
- hosts: [only-api.example.com]
  http:
    paths:
    - path: /api
      splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}
    - headers: {X-Tag: {exact: a}}
      splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}
"#
            .into(),
            want: |h| {
                let api = route_match("/api", vec![]);
                let tagged = route_match("/", vec![exact_header("X-Tag", "a")]);
                let none = BTreeMap::new();
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![routes::virtual_host(
                            "(default/hello).Rules[0]",
                            routes::domains(["only-api.example.com"]),
                            vec![
                                probe(0, "/api", &api, h),
                                probe(0, "/", &tagged, h),
                                routes::probe_route(
                                    "(default/hello).Rules[0].Probe",
                                    route_match("/", vec![]),
                                    h,
                                ),
                                forward(0, "/api", &api, vec![cluster_weight(REV1, 100, &none)], &Forwarding::default()),
                                forward(0, "/", &tagged, vec![cluster_weight(REV1, 100, &none)], &Forwarding::default()),
                                routes::not_found_route(
                                    "(default/hello).Rules[0].NotFound",
                                    route_match("/", vec![]),
                                ),
                            ],
                        )],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::External, "only-api.example.com", "default/hello"),
                        scopes::scope(RouteTable::Internal, "only-api.example.com", "default/hello"),
                    ],
                    clusters: vec![clusters::eds_cluster(REV1, false)],
                    load_assignments: vec![rev1_assignment()],
                    ..base(h)
                }
            },
        },
        Case {
            name: "a rule without hosts catches every host no other rule serves, as in Kourier",
            spec: format!(
                r#"
rules:
- http:
    paths:
    - splits:{SIMPLE_SPLIT}
"#
            ),
            want: |h| {
                let m = route_match("/", vec![]);
                let vhost = routes::virtual_host(
                    "(default/hello).Rules[0]",
                    vec!["*".to_string()],
                    vec![
                        probe(0, "/", &m, h),
                        forward(
                            0,
                            "/",
                            &m,
                            vec![cluster_weight(REV1, 100, &rev_headers("hello-00001"))],
                            &Forwarding::default(),
                        ),
                    ],
                );
                IngressResources {
                    route_configurations: vec![routes::route_configuration(
                        "default/hello",
                        vec![vhost],
                    )],
                    scopes: vec![
                        scopes::scope(RouteTable::External, "*", "default/hello"),
                        scopes::scope(RouteTable::Internal, "*", "default/hello"),
                    ],
                    clusters: vec![clusters::eds_cluster(REV1, false)],
                    load_assignments: vec![rev1_assignment()],
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
        let got =
            translate_ingress(&ing, &objects).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want = (case.want)(&probe_hash(&ing));
        assert_eq!(got.hash, probe_hash(&ing), "{}", case.name);
        assert_eq!(got, want, "{}", case.name);
        // The catch-all script takes an unnamed route for "no route" (hcm::CATCH_ALL_LUA).
        for rc in &got.route_configurations {
            for vhost in &rc.virtual_hosts {
                assert!(
                    vhost.routes.iter().all(|r| !r.name.is_empty()),
                    "{}: every route is named",
                    case.name
                );
            }
        }
    }
}

/// A KIngress splitting `t.example.com` 50/50 between `hello-00001` and `hello-00002`.
fn fifty_fifty() -> Ingress {
    kingress(
        r#"
rules:
- hosts: [t.example.com]
  http:
    paths:
    - splits:
      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80, percent: 50}
      - {serviceName: hello-00002, serviceNamespace: default, servicePort: 80, percent: 50}
"#,
    )
}

#[test]
fn route_timeout_is_the_longest_known_revision_timeout() {
    let mut objects = objects();
    objects.timeouts.insert(
        ("default".into(), "hello-00001".into()),
        Duration::from_secs(300),
    );
    objects.timeouts.insert(
        ("default".into(), "hello-00002".into()),
        Duration::from_secs(600),
    );
    let ing = fifty_fifty();
    let got = translate_ingress(&ing, &objects).unwrap();
    let route = &virtual_hosts(&got)[0].routes[1];
    let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) = &route.action
    else {
        panic!("not forwarding");
    };
    assert_eq!(
        a.timeout,
        Some(sluice_xds::builders::duration(Duration::from_secs(600)))
    );
}

#[test]
fn route_idle_timeout_is_the_longest_split_idle_timeout_when_every_split_has_one() {
    let with_idle = |name: &str, seconds: Option<&str>| {
        let mut svc = service("default", name, vec![port("http", 80, 8012)]);
        svc.metadata.annotations = seconds.map(|s| {
            BTreeMap::from([(
                crate::lookup::IDLE_TIMEOUT_ANNOTATION.to_string(),
                s.to_string(),
            )])
        });
        svc
    };
    let ing = fifty_fifty();
    let idle_of = |objects: &crate::Objects| {
        let got = translate_ingress(&ing, objects).unwrap();
        let route = &virtual_hosts(&got)[0].routes[1];
        let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) =
            &route.action
        else {
            panic!("not forwarding");
        };
        a.idle_timeout
    };
    let mut objects = objects();
    objects.add_service(with_idle("hello-00001", Some("20")));
    objects.add_service(with_idle("hello-00002", Some("45")));
    assert_eq!(
        idle_of(&objects),
        Some(sluice_xds::builders::duration(Duration::from_secs(45)))
    );
    // A split behind the activators (its slice in proxy mode): the activator enforces it, so
    // the route has none (Envoy's would run while the activator waits for a pod).
    let mut proxied = slice("default", "hello-00002", "http", 8012, &["10.1.0.9"], &[]);
    proxied
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(
            crate::lookup::MODE_LABEL.to_string(),
            crate::lookup::MODE_PROXY.to_string(),
        );
    let mut behind = objects.clone();
    behind.add_endpoint_slice(proxied);
    assert_eq!(idle_of(&behind), None);
    // One split without a limit: none on the route (the listener's stream idle timeout).
    objects.add_service(with_idle("hello-00002", None));
    assert_eq!(idle_of(&objects), None);
}

#[test]
fn slices_win_over_endpoints() {
    let mut objects = objects();
    objects.add_endpoint_slice(slice(
        "default",
        "hello-00002",
        "http",
        9999,
        &["10.9.9.9"],
        &[],
    ));
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
    assert_eq!(
        got.hosts(RouteTable::ExternalTls),
        vec!["secure.example.com"]
    );
    assert_eq!(
        got.hosts(RouteTable::Internal),
        vec!["secure.default", "secure.example.com"]
    );
}
