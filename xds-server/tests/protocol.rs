//! ADS protocol tests: the real [`XdsServer`] on a loopback port, driven by
//! envoy-types' generated ADS client acting as a scripted Envoy, over
//! State-of-the-World and Delta; then CSDS, the snapshot debug service and
//! server reflection on the same port.
//!
//! Every expected message is awaited with a bounded timeout; "nothing is
//! sent" is asserted by a short bounded wait ([`QUIET`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, Node, SocketAddress, address, config_source,
    node::UserAgentVersionType, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route::Action,
    route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use sluice_proto::xds::v1::snapshot_debug_client::SnapshotDebugClient;
use sluice_proto::xds::v1::{
    AckState, GetSnapshotRequest, ListNodesRequest, WatchRequest, xds_event,
};
use sluice_xds::resource::{CLUSTER, ENDPOINT, ROUTE};
use sluice_xds::{EventKind, Nodes, Resource, SnapshotCache, Update, XdsServer, single_group};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Upper bound for anything the server should do promptly.
const WAIT: Duration = Duration::from_secs(5);
/// How long "no response" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Every node of these tests is served this group.
const GROUP: &str = "gateway";

// ---------------------------------------------------------------- harness

/// A running server; stops when dropped.
struct Harness {
    server: XdsServer,
    channel: Channel,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    async fn start(cache: &SnapshotCache) -> Self {
        let server = XdsServer::new(cache.clone(), single_group(GROUP));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the xDS server");
        Self {
            server,
            channel,
            _stop: stop,
        }
    }

    fn nodes(&self) -> &Nodes {
        self.server.nodes()
    }

    async fn sotw(&self, node_id: &str) -> Sotw {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.clone());
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open SotW stream")
            .into_inner();
        Sotw {
            node: node(node_id),
            first: true,
            tx,
            responses,
        }
    }

    async fn delta(&self, node_id: &str) -> Delta {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.clone());
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open Delta stream")
            .into_inner();
        Delta {
            node: node(node_id),
            first: true,
            tx,
            responses,
        }
    }

    /// Waits until `f` holds, re-checking on every ACK or NACK.
    async fn until(&self, what: &str, f: impl Fn(&Nodes) -> bool) {
        let mut changes = self.nodes().ack_changes();
        let ok = timeout(WAIT, async {
            while !f(self.nodes()) {
                changes.changed().await.unwrap();
            }
        })
        .await;
        assert!(ok.is_ok(), "timed out waiting until {what}");
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        cluster: "sluice".to_string(),
        user_agent_name: "envoy".to_string(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion("1.31.2".to_string())),
        ..Default::default()
    }
}

fn nack_status(message: &str) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: message.to_string(),
        details: Vec::new(),
    })
}

/// A scripted SotW Envoy.
struct Sotw {
    node: Node,
    first: bool,
    tx: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn send(&mut self, mut req: DiscoveryRequest) {
        if std::mem::take(&mut self.first) {
            req.node = Some(self.node.clone());
        }
        self.tx.send(req).await.expect("request stream open");
    }

    /// Subscribes to a type (wildcard when `names` is empty).
    async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: strings(names),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `resp`, keeping the subscription `names`.
    async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            version_info: resp.version_info.clone(),
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: strings(names),
            ..Default::default()
        })
        .await;
    }

    /// NACKs `resp`: the version stays the last accepted one.
    async fn nack(&mut self, resp: &DiscoveryResponse, accepted_version: &str, message: &str) {
        self.send(DiscoveryRequest {
            version_info: accepted_version.to_string(),
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: nack_status(message),
            ..Default::default()
        })
        .await;
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        match timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("server closed the SotW stream"),
            Ok(Err(s)) => panic!("SotW stream failed: {s}"),
            Err(_) => panic!("no SotW response within {WAIT:?}"),
        }
    }

    async fn expect_quiet(&mut self, why: &str) {
        if let Ok(r) = timeout(QUIET, self.responses.message()).await {
            panic!("{why}: expected no response, got {r:?}");
        }
    }
}

