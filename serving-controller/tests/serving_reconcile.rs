//! Configuration → Revisions (creation only on template change, naming, latest ready, state
//! persistence) and Route traffic resolution (missing / not-ready targets).

use k8s_openapi::api::core::v1::EnvVar;
use sluice_serving::ingress::Condition;
use sluice_serving::serving::configuration::ConfigurationError;
use sluice_serving::serving::{
    Configuration, HasConditions, Key, Readiness, ReadinessReport, Route, ServingConfig,
    ServingObjects, ServingState, TargetError, admit_configuration, admit_route, build_traffic,
    reconcile_configuration, reconcile_route,
};

const CONFIG: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata:
  name: hello
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          env:
            - {name: TARGET, value: one}
"#;

fn config(target: &str, name: Option<&str>) -> Configuration {
    let mut c: Configuration = serde_yaml::from_str(CONFIG).unwrap();
    c.spec.template.spec.containers[0].env = vec![EnvVar {
        name: "TARGET".into(),
        value: Some(target.into()),
        ..EnvVar::default()
    }];
    c.spec.template.metadata.name = name.map(Into::into);
    admit_configuration(&c, &ServingConfig::default()).unwrap()
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        ..Condition::default()
    }
}

fn ready(names: &[&str]) -> ReadinessReport {
    names
        .iter()
        .map(|n| (Key::new("default", *n), Readiness::Ready))
        .collect()
}

/// (template value, explicit name) → (created, latest created, error).
type Step = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    Option<ConfigurationError>,
);

