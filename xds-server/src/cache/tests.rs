use super::*;
use crate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route::Action,
    route_action::ClusterSpecifier,
};

fn cluster(name: &str, eds: bool) -> Resource {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(if eds { 3 } else { 0 })),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn cla(name: &str, port: u32) -> Resource {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address::PortSpecifier,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
    };
    let ep = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    Resource::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![ep],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn route(name: &str, to: &str) -> Resource {
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(to.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, &rc)
}

#[test]
fn first_snapshot_publishes_every_type() {
    let cache = SnapshotCache::new();
    let applied = cache.set_snapshot("g", [cluster("a", false)]).unwrap();
    assert_eq!(applied.generation, 1);
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        assert!(applied.changed_types.contains(t), "{t} missing");
        assert_eq!(cache.type_snapshot("g", t).1.version, 1);
    }
}

#[test]
fn unchanged_resources_keep_their_generation() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot("g", [cluster("a", false), cluster("b", false)])
        .unwrap();
    let applied = cache
        .set_snapshot("g", [cluster("a", false), cluster("b", true), cla("b", 1)])
        .unwrap();
    assert_eq!(applied.generation, 2);
    assert_eq!(applied.changed, 2, "b changed, its CLA is new");
    let snap = cache.snapshot("g");
    assert_eq!(snap.get(CLUSTER, "a").unwrap().generation(), 1);
    assert_eq!(snap.get(CLUSTER, "b").unwrap().generation(), 2);
    // Listeners did not change: their type version stays.
    assert_eq!(snap.of_type(LISTENER).version, 1);
    assert_eq!(snap.of_type(CLUSTER).version, 2);
}

#[test]
fn an_identical_snapshot_changes_nothing() {
    let cache = SnapshotCache::new();
    cache.set_snapshot("g", [cluster("a", false)]).unwrap();
    let applied = cache.set_snapshot("g", [cluster("a", false)]).unwrap();
    assert!(applied.changed_types.is_empty());
    assert_eq!(applied.generation, 1);
    let applied = cache
        .update("g", Update::new().upsert(cluster("a", false)))
        .unwrap();
    assert!(applied.changed_types.is_empty());
}

#[test]
fn dangling_references_are_refused_and_nothing_changes() {
    let cache = SnapshotCache::new();
    cache.set_snapshot("g", [cluster("a", false)]).unwrap();
    let err = cache
        .update("g", Update::new().upsert(route("rc", "missing")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("route \"rc\" refers to missing cluster \"missing\""),
        "{msg}"
    );
    assert!(cache.snapshot("g").get(ROUTE, "rc").is_none());
    assert_eq!(cache.snapshot("g").generation, 1);

    // An EDS cluster without its assignment is refused too.
    let err = cache.set_snapshot("g", [cluster("e", true)]).unwrap_err();
    assert!(err.to_string().contains("missing endpoint \"e\""), "{err}");
}

#[test]
fn removing_a_referenced_cluster_is_refused() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot("g", [cluster("a", false), route("rc", "a")])
        .unwrap();
    let err = cache
        .update("g", Update::new().remove(CLUSTER, "a"))
        .unwrap_err();
    assert!(matches!(err, CacheError::Inconsistent { .. }), "{err}");
    // Removing both in one update is fine.
    let applied = cache
        .update("g", Update::new().remove(CLUSTER, "a").remove(ROUTE, "rc"))
        .unwrap();
    assert_eq!(applied.removed, 2);
}

/// The counts of references follow every change: a cluster stays protected while any route
/// names it, through updates that add and drop referrers, and a refused update leaves the
/// counts as they were.
#[test]
fn a_cluster_is_removable_once_the_last_route_stops_naming_it() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            "g",
            [cluster("a", false), cluster("b", false), route("r1", "a")],
        )
        .unwrap();
    cache
        .update("g", Update::new().upsert(route("r2", "a")))
        .unwrap();
    let refused = |cache: &SnapshotCache| {
        let err = cache
            .update("g", Update::new().remove(CLUSTER, "a"))
            .unwrap_err();
        assert!(err.to_string().contains("missing cluster \"a\""), "{err}");
    };
    refused(&cache);
    // r1 moves to b: r2 still names a.
    cache
        .update("g", Update::new().upsert(route("r1", "b")))
        .unwrap();
    refused(&cache);
    // A refused update (r2 → a missing cluster) changes no count.
    assert!(
        cache
            .update("g", Update::new().upsert(route("r2", "zz")))
            .is_err()
    );
    refused(&cache);
    cache
        .update("g", Update::new().remove(ROUTE, "r2"))
        .unwrap();
    let applied = cache
        .update("g", Update::new().remove(CLUSTER, "a"))
        .unwrap();
    assert_eq!(applied.removed, 1);
    // b is named by r1 again after a whole-snapshot replace.
    cache
        .set_snapshot("g", [cluster("b", false), route("r1", "b")])
        .unwrap();
    assert!(
        cache
            .update("g", Update::new().remove(CLUSTER, "b"))
            .is_err()
    );
}

#[test]
fn duplicates_are_refused() {
    let cache = SnapshotCache::new();
    let err = cache
        .set_snapshot("g", [cluster("a", false), cluster("a", true)])
        .unwrap_err();
    assert!(matches!(err, CacheError::Duplicate { .. }));
}

#[tokio::test]
async fn watchers_wake_only_for_changed_types() {
    let cache = SnapshotCache::new();
    let mut clusters = cache.watch("g", CLUSTER);
    let mut endpoints = cache.watch("g", ENDPOINT);
    let mut routes = cache.watch("g", ROUTE);
    cache
        .set_snapshot("g", [cluster("a", true), cla("a", 1)])
        .unwrap();
    assert!(clusters.has_changed().unwrap());
    assert!(endpoints.has_changed().unwrap());
    clusters.borrow_and_update();
    endpoints.borrow_and_update();
    routes.borrow_and_update();

    // An endpoint-only change wakes EDS watchers only.
    let applied = cache
        .update("g", Update::new().upsert(cla("a", 2)))
        .unwrap();
    assert_eq!(applied.changed_types.len(), 1);
    assert!(endpoints.has_changed().unwrap());
    assert_eq!(*endpoints.borrow_and_update(), applied.generation);
    assert!(!clusters.has_changed().unwrap());
    assert!(!routes.has_changed().unwrap());
}

#[test]
fn groups_are_independent() {
    let cache = SnapshotCache::new();
    cache.set_snapshot("a", [cluster("x", false)]).unwrap();
    cache.set_snapshot("b", [cluster("y", false)]).unwrap();
    assert!(cache.snapshot("a").get(CLUSTER, "y").is_none());
    assert!(cache.snapshot("b").get(CLUSTER, "y").is_some());
    assert_eq!(cache.groups(), vec!["a".to_string(), "b".to_string()]);
}