/// A scripted Delta Envoy.
struct Delta {
    node: Node,
    first: bool,
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if std::mem::take(&mut self.first) {
            req.node = Some(self.node.clone());
        }
        self.tx.send(req).await.expect("request stream open");
    }

    async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: strings(names),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&mut self, resp: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: nack_status(message),
            ..Default::default()
        })
        .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("server closed the Delta stream"),
            Ok(Err(s)) => panic!("Delta stream failed: {s}"),
            Err(_) => panic!("no Delta response within {WAIT:?}"),
        }
    }

    async fn expect_quiet(&mut self, why: &str) {
        if let Ok(r) = timeout(QUIET, self.responses.message()).await {
            panic!("{why}: expected no response, got {r:?}");
        }
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

// -------------------------------------------------------------- resources

/// A cluster with static hosts (refers to nothing).
fn static_cluster(name: &str, connect_ms: i32) -> Resource {
    Resource::new(
        name,
        &Cluster {
            name: name.to_string(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: connect_ms * 1_000_000,
            }),
            ..Default::default()
        },
    )
}

/// A cluster whose endpoints come over EDS (refers to its assignment).
fn eds_cluster(name: &str) -> Resource {
    Resource::new(
        name,
        &Cluster {
            name: name.to_string(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource::default(),
                    )),
                    ..Default::default()
                }),
                service_name: String::new(),
            }),
            ..Default::default()
        },
    )
}

fn assignment(name: &str, port: u32) -> Resource {
    let endpoint = Endpoint {
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".to_string(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    Resource::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(endpoint)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// A route configuration sending everything to `cluster`.
fn route(name: &str, cluster: &str) -> Resource {
    Resource::new(
        name,
        &RouteConfiguration {
            name: name.to_string(),
            virtual_hosts: vec![VirtualHost {
                name: "all".to_string(),
                domains: vec!["*".to_string()],
                routes: vec![Route {
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// Names of the resources in a SotW response.
fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(resource_name).collect()
}

fn resource_name(a: &Any) -> String {
    let bytes = a.value.as_slice();
    match a.type_url.as_str() {
        CLUSTER => Cluster::decode(bytes).unwrap().name,
        ENDPOINT => ClusterLoadAssignment::decode(bytes).unwrap().cluster_name,
        ROUTE => RouteConfiguration::decode(bytes).unwrap().name,
        other => panic!("unexpected type {other}"),
    }
}

/// Names of the resources added or changed by a Delta response.
fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}

fn version_of(cache: &SnapshotCache, type_url: &str, name: &str) -> String {
    cache
        .snapshot(GROUP)
        .get(type_url, name)
        .unwrap_or_else(|| panic!("{name} not in the cache"))
        .version()
        .to_string()
}

// ------------------------------------------------------------------ SotW

#[tokio::test]
async fn sotw_wildcard_cds_ack_update_and_stale_nonce() {
    let cache = SnapshotCache::new();
    let first = cache
        .set_snapshot(GROUP, [static_cluster("a", 100), static_cluster("b", 100)])
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.sotw("envoy-1").await;

    envoy.subscribe(CLUSTER, &[]).await;
    let r1 = envoy.recv().await;
    assert_eq!(r1.type_url, CLUSTER);
    assert_eq!(r1.version_info, first.generation.to_string());
    assert!(!r1.nonce.is_empty());
    assert_eq!(names(&r1), ["a", "b"]);

    envoy.ack(&r1, &[]).await;
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "b", first.generation),
    )
    .await
    .expect("ACK recorded");
    let state = h.nodes().get("envoy-1").expect("node known");
    let cds = &state.types[CLUSTER];
    assert_eq!(cds.acked_version.as_deref(), Some(r1.version_info.as_str()));
    assert!(cds.last_nack.is_none());
    assert_eq!(
        h.nodes().acked_generation("envoy-1", CLUSTER, "a"),
        Some(first.generation)
    );
    assert!(state.connected);

    // A cache change wakes the stream.
    let second = cache
        .update(GROUP, Update::new().upsert(static_cluster("c", 100)))
        .unwrap();
    let r2 = envoy.recv().await;
    assert_eq!(r2.version_info, second.generation.to_string());
    assert_eq!(names(&r2), ["a", "b", "c"]);
    assert_ne!(r2.nonce, r1.nonce);

    // r2 goes unanswered while r3 is pushed: r2's nonce is now stale. An
    // answer to it, even one that NACKs and changes the subscription, is
    // ignored: no NACK recorded, no response.
    let third = cache
        .update(GROUP, Update::new().upsert(static_cluster("d", 100)))
        .unwrap();
    let r3 = envoy.recv().await;
    assert_eq!(r3.version_info, third.generation.to_string());
    let mut events = h.nodes().events();
    envoy
        .send(DiscoveryRequest {
            version_info: r1.version_info.clone(),
            type_url: CLUSTER.to_string(),
            response_nonce: r2.nonce.clone(),
            resource_names: strings(&["a"]),
            error_detail: nack_status("stale"),
            ..Default::default()
        })
        .await;
    envoy.expect_quiet("stale nonce").await;

    // The stream handles requests in order: once the ACK of r3 is in, the
    // stale request was handled before it, without effect.
    envoy.ack(&r3, &[]).await;
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "d", third.generation),
    )
    .await
    .expect("ACK of the newest version recorded");
    loop {
        let e = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        assert_ne!(e.kind, EventKind::Nack, "stale NACK was recorded: {e:?}");
        if e.kind == EventKind::Ack {
            assert_eq!(e.nonce, r3.nonce);
            break;
        }
    }
    let cds = &h.nodes().get("envoy-1").unwrap().types[CLUSTER];
    assert!(cds.wildcard, "stale request changed the subscription");
    assert_eq!(cds.acked_version.as_deref(), Some(r3.version_info.as_str()));
}

#[tokio::test]
async fn sotw_nack_is_recorded_and_not_resent() {
    let cache = SnapshotCache::new();
    let first = cache
        .set_snapshot(GROUP, [static_cluster("a", 100)])
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.sotw("envoy-1").await;

    envoy.subscribe(CLUSTER, &[]).await;
    let r1 = envoy.recv().await;
    envoy
        .nack(&r1, "", "cluster a: connect_timeout too small")
        .await;
    h.until("the NACK is recorded", |n| {
        n.get("envoy-1")
            .is_some_and(|s| s.types.get(CLUSTER).is_some_and(|t| t.last_nack.is_some()))
    })
    .await;
    let cds = h.nodes().get("envoy-1").unwrap().types[CLUSTER].clone();
    let nack = cds.last_nack.expect("last_nack");
    assert_eq!(nack.error, "cluster a: connect_timeout too small");
    assert_eq!(nack.version, first.generation.to_string());
    assert_eq!(nack.nonce, r1.nonce);
    assert_eq!(cds.acked_version, None);
    assert_eq!(h.nodes().acked_generation("envoy-1", CLUSTER, "a"), None);

    // The rejected version is not sent again…
    envoy.expect_quiet("NACKed version").await;

    // …but the next one is.
    let second = cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 250)))
        .unwrap();
    let r2 = envoy.recv().await;
    assert_eq!(r2.version_info, second.generation.to_string());
    assert_eq!(names(&r2), ["a"]);
    envoy.ack(&r2, &[]).await;
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "a", second.generation),
    )
    .await
    .expect("ACK recorded");
    assert!(
        h.nodes().get("envoy-1").unwrap().types[CLUSTER]
            .last_nack
            .is_none()
    );
}

