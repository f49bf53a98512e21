//! `deploy/ingress/` (and the controller of `deploy/full/`, at the end): every manifest parses into its typed k8s-openapi object with no unknown
//! or misspelt field, and the pieces fit together — RBAC grants exactly what the code uses,
//! Services select the pods and reach their container ports, probes hit the right servers, the
//! network policies admit what the pods need. (That the Envoy bootstrap is what
//! `sluice envoy bootstrap` renders is checked in the root crate's `tests/deploy_bootstrap.rs`.)
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
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use sluice_serving::ingress::SLUICE_INGRESS_CLASS;
use sluice_serving::kube::lease::LEASE_PERMISSIONS;
use sluice_serving::kube::{LoadBalancers, PERMISSIONS, Permission, SYSTEM_NAMESPACE_PERMISSIONS};

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
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
}

fn load() -> Manifests {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ingress exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/ingress");
    let mut m = Manifests::default();
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
                ("apps/v1", "Deployment") => m.deployments.push(typed(&value, &at)),
                ("v1", "Service") => m.services.push(typed(&value, &at)),
                ("v1", "ServiceAccount") => m.service_accounts.push(typed(&value, &at)),
                ("v1", "ConfigMap") => m.config_maps.push(typed(&value, &at)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    m.cluster_roles.push(typed(&value, &at))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.cluster_role_bindings.push(typed(&value, &at))
                }
                ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(typed(&value, &at)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.role_bindings.push(typed(&value, &at))
                }
                ("policy/v1", "PodDisruptionBudget") => {
                    m.disruption_budgets.push(typed(&value, &at))
                }
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    m.network_policies.push(typed(&value, &at))
                }
                other => panic!("{at}: unexpected kind {other:?}"),
            }
        }
    }
    m
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn only<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "exactly one {what}");
    &items[0]
}

fn find<'a, T: k8s_openapi::Metadata<Ty = ObjectMeta>>(items: &'a [T], wanted: &str) -> &'a T {
    items
        .iter()
        .find(|item| name(item.metadata()) == wanted)
        .unwrap_or_else(|| panic!("{wanted} not found"))
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

fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
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

/// What RBAC rules grant, as (group, resource) → verbs.
fn grants(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules {
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
    granted
}

fn permissions<'a>(
    lists: impl IntoIterator<Item = &'a [Permission]>,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for p in lists.into_iter().flatten() {
        out.entry((p.group.to_string(), p.resource.to_string()))
            .or_default()
            .extend(p.verbs.iter().map(|v| v.to_string()));
    }
    out
}

