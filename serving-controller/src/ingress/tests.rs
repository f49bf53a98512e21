//! Decoding, defaulting, class and validation of KIngress objects.

use super::*;

/// A KIngress as Knative's Route controller writes it (two rules, defaulted, with status).
pub(crate) const KNATIVE_YAML: &str = r#"
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  generation: 2
  creationTimestamp: "2025-01-02T03:04:05Z"
  annotations:
    networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev
    serving.knative.dev/creator: admin
  labels:
    serving.knative.dev/route: hello
spec:
  httpOption: Enabled
  rules:
  - hosts: [hello.default, hello.default.svc, hello.default.svc.cluster.local]
    visibility: ClusterLocal
    http:
      paths:
      - splits:
        - serviceName: hello-00001
          serviceNamespace: default
          servicePort: 80
          percent: 100
          appendHeaders:
            Knative-Serving-Namespace: default
            Knative-Serving-Revision: hello-00001
  - hosts: [hello.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - serviceName: hello-00001
          serviceNamespace: default
          servicePort: 80
          percent: 100
          appendHeaders:
            Knative-Serving-Namespace: default
            Knative-Serving-Revision: hello-00001
status:
  observedGeneration: 2
  conditions:
  - type: Ready
    status: "True"
    lastTransitionTime: "2025-01-02T03:04:06Z"
  privateLoadBalancer:
    ingress:
    - domainInternal: sluice-internal.knative-serving.svc.cluster.local
  publicLoadBalancer:
    ingress:
    - domainInternal: sluice.knative-serving.svc.cluster.local
  loadBalancer: {}
"#;

fn decode(yaml: &str) -> Result<Ingress, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

#[test]
fn decodes_what_knative_writes() {
    let ing = decode(KNATIVE_YAML).unwrap();
    assert_eq!(ing.key(), IngressKey::new("default", "hello"));
    assert!(is_ours(&ing));
    assert_eq!(ing.spec.http_option, Some(HttpOption::Enabled));
    assert_eq!(ing.spec.rules.len(), 2);
    assert_eq!(ing.spec.rules[0].visibility(), Visibility::ClusterLocal);
    let split = &ing.spec.rules[1].http.as_ref().unwrap().paths[0].splits[0];
    assert_eq!(split.service_port, IntOrString::Int(80));
    assert_eq!(split.percent, 100);
    assert_eq!(
        split.append_headers["Knative-Serving-Revision"],
        "hello-00001"
    );
    assert_eq!(ing.status.observed_generation, Some(2));
    assert_eq!(ing.status.conditions[0].type_, CONDITION_READY);
    assert_eq!(
        ing.status.private_load_balancer.as_ref().unwrap().ingress[0].domain_internal,
        "sluice-internal.knative-serving.svc.cluster.local"
    );
    assert_eq!(validate(&ing), Ok(()));
}

#[test]
fn round_trips_through_json() {
    let ing = decode(KNATIVE_YAML).unwrap();
    let json = serde_json::to_string(&ing).unwrap();
    let back: Ingress = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ing);
}

#[test]
fn unknown_fields_are_ignored_as_gos_decoder_does() {
    // A newer Knative's KIngress: served, not rejected whole.
    let newer = decode(
        "spec:\n  rules:\n  - hosts: [a]\n    http:\n      paths:\n      - splits:\n        - serviceName: s\n          serviceNamespace: default\n          servicePort: 80\n          weight: 3\n        timeout: 5s\n  futureOption: true\nextra: 1\n",
    )
    .unwrap();
    let same = decode(
        "spec:\n  rules:\n  - hosts: [a]\n    http:\n      paths:\n      - splits:\n        - serviceName: s\n          serviceNamespace: default\n          servicePort: 80\n",
    )
    .unwrap();
    assert_eq!(newer.spec, same.spec);
    assert_eq!(
        crate::hash::probe_hash(&newer),
        crate::hash::probe_hash(&same),
        "unknown fields are not hashed (Go's struct does not see them)"
    );
}