#[tokio::test]
async fn sotw_named_types_get_only_their_names() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            GROUP,
            [
                eds_cluster("a"),
                eds_cluster("b"),
                eds_cluster("c"),
                assignment("a", 8001),
                assignment("b", 8002),
                assignment("c", 8003),
                route("r1", "a"),
                route("r2", "b"),
            ],
        )
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.sotw("envoy-1").await;

    envoy.subscribe(ENDPOINT, &["a"]).await;
    let e1 = envoy.recv().await;
    assert_eq!(e1.type_url, ENDPOINT);
    assert_eq!(names(&e1), ["a"]);

    envoy.subscribe(ROUTE, &["r2"]).await;
    let rds = envoy.recv().await;
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(names(&rds), ["r2"]);

    // New names in the ACK: answered at once, with no cache change.
    envoy.ack(&e1, &["a", "b"]).await;
    let e2 = envoy.recv().await;
    assert_eq!(e2.type_url, ENDPOINT);
    assert_eq!(names(&e2), ["a", "b"]);
    assert_eq!(e2.version_info, e1.version_info);

    // Changed names on a stale nonce: ignored.
    envoy
        .send(DiscoveryRequest {
            version_info: e1.version_info.clone(),
            type_url: ENDPOINT.to_string(),
            response_nonce: e1.nonce.clone(),
            resource_names: strings(&["c"]),
            ..Default::default()
        })
        .await;
    envoy.expect_quiet("names changed on a stale nonce").await;

    // A name the cache lacks is simply absent.
    envoy.ack(&e2, &["b", "missing"]).await;
    let e3 = envoy.recv().await;
    assert_eq!(names(&e3), ["b"]);
}

