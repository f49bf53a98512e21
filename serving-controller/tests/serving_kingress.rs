//! Service → Configuration + Route → KIngress, end to end through the pure reconcilers: the
//! exact KIngress for a tagged 90/10 split (hosts, visibility, splits and their headers, tag
//! header paths), a cluster-local Service, the Route and Service statuses, and the revision
//! timeouts handed to the gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service as K8sService;
use sluice_serving::ingress::{Ingress, IngressStatus, is_ours, validate};
use sluice_serving::serving::{
    Readiness, ReadinessReport, Route, Service, ServingConfig, ServingObjects, ServingState,
    admit_service, make_configuration, make_route, reconcile_configuration, reconcile_route,
    service_status,
};
use sluice_serving::{Objects, translate_ingress};

const V1: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env: [{name: TARGET, value: v1}]
"#;

const CANARY: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  template:
    metadata:
      name: hello-world
    spec:
      timeoutSeconds: 120
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env: [{name: TARGET, value: v2}]
  traffic:
    - latestRevision: true
      percent: 10
      tag: candidate
    - revisionName: hello-00001
      percent: 90
      tag: current
"#;

/// Everything one controller pass produces for a Service.
struct Pass {
    service: Service,
    route: Route,
    ingress: Option<Ingress>,
    timeouts: BTreeMap<(String, String), Duration>,
}

fn pass(
    yaml: &str,
    state: &mut ServingState,
    cfg: &ServingConfig,
    ingress_status: Option<&IngressStatus>,
) -> Pass {
    let service: Service = serde_yaml::from_str(yaml).unwrap();
    let service = admit_service(&service, cfg).unwrap();
    let config = make_configuration(&service);
    let route = make_route(&service);
    // Every Revision the runtime knows is ready.
    let ready: ReadinessReport = state
        .revisions()
        .map(|r| (r.key(), Readiness::Ready))
        .collect();
    let mut out = reconcile_configuration(&config, state, &ready);
    if let Some(created) = &out.created {
        // The runtime starts it; the next report says it is ready.
        let mut ready = ready;
        ready.insert(
            sluice_serving::serving::Key::new("default", created),
            Readiness::Ready,
        );
        out = reconcile_configuration(&config, state, &ready);
    }
    let mut catalog = ServingObjects::new();
    catalog.add_outcome(&out);
    let routed = reconcile_route(&route, &catalog, cfg, ingress_status);
    let mut service = service;
    service.status = service_status(&service, &out.configuration, &routed.route);
    Pass {
        service,
        route: routed.route,
        ingress: routed.ingress,
        timeouts: routed.timeouts,
    }
}

fn tag_header_config() -> ServingConfig {
    let mut cfg = ServingConfig::default();
    cfg.apply(
        "config-features",
        &BTreeMap::from([("tag-header-based-routing".into(), "enabled".into())]),
    )
    .unwrap();
    cfg
}

fn split(rev: &str, percent: i64) -> String {
    format!(
        "{{serviceNamespace: default, serviceName: {rev}, servicePort: 80, percent: {percent}, \
         appendHeaders: {{Knative-Serving-Revision: {rev}, Knative-Serving-Namespace: default}}}}"
    )
}

