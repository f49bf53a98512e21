//! `deploy/ingress/` (and the controller of `deploy/full/`, at the end): every manifest parses into its typed k8s-openapi object with no unknown
//! or misspelt field, and the pieces fit together — RBAC grants exactly what the code uses,
//! Services select the gateway pods and reach its container ports, probes hit the debug server,
//! the Envoy bootstrap matches the template and the addresses Sluice is started with.
//!
//! k8s-openapi types ignore unknown fields when deserializing, so each document is parsed,
//! serialized back and compared with the original: a misspelt field is missing from the
//! round trip and fails the comparison.

#[path = "support/manifest.rs"]
mod manifest;
use manifest::typed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use sluice_serving::ingress::SLUICE_INGRESS_CLASS;
use sluice_serving::kube::{LoadBalancers, PERMISSIONS};

const NAMESPACE: &str = "knative-serving";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ingress")
}

/// Every object of `deploy/ingress/*.yaml`, typed.
#[derive(Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
}

fn load() -> Manifests {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ingress exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/ingress");
    let mut manifests = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let at = format!("{name} document {}", index + 1);
            let yaml = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            if yaml.is_null() {
                continue;
            }
            let value = serde_json::to_value(&yaml).expect("YAML maps to JSON");
            let api_version = value["apiVersion"].as_str().unwrap_or_default();
            let kind = value["kind"].as_str().unwrap_or_default();
            match (api_version, kind) {
                ("apps/v1", "Deployment") => manifests.deployments.push(typed(&value, &at)),
                ("v1", "Service") => manifests.services.push(typed(&value, &at)),
                ("v1", "ServiceAccount") => manifests.service_accounts.push(typed(&value, &at)),
                ("v1", "ConfigMap") => manifests.config_maps.push(typed(&value, &at)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    manifests.cluster_roles.push(typed(&value, &at))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    manifests.cluster_role_bindings.push(typed(&value, &at))
                }
                other => panic!("{at}: unexpected kind {other:?}"),
            }
        }
    }
    manifests
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn only<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "exactly one {what}");
    &items[0]
}

fn container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("container {name}"))
}

fn container_ports(c: &Container) -> BTreeMap<String, i32> {
    c.ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect()
}

/// `--flag=value` in a container's args.
fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

#[test]
fn every_manifest_parses_into_its_type_without_unknown_fields() {
    let m = load();
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.services.len(), 2);
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    assert_eq!(m.cluster_role_bindings.len(), 1);
    assert_eq!(m.config_maps.len(), 1);
    let namespaced = m
        .deployments
        .iter()
        .map(|d| &d.metadata)
        .chain(m.services.iter().map(|s| &s.metadata))
        .chain(m.service_accounts.iter().map(|s| &s.metadata))
        .chain(m.config_maps.iter().map(|c| &c.metadata));
    for meta in namespaced {
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{}", name(meta));
    }
    for meta in m
        .cluster_roles
        .iter()
        .map(|r| &r.metadata)
        .chain(m.cluster_role_bindings.iter().map(|b| &b.metadata))
    {
        assert_eq!(meta.namespace, None, "{} is cluster-scoped", name(meta));
    }
}

#[test]
fn cluster_role_grants_exactly_what_the_code_uses() {
    let m = load();
    let role = only(&m.cluster_roles, "ClusterRole");
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    let needed: BTreeMap<(String, String), BTreeSet<String>> = PERMISSIONS
        .iter()
        .map(|p| {
            (
                (p.group.to_string(), p.resource.to_string()),
                p.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        granted, needed,
        "the ClusterRole must grant PERMISSIONS, no more, no less"
    );

    let account = only(&m.service_accounts, "ServiceAccount");
    let binding = only(&m.cluster_role_bindings, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, name(&role.metadata));
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, name(&account.metadata));
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    let deployment = only(&m.deployments, "Deployment");
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(name(&account.metadata))
    );
}

