//! `serving.knative.dev/v1` API: decoding real Knative YAML (unknown fields rejected), the
//! defaulting webhook, and each validation rule with Knative's message and field path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_serving::ingress::describe;
use sluice_serving::serving::types::ServiceSpec;
use sluice_serving::serving::{
    Container, RevisionSpec, RevisionTemplateSpec, Route, Service, ServingConfig, TrafficTarget,
    admit_route, admit_service,
};

const HELLOWORLD: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld-go
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "Go Sample v1"
"#;

const CANARY: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      name: hello-world
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env:
            - name: TARGET
              value: "Knative"
  traffic:
    - latestRevision: true
      percent: 10
      tag: candidate
    - revisionName: hello-00001
      percent: 90
      tag: current
"#;

const CLUSTER_LOCAL: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: private
  namespace: apps
  labels:
    networking.knative.dev/visibility: cluster-local
spec:
  template:
    spec:
      containerConcurrency: 10
      timeoutSeconds: 30
      containers:
        - image: example.com/app
          command: ["/app", "--serve"]
"#;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn decode(yaml: &str) -> Service {
    serde_yaml::from_str(yaml).expect("decodes")
}

#[test]
fn decodes_real_knative_yaml() {
    let cases: Vec<(&str, &str, Service)> = vec![
        (
            "helloworld-go",
            HELLOWORLD,
            Service {
                kind: "Service".into(),
                metadata: meta("helloworld-go", Some("default")),
                spec: ServiceSpec {
                    template: RevisionTemplateSpec {
                        spec: RevisionSpec {
                            containers: vec![Container {
                                image: "ghcr.io/knative/helloworld-go:latest".into(),
                                ports: vec![ContainerPort {
                                    container_port: 8080,
                                    ..ContainerPort::default()
                                }],
                                env: vec![env("TARGET", "Go Sample v1")],
                                ..Container::default()
                            }],
                            ..RevisionSpec::default()
                        },
                        ..RevisionTemplateSpec::default()
                    },
                    traffic: vec![],
                },
                ..Service::default()
            },
        ),
        (
            "90/10 with tags",
            CANARY,
            Service {
                kind: "Service".into(),
                metadata: meta("hello", None),
                spec: ServiceSpec {
                    template: RevisionTemplateSpec {
                        metadata: meta("hello-world", None),
                        spec: RevisionSpec {
                            containers: vec![Container {
                                image: "ghcr.io/knative/helloworld-go:latest".into(),
                                env: vec![env("TARGET", "Knative")],
                                ..Container::default()
                            }],
                            ..RevisionSpec::default()
                        },
                    },
                    traffic: vec![
                        TrafficTarget {
                            latest_revision: Some(true),
                            percent: Some(10),
                            tag: "candidate".into(),
                            ..TrafficTarget::default()
                        },
                        TrafficTarget {
                            revision_name: "hello-00001".into(),
                            percent: Some(90),
                            tag: "current".into(),
                            ..TrafficTarget::default()
                        },
                    ],
                },
                ..Service::default()
            },
        ),
        (
            "cluster-local",
            CLUSTER_LOCAL,
            Service {
                kind: "Service".into(),
                metadata: ObjectMeta {
                    labels: Some(BTreeMap::from([(
                        "networking.knative.dev/visibility".into(),
                        "cluster-local".into(),
                    )])),
                    ..meta("private", Some("apps"))
                },
                spec: ServiceSpec {
                    template: RevisionTemplateSpec {
                        spec: RevisionSpec {
                            container_concurrency: Some(10),
                            timeout_seconds: Some(30),
                            containers: vec![Container {
                                image: "example.com/app".into(),
                                command: vec!["/app".into(), "--serve".into()],
                                ..Container::default()
                            }],
                            ..RevisionSpec::default()
                        },
                        ..RevisionTemplateSpec::default()
                    },
                    traffic: vec![],
                },
                ..Service::default()
            },
        ),
    ];
    for (name, yaml, want) in cases {
        let got = decode(yaml);
        assert_eq!(got, want, "{name}");
        // Round trip through JSON keeps the value.
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(
            serde_json::from_str::<Service>(&json).unwrap(),
            want,
            "{name}"
        );
    }
}