fn expected_canary_ingress() -> Ingress {
    let main = format!(
        r#"
        paths:
          - headers: {{Knative-Serving-Tag: {{exact: candidate}}}}
            splits: [{candidate}]
          - headers: {{Knative-Serving-Tag: {{exact: current}}}}
            splits: [{current}]
          - appendHeaders: {{Knative-Serving-Default-Route: "true"}}
            splits: [{v2_10}, {v1_90}]"#,
        candidate = split("hello-world", 100),
        current = split("hello-00001", 100),
        v2_10 = split("hello-world", 10),
        v1_90 = split("hello-00001", 90),
    );
    let tag = |tag: &str, rev: &str| {
        format!(
            r#"
        paths:
          - appendHeaders: {{Knative-Serving-Tag: {tag}}}
            splits: [{}]"#,
            split(rev, 100)
        )
    };
    let yaml = format!(
        r#"
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  labels:
    serving.knative.dev/route: hello
    serving.knative.dev/routeNamespace: default
    serving.knative.dev/service: hello
  annotations:
    networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev
  ownerReferences:
    - {{apiVersion: serving.knative.dev/v1, kind: Route, name: hello, uid: "", controller: true, blockOwnerDeletion: true}}
spec:
  rules:
    - hosts: [hello.default, hello.default.svc, hello.default.svc.cluster.local]
      visibility: ClusterLocal
      http: {main}
    - hosts: [hello.default.example.com]
      visibility: ExternalIP
      http: {main}
    - hosts: [candidate-hello.default, candidate-hello.default.svc, candidate-hello.default.svc.cluster.local]
      visibility: ClusterLocal
      http: {candidate}
    - hosts: [candidate-hello.default.example.com]
      visibility: ExternalIP
      http: {candidate}
    - hosts: [current-hello.default, current-hello.default.svc, current-hello.default.svc.cluster.local]
      visibility: ClusterLocal
      http: {current}
    - hosts: [current-hello.default.example.com]
      visibility: ExternalIP
      http: {current}
"#,
        candidate = tag("candidate", "hello-world"),
        current = tag("current", "hello-00001"),
    );
    serde_yaml::from_str(&yaml).unwrap()
}

#[test]
fn tagged_canary_kingress() {
    let cfg = tag_header_config();
    let mut state = ServingState::default();
    let first = pass(V1, &mut state, &cfg, None);
    assert!(first.ingress.is_some());
    let canary = pass(CANARY, &mut state, &cfg, None);
    let ingress = canary.ingress.expect("traffic resolves");
    assert_eq!(ingress, expected_canary_ingress());
    assert!(is_ours(&ingress));
    assert_eq!(validate(&ingress), Ok(()));
    assert_eq!(
        canary.timeouts,
        BTreeMap::from([
            (
                ("default".into(), "hello-00001".into()),
                Duration::from_secs(300)
            ),
            (
                ("default".into(), "hello-world".into()),
                Duration::from_secs(120)
            ),
        ])
    );

    // The gateway translates it once the runtime created each Revision's Service.
    let mut objects = Objects::new();
    for rev in ["hello-00001", "hello-world"] {
        let svc: K8sService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": rev, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .unwrap();
        objects.add_service(svc);
    }
    objects.timeouts.extend(canary.timeouts);
    let translated = translate_ingress(&ingress, &objects);
    assert!(translated.is_ok(), "{translated:?}");
}