#[test]
fn unknown_enum_values_are_rejected() {
    assert!(decode("spec:\n  httpOption: Sometimes\n").is_err());
    assert!(decode("spec:\n  rules:\n  - visibility: Public\n").is_err());
}

#[test]
fn nulls_decode_as_empty() {
    let ing =
        decode("spec:\n  tls: null\n  rules:\n  - hosts: null\n    http:\n      paths: null\n")
            .unwrap();
    assert!(ing.spec.tls.is_empty());
    assert!(ing.spec.rules[0].hosts.is_empty());
    assert!(ing.spec.rules[0].http.as_ref().unwrap().paths.is_empty());
}

#[test]
fn named_service_port() {
    let ing = decode(
        "spec:\n  rules:\n  - http:\n      paths:\n      - splits:\n        - servicePort: http2\n",
    )
    .unwrap();
    let split = &ing.spec.rules[0].http.as_ref().unwrap().paths[0].splits[0];
    assert_eq!(split.service_port, IntOrString::String("http2".into()));
}

#[test]
fn class_decides_ownership() {
    let mut ing = decode(KNATIVE_YAML).unwrap();
    assert!(is_ours(&ing));
    ing.metadata.annotations.as_mut().unwrap().insert(
        INGRESS_CLASS_ANNOTATION.into(),
        "kourier.ingress.networking.knative.dev".into(),
    );
    assert!(!is_ours(&ing));
    ing.metadata.annotations = None;
    assert!(!is_ours(&ing));
}

#[test]
fn defaults_follow_knative() {
    let mut ing = decode(
        r#"
spec:
  rules:
  - hosts: [a]
    http:
      paths:
      - splits:
        - {serviceName: s, serviceNamespace: n, servicePort: 80}
      - splits:
        - {serviceName: s, serviceNamespace: n, servicePort: 80}
        - {serviceName: t, serviceNamespace: n, servicePort: 80}
  - hosts: [b]
    visibility: ClusterLocal
    http:
      paths:
      - splits:
        - {serviceName: s, serviceNamespace: n, servicePort: 80, percent: 40}
"#,
    )
    .unwrap();
    ing.set_defaults();
    let rules = &ing.spec.rules;
    assert_eq!(rules[0].visibility, Some(Visibility::ExternalIP));
    assert_eq!(rules[1].visibility, Some(Visibility::ClusterLocal));
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(paths[0].splits[0].percent, 100, "lone split gets 100");
    assert_eq!(paths[1].splits[0].percent, 0, "two splits keep theirs");
    let lone = &rules[1].http.as_ref().unwrap().paths[0].splits[0];
    assert_eq!(lone.percent, 40, "a set percent is kept");
}

/// A valid base to break in the validation cases.
fn valid() -> Ingress {
    let mut ing = decode(KNATIVE_YAML).unwrap();
    ing.status = IngressStatus::default();
    ing
}

fn path0(ing: &mut Ingress) -> &mut HttpIngressPath {
    &mut ing.spec.rules[0].http.as_mut().unwrap().paths[0]
}