#[test]
fn every_manifest_parses_into_its_type_without_unknown_fields() {
    let m = load();
    assert_eq!(m.deployments.len(), 2, "control plane and gateway");
    assert_eq!(m.services.len(), 3);
    assert_eq!(m.service_accounts.len(), 2);
    assert_eq!(m.cluster_roles.len(), 1);
    assert_eq!(m.cluster_role_bindings.len(), 1);
    assert_eq!(m.roles.len(), 1);
    assert_eq!(m.role_bindings.len(), 1);
    assert_eq!(m.config_maps.len(), 1);
    assert_eq!(m.disruption_budgets.len(), 2);
    assert_eq!(m.network_policies.len(), 2);
    let namespaced = m
        .deployments
        .iter()
        .map(|d| &d.metadata)
        .chain(m.services.iter().map(|s| &s.metadata))
        .chain(m.service_accounts.iter().map(|s| &s.metadata))
        .chain(m.config_maps.iter().map(|c| &c.metadata))
        .chain(m.roles.iter().map(|r| &r.metadata))
        .chain(m.role_bindings.iter().map(|b| &b.metadata))
        .chain(m.disruption_budgets.iter().map(|b| &b.metadata))
        .chain(m.network_policies.iter().map(|p| &p.metadata));
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
fn roles_grant_exactly_what_the_control_plane_uses_and_the_gateway_has_no_api_access() {
    let m = load();
    let cluster_role = only(&m.cluster_roles, "ClusterRole");
    assert_eq!(
        grants(cluster_role.rules.as_deref().unwrap_or_default()),
        permissions([PERMISSIONS]),
        "the ClusterRole must grant PERMISSIONS, no more, no less"
    );
    let role = only(&m.roles, "Role");
    assert_eq!(
        grants(role.rules.as_deref().unwrap_or_default()),
        permissions([SYSTEM_NAMESPACE_PERMISSIONS, LEASE_PERMISSIONS]),
        "the Role (knative-serving) must grant SYSTEM_NAMESPACE_PERMISSIONS and \
         LEASE_PERMISSIONS, no more, no less"
    );

    let control = find(&m.deployments, "sluice-control");
    let control_pod = control.spec.template.spec.as_ref().expect("pod spec");
    let account = control_pod
        .service_account_name
        .as_deref()
        .expect("the control plane's ServiceAccount");
    find(&m.service_accounts, account);
    let cluster_binding = only(&m.cluster_role_bindings, "ClusterRoleBinding");
    let binding = only(&m.role_bindings, "RoleBinding");
    for (kind, role_name, role_ref, subjects) in [
        (
            "ClusterRole",
            name(&cluster_role.metadata),
            &cluster_binding.role_ref,
            cluster_binding.subjects.as_deref().unwrap_or_default(),
        ),
        (
            "Role",
            name(&role.metadata),
            &binding.role_ref,
            binding.subjects.as_deref().unwrap_or_default(),
        ),
    ] {
        assert_eq!(role_ref.kind, kind);
        assert_eq!(role_ref.name, role_name);
        assert_eq!(
            subjects.len(),
            1,
            "{kind} is bound to the control plane only"
        );
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, account);
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    }

    let gateway = find(&m.deployments, "sluice-gateway");
    let gateway_pod = gateway.spec.template.spec.as_ref().expect("pod spec");
    let envoy_account = gateway_pod
        .service_account_name
        .as_deref()
        .expect("the gateway's ServiceAccount");
    assert_ne!(
        envoy_account, account,
        "Envoy never holds the control plane's rights"
    );
    assert_eq!(
        find(&m.service_accounts, envoy_account).automount_service_account_token,
        Some(false)
    );
    assert_eq!(gateway_pod.automount_service_account_token, Some(false));
}

#[test]
fn services_reach_the_pods_on_the_contract_ports() {
    let m = load();
    let gateway = find(&m.deployments, "sluice-gateway");
    let control = find(&m.deployments, "sluice-control");
    for deployment in [gateway, control] {
        let spec = &deployment.spec;
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            selects(&selector, &pod_labels(deployment)),
            "selector matches pods"
        );
        assert_ne!(
            spec.replicas,
            Some(1),
            "{}: more than one replica (HA)",
            name(&deployment.metadata)
        );
    }
    assert!(
        !selects(
            &gateway
                .spec
                .selector
                .match_labels
                .clone()
                .unwrap_or_default(),
            &pod_labels(control)
        ),
        "the gateway's selector does not match control-plane pods"
    );

    let envoy_ports: BTreeSet<i32> = container_ports(container(gateway, "envoy"))
        .into_values()
        .collect();
    // The four listeners and the stats listener (`--envoy-stats 0.0.0.0:9000`).
    assert_eq!(envoy_ports, BTreeSet::from([8080, 8081, 8443, 8444, 9000]));
    let xds_ports: BTreeSet<i32> = container_ports(container(control, "sluice"))
        .into_values()
        .collect();

    /// Service, type, the pods it selects, (port, targetPort)s.
    type Expected<'a> = (&'a str, &'a str, &'a Deployment, &'a [(i32, i32)]);
    let expected: [Expected; 3] = [
        (
            "sluice-gateway",
            "LoadBalancer",
            gateway,
            &[(80, 8080), (443, 8443)],
        ),
        (
            "sluice-internal",
            "ClusterIP",
            gateway,
            &[(80, 8081), (443, 8444)],
        ),
        ("sluice-xds", "ClusterIP", control, &[(18000, 18000)]),
    ];
    for (service_name, type_, pods, ports) in expected {
        let service = find(&m.services, service_name);
        let spec = service.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some(type_), "{service_name}");
        let service_selector = spec.selector.clone().unwrap_or_default();
        assert!(
            selects(&service_selector, &pod_labels(pods)),
            "{service_name} selects {}",
            name(&pods.metadata)
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
        let container_ports = if service_name == "sluice-xds" {
            &xds_ports
        } else {
            &envoy_ports
        };
        assert!(mapped.iter().all(|(_, t)| container_ports.contains(t)));
    }
    let lbs = LoadBalancers::default();
    assert_eq!(
        lbs.public,
        format!("sluice-gateway.{NAMESPACE}.svc.cluster.local"),
        "status names the external Service"
    );
    assert_eq!(
        lbs.private,
        format!("sluice-internal.{NAMESPACE}.svc.cluster.local"),
        "status names the internal Service"
    );
}