#[test]
fn services_reach_the_gateway_pods_on_the_contract_ports() {
    let m = load();
    let deployment = only(&m.deployments, "Deployment");
    let spec = &deployment.spec;
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "selector matches pods"
    );

    let envoy_ports: BTreeSet<i32> = container_ports(container(deployment, "envoy"))
        .into_values()
        .collect();
    assert_eq!(envoy_ports, BTreeSet::from([8080, 8081, 8443, 8444]));

    let expected = [
        ("sluice-gateway", "LoadBalancer", [(80, 8080), (443, 8443)]),
        ("sluice-internal", "ClusterIP", [(80, 8081), (443, 8444)]),
    ];
    let lbs = LoadBalancers::default();
    for (service_name, type_, ports) in expected {
        let service = m
            .services
            .iter()
            .find(|s| name(&s.metadata) == service_name)
            .unwrap_or_else(|| panic!("Service {service_name}"));
        let spec = service.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some(type_), "{service_name}");
        let service_selector = spec.selector.clone().unwrap_or_default();
        assert!(
            service_selector
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{service_name} selects the gateway pods"
        );
        let mapped: Vec<(i32, i32)> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.target_port {
                Some(IntOrString::Int(target)) => (p.port, *target),
                other => panic!("{service_name}: numeric targetPort expected, got {other:?}"),
            })
            .collect();
        assert_eq!(mapped, ports, "{service_name}");
        assert!(mapped.iter().all(|(_, t)| envoy_ports.contains(t)));
        let domain = format!("{service_name}.{NAMESPACE}.svc.cluster.local");
        assert!(
            domain == lbs.public || domain == lbs.private,
            "{domain} is what status names"
        );
    }
    assert_eq!(
        lbs.public,
        "sluice-gateway.knative-serving.svc.cluster.local"
    );
    assert_eq!(
        lbs.private,
        "sluice-internal.knative-serving.svc.cluster.local"
    );
}

#[test]
fn sluice_runs_the_kube_gateway_with_loopback_xds_and_probed_debug_server() {
    let m = load();
    let deployment = only(&m.deployments, "Deployment");
    let sluice = container(deployment, "sluice");
    let args = sluice.args.clone().unwrap_or_default();
    assert_eq!(sluice.command.as_deref(), Some(&["sluice".to_string()][..]));
    assert_eq!(&args[..3], ["gateway", "--kube", "--no-envoy"]);
    assert_eq!(
        arg(sluice, "--xds"),
        Some("127.0.0.1:18000"),
        "xDS stays pod-local"
    );
    assert_eq!(arg(sluice, "--envoy-admin"), Some("127.0.0.1:9901"));
    assert_eq!(
        arg(sluice, "--debug"),
        Some("0.0.0.0:9090"),
        "the kubelet must reach it"
    );
    assert_eq!(container_ports(sluice).get("debug"), Some(&9090));
    for probe in [&sluice.readiness_probe, &sluice.liveness_probe] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::String("debug".into()));
    }
}

/// `envoy/bootstrap.yaml` filled as `sluice envoy bootstrap --xds 127.0.0.1:18000
/// --node-id sluice-gateway --envoy-admin 127.0.0.1:9901 --xds-mode delta` fills it.
fn rendered_bootstrap() -> String {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/bootstrap.yaml"),
    )
    .expect("envoy/bootstrap.yaml");
    [
        ("node_id", "sluice-gateway"),
        ("node_cluster", "sluice"),
        ("xds_host", "127.0.0.1"),
        ("xds_port", "18000"),
        ("admin_host", "127.0.0.1"),
        ("admin_port", "9901"),
        ("api_type", "DELTA_GRPC"),
    ]
    .iter()
    .fold(template, |text, (key, value)| {
        text.replace(&format!("{{{{{key}}}}}"), value)
    })
}

#[test]
fn envoy_starts_from_the_rendered_bootstrap() {
    let m = load();
    let config_map = only(&m.config_maps, "ConfigMap");
    let data = config_map.data.clone().unwrap_or_default();
    let bootstrap = data
        .get("envoy-bootstrap.yaml")
        .expect("envoy-bootstrap.yaml key");
    assert_eq!(
        bootstrap,
        &rendered_bootstrap(),
        "deploy/ingress/200-envoy-bootstrap.yaml is stale: paste the new `sluice envoy bootstrap` output"
    );
    assert!(!bootstrap.contains("{{"), "every placeholder filled");

    let deployment = only(&m.deployments, "Deployment");
    let envoy = container(deployment, "envoy");
    let args = envoy.args.clone().unwrap_or_default();
    let config_path = args
        .iter()
        .position(|a| a == "--config-path")
        .and_then(|i| args.get(i + 1))
        .expect("--config-path");
    let mount = envoy
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| config_path.starts_with(&format!("{}/", v.mount_path)))
        .expect("the bootstrap is mounted");
    assert_eq!(
        config_path,
        &format!("{}/envoy-bootstrap.yaml", mount.mount_path)
    );
    let volumes = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let volume = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .expect("volume");
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some(name(&config_map.metadata))
    );
    assert!(args.iter().any(|a| a == "--disable-hot-restart"));
    let image = envoy.image.as_deref().unwrap_or_default();
    assert!(image.starts_with("envoyproxy/envoy:"), "{image}");
}

