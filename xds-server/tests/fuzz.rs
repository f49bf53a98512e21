//! Bounded fuzzing of the ADS request handler: random sequences of Delta and SotW requests
//! (known and made-up type URLs, stale and random nonces, NACKs, subscriptions and claimed
//! holdings of random names, missing or odd nodes) against a real server over gRPC. Nothing
//! panics, and once the clients are gone the server holds no stream state.
//!
//! `SLUICE_FUZZ_CASES` (default 200) sets the number of sequences per protocol variant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};
use sluice_xds::{Resource, SnapshotCache, Update, XdsServer, single_group};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One request of a sequence, before it is given a protocol variant.
#[derive(Debug, Clone)]
struct Op {
    node: Option<String>,
    type_url: String,
    /// Answer a response seen earlier (by index), a random nonce, or none.
    nonce: Option<Result<usize, String>>,
    nack: bool,
    names: Vec<String>,
    unsubscribe: Vec<String>,
    initial: Vec<(String, String)>,
    version_info: String,
    /// Change the snapshot before this request.
    change: bool,
}

fn type_url() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET])
            .prop_map(str::to_string),
        1 => Just(String::new()),
        1 => "type.googleapis.com/[a-z.]{1,20}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "c[0-9]", 1 => Just("*".to_string()), 1 => ".{0,8}"]
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![8 => Just(None), 1 => Just(Some(String::new())), 1 => ".{0,300}".prop_map(Some)],
        type_url(),
        prop_oneof![
            2 => Just(None),
            4 => (0usize..8).prop_map(|i| Some(Ok(i))),
            1 => "[0-9a-f]{1,4}".prop_map(|n| Some(Err(n))),
        ],
        prop::bool::weighted(0.15),
        prop::collection::vec(name(), 0..6),
        prop::collection::vec(name(), 0..3),
        prop::collection::vec((name(), "[0-9a-f]{0,16}"), 0..4),
        "[0-9]{0,3}",
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(node, type_url, nonce, nack, names, unsubscribe, initial, version_info, change)| Op {
                node,
                type_url,
                nonce,
                nack,
                names,
                unsubscribe,
                initial,
                version_info,
                change,
            },
        )
}

fn cluster(name: &str, ms: i64) -> Resource {
    Resource::new(
        name,
        &Cluster {
            name: name.to_string(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: (ms * 1_000_000) as i32,
            }),
            ..Default::default()
        },
    )
}

async fn run_delta(server: &XdsServer, channel: tonic::transport::Channel, ops: Vec<Op>) {
    let (tx, rx) = mpsc::channel(64);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let Ok(resp) = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut responses = resp.into_inner();
    let mut nonces: Vec<String> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        if op.change {
            let _ = server.cache().update(
                "gw",
                Update::new().upsert(cluster(&format!("c{}", i % 4), i as i64 % 50 + 1)),
            );
        }
        let req = DeltaDiscoveryRequest {
            node: if i == 0 {
                Some(Node {
                    id: op.node.clone().unwrap_or_else(|| "fuzz".into()),
                    ..Default::default()
                })
            } else {
                op.node.clone().map(|id| Node {
                    id,
                    ..Default::default()
                })
            },
            type_url: op.type_url,
            response_nonce: match op.nonce {
                Some(Ok(k)) => nonces.get(k).cloned().unwrap_or_default(),
                Some(Err(n)) => n,
                None => String::new(),
            },
            error_detail: op.nack.then(|| RpcStatus {
                code: 3,
                message: "c1: bad".into(),
                details: vec![],
            }),
            resource_names_subscribe: op.names,
            resource_names_unsubscribe: op.unsubscribe,
            initial_resource_versions: op.initial.into_iter().collect(),
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            break;
        }
        // Take what came back so far (the stream may also have been ended: a refusal).
        while let Ok(Some(Ok(Some(r)))) =
            tokio::time::timeout(Duration::from_millis(5), responses.message())
                .await
                .map(Some)
        {
            nonces.push(r.nonce);
        }
    }
}

async fn run_sotw(server: &XdsServer, channel: tonic::transport::Channel, ops: Vec<Op>) {
    let (tx, rx) = mpsc::channel(64);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let Ok(resp) = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut responses = resp.into_inner();
    let mut nonces: Vec<String> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        if op.change {
            let _ = server.cache().update(
                "gw",
                Update::new().upsert(cluster(&format!("c{}", i % 4), i as i64 % 50 + 1)),
            );
        }
        let req = DiscoveryRequest {
            node: if i == 0 {
                Some(Node {
                    id: op.node.clone().unwrap_or_else(|| "fuzz".into()),
                    ..Default::default()
                })
            } else {
                None
            },
            type_url: op.type_url,
            version_info: op.version_info,
            response_nonce: match op.nonce {
                Some(Ok(k)) => nonces.get(k).cloned().unwrap_or_default(),
                Some(Err(n)) => n,
                None => String::new(),
            },
            error_detail: op.nack.then(|| RpcStatus {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            resource_names: op.names,
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            break;
        }
        while let Ok(Some(Ok(Some(r)))) =
            tokio::time::timeout(Duration::from_millis(5), responses.message())
                .await
                .map(Some)
        {
            nonces.push(r.nonce);
        }
    }
}

#[test]
fn random_request_sequences_never_panic_and_leave_no_state() {
    // A panic on any server task fails the run (tasks' panics are otherwise only logged).
    static PANICKED: AtomicBool = AtomicBool::new(false);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        default(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = SnapshotCache::new();
    cache
        .set_snapshot("gw", (0..4).map(|i| cluster(&format!("c{i}"), 10)))
        .unwrap();
    let server = XdsServer::new(cache, single_group("gw"));
    let (channel, _stop) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (channel, stop)
    });
    let server = Arc::new(server);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(prop::collection::vec(op(), 1..16), any::<bool>()),
            |(ops, delta)| {
                rt.block_on(async {
                    if delta {
                        run_delta(&server, channel.clone(), ops).await;
                    } else {
                        run_sotw(&server, channel.clone(), ops).await;
                    }
                });
                prop_assert!(!PANICKED.load(Ordering::SeqCst), "a server task panicked");
                Ok(())
            },
        )
        .unwrap();
    // Every stream's state went with it.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while server.nodes().counts().0 > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("stream state freed");
    });
    let (_, history) = server.nodes().counts();
    assert!(history <= sluice_xds::nodes::HISTORY);
    assert!(!PANICKED.load(Ordering::SeqCst));
}