#[test]
fn the_control_plane_serves_xds_over_mutual_tls_elects_a_leader_and_probes_every_gateway_pod() {
    let m = load();
    let control = find(&m.deployments, "sluice-control");
    let sluice = container(control, "sluice");
    let args = sluice.args.clone().unwrap_or_default();
    assert_eq!(sluice.command.as_deref(), Some(&["sluice".to_string()][..]));
    assert_eq!(&args[..3], ["gateway", "--kube", "--no-envoy"]);
    assert_eq!(
        arg(sluice, "--xds"),
        Some("0.0.0.0:18000"),
        "Envoys in other pods"
    );
    assert_eq!(container_ports(sluice).get("xds"), Some(&18000));
    // Off loopback, the xDS server must require client certificates.
    let tls_dir = sluice
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.name == "xds-tls")
        .map(|v| v.mount_path.clone())
        .expect("the xDS certificates are mounted");
    for (flag, file) in [
        ("--xds-tls-cert", "tls.crt"),
        ("--xds-tls-key", "tls.key"),
        ("--xds-tls-client-ca", "ca.crt"),
    ] {
        assert_eq!(
            arg(sluice, flag),
            Some(format!("{tls_dir}/{file}").as_str()),
            "{flag}"
        );
    }
    assert_eq!(
        arg(sluice, "--gateway-pods"),
        Some("knative-serving/sluice-internal"),
        "readiness through every ready gateway pod"
    );
    assert_eq!(
        arg(sluice, "--lease"),
        Some("knative-serving/sluice-gateway")
    );
    assert_eq!(
        arg(sluice, "--debug"),
        Some("0.0.0.0:9090"),
        "the kubelet must reach it"
    );
    assert_eq!(container_ports(sluice).get("debug"), Some(&9090));
    let pod_name = sluice
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(
        pod_name.as_deref(),
        Some("metadata.name"),
        "the Lease holder identity is the pod's name"
    );
    for (probe, path) in [
        (&sluice.readiness_probe, "/ready"),
        (&sluice.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("debug".into()));
    }
    let volumes = control
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let secret = volumes
        .iter()
        .find(|v| v.name == "xds-tls")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.as_deref());
    assert_eq!(secret, Some("sluice-xds-server"));
}

#[test]
fn the_gateway_runs_envoy_from_the_bootstrap_and_is_ready_through_the_readiness_route() {
    let m = load();
    let gateway = find(&m.deployments, "sluice-gateway");
    let envoy = container(gateway, "envoy");
    let image = envoy.image.as_deref().unwrap_or_default();
    assert!(image.starts_with("envoyproxy/envoy:"), "{image}");
    let args = envoy.args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--disable-hot-restart"));
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
    let volumes = gateway
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let config_map = only(&m.config_maps, "ConfigMap");
    let volume = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .expect("volume");
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some(name(&config_map.metadata))
    );
    let bootstrap = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("envoy-bootstrap.yaml"))
        .expect("envoy-bootstrap.yaml key");
    // The client certificate files the bootstrap names are in the mounted client Secret.
    let tls_mount = envoy
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.name == "xds-tls")
        .expect("client certificate mounted");
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        let path = format!("{}/{file}", tls_mount.mount_path);
        assert!(bootstrap.contains(&path), "the bootstrap reads {path}");
    }
    let client_secret = volumes
        .iter()
        .find(|v| v.name == "xds-tls")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.as_deref());
    assert_eq!(client_secret, Some("sluice-xds-client"));
    assert!(
        bootstrap.contains("address: sluice-xds.knative-serving.svc"),
        "Envoy reaches the control plane through its Service"
    );

    // Ready as in Kourier: the readiness route on the internal listener.
    let get = envoy
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("HTTP readiness probe");
    assert_eq!(get.path.as_deref(), Some("/ready"));
    assert_eq!(get.port, IntOrString::String("http-internal".into()));
    let host = get
        .http_headers
        .iter()
        .flatten()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value.as_str());
    assert_eq!(host, Some(sluice_serving::translate::gateway::READY_HOST));
}