/// The merge patch for Knative's `config-network` (not an object: it is applied with
/// `kubectl patch`, so it lives outside the directory `kubectl apply -f` reads).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigNetworkPatch {
    data: BTreeMap<String, String>,
}

#[test]
fn config_network_patch_selects_sluice_under_both_keys() {
    let path = deploy_dir().join("patches/config-network.yaml");
    let text = std::fs::read_to_string(&path).expect("patches/config-network.yaml");
    let patch: ConfigNetworkPatch = serde_yaml::from_str(&text).expect("a data-only merge patch");
    assert_eq!(
        patch.data,
        BTreeMap::from([
            (
                "ingress-class".to_string(),
                SLUICE_INGRESS_CLASS.to_string()
            ),
            (
                "ingress.class".to_string(),
                SLUICE_INGRESS_CLASS.to_string()
            ),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/full/300-controller.yaml: the serving controller's Deployment. (Every deploy/full file
// is also parsed, and its RBAC compared with the code, in kube_runtime.rs.)

fn full_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/full")
}

/// The Deployments and ServiceAccounts of `deploy/full/{files}`, typed.
fn full_objects(files: &[&str]) -> (Vec<Deployment>, Vec<ServiceAccount>) {
    let mut deployments = Vec::new();
    let mut accounts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(full_dir().join(file)).expect("readable");
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let at = format!("{file} document {}", index + 1);
            let yaml = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            if yaml.is_null() {
                continue;
            }
            let value = serde_json::to_value(&yaml).expect("YAML maps to JSON");
            match (value["apiVersion"].as_str(), value["kind"].as_str()) {
                (Some("apps/v1"), Some("Deployment")) => deployments.push(typed(&value, &at)),
                (Some("v1"), Some("ServiceAccount")) => accounts.push(typed(&value, &at)),
                _ => {}
            }
        }
    }
    (deployments, accounts)
}

#[test]
fn the_controller_runs_sluice_controller_kube_with_a_probed_debug_server() {
    let (deployments, _) = full_objects(&["300-controller.yaml"]);
    let deployment = only(&deployments, "Deployment in 300-controller.yaml");
    assert_eq!(name(&deployment.metadata), "sluice-controller");
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(1), "no leader election: one replica");
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "never two controllers at once"
    );
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));

    let sluice = container(deployment, "sluice");
    assert_eq!(sluice.command.as_deref(), Some(&["sluice".to_string()][..]));
    let args = sluice.args.clone().unwrap_or_default();
    assert_eq!(&args[..2], ["controller", "--kube"]);
    assert_eq!(
        arg(sluice, "--debug"),
        Some("0.0.0.0:9090"),
        "the kubelet must reach it"
    );
    assert_eq!(container_ports(sluice).get("debug"), Some(&9090));
    for probe in [&sluice.readiness_probe, &sluice.liveness_probe] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::String("debug".into()));
    }
}

#[test]
fn the_controller_uses_the_gateway_image_and_the_bound_service_account() {
    let (deployments, accounts) =
        full_objects(&["200-rbac.yaml", "300-controller.yaml", "400-gateway.yaml"]);
    let find = |wanted: &str| {
        deployments
            .iter()
            .find(|d| name(&d.metadata) == wanted)
            .unwrap_or_else(|| panic!("Deployment {wanted}"))
    };
    let controller = container(find("sluice-controller"), "sluice");
    let gateway = container(find("sluice-gateway"), "sluice");
    assert_eq!(
        controller.image, gateway.image,
        "one image for every sluice command"
    );
    let pod = find("sluice-controller")
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec");
    let account = pod
        .service_account_name
        .as_deref()
        .expect("a ServiceAccount");
    assert_eq!(account, "sluice-controller");
    assert!(
        accounts
            .iter()
            .any(|a| name(&a.metadata) == account
                && a.metadata.namespace.as_deref() == Some(NAMESPACE)),
        "ServiceAccount {account} is in 200-rbac.yaml (where its roles are bound)"
    );
}
