//! Revision → Deployment + Service, as pure functions (knative/serving
//! `pkg/reconciler/revision/resources`, without the queue-proxy sidecar: Envoy and the
//! activator do its work).
//!
//! What follows Knative:
//! - names: Deployment `{revision}-deployment` (`kmeta.ChildName`, hashed past 63 characters),
//!   Service `{revision}`;
//! - labels: the Revision's own (its Configuration, Service, generation …) plus
//!   `serving.knative.dev/revision`, `serving.knative.dev/revisionUID` and `app` (unless the
//!   Revision sets it); annotations: the Revision's, without kubectl's last-applied copy;
//! - both objects owned by the Revision (`controller: true`, `blockOwnerDeletion: true`);
//! - the user container: the serving container (the one with the port; `containers[0]` when
//!   alone) with its port replaced by `user-port` = the user port,
//!   `PORT` then `K_REVISION`, `K_CONFIGURATION`, `K_SERVICE` appended to its `env`,
//!   `terminationMessagePolicy` defaulting to `FallbackToLogsOnError`; pod
//!   `terminationGracePeriodSeconds` = the Revision's `timeoutSeconds`, `enableServiceLinks`
//!   false unless the Revision sets it.
//!
//! What differs, because there is no queue-proxy:
//! - the Service's port 80 targets the user port directly (Knative's targets the queue-proxy);
//! - probes stay on the user container: a probe without a port gets the user port (as Knative
//!   rewrites them), a Revision without a readiness probe gets a TCP check of the user port,
//!   and a readiness probe without `periodSeconds` is run every
//!   [`READINESS_PERIOD_SECONDS`] (Knative's queue-proxy probes such a container aggressively;
//!   the kubelet's default of 10 s would slow every scale from zero);
//! - images are used as written (Knative resolves tags to digests);
//! - sidecars (`multi-container`) keep their place in `containers` and run as written, their
//!   environment without Knative's reserved variables.
//!
//! The Deployment and the Service select pods by `serving.knative.dev/revision` (Knative's
//! Deployment selects by `revisionUID`; the name is unique within the namespace and the
//! selector never changes for a Deployment's lifetime).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::error::RuntimeError;
use crate::lookup::{IDLE_TIMEOUT_ANNOTATION, TIMEOUT_ANNOTATION};
use crate::serving::configuration::controller_ref;
use crate::serving::kingress::REVISION_SERVICE_PORT;
use crate::serving::names::child_name;
use crate::serving::{CONFIGURATION_LABEL, LAST_APPLIED_ANNOTATION, Revision, SERVICE_LABEL};
use crate::translate::clusters::H2C_APP_PROTOCOL;

/// Label: the Revision a Deployment, Service or Pod belongs to (Knative's).
pub const REVISION_LABEL: &str = "serving.knative.dev/revision";
/// Label: that Revision's UID (Knative's).
pub const REVISION_UID_LABEL: &str = "serving.knative.dev/revisionUID";
/// Label Knative sets to the Revision's name unless the Revision has one.
pub const APP_LABEL: &str = "app";
/// Name of the user container's port (Knative's `UserPortName`).
pub const USER_PORT_NAME: &str = "user-port";
/// Knative's `config-deployment` `progress-deadline` default (600 s).
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Period of a readiness probe that sets none.
pub const READINESS_PERIOD_SECONDS: i32 = 1;
/// The environment variables Knative sets on the user container (and rejects in a spec).
const RESERVED_ENV: [&str; 4] = ["PORT", "K_REVISION", "K_CONFIGURATION", "K_SERVICE"];

/// How Revisions become Deployments: what Knative takes from its ConfigMaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Deployment `progressDeadlineSeconds` (`config-deployment` `progress-deadline`).
    pub progress_deadline_seconds: i32,
    /// Pod `enableServiceLinks` when the Revision leaves it unset (`config-defaults`
    /// `enable-service-links`, `false`: Knative keeps pods' environments small).
    pub enable_service_links: bool,
    /// Container name when the Revision's is empty (`config-defaults`
    /// `container-name-template`, `user-container`).
    pub user_container_name: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            progress_deadline_seconds: DEFAULT_PROGRESS_DEADLINE_SECONDS,
            enable_service_links: false,
            user_container_name: "user-container".to_string(),
        }
    }
}