// ----------------------------------------------------------------- Delta

#[tokio::test]
async fn delta_sends_only_changes_and_honours_initial_versions() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            GROUP,
            [
                eds_cluster("a"),
                eds_cluster("b"),
                assignment("a", 8001),
                assignment("b", 8002),
            ],
        )
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("envoy-1").await;

    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(delta_names(&cds), ["a", "b"]);
    assert!(cds.removed_resources.is_empty());
    assert!(!cds.nonce.is_empty());
    for r in &cds.resources {
        assert_eq!(r.version, version_of(&cache, CLUSTER, &r.name));
    }
    envoy.ack(&cds).await;

    envoy.subscribe(ENDPOINT, &["a", "b"]).await;
    let eds = envoy.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(delta_names(&eds), ["a", "b"]);
    envoy.ack(&eds).await;

    // An endpoints-only change: one ClusterLoadAssignment, no clusters.
    let g = cache
        .update(GROUP, Update::new().upsert(assignment("a", 9001)))
        .unwrap();
    let eds2 = envoy.recv().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    assert_eq!(delta_names(&eds2), ["a"]);
    assert!(eds2.removed_resources.is_empty());
    envoy.ack(&eds2).await;
    timeout(
        WAIT,
        h.nodes().wait_acked("envoy-1", ENDPOINT, "a", g.generation),
    )
    .await
    .expect("ACK recorded");

    // A removal (the next message: so no cluster push slipped in before).
    cache
        .update(GROUP, Update::new().remove(CLUSTER, "b"))
        .unwrap();
    let rm = envoy.recv().await;
    assert_eq!(rm.type_url, CLUSTER);
    assert!(rm.resources.is_empty());
    assert_eq!(rm.removed_resources, ["b"]);
    envoy.ack(&rm).await;

    // A NACKed version is not resent; the next one is.
    cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 100)))
        .unwrap();
    let bad = envoy.recv().await;
    assert_eq!(delta_names(&bad), ["a"]);
    envoy.nack(&bad, "cluster a: rejected").await;
    h.until("the NACK is recorded", |n| {
        n.get("envoy-1")
            .and_then(|s| s.types.get(CLUSTER).and_then(|t| t.last_nack.clone()))
            .is_some_and(|nack| nack.error == "cluster a: rejected")
    })
    .await;
    envoy.expect_quiet("NACKed version").await;
    cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 200)))
        .unwrap();
    let good = envoy.recv().await;
    assert_eq!(delta_names(&good), ["a"]);
    assert_eq!(good.resources[0].version, version_of(&cache, CLUSTER, "a"));
    envoy.ack(&good).await;

    // Reconnecting with every version the cache has: nothing is resent.
    drop(envoy);
    let held: HashMap<String, String> = ["a"]
        .iter()
        .map(|n| (n.to_string(), version_of(&cache, CLUSTER, n)))
        .collect();
    let mut again = h.delta("envoy-1").await;
    again
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER.to_string(),
            initial_resource_versions: held.clone(),
            ..Default::default()
        })
        .await;
    again.expect_quiet("reconnect with current versions").await;

    // Reconnecting with one outdated version: only that one.
    cache
        .update(
            GROUP,
            Update::new()
                .upsert(eds_cluster("d"))
                .upsert(assignment("d", 8004)),
        )
        .unwrap();
    let mut held = held;
    held.insert("d".to_string(), "0000000000000000".to_string());
    drop(again);
    let mut third = h.delta("envoy-1").await;
    third
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER.to_string(),
            initial_resource_versions: held,
            ..Default::default()
        })
        .await;
    let only = third.recv().await;
    assert_eq!(delta_names(&only), ["d"]);
    assert!(only.removed_resources.is_empty());
}

