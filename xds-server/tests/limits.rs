//! What an untrusted ADS client can make the server hold: a type it does not serve ends the
//! stream with nothing kept, subscriptions and claimed holdings are bounded by what is served,
//! node fields are checked and trimmed, and every stream's state goes when it does.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use sluice_xds::resource::{CLUSTER, ENDPOINT};
use sluice_xds::{Resource, SnapshotCache, XdsServer, group_by_node_id, single_group};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    server: XdsServer,
    channel: Channel,
    _stop: oneshot::Sender<()>,
}

async fn start(server: XdsServer) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        server,
        channel,
        _stop: stop,
    }
}

fn cache_with_clusters(n: usize) -> SnapshotCache {
    let cache = SnapshotCache::new();
    cache
        .set_snapshot(
            "gw",
            (0..n).map(|i| {
                let name = format!("c{i}");
                Resource::new(
                    name.clone(),
                    &Cluster {
                        name,
                        ..Default::default()
                    },
                )
            }),
        )
        .unwrap();
    cache
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.to_string(),
        ..Default::default()
    })
}

/// Opens a Delta stream, sends `first`, and returns the first answer (response or status).
async fn delta_first(
    channel: &Channel,
    first: DeltaDiscoveryRequest,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Result<Option<DeltaDiscoveryResponse>, tonic::Status>,
) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let mut responses = AggregatedDiscoveryServiceClient::new(channel.clone())
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("an answer in time");
    (tx, first)
}

async fn until_no_streams(server: &XdsServer) {
    tokio::time::timeout(WAIT, async {
        while server.nodes().counts().0 > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every stream's state freed");
}

#[tokio::test]
async fn a_type_not_served_ends_the_stream_and_leaves_nothing() {
    let s = start(XdsServer::new(cache_with_clusters(1), single_group("gw"))).await;
    let (_tx, answer) = delta_first(
        &s.channel,
        DeltaDiscoveryRequest {
            node: node("stranger"),
            type_url: "type.googleapis.com/made.up.Thing".into(),
            ..Default::default()
        },
    )
    .await;
    let err = answer.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("made.up.Thing"), "{err}");
    until_no_streams(&s.server).await;
    assert!(
        !s.server
            .cache()
            .has_type("gw", "type.googleapis.com/made.up.Thing")
    );
}

#[tokio::test]
async fn subscriptions_and_claimed_holdings_are_bounded_by_what_is_served() {
    let s = start(XdsServer::new(cache_with_clusters(3), single_group("gw"))).await;
    let (_tx, answer) = delta_first(
        &s.channel,
        DeltaDiscoveryRequest {
            node: node("greedy"),
            type_url: ENDPOINT.into(),
            resource_names_subscribe: (0..20_000).map(|i| format!("x{i}")).collect(),
            ..Default::default()
        },
    )
    .await;
    let err = answer.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let (_tx, answer) = delta_first(
        &s.channel,
        DeltaDiscoveryRequest {
            node: node("liar"),
            type_url: CLUSTER.into(),
            initial_resource_versions: (0..20_000).map(|i| (format!("x{i}"), "1".into())).collect(),
            ..Default::default()
        },
    )
    .await;
    let err = answer.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    // An ordinary client is served.
    let (_tx, answer) = delta_first(
        &s.channel,
        DeltaDiscoveryRequest {
            node: node("envoy"),
            type_url: CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(answer.unwrap().unwrap().resources.len(), 3);
}

#[tokio::test]
async fn node_ids_are_checked_and_node_metadata_is_not_kept() {
    let s = start(XdsServer::new(cache_with_clusters(1), single_group("gw"))).await;
    for bad in ["", &"n".repeat(1000), "evil\nnode"] {
        let (_tx, answer) = delta_first(
            &s.channel,
            DeltaDiscoveryRequest {
                node: node(bad),
                type_url: CLUSTER.into(),
                ..Default::default()
            },
        )
        .await;
        let err = answer.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err}");
    }
    let mut big = Node {
        id: "envoy".into(),
        cluster: "c".repeat(10_000),
        ..Default::default()
    };
    big.metadata = Some(envoy_types::pb::google::protobuf::Struct {
        fields: (0..1000)
            .map(|i| {
                (
                    format!("k{i}"),
                    envoy_types::pb::google::protobuf::Value {
                        kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                            "v".repeat(100),
                        )),
                    },
                )
            })
            .collect(),
    });
    let (_tx, answer) = delta_first(
        &s.channel,
        DeltaDiscoveryRequest {
            node: Some(big),
            type_url: CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    assert!(answer.unwrap().is_some());
    let kept = s.server.nodes().get("envoy").unwrap();
    assert!(kept.node.metadata.is_none());
    assert!(kept.node.cluster.len() < 200, "{}", kept.node.cluster.len());
}

#[tokio::test]
async fn thousands_of_node_ids_leave_a_bounded_history_and_no_groups() {
    // One group per node id: the case where a stranger's id could create state in the cache.
    let cache = cache_with_clusters(1);
    let s = start(XdsServer::new(cache.clone(), group_by_node_id())).await;
    for i in 0..2000 {
        let (tx, rx) = mpsc::channel(8);
        tx.send(DiscoveryRequest {
            node: node(&format!("n{i}")),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let stream = AggregatedDiscoveryServiceClient::new(s.channel.clone())
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap();
        drop(tx);
        drop(stream);
    }
    until_no_streams(&s.server).await;
    let (live, history) = s.server.nodes().counts();
    assert_eq!(live, 0);
    assert!(history <= sluice_xds::nodes::HISTORY);
    // The only group left is the one with a snapshot.
    tokio::time::timeout(WAIT, async {
        while cache.groups() != ["gw"] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("groups left behind: {}", cache.groups().len()));
}