/// The Deployment's name: `{revision}-deployment`, shortened with a hash past 63 characters
/// as Knative's `kmeta.ChildName`.
pub fn deployment_name(revision: &str) -> String {
    child_name(revision, "-deployment")
}

/// Checks that `revision` can be applied: namespace, name and uid set, exactly one container,
/// with an image.
pub fn check_revision(revision: &Revision) -> Result<(), RuntimeError> {
    let key = revision.key();
    for (field, missing) in [
        ("namespace", revision.namespace().is_empty()),
        ("name", revision.name().is_empty()),
        (
            "uid",
            revision
                .metadata
                .uid
                .as_deref()
                .unwrap_or_default()
                .is_empty(),
        ),
    ] {
        if missing {
            return Err(RuntimeError::MissingMetadata {
                revision: key,
                field,
            });
        }
    }
    let containers = &revision.spec.containers;
    let problem = if containers.is_empty() {
        Some("spec.containers is empty".to_string())
    } else {
        containers
            .iter()
            .position(|c| c.image.is_empty())
            .map(|i| format!("spec.containers[{i}].image is empty"))
    };
    match problem {
        Some(problem) => Err(RuntimeError::UnsupportedSpec {
            revision: key,
            problem,
        }),
        None => Ok(()),
    }
}

/// The labels of the Revision's Deployment, Service and Pods.
pub fn revision_labels(revision: &Revision) -> BTreeMap<String, String> {
    let name = revision.name().to_string();
    let mut labels = revision.metadata.labels.clone().unwrap_or_default();
    labels.insert(REVISION_LABEL.to_string(), name.clone());
    if let Some(uid) = revision.metadata.uid.as_ref().filter(|u| !u.is_empty()) {
        labels.insert(REVISION_UID_LABEL.to_string(), uid.clone());
    }
    labels.entry(APP_LABEL.to_string()).or_insert(name);
    labels
}

fn revision_annotations(revision: &Revision) -> Option<BTreeMap<String, String>> {
    let mut annotations = revision.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(LAST_APPLIED_ANNOTATION);
    (!annotations.is_empty()).then_some(annotations)
}

fn selector(revision: &Revision) -> BTreeMap<String, String> {
    BTreeMap::from([(REVISION_LABEL.to_string(), revision.name().to_string())])
}

fn object_meta(revision: &Revision, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: revision.metadata.namespace.clone(),
        labels: Some(revision_labels(revision)),
        annotations: revision_annotations(revision),
        owner_references: Some(vec![controller_ref(Revision::KIND, &revision.metadata)]),
        ..ObjectMeta::default()
    }
}

/// The Revision's Deployment at `replicas` (clamped to `i32::MAX`). Total: a Revision that
/// [`check_revision`] rejects still gives an object, which the API server would refuse.
pub fn revision_deployment(
    revision: &Revision,
    config: &RuntimeConfig,
    replicas: u32,
) -> Deployment {
    let spec = &revision.spec;
    let serving = spec.serving_index();
    let containers = match spec.containers.len() {
        0 | 1 => vec![user_container(revision, config)],
        _ => spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == serving {
                    user_container(revision, config)
                } else {
                    sidecar_container(c)
                }
            })
            .collect(),
    };
    let pod = PodSpec {
        containers,
        service_account_name: spec.service_account_name.clone(),
        volumes: non_empty(spec.volumes.clone()),
        image_pull_secrets: non_empty(spec.image_pull_secrets.clone()),
        enable_service_links: Some(
            spec.enable_service_links
                .unwrap_or(config.enable_service_links),
        ),
        automount_service_account_token: spec.automount_service_account_token,
        security_context: spec.security_context.clone(),
        termination_grace_period_seconds: spec.timeout_seconds,
        ..PodSpec::default()
    };
    Deployment {
        metadata: object_meta(revision, deployment_name(revision.name())),
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector(revision)),
                ..LabelSelector::default()
            },
            progress_deadline_seconds: Some(config.progress_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(revision_labels(revision)),
                    annotations: revision_annotations(revision),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The Service port name Knative gives a Revision: `http2` when the app speaks h2c, else
/// `http`.
pub fn service_port_name(revision: &Revision) -> &'static str {
    if revision.spec.is_h2c() {
        "http2"
    } else {
        "http"
    }
}