#[test]
fn validation_matches_knative() {
    type Edit = fn(&mut Ingress);
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        ("valid", |_| {}, vec![]),
        (
            "empty spec",
            |i| i.spec = IngressSpec::default(),
            vec!["missing field(s): spec"],
        ),
        (
            "no rules",
            |i| {
                i.spec.rules.clear();
                i.spec.http_option = Some(HttpOption::Enabled);
            },
            vec!["missing field(s): spec.rules"],
        ),
        (
            "empty rule",
            |i| i.spec.rules[1] = IngressRule::default(),
            vec!["missing field(s): spec.rules[1]"],
        ),
        (
            "rule without http",
            |i| i.spec.rules[0].http = None,
            vec!["missing field(s): spec.rules[0].http"],
        ),
        (
            "no paths",
            |i| i.spec.rules[0].http.as_mut().unwrap().paths.clear(),
            vec!["missing field(s): spec.rules[0].http.paths"],
        ),
        (
            "empty path",
            |i| *path0(i) = HttpIngressPath::default(),
            vec!["missing field(s): spec.rules[0].http.paths[0]"],
        ),
        (
            "path without splits",
            |i| {
                let p = path0(i);
                p.splits.clear();
                p.path = "/x".into();
            },
            vec!["missing field(s): spec.rules[0].http.paths[0].splits"],
        ),
        (
            "percents do not sum to 100",
            |i| {
                let p = path0(i);
                p.splits[0].percent = 60;
                let mut second = p.splits[0].clone();
                second.percent = 30;
                p.splits.push(second);
            },
            vec![
                "traffic split percentage must total to 100, but was 90: spec.rules[0].http.paths[0].splits",
            ],
        ),
        (
            "two splits without percent sum to 0",
            |i| {
                let p = path0(i);
                p.splits[0].percent = 0;
                let second = p.splits[0].clone();
                p.splits.push(second);
            },
            vec![
                "traffic split percentage must total to 100, but was 0: spec.rules[0].http.paths[0].splits",
            ],
        ),
        (
            "a lone split may omit its percent",
            |i| path0(i).splits[0].percent = 0,
            vec![],
        ),
        (
            "percent out of range stops the path's checks",
            |i| path0(i).splits[0].percent = 101,
            vec!["invalid value: 101: spec.rules[0].http.paths[0].splits[0].percent"],
        ),
        (
            "empty split",
            |i| path0(i).splits[0] = IngressBackendSplit::default(),
            vec!["missing field(s): spec.rules[0].http.paths[0].splits[0]"],
        ),
        (
            "backend fields missing",
            |i| {
                let s = &mut path0(i).splits[0];
                s.service_name.clear();
                s.service_namespace.clear();
                s.service_port = IntOrString::Int(0);
            },
            vec!["missing field(s): spec.rules[0].http.paths[0].splits[0]"],
        ),
        (
            "service name and port missing",
            |i| {
                let s = &mut path0(i).splits[0];
                s.service_name.clear();
                s.service_port = IntOrString::Int(0);
            },
            vec![
                "missing field(s): spec.rules[0].http.paths[0].splits[0].serviceName",
                "missing field(s): spec.rules[0].http.paths[0].splits[0].servicePort",
            ],
        ),
        (
            "cross-namespace service",
            |i| path0(i).splits[0].service_namespace = "other".into(),
            vec![
                "service namespace must match ingress namespace: spec.rules[0].http.paths[0].splits[0].serviceNamespace",
            ],
        ),
        (
            "tls without secret",
            |i| {
                i.spec.tls = vec![IngressTls {
                    hosts: vec!["a".into()],
                    ..Default::default()
                }]
            },
            vec![
                "missing field(s): spec.tls[0].secretName",
                "missing field(s): spec.tls[0].secretNamespace",
            ],
        ),
        (
            "empty tls block",
            |i| i.spec.tls = vec![IngressTls::default()],
            vec!["missing field(s): spec.tls[0]"],
        ),
    ];
    for (name, edit, want) in cases {
        let mut ing = valid();
        edit(&mut ing);
        let got: Vec<String> = match validate(&ing) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn describe_merges_like_knative() {
    let mut ing = valid();
    ing.spec.tls = vec![IngressTls {
        hosts: vec!["a".into()],
        ..Default::default()
    }];
    path0(&mut ing).splits[0].service_namespace = "other".into();
    let errors = validate(&ing).unwrap_err();
    assert_eq!(
        describe(&errors),
        "missing field(s): spec.tls[0].secretName, spec.tls[0].secretNamespace\n\
         service namespace must match ingress namespace: spec.rules[0].http.paths[0].splits[0].serviceNamespace"
    );
}