#[test]
fn unknown_fields_are_rejected_naming_the_field() {
    let cases = [
        (
            "top level",
            HELLOWORLD.replace("kind: Service", "kind: Service\nspek: {}"),
            "spek",
        ),
        (
            "container",
            HELLOWORLD.replace("- image:", "- imagee:"),
            "imagee",
        ),
        (
            "revision spec",
            HELLOWORLD.replace("containers:", "containerConcurency: 1\n      containers:"),
            "containerConcurency",
        ),
        ("traffic", CANARY.replace("percent: 90", "pct: 90"), "pct"),
        (
            "template",
            CANARY.replace("    metadata:\n      name: hello-world", "    metadta: {}"),
            "metadta",
        ),
    ];
    for (name, yaml, field) in cases {
        let err = serde_yaml::from_str::<Service>(&yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("unknown field `{field}`")),
            "{name}: {err}"
        );
    }
}

#[test]
fn defaults_as_the_webhook() {
    let cfg = ServingConfig::default();
    let got = admit_service(&decode(HELLOWORLD), &cfg).unwrap();
    let spec = &got.spec.template.spec;
    assert_eq!(spec.timeout_seconds, Some(300));
    assert_eq!(spec.container_concurrency, Some(0));
    assert_eq!(spec.containers[0].name, "user-container");
    assert_eq!(spec.user_port(), 8080);
    assert_eq!(
        got.spec.traffic,
        vec![TrafficTarget {
            percent: Some(100),
            latest_revision: Some(true),
            ..TrafficTarget::default()
        }]
    );

    // Explicit values are kept; latestRevision is derived per target; the namespace defaults.
    let got = admit_service(&decode(CANARY), &cfg).unwrap();
    assert_eq!(got.metadata.namespace.as_deref(), Some("default"));
    let latest: Vec<_> = got.spec.traffic.iter().map(|t| t.latest_revision).collect();
    assert_eq!(latest, [Some(true), Some(false)]);

    let got = admit_service(&decode(CLUSTER_LOCAL), &cfg).unwrap();
    assert_eq!(got.spec.template.spec.timeout_seconds, Some(30));
    assert_eq!(got.spec.template.spec.container_concurrency, Some(10));

    // config-defaults changes the defaults.
    let mut cfg = ServingConfig::default();
    cfg.apply(
        "config-defaults",
        &BTreeMap::from([
            ("revision-timeout-seconds".to_string(), "60".to_string()),
            ("container-concurrency".to_string(), "4".to_string()),
        ]),
    )
    .unwrap();
    let got = admit_service(&decode(HELLOWORLD), &cfg).unwrap();
    assert_eq!(got.spec.template.spec.timeout_seconds, Some(60));
    assert_eq!(got.spec.template.spec.container_concurrency, Some(4));

    // A Route's targets get latestRevision, nothing else.
    let route: Route = serde_yaml::from_str(
        "metadata: {name: r}\nspec:\n  traffic:\n  - {configurationName: c, percent: 100}\n",
    )
    .unwrap();
    let got = admit_route(&route).unwrap();
    assert_eq!(got.spec.traffic[0].latest_revision, Some(true));
}

#[test]
fn a_services_own_route_and_configuration_pass_validation() {
    // With the uid an API server sets: the children carry it in `serviceUID` labels.
    let mut svc = admit_service(&decode(CANARY), &ServingConfig::default()).unwrap();
    svc.metadata.uid = Some("0b5d2f4e-1111-2222-3333-444455556666".into());
    let route = sluice_serving::serving::make_route(&svc);
    assert!(
        route
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("serving.knative.dev/serviceUID")),
        "{:?}",
        route.metadata.labels
    );
    admit_route(&route).expect("a Service's Route is valid");
    let config = sluice_serving::serving::make_configuration(&svc);
    sluice_serving::serving::admit_configuration(&config, &ServingConfig::default())
        .expect("a Service's Configuration is valid");
}

fn service_error(edit: impl Fn(&mut Service)) -> String {
    let mut s = decode(CANARY);
    edit(&mut s);
    match admit_service(&s, &ServingConfig::default()) {
        Ok(_) => "ok".into(),
        Err(errors) => describe(&errors),
    }
}

