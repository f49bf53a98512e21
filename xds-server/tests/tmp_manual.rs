//! ADS protocol tests: the real [`XdsServer`] on a loopback port, driven by
//! envoy-types' generated ADS client acting as a scripted Envoy, over
//! State-of-the-World and Delta; then CSDS, the snapshot debug service and
//! server reflection on the same port.
//!
//! Every expected message is awaited with a bounded timeout; "nothing is
//! sent" is asserted by a short bounded wait ([`QUIET`]).

use std::collections::HashMap;
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:18777").await.unwrap();
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
    resp.resources.iter().map(|a| resource_name(a)).collect()
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


#[tokio::test]
#[ignore]
async fn manual_cli_server() {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    };
    use prost::Name;
    let hcm = HttpConnectionManager { stat_prefix: "ext".into(), route_specifier: Some(RouteSpecifier::Rds(Rds { route_config_name: "rc".into(), config_source: Some(ConfigSource { config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(Default::default())), ..Default::default() }) })), ..Default::default() };
    let l = Listener { name: "external".into(), filter_chains: vec![FilterChain { filters: vec![Filter { name: "hcm".into(), config_type: Some(filter::ConfigType::TypedConfig(Any { type_url: HttpConnectionManager::type_url(), value: hcm.encode_to_vec() })) }], ..Default::default() }], ..Default::default() };
    let cache = SnapshotCache::new();
    cache.set_snapshot(GROUP, [eds_cluster("default/hello:80"), assignment("default/hello:80", 8001), route("rc", "default/hello:80"), Resource::new("external", &l), static_cluster("b", 100)]).unwrap();
    let h = Harness::start(&cache).await;
    let mut envoy = h.delta("sluice-gateway").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let r = envoy.recv().await; envoy.ack(&r).await;
    envoy.subscribe(ENDPOINT, &["default/hello:80"]).await;
    let r = envoy.recv().await; envoy.ack(&r).await;
    envoy.subscribe(envoy_types::pb::envoy::config::listener::v3::Listener::type_url().as_str(), &[]).await;
    let r = envoy.recv().await; envoy.nack(&r, "Error adding/updating listener(s) external: bad address\nsecond line").await;
    envoy.subscribe(ROUTE, &["rc"]).await;
    let r = envoy.recv().await; envoy.ack(&r).await;
    for i in 0..60u32 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cache.update(GROUP, Update::new().upsert(assignment("default/hello:80", 9000 + i))).unwrap();
        let r = envoy.recv().await; envoy.ack(&r).await;
    }
}
