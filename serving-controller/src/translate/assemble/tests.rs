//! Assembling translations into a snapshot the cache accepts.

use sluice_xds::SnapshotCache;
use sluice_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

use super::*;
use crate::conflict::resolve_conflicts;
use crate::ingress::Ingress;
use crate::translate::tests::{kingress, objects};
use crate::translate::{GatewayConfig, translate_ingress};

fn named(name: &str, spec: &str) -> Ingress {
    let mut i = kingress(spec);
    i.metadata.name = Some(name.into());
    i
}

fn spec(host: &str, service: &str, extra: &str) -> String {
    format!(
        "{extra}rules:\n- hosts: [{host}]\n  http:\n    paths:\n    - splits:\n      - {{serviceName: {service}, serviceNamespace: default, servicePort: 80}}\n- hosts: [{host}.local]\n  visibility: ClusterLocal\n  http:\n    paths:\n    - splits:\n      - {{serviceName: {service}, serviceNamespace: default, servicePort: 80}}\n"
    )
}

/// Whether a resource is a KIngress's, not the gateway's own (readiness route and its scope,
/// Envoy's admin cluster: see `gateway`).
fn of_ingresses(r: &Resource) -> bool {
    !r.name().starts_with("sluice/") && !r.name().ends_with("/internalkourier")
}

fn count(resources: &[Resource], type_url: &str) -> usize {
    resources
        .iter()
        .filter(|r| r.type_url() == type_url && of_ingresses(r))
        .count()
}

fn names_of(resources: &[Resource], type_url: &str) -> Vec<String> {
    resources
        .iter()
        .filter(|r| r.type_url() == type_url && of_ingresses(r))
        .map(|r| r.name().to_string())
        .collect()
}

fn gateway() -> Vec<IngressResources> {
    let objects = objects();
    let tls = "tls:\n- {hosts: [b.example.com], secretName: tls-cert, secretNamespace: default}\nhttpOption: Redirected\n";
    [
        named("a", &spec("a.example.com", "hello-00001", "")),
        named("b", &spec("b.example.com", "hello-00001", tls)),
        named("c", &spec("c.example.com", "grpc-00001", "")),
    ]
    .iter()
    .map(|i| translate_ingress(i, &objects).unwrap())
    .collect()
}

#[test]
fn shared_resources_appear_once_and_the_snapshot_is_consistent() {
    let resources = assemble(&gateway(), &GatewayConfig::default());
    assert_eq!(
        names_of(&resources, CLUSTER),
        vec!["default/hello-00001:80", "default/grpc-00001:80"]
    );
    assert_eq!(count(&resources, ENDPOINT), 2);
    assert_eq!(names_of(&resources, SECRET), vec!["default/tls-cert"]);
    assert_eq!(
        names_of(&resources, ROUTE),
        vec!["default/a", "default/b", "default/b/redirect", "default/c"]
    );
    // Per KIngress: external + internal scope for its external host, internal for its local
    // host; b also has an external-tls scope.
    assert_eq!(count(&resources, SCOPED_ROUTE), 3 * 3 + 1);
    assert_eq!(
        names_of(&resources, LISTENER),
        vec!["external-http", "internal-http", "external-https"]
    );

    let cache = SnapshotCache::new();
    cache
        .set_snapshot("gateway", resources.clone())
        .expect("assembled snapshot is consistent");
}

#[test]
fn the_consistency_check_sees_scopes_clusters_and_secrets() {
    let resources = assemble(&gateway(), &GatewayConfig::default());
    for (type_url, name) in [
        (ROUTE, "default/b/redirect"),
        (CLUSTER, "default/grpc-00001:80"),
        (ENDPOINT, "default/hello-00001:80"),
        (SECRET, "default/tls-cert"),
    ] {
        let without: Vec<Resource> = resources
            .iter()
            .filter(|r| !(r.type_url() == type_url && r.name() == name))
            .cloned()
            .collect();
        let err = SnapshotCache::new()
            .set_snapshot("gateway", without)
            .expect_err(name);
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn first_translation_wins_a_contested_scope() {
    let objects = objects();
    let old = named("old", &spec("x.example.com", "hello-00001", ""));
    let new = named("new", &spec("x.example.com", "grpc-00001", ""));
    let translated = [
        translate_ingress(&old, &objects).unwrap(),
        translate_ingress(&new, &objects).unwrap(),
    ];
    let resources = assemble(&translated, &GatewayConfig::default());
    let scope = resources
        .iter()
        .find(|r| r.type_url() == SCOPED_ROUTE && r.name() == "external/x.example.com")
        .unwrap()
        .decode::<envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration>()
        .unwrap();
    assert_eq!(scope.route_configuration_name, "default/old");
    assert_eq!(count(&resources, SCOPED_ROUTE), 3);
    SnapshotCache::new()
        .set_snapshot("gateway", resources)
        .unwrap();
}

#[test]
fn conflict_resolution_then_assembly() {
    let objects = objects();
    let mut old = named("old", &spec("x.example.com", "hello-00001", ""));
    let mut new = named("new", &spec("x.example.com", "grpc-00001", ""));
    old.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(100).unwrap(),
    ));
    new.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(200).unwrap(),
    ));
    // Whatever order the controller sees them in, the older one keeps the host.
    let all = [new, old];
    let rejected = resolve_conflicts(&all);
    let accepted: Vec<IngressResources> = all
        .iter()
        .filter(|i| !rejected.contains_key(&i.key()))
        .map(|i| translate_ingress(i, &objects).unwrap())
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].ingress.name, "old");
    let resources = assemble(&accepted, &GatewayConfig::default());
    assert_eq!(names_of(&resources, ROUTE), vec!["default/old"]);
}

#[test]
fn an_edit_touches_only_its_own_route_configuration() {
    let objects = objects();
    let cache = SnapshotCache::new();
    let config = GatewayConfig::default();
    let mut ingresses = [
        named("a", &spec("a.example.com", "hello-00001", "")),
        named("b", &spec("b.example.com", "hello-00001", "")),
        named("c", &spec("c.example.com", "grpc-00001", "")),
    ];
    let translate = |ings: &[Ingress]| {
        let t: Vec<_> = ings
            .iter()
            .map(|i| translate_ingress(i, &objects).unwrap())
            .collect();
        assemble(&t, &config)
    };
    cache
        .set_snapshot("gateway", translate(&ingresses))
        .unwrap();

    // A header edit on b: b's route configuration, nothing else.
    let path = &mut ingresses[1].spec.rules[0].http.as_mut().unwrap().paths[0];
    path.append_headers.insert("X-Edit".into(), "1".into());
    let applied = cache
        .set_snapshot("gateway", translate(&ingresses))
        .unwrap();
    assert_eq!((applied.changed, applied.removed), (1, 0));
    assert_eq!(applied.changed_types, [ROUTE.to_string()].into());
    let generation = applied.generation;
    let snapshot = cache.snapshot("gateway");
    let changed: Vec<&str> = snapshot.types[ROUTE]
        .resources
        .values()
        .filter(|r| r.generation() == generation)
        .map(|r| r.name())
        .collect();
    assert_eq!(changed, vec!["default/b"]);

    // A new host on c: c's route configuration and the new host's scopes.
    ingresses[2].spec.rules[0]
        .hosts
        .push("c2.example.com".into());
    let applied = cache
        .set_snapshot("gateway", translate(&ingresses))
        .unwrap();
    assert_eq!((applied.changed, applied.removed), (3, 0));
    assert_eq!(
        applied.changed_types,
        [ROUTE.to_string(), SCOPED_ROUTE.to_string()].into()
    );
}
