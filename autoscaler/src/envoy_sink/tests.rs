use super::*;
use sluice_proto::envoy::pb::envoy::config::core::v3::Node;
use sluice_proto::envoy::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use sluice_proto::envoy::pb::io::prometheus::client::{Counter, Gauge, Metric};

fn mapper(cluster: &str) -> Option<RevisionKey> {
    let (ns, name) = cluster.strip_suffix("_80")?.split_once('/')?;
    Some(RevisionKey::new(ns, name))
}

fn gauge(name: &str, value: f64) -> MetricFamily {
    MetricFamily {
        name: Some(name.into()),
        metric: vec![Metric {
            gauge: Some(Gauge { value: Some(value) }),
            ..Metric::default()
        }],
        ..MetricFamily::default()
    }
}

fn counter(name: &str, value: f64) -> MetricFamily {
    MetricFamily {
        name: Some(name.into()),
        metric: vec![Metric {
            counter: Some(Counter {
                value: Some(value),
                ..Counter::default()
            }),
            ..Metric::default()
        }],
        ..MetricFamily::default()
    }
}

fn flush(node: Option<&str>, active: f64, pending: f64, total: f64) -> StreamMetricsMessage {
    StreamMetricsMessage {
        identifier: node.map(|id| Identifier {
            node: Some(Node {
                id: id.into(),
                ..Node::default()
            }),
        }),
        envoy_metrics: vec![
            gauge("cluster.default/hello-00001_80.upstream_rq_active", active),
            gauge(
                "cluster.default/hello-00001_80.upstream_rq_pending_active",
                pending,
            ),
            counter("cluster.default/hello-00001_80.upstream_rq_total", total),
            gauge("cluster.sluice_xds.upstream_rq_active", 1.0),
            gauge("server.live", 1.0),
        ],
    }
}

fn hello() -> RevisionKey {
    RevisionKey::new("default", "hello-00001")
}

#[tokio::test(start_paused = true)]
async fn figures_of_every_envoy_add_up_per_revision() {
    let sink = EnvoySink::new(mapper);
    let a = sink.register().expect("room");
    let b = sink.register().expect("room");
    let t0 = Instant::now();
    sink.ingest(a.id, &flush(Some("gateway-a"), 3.0, 1.0, 100.0), t0);
    sink.ingest(b.id, &flush(Some("gateway-b"), 2.0, 0.0, 40.0), t0);
    let first = sink.take(t0);
    assert_eq!(first.len(), 1, "only revision clusters count: {first:?}");
    assert_eq!(first[&hello()].concurrency, 6.0);
    assert_eq!(
        first[&hello()].requests,
        0.0,
        "no rate before a second figure"
    );

    let t1 = t0 + Duration::from_secs(1);
    sink.ingest(a.id, &flush(None, 1.0, 0.0, 130.0), t1);
    sink.ingest(b.id, &flush(None, 0.0, 0.0, 50.0), t1);
    let second = sink.take(t1);
    assert_eq!(second[&hello()].concurrency, 1.0);
    assert_eq!(second[&hello()].requests, 40.0);
    assert_eq!(sink.view().envoys, ["gateway-a", "gateway-b"]);

    // An Envoy that goes takes its figures with it; one that stops flushing stops counting.
    drop(b);
    let later = t1 + STALE + Duration::from_secs(1);
    sink.ingest(a.id, &flush(None, 2.0, 0.0, 131.0), later);
    assert_eq!(sink.take(later)[&hello()].concurrency, 2.0);
    let silent = later + STALE + Duration::from_secs(1);
    assert!(sink.take(silent).is_empty());
    assert_eq!(sink.view().envoys, ["gateway-a"]);
}

#[tokio::test(start_paused = true)]
async fn bad_figures_and_too_many_envoys_are_refused() {
    let sink = EnvoySink::new(mapper);
    let a = sink.register().expect("room");
    let now = Instant::now();
    let mut message = flush(None, f64::NAN, -4.0, f64::INFINITY);
    message.envoy_metrics.push(MetricFamily::default());
    sink.ingest(a.id, &message, now);
    assert!(sink.take(now).is_empty(), "nothing usable was sent");
    let held: Vec<_> = (1..MAX_STREAMS)
        .map(|_| sink.register().expect("room"))
        .collect();
    let refused = sink.register().err().expect("full");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    drop(held);
    assert!(sink.register().is_ok(), "room again once streams end");
}