/// The Revision's private Service (`{revision}-private`, Knative's serverless-service
/// design): ClusterIP, port 80 (`http`, or `http2` with appProtocol `kubernetes.io/h2c` when
/// the app speaks h2c) to the user port, selecting the Revision's pods. Kubernetes keeps its
/// EndpointSlices: the pods, ready or not.
pub fn revision_private_service(revision: &Revision) -> Service {
    let mut service = revision_port_service(revision, private_service_name(revision.name()));
    if let Some(spec) = &mut service.spec {
        spec.selector = Some(selector(revision));
    }
    service
}

/// The Revision's public Service, named after the Revision (what KIngress splits name):
/// ClusterIP, the same port, **no selector**. Its EndpointSlices are written by `sluice
/// autoscaler --kube`: the ready pods of the private Service (serve mode), or the activator's
/// pods while the Revision is at zero or short of burst capacity (proxy mode).
///
/// Its annotations carry the Revision's timeouts to the gateway: `timeoutSeconds` as
/// [`TIMEOUT_ANNOTATION`] (the route timeout) and `idleTimeoutSeconds` as
/// [`IDLE_TIMEOUT_ANNOTATION`] (the route idle timeout).
pub fn revision_service(revision: &Revision) -> Service {
    let mut service = revision_port_service(revision, revision.name().to_string());
    let timeouts = [
        (TIMEOUT_ANNOTATION, revision.spec.timeout_seconds),
        (IDLE_TIMEOUT_ANNOTATION, revision.spec.idle_timeout_seconds),
    ];
    for (annotation, seconds) in timeouts {
        if let Some(s) = seconds.filter(|s| *s > 0) {
            service
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(annotation.to_string(), s.to_string());
        }
    }
    service
}

/// The private Service's name: `{revision}-private` (Knative's, hashed past 63 characters).
pub fn private_service_name(revision: &str) -> String {
    child_name(revision, "-private")
}