/// A stream several generations behind looks only at the names the cache's change log lists
/// since it last synced (not at every resource), and still sends exactly what differs: the
/// newest version of a name changed twice, an addition, a removal, and nothing for a name
/// changed and changed back, nor for endpoints the client did not subscribe to.
#[tokio::test]
async fn delta_a_client_several_changes_behind_gets_the_net_difference() {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            GROUP,
            [
                static_cluster("a", 100),
                static_cluster("b", 100),
                static_cluster("c", 100),
                eds_cluster("x"),
                assignment("x", 8001),
            ],
        )
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.recv().await;
    assert_eq!(delta_names(&cds), ["a", "b", "c", "x"]);
    envoy.ack(&cds).await;
    envoy.subscribe(ENDPOINT, &["x"]).await;
    let eds = envoy.recv().await;
    assert_eq!(delta_names(&eds), ["x"]);
    envoy.ack(&eds).await;
    h.until("the endpoints ACK is recorded", |n| {
        n.acked_generation("envoy-1", ENDPOINT, "x").is_some()
    })
    .await;

    // Four updates in a row, with no await between them: the stream wakes once, behind by all
    // four (this test runs on one thread).
    cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 200)))
        .unwrap();
    cache
        .update(
            GROUP,
            Update::new()
                .remove(CLUSTER, "b")
                .upsert(static_cluster("c", 300))
                .upsert(eds_cluster("y"))
                .upsert(assignment("y", 8002)),
        )
        .unwrap();
    cache
        .update(
            GROUP,
            Update::new()
                .upsert(static_cluster("a", 250))
                .upsert(static_cluster("c", 100))
                .upsert(static_cluster("d", 100)),
        )
        .unwrap();
    cache
        .update(GROUP, Update::new().upsert(assignment("y", 8003)))
        .unwrap();

    let cds = envoy.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(delta_names(&cds), ["a", "d", "y"]);
    assert_eq!(cds.resources[0].version, version_of(&cache, CLUSTER, "a"));
    assert_eq!(cds.removed_resources, ["b"]);
    envoy.ack(&cds).await;
    // `y`'s assignment was never subscribed to: nothing for endpoints.
    envoy
        .expect_quiet("no endpoint change the client asked for")
        .await;
}

/// A change larger than the responses a client may leave unanswered (64 of 1000 resources)
/// waits for answers instead of dropping the tracking of the oldest: every cluster's ACK is
/// recorded, so nothing that waits on clusters (routes) is held back for good.
#[tokio::test]
async fn delta_a_change_beyond_the_unanswered_bound_waits_for_answers() {
    const N: usize = 66_000;
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(GROUP, (0..N).map(|i| static_cluster(&format!("c{i}"), 100)))
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let mut first = Vec::new();
    for _ in 0..64 {
        first.push(envoy.recv().await);
    }
    envoy
        .expect_quiet("64 responses unanswered: the rest waits")
        .await;
    let mut names = 0;
    for r in &first {
        names += r.resources.len();
        envoy.ack(r).await;
    }
    while names < N {
        let r = envoy.recv().await;
        names += r.resources.len();
        envoy.ack(&r).await;
    }
    assert_eq!(names, N, "each cluster sent once");
    h.until("every cluster's ACK is recorded", |n| {
        n.acked_generation("envoy-1", CLUSTER, "c0").is_some()
            && n.acked_generation("envoy-1", CLUSTER, &format!("c{}", N - 1))
                .is_some()
    })
    .await;
}

#[tokio::test]
async fn delta_large_change_goes_out_in_bounded_responses() {
    // 2500 clusters at once (a cold start) arrive as responses of at most 1000, each with its
    // own nonce; the client ACKs each and the server records every resource as held.
    let cache = SnapshotCache::new();
    let all: Vec<String> = (0..2500).map(|i| format!("c{i:04}")).collect();
    let g = cache
        .set_snapshot(GROUP, all.iter().map(|n| static_cluster(n, 100)))
        .unwrap()
        .generation;
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let mut got: Vec<String> = Vec::new();
    let mut nonces = HashSet::new();
    let mut sizes = Vec::new();
    while got.len() < all.len() {
        let r = envoy.recv().await;
        assert_eq!(r.type_url, CLUSTER);
        assert!(
            nonces.insert(r.nonce.clone()),
            "each response has its own nonce"
        );
        sizes.push(r.resources.len());
        got.extend(delta_names(&r));
        envoy.ack(&r).await;
    }
    assert_eq!(sizes, [1000, 1000, 500]);
    got.sort();
    assert_eq!(got, all, "every cluster once");
    for n in ["c0000", "c1500", "c2499"] {
        timeout(WAIT, h.nodes().wait_acked("envoy-1", CLUSTER, n, g))
            .await
            .unwrap_or_else(|_| panic!("ACK of {n} recorded"));
    }
    envoy.expect_quiet("everything was sent once").await;

    // 1200 changed and one removed: the removal rides with the last response.
    let mut update = Update::new().remove(CLUSTER, "c0000");
    for n in &all[1..1201] {
        update = update.upsert(static_cluster(n, 200));
    }
    cache.update(GROUP, update).unwrap();
    let first = envoy.recv().await;
    assert_eq!(first.resources.len(), 1000);
    assert!(first.removed_resources.is_empty());
    envoy.ack(&first).await;
    let last = envoy.recv().await;
    assert_eq!(last.resources.len(), 200);
    assert_eq!(last.removed_resources, ["c0000"]);
    envoy.ack(&last).await;
}