fn spec(s: &mut Service) -> &mut RevisionSpec {
    &mut s.spec.template.spec
}

type Edit = Box<dyn Fn(&mut Service)>;

#[test]
fn validation_messages_and_paths() {
    let dns1035 = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', \
                   start with an alphabetic character, and end with an alphanumeric character \
                   (e.g. 'my-name',  or 'abc-123', regex used for validation is \
                   '[a-z]([-a-z0-9]*[a-z0-9])?')";
    let cases: Vec<(&str, Edit, String)> = vec![
        ("valid", Box::new(|_| {}), "ok".into()),
        (
            "percents sum",
            Box::new(|s| s.spec.traffic[1].percent = Some(80)),
            "Traffic targets sum to 90, want 100: spec.traffic".into(),
        ),
        (
            "percent bounds",
            Box::new(|s| {
                s.spec.traffic[0].percent = Some(-10);
                s.spec.traffic[1].percent = Some(110);
            }),
            "expected 0 <= -10 <= 100: spec.traffic[0].percent\n\
             expected 0 <= 110 <= 100: spec.traffic[1].percent"
                .into(),
        ),
        (
            "duplicate tags",
            Box::new(|s| s.spec.traffic[1].tag = "candidate".into()),
            "Multiple definitions for \"candidate\": spec.traffic[0].tag, spec.traffic[1].tag"
                .into(),
        ),
        (
            "tag name",
            Box::new(|s| s.spec.traffic[1].tag = "Current".into()),
            format!("invalid value: not a DNS 1035 label: [{dns1035}]: spec.traffic.tag[1]"),
        ),
        (
            "revision and latestRevision",
            Box::new(|s| s.spec.traffic[1].latest_revision = Some(true)),
            "may not set revisionName \"hello-00001\" when latestRevision is true: \
             spec.traffic[1].latestRevision"
                .into(),
        ),
        (
            "configurationName inside a Service",
            Box::new(|s| s.spec.traffic[0].configuration_name = "hello".into()),
            "must not set the field(s): spec.traffic[0].configurationName".into(),
        ),
        (
            "bad revision name",
            Box::new(|s| s.spec.traffic[1].revision_name = "b ar".into()),
            "invalid key name \"b ar\": spec.traffic[1].revisionName".into(),
        ),
        (
            "url in spec",
            Box::new(|s| s.spec.traffic[0].url = Some("http://x".into())),
            "must not set the field(s): spec.traffic[0].url".into(),
        ),
        (
            "service name",
            Box::new(|s| s.metadata.name = Some("Hello".into())),
            format!(
                "invalid value: \"hello-world\" must have prefix \"Hello-\": \
                 spec.template.metadata.name\nnot a DNS 1035 label: [{dns1035}]: metadata.name"
            ),
        ),
        (
            "name too long",
            Box::new(|s| {
                s.metadata.name = Some("a".repeat(64));
                s.spec.template.metadata.name = None;
            }),
            "not a DNS 1035 label: [must be no more than 63 characters]: metadata.name".into(),
        ),
        (
            "no name",
            Box::new(|s| {
                s.metadata.name = None;
                s.spec.template.metadata.name = None;
            }),
            "name or generateName is required: metadata.name".into(),
        ),
        (
            "template name prefix",
            Box::new(|s| s.spec.template.metadata.name = Some("other".into())),
            "invalid value: \"other\" must have prefix \"hello-\": spec.template.metadata.name"
                .into(),
        ),
        (
            "visibility label",
            Box::new(|s| {
                s.metadata.labels = Some(BTreeMap::from([(
                    "networking.knative.dev/visibility".into(),
                    "public".into(),
                )]))
            }),
            "invalid value: public: metadata.labels.networking.knative.dev/visibility".into(),
        ),
        (
            "reserved label",
            Box::new(|s| {
                s.metadata.labels = Some(BTreeMap::from([(
                    "serving.knative.dev/route".into(),
                    "x".into(),
                )]))
            }),
            "invalid key name \"serving.knative.dev/route\": metadata.labels".into(),
        ),
        (
            "timeoutSeconds",
            Box::new(|s| spec(s).timeout_seconds = Some(601)),
            "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds".into(),
        ),
        (
            "responseStartTimeoutSeconds within timeoutSeconds",
            Box::new(|s| {
                spec(s).timeout_seconds = Some(100);
                spec(s).response_start_timeout_seconds = Some(101);
            }),
            "expected 0 <= 101 <= 100: spec.template.spec.responseStartTimeoutSeconds".into(),
        ),
        (
            "idleTimeoutSeconds",
            Box::new(|s| spec(s).idle_timeout_seconds = Some(-1)),
            "expected 0 <= -1 <= 600: spec.template.spec.idleTimeoutSeconds".into(),
        ),
        (
            "containerConcurrency",
            Box::new(|s| spec(s).container_concurrency = Some(1001)),
            "expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency".into(),
        ),
        (
            "no container",
            Box::new(|s| spec(s).containers.clear()),
            "missing field(s): spec.template.spec.containers".into(),
        ),
        (
            "two containers, neither with a port (multi-container is on by default)",
            Box::new(|s| {
                let c = spec(s).containers[0].clone();
                spec(s).containers.push(c);
            }),
            "missing field(s): spec.template.spec.containers.ports".into(),
        ),
        (
            "no image nor command",
            Box::new(|s| spec(s).containers[0].image.clear()),
            "missing field(s): spec.template.spec.containers[0].image".into(),
        ),
        (
            "command without image (Sluice)",
            Box::new(|s| {
                spec(s).containers[0].image.clear();
                spec(s).containers[0].command = vec!["./hello".into()];
            }),
            "ok".into(),
        ),
        (
            "reserved env",
            Box::new(|s| spec(s).containers[0].env.push(env("PORT", "1"))),
            "\"PORT\" is a reserved environment variable: \
             spec.template.spec.containers[0].env[1].name"
                .into(),
        ),
        (
            "reserved port",
            Box::new(|s| {
                spec(s).containers[0].ports = vec![ContainerPort {
                    container_port: 8012,
                    ..ContainerPort::default()
                }]
            }),
            "invalid value: 8012 is a reserved port: \
             spec.template.spec.containers[0].ports.containerPort"
                .into(),
        ),
        (
            "port name",
            Box::new(|s| {
                spec(s).containers[0].ports = vec![ContainerPort {
                    container_port: 8080,
                    name: Some("web".into()),
                    ..ContainerPort::default()
                }]
            }),
            "Port name web is not allowed: spec.template.spec.containers[0].ports".into(),
        ),
        (
            "two ports",
            Box::new(|s| {
                let p = ContainerPort {
                    container_port: 8080,
                    ..ContainerPort::default()
                };
                spec(s).containers[0].ports = vec![p.clone(), p];
            }),
            "more than one container port is set: spec.template.spec.containers[*].ports".into(),
        ),
        (
            "disallowed fields",
            Box::new(|s| {
                spec(s).containers[0].stdin = Some(serde_json::json!(true));
                spec(s).node_selector = Some(serde_json::json!({"a": "b"}));
            }),
            "must not set the field(s): spec.template.spec.containers[0].stdin, \
             spec.template.spec.nodeSelector"
                .into(),
        ),
    ];
    for (name, edit, want) in cases {
        assert_eq!(service_error(edit), want, "{name}");
    }
}

#[test]
fn route_validation() {
    let route = |traffic: &str| -> Route {
        serde_yaml::from_str(&format!(
            "metadata: {{name: r}}\nspec:\n  traffic: {traffic}\n"
        ))
        .unwrap()
    };
    let cases = [
        ("[{configurationName: c, percent: 100}]", "ok"),
        (
            "[{percent: 100}]",
            "expected exactly one, got neither: spec.traffic[0].configurationName, \
             spec.traffic[0].revisionName",
        ),
        (
            "[{revisionName: a, configurationName: c, percent: 100}]",
            "expected exactly one, got both: spec.traffic[0].configurationName, \
             spec.traffic[0].revisionName",
        ),
        ("[]", "Traffic targets sum to 0, want 100: spec.traffic"),
    ];
    for (traffic, want) in cases {
        let got = match admit_route(&route(traffic)) {
            Ok(_) => "ok".to_string(),
            Err(e) => describe(&e),
        };
        assert_eq!(got, want, "{traffic}");
    }
}