fn revision_port_service(revision: &Revision, name: String) -> Service {
    let h2c = revision.spec.is_h2c();
    Service {
        metadata: object_meta(revision, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            ports: Some(vec![ServicePort {
                name: Some(service_port_name(revision).to_string()),
                port: REVISION_SERVICE_PORT,
                target_port: Some(IntOrString::Int(revision.spec.user_port())),
                protocol: Some("TCP".to_string()),
                app_protocol: h2c.then(|| H2C_APP_PROTOCOL.to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn user_container(revision: &Revision, config: &RuntimeConfig) -> Container {
    let port = revision.spec.user_port();
    let Some(user) = revision.spec.container() else {
        return Container {
            name: config.user_container_name.clone(),
            env: Some(knative_env(revision, port)),
            ..Container::default()
        };
    };
    let name = if user.name.is_empty() {
        config.user_container_name.clone()
    } else {
        user.name.clone()
    };
    let mut env = user_env(&user.env);
    env.extend(knative_env(revision, port));
    let readiness = user.readiness_probe.clone().unwrap_or_else(|| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            ..TCPSocketAction::default()
        }),
        ..Probe::default()
    });
    let mut readiness = with_port(readiness, port);
    readiness
        .period_seconds
        .get_or_insert(READINESS_PERIOD_SECONDS);
    Container {
        name,
        image: Some(user.image.clone()).filter(|i| !i.is_empty()),
        command: non_empty(user.command.clone()),
        args: non_empty(user.args.clone()),
        working_dir: user.working_dir.clone(),
        env: Some(env),
        env_from: non_empty(user.env_from.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(USER_PORT_NAME.to_string()),
            container_port: port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness),
        liveness_probe: user.liveness_probe.clone().map(|p| with_port(p, port)),
        startup_probe: user.startup_probe.clone().map(|p| with_port(p, port)),
        resources: user.resources.clone(),
        security_context: user.security_context.clone(),
        image_pull_policy: user.image_pull_policy.clone(),
        termination_message_path: user.termination_message_path.clone(),
        termination_message_policy: Some(
            user.termination_message_policy
                .clone()
                .unwrap_or_else(|| "FallbackToLogsOnError".to_string()),
        ),
        volume_mounts: non_empty(user.volume_mounts.clone()),
        ..Container::default()
    }
}

/// A sidecar (a container without the port, `multi-container`): as written, its environment
/// without Knative's reserved variables, `terminationMessagePolicy` defaulted as the serving
/// container's. Its probes are the kubelet's to run as given.
fn sidecar_container(c: &crate::serving::Container) -> Container {
    Container {
        name: c.name.clone(),
        image: Some(c.image.clone()).filter(|i| !i.is_empty()),
        command: non_empty(c.command.clone()),
        args: non_empty(c.args.clone()),
        working_dir: c.working_dir.clone(),
        env: non_empty(user_env(&c.env)),
        env_from: non_empty(c.env_from.clone()),
        readiness_probe: c.readiness_probe.clone(),
        liveness_probe: c.liveness_probe.clone(),
        startup_probe: c.startup_probe.clone(),
        resources: c.resources.clone(),
        security_context: c.security_context.clone(),
        image_pull_policy: c.image_pull_policy.clone(),
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: Some(
            c.termination_message_policy
                .clone()
                .unwrap_or_else(|| "FallbackToLogsOnError".to_string()),
        ),
        volume_mounts: non_empty(c.volume_mounts.clone()),
        ..Container::default()
    }
}

/// The user's variables without Knative's reserved ones (admission rejects those; a server-side
/// apply fails on duplicate names) and, where a name repeats, only its last entry (the one the
/// kubelet would use).
fn user_env(env: &[EnvVar]) -> Vec<EnvVar> {
    env.iter()
        .enumerate()
        .filter(|(i, var)| {
            !RESERVED_ENV.contains(&var.name.as_str())
                && !env[i + 1..].iter().any(|later| later.name == var.name)
        })
        .map(|(_, var)| var.clone())
        .collect()
}

/// `PORT`, `K_REVISION`, `K_CONFIGURATION`, `K_SERVICE`, as Knative appends them (the last two
/// from the Revision's labels, empty when it has none).
fn knative_env(revision: &Revision, port: i32) -> Vec<EnvVar> {
    let label = |key: &str| {
        revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default()
    };
    [
        ("PORT", port.to_string()),
        ("K_REVISION", revision.name().to_string()),
        ("K_CONFIGURATION", label(CONFIGURATION_LABEL)),
        ("K_SERVICE", label(SERVICE_LABEL)),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    })
    .collect()
}

/// The probe with a missing (or zero) port set to the user port, as Knative rewrites probes.
fn with_port(mut probe: Probe, port: i32) -> Probe {
    let unset = |p: &IntOrString| match p {
        IntOrString::Int(n) => *n == 0,
        IntOrString::String(s) => s.is_empty(),
    };
    if let Some(get) = probe.http_get.as_mut().filter(|g| unset(&g.port)) {
        get.port = IntOrString::Int(port);
    }
    if let Some(tcp) = probe.tcp_socket.as_mut().filter(|t| unset(&t.port)) {
        tcp.port = IntOrString::Int(port);
    }
    if let Some(grpc) = probe.grpc.as_mut().filter(|g| g.port == 0) {
        grpc.port = port;
    }
    probe
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::HTTPGetAction;

    use super::*;
    use crate::serving::pod::Container as UserContainer;

    fn revision(port: Option<(&str, i32)>) -> Revision {
        let mut revision = Revision::default();
        revision.metadata.name = Some("hello-00001".into());
        revision.metadata.namespace = Some("default".into());
        revision.metadata.uid = Some("rev-uid-1".into());
        revision.metadata.labels = Some(BTreeMap::from([
            (CONFIGURATION_LABEL.to_string(), "hello".to_string()),
            (SERVICE_LABEL.to_string(), "hello-svc".to_string()),
        ]));
        revision.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
            ("example.com/note".to_string(), "kept".to_string()),
        ]));
        revision.spec.timeout_seconds = Some(300);
        revision.spec.containers = vec![UserContainer {
            image: "ghcr.io/knative/helloworld-go:latest".into(),
            command: vec!["/ko-app/helloworld".into()],
            args: vec!["--verbose".into()],
            env: vec![
                var("TARGET", "first"),
                var("PORT", "1"),
                var("TARGET", "Sluice"),
                var("GREETING", "hi"),
            ],
            ports: port
                .map(|(name, n)| ContainerPort {
                    name: Some(name.into()).filter(|n: &String| !n.is_empty()),
                    container_port: n,
                    ..ContainerPort::default()
                })
                .into_iter()
                .collect(),
            ..UserContainer::default()
        }];
        revision
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn container(d: &Deployment) -> &Container {
        &d.spec.template.spec.as_ref().expect("pod").containers[0]
    }

    fn env(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn deployment_is_named_labelled_and_owned_as_knative() {
        let d = revision_deployment(&revision(None), &RuntimeConfig::default(), 3);
        assert_eq!(d.metadata.name.as_deref(), Some("hello-00001-deployment"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
        let labels = d.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[REVISION_LABEL], "hello-00001");
        assert_eq!(labels[REVISION_UID_LABEL], "rev-uid-1");
        assert_eq!(labels[CONFIGURATION_LABEL], "hello");
        assert_eq!(labels[SERVICE_LABEL], "hello-svc");
        assert_eq!(labels[APP_LABEL], "hello-00001");
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations,
            BTreeMap::from([("example.com/note".to_string(), "kept".to_string())]),
            "kubectl's last-applied copy is not propagated"
        );

        let owners = d.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.api_version, "serving.knative.dev/v1");
        assert_eq!(owner.kind, "Revision");
        assert_eq!(owner.name, "hello-00001");
        assert_eq!(owner.uid, "rev-uid-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));

        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        assert_eq!(
            spec.selector.match_labels,
            Some(BTreeMap::from([(
                REVISION_LABEL.to_string(),
                "hello-00001".to_string()
            )]))
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        assert_eq!(pod_labels, labels, "pods carry the same labels");
        let pod = spec.template.spec.as_ref().expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(300));
        assert_eq!(pod.enable_service_links, Some(false));
    }

    #[test]
    fn user_container_gets_knative_env_after_its_own() {
        let d = revision_deployment(&revision(Some(("", 9000))), &RuntimeConfig::default(), 1);
        let c = container(&d);
        assert_eq!(c.name, "user-container");
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/knative/helloworld-go:latest")
        );
        assert_eq!(c.command, Some(vec!["/ko-app/helloworld".to_string()]));
        assert_eq!(c.args, Some(vec!["--verbose".to_string()]));
        let expected: Vec<(String, String)> = [
            ("TARGET", "Sluice"),
            ("GREETING", "hi"),
            ("PORT", "9000"),
            ("K_REVISION", "hello-00001"),
            ("K_CONFIGURATION", "hello"),
            ("K_SERVICE", "hello-svc"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env(c), expected, "reserved and repeated names dropped");
        let ports = c.ports.clone().unwrap_or_default();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some(USER_PORT_NAME));
        assert_eq!(ports[0].container_port, 9000);
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn k_service_is_empty_without_a_service_label() {
        let mut r = revision(None);
        r.metadata.labels = None;
        let d = revision_deployment(&r, &RuntimeConfig::default(), 1);
        let env = env(container(&d));
        assert!(env.contains(&("K_SERVICE".to_string(), String::new())));
        assert!(env.contains(&("K_CONFIGURATION".to_string(), String::new())));
        assert!(env.contains(&("PORT".to_string(), "8080".to_string())));
    }

    #[test]
    fn readiness_defaults_to_a_fast_tcp_check_of_the_user_port() {
        let d = revision_deployment(&revision(None), &RuntimeConfig::default(), 1);
        let probe = container(&d).readiness_probe.clone().expect("probe");
        assert_eq!(
            probe.tcp_socket.map(|t| t.port),
            Some(IntOrString::Int(8080))
        );
        assert_eq!(probe.period_seconds, Some(READINESS_PERIOD_SECONDS));
    }

    #[test]
    fn user_probes_are_carried_over_with_the_user_port_filled_in() {
        let mut r = revision(Some(("http1", 8081)));
        let http = |port: IntOrString| Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port,
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(7),
            ..Probe::default()
        };
        r.spec.containers[0].readiness_probe = Some(http(IntOrString::Int(0)));
        r.spec.containers[0].liveness_probe = Some(http(IntOrString::String("admin".into())));
        let d = revision_deployment(&r, &RuntimeConfig::default(), 1);
        let c = container(&d);
        let readiness = c.readiness_probe.clone().expect("readiness");
        let get = readiness.http_get.expect("httpGet");
        assert_eq!(get.port, IntOrString::Int(8081));
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(readiness.period_seconds, Some(7), "the user's period kept");
        let liveness = c
            .liveness_probe
            .clone()
            .and_then(|p| p.http_get)
            .expect("liveness");
        assert_eq!(
            liveness.port,
            IntOrString::String("admin".into()),
            "a set port kept"
        );
    }

    #[test]
    fn the_public_service_carries_the_revisions_timeouts_to_the_gateway() {
        let mut r = revision(Some(("", 9000)));
        r.spec.idle_timeout_seconds = Some(20);
        let public = revision_service(&r);
        let annotations = public.metadata.annotations.expect("annotations");
        assert_eq!(annotations[TIMEOUT_ANNOTATION], "300");
        assert_eq!(annotations[IDLE_TIMEOUT_ANNOTATION], "20");
        assert_eq!(annotations["example.com/note"], "kept");
        let private = revision_private_service(&r);
        assert!(
            !private
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key(TIMEOUT_ANNOTATION),
            "the gateway never routes to the private Service"
        );
    }

    #[test]
    fn service_targets_the_user_port_on_80_named_by_protocol() {
        let public = revision_service(&revision(Some(("", 9000))));
        assert_eq!(public.metadata.name.as_deref(), Some("hello-00001"));
        assert_eq!(
            public.spec.as_ref().and_then(|s| s.selector.clone()),
            None,
            "the public Service's endpoints are written by the autoscaler"
        );
        let s = revision_private_service(&revision(Some(("", 9000))));
        assert_eq!(s.metadata.name.as_deref(), Some("hello-00001-private"));
        assert_eq!(
            s.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("rev-uid-1")
        );
        let spec = s.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.selector,
            Some(BTreeMap::from([(
                REVISION_LABEL.to_string(),
                "hello-00001".to_string()
            )]))
        );
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::Int(9000)));
        assert_eq!(port.app_protocol, None);

        let h2c = revision_service(&revision(Some(("h2c", 50051))));
        let port = &h2c.spec.and_then(|s| s.ports).expect("ports")[0];
        assert_eq!(port.name.as_deref(), Some("http2"));
        assert_eq!(port.app_protocol.as_deref(), Some(H2C_APP_PROTOCOL));
        assert_eq!(port.target_port, Some(IntOrString::Int(50051)));
    }

    #[test]
    fn long_names_are_shortened_as_knative_does() {
        let long = "a".repeat(60);
        let name = deployment_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, child_name(&long, "-deployment"));
        assert_eq!(deployment_name("hello-00001"), "hello-00001-deployment");
    }

    #[test]
    fn replicas_beyond_i32_are_clamped() {
        let d = revision_deployment(&revision(None), &RuntimeConfig::default(), u32::MAX);
        assert_eq!(d.spec.replicas, Some(i32::MAX));
    }

    #[test]
    fn check_revision_says_what_is_missing() {
        assert!(check_revision(&revision(None)).is_ok());
        let mut no_uid = revision(None);
        no_uid.metadata.uid = None;
        assert!(matches!(
            check_revision(&no_uid),
            Err(RuntimeError::MissingMetadata { field: "uid", .. })
        ));
        let mut no_image = revision(None);
        no_image.spec.containers[0].image.clear();
        let err = check_revision(&no_image).expect_err("no image");
        assert!(
            err.to_string().contains("spec.containers[0].image"),
            "{err}"
        );
        let mut two = revision(None);
        two.spec.containers.push(UserContainer::default());
        assert!(matches!(
            check_revision(&two),
            Err(RuntimeError::UnsupportedSpec { .. })
        ));
        let mut none = revision(None);
        none.spec.containers.clear();
        assert!(check_revision(&none).is_err());
        // The builders stay total.
        let d = revision_deployment(&none, &RuntimeConfig::default(), 1);
        assert_eq!(container(&d).name, "user-container");
    }
}