// ------------------------------------------------------ make before break

/// Cluster `old` (used by route `rc`) is replaced by `new` in one update.
fn make_before_break_cache() -> SnapshotCache {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(GROUP, [static_cluster("old", 100), route("rc", "old")])
        .unwrap();
    cache
}

fn switch_to_new(cache: &SnapshotCache) {
    cache
        .update(
            GROUP,
            Update::new()
                .upsert(static_cluster("new", 100))
                .upsert(route("rc", "new"))
                .remove(CLUSTER, "old"),
        )
        .unwrap();
}

/// A Delta client that ACKed every cluster and route configuration `rc` of `cache`.
async fn delta_holding_rc(cache: &SnapshotCache) -> (Harness, Delta) {
    let h = Harness::start(cache).await;
    let mut envoy = h.delta("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.recv().await;
    envoy.ack(&cds).await;
    envoy.subscribe(ROUTE, &["rc"]).await;
    let rds = envoy.recv().await;
    envoy.ack(&rds).await;
    (h, envoy)
}

/// A route held back for a cluster the client has not ACKed, then deleted, holds nothing
/// back any more: a later cluster removal goes out although that ACK never came.
#[tokio::test]
async fn delta_a_deleted_route_no_longer_holds_removals_back() {
    let cache = make_before_break_cache();
    let (_server, mut envoy) = delta_holding_rc(&cache).await;
    cache
        .update(
            GROUP,
            Update::new()
                .upsert(static_cluster("new", 100))
                .upsert(route("rc", "new")),
        )
        .unwrap();
    // `new` is sent and never ACKed: the route waits for it.
    let first = envoy.recv().await;
    assert_eq!(
        (first.type_url.as_str(), delta_names(&first)),
        (CLUSTER, strings(&["new"]))
    );
    envoy.expect_quiet("the route waits for its cluster").await;
    cache
        .update(GROUP, Update::new().remove(ROUTE, "rc"))
        .unwrap();
    let rm = envoy.recv().await;
    assert_eq!(
        (rm.type_url.as_str(), rm.removed_resources.clone()),
        (ROUTE, strings(&["rc"]))
    );
    cache
        .update(GROUP, Update::new().remove(CLUSTER, "old"))
        .unwrap();
    let gone = envoy.recv().await;
    assert_eq!(
        (gone.type_url.as_str(), gone.removed_resources.clone()),
        (CLUSTER, strings(&["old"]))
    );
}

#[tokio::test]
async fn sotw_make_before_break() {
    let cache = make_before_break_cache();
    let h = Harness::start(&cache).await;
    let mut envoy = h.sotw("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.recv().await;
    assert_eq!(names(&cds), ["old"]);
    envoy.ack(&cds, &[]).await;
    envoy.subscribe(ROUTE, &["rc"]).await;
    let rds = envoy.recv().await;
    envoy.ack(&rds, &["rc"]).await;
    h.until("both ACKs are recorded", |n| {
        n.get("envoy-1").is_some_and(|s| {
            s.types.values().all(|t| t.acked_version.is_some()) && s.types.len() == 2
        })
    })
    .await;

    switch_to_new(&cache);
    let mut seen = Vec::new();
    loop {
        let r = envoy.recv().await;
        let done = r.type_url == CLUSTER && !names(&r).contains(&"old".to_string());
        seen.push((r.type_url.clone(), names(&r)));
        if r.type_url == CLUSTER {
            envoy.ack(&r, &[]).await;
        } else {
            envoy.ack(&r, &["rc"]).await;
        }
        if done {
            break;
        }
    }
    let route_at = seen
        .iter()
        .position(|(t, _)| t == ROUTE)
        .unwrap_or_else(|| panic!("no route update: {seen:?}"));
    let new_at = seen
        .iter()
        .position(|(t, n)| t == CLUSTER && n.contains(&"new".to_string()))
        .unwrap();
    assert!(
        new_at < route_at,
        "cluster `new` must come before the route: {seen:?}"
    );
    // Every CDS response up to the route keeps `old`; the last one, after the
    // route, drops it.
    for (t, n) in &seen[..route_at] {
        if t == CLUSTER {
            assert!(
                n.contains(&"old".to_string()),
                "`old` removed before the route: {seen:?}"
            );
        }
    }
    assert!(
        route_at < seen.len() - 1,
        "no CDS after the route: {seen:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &(CLUSTER.to_string(), strings(&["new"])),
        "{seen:?}"
    );
}

#[tokio::test]
async fn delta_make_before_break() {
    let cache = make_before_break_cache();
    let (_server, mut envoy) = delta_holding_rc(&cache).await;

    switch_to_new(&cache);
    let first = envoy.recv().await;
    envoy.ack(&first).await;
    assert_eq!(
        (first.type_url.as_str(), delta_names(&first)),
        (CLUSTER, strings(&["new"]))
    );
    assert!(
        first.removed_resources.is_empty(),
        "`old` removed before the route moved"
    );
    let second = envoy.recv().await;
    envoy.ack(&second).await;
    assert_eq!(
        (second.type_url.as_str(), delta_names(&second)),
        (ROUTE, strings(&["rc"]))
    );
    let third = envoy.recv().await;
    envoy.ack(&third).await;
    assert_eq!(third.type_url, CLUSTER);
    assert!(third.resources.is_empty());
    assert_eq!(third.removed_resources, ["old"]);
}

// ------------------------------------------------------------- readiness

#[tokio::test]
async fn wait_acked_returns_once_the_client_acks() {
    let cache = SnapshotCache::new();
    let first = cache
        .set_snapshot(GROUP, [static_cluster("a", 100)])
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let r1 = envoy.recv().await;
    envoy.ack(&r1).await;
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "a", first.generation),
    )
    .await
    .expect("first ACK");

    let second = cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 200)))
        .unwrap();
    let nodes = h.nodes().clone();
    let mut waiter = tokio::spawn(async move {
        nodes
            .wait_acked("envoy-1", CLUSTER, "a", second.generation)
            .await
    });
    let r2 = envoy.recv().await;
    // Sent but not ACKed: still waiting.
    assert!(
        timeout(QUIET, &mut waiter).await.is_err(),
        "wait_acked returned before the ACK"
    );
    envoy.ack(&r2).await;
    timeout(WAIT, waiter)
        .await
        .expect("wait_acked returns after the ACK")
        .unwrap();
    assert_eq!(
        h.nodes().acked_generation("envoy-1", CLUSTER, "a"),
        Some(second.generation)
    );
    // Already satisfied: returns at once.
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "a", first.generation),
    )
    .await
    .expect("older generation");
}