/// The default group's (revision, percent), or why the traffic does not resolve.
type Resolved = Result<Vec<(&'static str, i64)>, TargetError>;

#[test]
fn revisions_only_on_template_change() {
    let mut state = ServingState::default();
    let none = ReadinessReport::new();
    let steps: Vec<Step> = vec![
        ("one", None, Some("hello-00001"), "hello-00001", None),
        ("one", None, None, "hello-00001", None),
        ("two", None, Some("hello-00002"), "hello-00002", None),
        ("one", None, Some("hello-00003"), "hello-00003", None),
        ("four", Some("hello-v4"), Some("hello-v4"), "hello-v4", None),
        ("four", Some("hello-v4"), None, "hello-v4", None),
        (
            "five",
            Some("hello-v4"),
            None,
            "hello-v4",
            Some(ConfigurationError::RevisionNameTaken {
                name: "hello-v4".into(),
            }),
        ),
        ("five", None, Some("hello-00005"), "hello-00005", None),
    ];
    for (i, (target, name, created, latest, error)) in steps.into_iter().enumerate() {
        let out = reconcile_configuration(&config(target, name), &mut state, &none);
        assert_eq!(out.created.as_deref(), created, "step {i}");
        assert_eq!(
            out.configuration.status.latest_created_revision_name, latest,
            "step {i}"
        );
        assert_eq!(out.error, error, "step {i}");
    }
    let names: Vec<String> = state.revisions().map(|r| r.name().to_string()).collect();
    assert_eq!(
        names,
        [
            "hello-00001",
            "hello-00002",
            "hello-00003",
            "hello-00005",
            "hello-v4"
        ]
    );
    let rev = state.revisions().find(|r| r.name() == "hello-v4").unwrap();
    let labels = rev.metadata.labels.clone().unwrap();
    assert_eq!(labels["serving.knative.dev/configuration"], "hello");
    assert_eq!(labels["serving.knative.dev/configurationGeneration"], "4");
    assert_eq!(rev.spec.timeout_seconds, Some(300));

    // The name clash is reported on the Configuration.
    let out = reconcile_configuration(&config("six", Some("hello-v4")), &mut state, &none);
    assert_eq!(
        out.configuration.status.conditions,
        vec![cond(
            "Ready",
            "False",
            "RevisionFailed",
            "Revision creation failed with message: revision \"hello-v4\" already exists with \
             a different template; change the template's metadata.name."
        )]
    );
}

#[test]
fn latest_ready_follows_readiness_and_only_moves_forward() {
    let mut state = ServingState::default();
    reconcile_configuration(&config("one", None), &mut state, &ReadinessReport::new());
    let c2 = config("two", None);
    // (ready revisions) → (latest ready, Ready condition)
    let steps = [
        (vec![], "", cond("Ready", "Unknown", "", "")),
        (
            vec!["hello-00001"],
            "hello-00001",
            cond("Ready", "Unknown", "", ""),
        ),
        (
            vec!["hello-00001", "hello-00002"],
            "hello-00002",
            cond("Ready", "True", "", ""),
        ),
        // 00002 crashes: traffic stays on it (upstream never moves back).
        (
            vec!["hello-00001"],
            "hello-00002",
            cond("Ready", "True", "", ""),
        ),
    ];
    for (i, (names, latest, ready_cond)) in steps.into_iter().enumerate() {
        let out = reconcile_configuration(&c2, &mut state, &ready(&names));
        assert_eq!(
            out.configuration.status.latest_ready_revision_name, latest,
            "step {i}"
        );
        assert_eq!(
            out.configuration.status.conditions,
            vec![ready_cond],
            "step {i}"
        );
        let statuses: Vec<&str> = out
            .revisions
            .iter()
            .map(|r| r.status.condition_status("Ready"))
            .collect();
        assert_eq!(statuses.len(), 2, "step {i}");
    }
    // A failed latest revision fails the Configuration.
    let report = ReadinessReport::from([(
        Key::new("default", "hello-00002"),
        Readiness::Failed {
            reason: "ExitCode1".into(),
            message: "the process exited with code 1".into(),
        },
    )]);
    let out = reconcile_configuration(&c2, &mut state, &report);
    assert_eq!(
        out.configuration.status.conditions,
        vec![cond(
            "Ready",
            "False",
            "RevisionFailed",
            "Revision \"hello-00002\" failed with message: the process exited with code 1."
        )]
    );
}

#[test]
fn state_survives_a_restart() {
    let mut state = ServingState::default();
    reconcile_configuration(&config("one", None), &mut state, &ready(&["hello-00001"]));
    reconcile_configuration(&config("two", None), &mut state, &ReadinessReport::new());
    let bytes = state.to_json();
    let mut restored = ServingState::from_json(&bytes).unwrap();
    assert_eq!(restored, state);
    // Same template after the restart: nothing new; next edit continues the numbering.
    let out = reconcile_configuration(&config("two", None), &mut restored, &ReadinessReport::new());
    assert_eq!(out.created, None);
    assert_eq!(
        out.configuration.status.latest_ready_revision_name,
        "hello-00001"
    );
    let out = reconcile_configuration(
        &config("three", None),
        &mut restored,
        &ReadinessReport::new(),
    );
    assert_eq!(out.created.as_deref(), Some("hello-00003"));
}

fn route(traffic: &str) -> Route {
    let r: Route = serde_yaml::from_str(&format!(
        "metadata: {{name: r, namespace: default}}\nspec:\n  traffic: {traffic}\n"
    ))
    .unwrap();
    admit_route(&r).unwrap()
}

#[test]
fn traffic_resolution_and_reasons() {
    let mut state = ServingState::default();
    reconcile_configuration(&config("one", None), &mut state, &ReadinessReport::new());
    let report = ReadinessReport::from([
        (Key::new("default", "hello-00001"), Readiness::Ready),
        (
            Key::new("default", "hello-00003"),
            Readiness::Failed {
                reason: "Crash".into(),
                message: "boom".into(),
            },
        ),
    ]);
    reconcile_configuration(&config("two", None), &mut state, &report);
    let out = reconcile_configuration(&config("three", None), &mut state, &report);
    let mut catalog = ServingObjects::new();
    catalog.add_outcome(&out);
    let mut lonely = config("x", None);
    lonely.metadata.name = Some("lonely".into());
    let lonely = reconcile_configuration(&lonely, &mut state, &ReadinessReport::new());
    catalog.add_outcome(&lonely);

    let cases: Vec<(&str, &str, Resolved)> = vec![
        (
            "configuration → latest ready",
            "[{configurationName: hello, percent: 100}]",
            Ok(vec![("hello-00001", 100)]),
        ),
        (
            "same revision twice is summed",
            "[{configurationName: hello, percent: 40}, {revisionName: hello-00001, percent: 60}]",
            Ok(vec![("hello-00001", 100)]),
        ),
        (
            "missing revision",
            "[{revisionName: hello-00009, percent: 100}]",
            Err(TargetError::Missing {
                kind: "Revision",
                name: "hello-00009".into(),
            }),
        ),
        (
            "missing configuration",
            "[{configurationName: nope, percent: 100}]",
            Err(TargetError::Missing {
                kind: "Configuration",
                name: "nope".into(),
            }),
        ),
        (
            "revision not ready",
            "[{revisionName: hello-00002, percent: 100}]",
            Err(TargetError::UnreadyRevision {
                name: "hello-00002".into(),
                failed: false,
            }),
        ),
        (
            "revision failed",
            "[{revisionName: hello-00003, percent: 100}]",
            Err(TargetError::UnreadyRevision {
                name: "hello-00003".into(),
                failed: true,
            }),
        ),
        (
            "configuration without a ready revision",
            "[{configurationName: lonely, percent: 100}]",
            Err(TargetError::UnreadyConfiguration {
                name: "lonely".into(),
                failed: false,
            }),
        ),
        (
            "a failure wins over a wait",
            "[{revisionName: hello-00002, percent: 50}, {revisionName: gone, percent: 50}]",
            Err(TargetError::Missing {
                kind: "Revision",
                name: "gone".into(),
            }),
        ),
    ];
    for (name, traffic, want) in cases {
        let got = build_traffic(&route(traffic), &catalog).map(|t| {
            t.targets[""]
                .iter()
                .map(|t| (t.revision_name.clone(), t.percent.unwrap_or(0)))
                .collect::<Vec<_>>()
        });
        let want = want.map(|v| v.into_iter().map(|(n, p)| (n.to_string(), p)).collect());
        assert_eq!(got, want, "{name}");
    }

    // The Route's conditions say why; no KIngress is produced.
    let cfg = ServingConfig::default();
    let conditions = |traffic: &str| {
        let out = reconcile_route(&route(traffic), &catalog, &cfg, None);
        (out.ingress.is_some(), out.route.status.conditions)
    };
    let not_configured = cond(
        "IngressReady",
        "Unknown",
        "IngressNotConfigured",
        "Ingress has not yet been reconciled.",
    );
    let tls = cond(
        "CertificateProvisioned",
        "True",
        "TLSNotEnabled",
        "external-domain-tls is not enabled",
    );
    let missing = cond(
        "AllTrafficAssigned",
        "False",
        "RevisionMissing",
        "Revision \"hello-00009\" referenced in traffic not found.",
    );
    assert_eq!(
        conditions("[{revisionName: hello-00009, percent: 100}]"),
        (
            false,
            vec![
                missing.clone(),
                tls.clone(),
                not_configured.clone(),
                cond("Ready", "False", &missing.reason, &missing.message),
            ]
        )
    );
    let waiting = cond(
        "AllTrafficAssigned",
        "Unknown",
        "RevisionMissing",
        "Revision \"hello-00002\" is not yet ready.",
    );
    assert_eq!(
        conditions("[{revisionName: hello-00002, percent: 100}]"),
        (
            false,
            vec![
                waiting.clone(),
                tls.clone(),
                not_configured.clone(),
                cond("Ready", "Unknown", &waiting.reason, &waiting.message),
            ]
        )
    );
    assert_eq!(
        conditions("[{configurationName: hello, percent: 100}]"),
        (
            true,
            vec![
                cond("AllTrafficAssigned", "True", "", ""),
                tls,
                not_configured.clone(),
                cond(
                    "Ready",
                    "Unknown",
                    &not_configured.reason,
                    &not_configured.message
                ),
            ]
        )
    );
}