#[test]
fn policies_keep_one_of_each_up_and_admit_only_what_is_needed() {
    let m = load();
    for deployment in &m.deployments {
        let labels = pod_labels(deployment);
        let budget = m
            .disruption_budgets
            .iter()
            .find(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|sel| selects(sel, &labels))
            })
            .unwrap_or_else(|| panic!("a PodDisruptionBudget for {}", name(&deployment.metadata)));
        assert_eq!(
            budget.spec.as_ref().and_then(|s| s.min_available.clone()),
            Some(IntOrString::Int(1))
        );
    }

    let ports_admitted = |deployment: &str| -> BTreeMap<i32, Vec<BTreeMap<String, String>>> {
        let labels = pod_labels(find(&m.deployments, deployment));
        let policy = m
            .network_policies
            .iter()
            .find(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.pod_selector.as_ref())
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|sel| selects(sel, &labels))
            })
            .unwrap_or_else(|| panic!("a NetworkPolicy for {deployment}"));
        let spec = policy.spec.as_ref().expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string()][..])
        );
        let mut out: BTreeMap<i32, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for rule in spec.ingress.iter().flatten() {
            let from: Vec<BTreeMap<String, String>> = rule
                .from
                .iter()
                .flatten()
                .map(|peer| {
                    peer.pod_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.clone())
                        .unwrap_or_default()
                })
                .collect();
            for port in rule.ports.iter().flatten() {
                match &port.port {
                    Some(IntOrString::Int(p)) => out.entry(*p).or_default().extend(from.clone()),
                    other => panic!("{deployment}: numeric port expected, got {other:?}"),
                }
            }
        }
        out
    };

    let gateway_labels = pod_labels(find(&m.deployments, "sluice-gateway"));
    let control = ports_admitted("sluice-control");
    assert_eq!(
        control.keys().copied().collect::<Vec<_>>(),
        [9090, 18000],
        "debug and xDS only"
    );
    let xds_from = &control[&18000];
    assert!(!xds_from.is_empty(), "xDS is not open to every pod");
    assert!(
        xds_from.iter().all(|sel| selects(sel, &gateway_labels)),
        "xDS admits the gateway pods only"
    );
    let gateway = ports_admitted("sluice-gateway");
    assert_eq!(
        gateway.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([8080, 8081, 8443, 8444, 9000]),
        "the Envoy listeners and the stats listener only (admin stays on loopback)"
    );
    let stats_from = &gateway[&9000];
    assert!(
        !stats_from.is_empty()
            && stats_from
                .iter()
                .all(|sel| sel.get("app.kubernetes.io/name").map(String::as_str)
                    == Some("prometheus")),
        "the stats listener admits Prometheus only: {stats_from:?}"
    );
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
    assert_eq!(spec.replicas, Some(2), "leader-elected: a standby replica");
    let strategy = spec.strategy.as_ref().expect("a strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(0)),
        "a rollout never leaves no controller"
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
    let pod_name = sluice
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(
        pod_name.as_deref(),
        Some("metadata.name"),
        "the Lease holder identity is the pod's name"
    );
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
    let gateway = container(find("sluice-control"), "sluice");
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