// ------------------------------------------------- CSDS, debug, reflection

#[tokio::test]
async fn csds_debug_and_reflection_report_the_node() {
    let cache = SnapshotCache::new();
    let first = cache
        .set_snapshot(GROUP, [static_cluster("a", 100), static_cluster("b", 100)])
        .unwrap();
    let h = Harness::start(&cache).await;
    let mut debug = SnapshotDebugClient::new(h.channel.clone());
    let mut watch = debug
        .watch(WatchRequest {
            node_id: "envoy-1".to_string(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut envoy = h.sotw("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let r1 = envoy.recv().await;
    envoy.ack(&r1, &[]).await;
    timeout(
        WAIT,
        h.nodes()
            .wait_acked("envoy-1", CLUSTER, "b", first.generation),
    )
    .await
    .unwrap();
    cache
        .update(GROUP, Update::new().upsert(static_cluster("a", 5)))
        .unwrap();
    let r2 = envoy.recv().await;
    const ERROR: &str = "cluster a: connect_timeout below 10ms";
    envoy.nack(&r2, &r1.version_info, ERROR).await;
    h.until("the NACK is recorded", |n| {
        n.get("envoy-1")
            .is_some_and(|s| s.types[CLUSTER].last_nack.is_some())
    })
    .await;

    // CSDS.
    let mut csds = ClientStatusDiscoveryServiceClient::new(h.channel.clone());
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.config.len(), 1);
    let config = &status.config[0];
    assert_eq!(config.node.as_ref().unwrap().id, "envoy-1");
    let by_name: HashMap<_, _> = config
        .generic_xds_configs
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    assert_eq!(by_name.len(), 2, "{by_name:?}");
    let a = by_name["a"];
    assert_eq!(a.type_url, CLUSTER);
    assert_eq!(a.client_status, ClientResourceStatus::Nacked as i32);
    assert_eq!(a.config_status, ConfigStatus::Error as i32);
    assert_eq!(a.error_state.as_ref().unwrap().details, ERROR);
    assert_eq!(a.version_info, version_of(&cache, CLUSTER, "a"));
    assert!(a.xds_config.is_some());
    let b = by_name["b"];
    assert_eq!(b.client_status, ClientResourceStatus::Acked as i32);
    assert_eq!(b.config_status, ConfigStatus::Synced as i32);

    // Snapshot debug: nodes, the snapshot with ACK states, the event feed.
    let nodes = debug
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!((n.node_id.as_str(), n.connected), ("envoy-1", true));
    assert_eq!(n.user_agent, "envoy 1.31.2");
    let t = n.types.iter().find(|t| t.type_url == CLUSTER).unwrap();
    assert_eq!(t.acked_version, r1.version_info);
    assert_eq!(t.last_nack.as_ref().unwrap().error, ERROR);

    let snap = debug
        .get_snapshot(GetSnapshotRequest {
            node_id: String::new(),
            r#type: "clusters".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.node.as_ref().unwrap().node_id, "envoy-1");
    let states: Vec<_> = snap
        .resources
        .iter()
        .map(|r| (r.name.as_str(), AckState::try_from(r.ack_state).unwrap()))
        .collect();
    assert_eq!(states, [("a", AckState::Nacked), ("b", AckState::Acked)]);
    assert!(snap.resources.iter().all(|r| r.resource.is_some()));
    let err = debug
        .get_snapshot(GetSnapshotRequest {
            node_id: "nobody".to_string(),
            r#type: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut kinds = Vec::new();
    while kinds.last() != Some(&xds_event::Kind::Nack) {
        let e = timeout(WAIT, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.node_id, "envoy-1");
        kinds.push(xds_event::Kind::try_from(e.kind).unwrap());
        if e.kind == xds_event::Kind::Nack as i32 {
            assert_eq!(e.detail, ERROR);
        }
    }
    use xds_event::Kind::{Ack, Connect, Nack, Push};
    assert_eq!(kinds, [Connect, Push, Ack, Push, Nack]);

    // Reflection v1 lists every service and resolves their files.
    reflection_lists_services(h.channel.clone()).await;
}

async fn reflection_lists_services(channel: Channel) {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let (tx, rx) = mpsc::channel(4);
    let mut client = ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut ask = async |req: MessageRequest| -> ServerReflectionResponse {
        tx.send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        })
        .await
        .unwrap();
        timeout(WAIT, responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };

    let listed = ask(MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
        "sluice.xds.v1.SnapshotDebug",
    ] {
        assert!(services.contains(&want), "{want} not listed: {services:?}");
    }

    // What grpcurl does next: the file defining the service, then every
    // file it imports, by name.
    let mut seen = std::collections::HashSet::new();
    let mut pending = Vec::new();
    let resp = ask(MessageRequest::FileContainingSymbol(
        "sluice.xds.v1.SnapshotDebug".to_string(),
    ))
    .await;
    add_files(resp, &mut seen, &mut pending);
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        let resp = ask(MessageRequest::FileByFilename(name.clone())).await;
        add_files(resp, &mut seen, &mut pending);
        assert!(seen.contains(&name), "{name} not served");
    }
    assert!(seen.contains("sluice/xds/v1/debug.proto"), "{seen:?}");
    assert!(seen.contains("google/protobuf/any.proto"), "{seen:?}");
}

/// Records the files of a reflection answer and queues their imports.
fn add_files(
    resp: tonic_reflection::pb::v1::ServerReflectionResponse,
    seen: &mut std::collections::HashSet<String>,
    pending: &mut Vec<String>,
) {
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let Some(MessageResponse::FileDescriptorResponse(f)) = resp.message_response else {
        panic!("no file descriptor: {resp:?}");
    };
    for bytes in f.file_descriptor_proto {
        let (name, imports) = file_head(&bytes);
        if seen.insert(name) {
            pending.extend(imports);
        }
    }
}

/// Name and imports of an encoded `FileDescriptorProto` (fields 1 and 3),
/// read without a descriptor crate.
fn file_head(bytes: &[u8]) -> (String, Vec<String>) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileHead {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, repeated, tag = "3")]
        dependency: Vec<String>,
    }
    let f = FileHead::decode(bytes).expect("a FileDescriptorProto");
    (f.name, f.dependency)
}