#[test]
fn without_tag_header_routing_each_rule_has_one_path() {
    let cfg = ServingConfig::default();
    let mut state = ServingState::default();
    pass(V1, &mut state, &cfg, None);
    let ingress = pass(CANARY, &mut state, &cfg, None).ingress.unwrap();
    let paths: Vec<(String, String)> = ingress
        .spec
        .rules
        .iter()
        .map(|r| {
            let p = &r.http.as_ref().unwrap().paths;
            assert_eq!(p.len(), 1);
            assert!(p[0].headers.is_empty() && p[0].append_headers.is_empty());
            let splits: Vec<String> = p[0]
                .splits
                .iter()
                .map(|s| format!("{}={}", s.service_name, s.percent))
                .collect();
            (r.hosts[0].clone(), splits.join(","))
        })
        .collect();
    let want = [
        ("hello.default", "hello-world=10,hello-00001=90"),
        ("hello.default.example.com", "hello-world=10,hello-00001=90"),
        ("candidate-hello.default", "hello-world=100"),
        ("candidate-hello.default.example.com", "hello-world=100"),
        ("current-hello.default", "hello-00001=100"),
        ("current-hello.default.example.com", "hello-00001=100"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect();
    assert_eq!(paths, want);
}

#[test]
fn statuses_and_urls() {
    let cfg = ServingConfig::default();
    let mut state = ServingState::default();
    pass(V1, &mut state, &cfg, None);
    let ready: IngressStatus =
        serde_yaml::from_str("conditions: [{type: Ready, status: \"True\"}]").unwrap();
    let out = pass(CANARY, &mut state, &cfg, Some(&ready));
    let want_status = r#"
observedGeneration: null
conditions:
  - {type: ConfigurationsReady, status: "True"}
  - {type: Ready, status: "True"}
  - {type: RoutesReady, status: "True"}
latestReadyRevisionName: hello-world
latestCreatedRevisionName: hello-world
url: http://hello.default.example.com
address: {url: http://hello.default.svc.cluster.local}
traffic:
  - {tag: candidate, revisionName: hello-world, latestRevision: true, percent: 10, url: http://candidate-hello.default.example.com}
  - {tag: current, revisionName: hello-00001, latestRevision: false, percent: 90, url: http://current-hello.default.example.com}
"#;
    assert_eq!(
        out.service.status,
        serde_yaml::from_str(want_status).unwrap()
    );
    let route_conditions: Vec<(String, String)> = out
        .route
        .status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    assert_eq!(
        route_conditions,
        [
            ("AllTrafficAssigned", "True"),
            ("CertificateProvisioned", "True"),
            ("IngressReady", "True"),
            ("Ready", "True"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Not Ready until the gateway reports the KIngress Ready.
    let out = pass(CANARY, &mut state, &cfg, None);
    assert_eq!(out.service.status.conditions[1].status, "Unknown");
    assert_eq!(
        out.service.status.conditions[1].reason,
        "IngressNotConfigured"
    );
}

#[test]
fn cluster_local_service_has_no_external_rule() {
    let yaml = V1.replace(
        "  namespace: default\n",
        "  namespace: default\n  labels:\n    networking.knative.dev/visibility: cluster-local\n",
    );
    let cfg = ServingConfig::default();
    let out = pass(&yaml, &mut ServingState::default(), &cfg, None);
    let ingress = out.ingress.unwrap();
    let rules: Vec<(Vec<String>, String)> = ingress
        .spec
        .rules
        .iter()
        .map(|r| (r.hosts.clone(), format!("{:?}", r.visibility())))
        .collect();
    assert_eq!(
        rules,
        vec![(
            vec![
                "hello.default".to_string(),
                "hello.default.svc".to_string(),
                "hello.default.svc.cluster.local".to_string()
            ],
            "ClusterLocal".to_string()
        )]
    );
    assert_eq!(
        out.route.status.url.as_deref(),
        Some("http://hello.default.svc.cluster.local")
    );
    let labels = ingress.metadata.labels.unwrap();
    assert_eq!(labels["networking.knative.dev/visibility"], "cluster-local");
}

#[test]
fn domain_and_templates_from_config_maps() {
    let mut cfg = ServingConfig::default();
    cfg.apply(
        "config-domain",
        &BTreeMap::from([("apps.internal".to_string(), String::new())]),
    )
    .unwrap();
    cfg.apply(
        "config-network",
        &BTreeMap::from([
            (
                "domain-template".to_string(),
                "{{.Name}}-{{.Namespace}}.{{.Domain}}".to_string(),
            ),
            ("tag-template".to_string(), "{{.Name}}-{{.Tag}}".to_string()),
        ]),
    )
    .unwrap();
    let mut state = ServingState::default();
    pass(V1, &mut state, &cfg, None);
    let out = pass(CANARY, &mut state, &cfg, None);
    let external: Vec<String> = out
        .ingress
        .unwrap()
        .spec
        .rules
        .iter()
        .filter(|r| r.hosts.len() == 1)
        .map(|r| r.hosts[0].clone())
        .collect();
    assert_eq!(
        external,
        [
            "hello-default.apps.internal",
            "hello-candidate-default.apps.internal",
            "hello-current-default.apps.internal"
        ]
    );
    assert_eq!(
        out.route.status.url.as_deref(),
        Some("http://hello-default.apps.internal")
    );
}
