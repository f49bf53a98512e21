//! Prometheus metrics of the xDS server (prefix `sluice_xds_` once registered
//! under a `sluice` registry prefix).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

use crate::resource::short_name;

/// Label set: the resource type (short name: clusters, routes, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short type name.
    pub r#type: String,
}

impl TypeLabel {
    fn of(type_url: &str) -> Self {
        Self {
            r#type: short_name(type_url).to_string(),
        }
    }
}

/// Label set for streams: the protocol variant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `sotw` or `delta`.
    pub mode: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~13 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

/// Counters and histograms of the xDS server. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    pushes: Family<TypeLabel, Counter>,
    push_bytes: Family<TypeLabel, Counter>,
    push_resources: Family<TypeLabel, Counter>,
    acks: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    push_to_ack: Family<TypeLabel, Histogram>,
    streams: Family<ModeLabel, Gauge>,
    nodes: Gauge,
    largest_request: Family<TypeLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            pushes: Family::default(),
            push_bytes: Family::default(),
            push_resources: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            push_to_ack: Family::new_with_constructor(latency_histogram),
            streams: Family::default(),
            nodes: Gauge::default(),
            largest_request: Family::default(),
        }
    }
}

impl Metrics {
    /// Metrics registered under `xds_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("xds");
        r.register("pushes", "xDS responses sent, by type", m.pushes.clone());
        r.register(
            "push_bytes",
            "Encoded bytes of xDS responses sent, by type",
            m.push_bytes.clone(),
        );
        r.register(
            "push_resources",
            "Resources (added, changed or removed) in xDS responses sent, by type",
            m.push_resources.clone(),
        );
        r.register(
            "acks",
            "xDS responses ACKed by Envoy, by type",
            m.acks.clone(),
        );
        r.register(
            "nacks",
            "xDS responses NACKed (rejected) by Envoy, by type",
            m.nacks.clone(),
        );
        r.register(
            "push_to_ack_seconds",
            "Time from sending an xDS response to its ACK or NACK",
            m.push_to_ack.clone(),
        );
        r.register(
            "streams",
            "Open ADS streams, by protocol variant",
            m.streams.clone(),
        );
        r.register(
            "connected_nodes",
            "Node ids with at least one open ADS stream",
            m.nodes.clone(),
        );
        r.register(
            "largest_request_bytes",
            "Largest discovery request received, by type (a reconnecting Delta client lists every \
             resource it holds; the server accepts up to MAX_REQUEST_BYTES)",
            m.largest_request.clone(),
        );
        m
    }

    pub(crate) fn pushed(&self, type_url: &str, bytes: usize, resources: usize) {
        let l = TypeLabel::of(type_url);
        self.pushes.get_or_create(&l).inc();
        self.push_bytes.get_or_create(&l).inc_by(bytes as u64);
        self.push_resources
            .get_or_create(&l)
            .inc_by(resources as u64);
    }

    pub(crate) fn answered(&self, type_url: &str, ack: bool, latency: std::time::Duration) {
        let l = TypeLabel::of(type_url);
        if ack {
            self.acks.get_or_create(&l).inc();
        } else {
            self.nacks.get_or_create(&l).inc();
        }
        self.push_to_ack
            .get_or_create(&l)
            .observe(latency.as_secs_f64());
    }

    pub(crate) fn stream_opened(&self, mode: &str) {
        self.streams
            .get_or_create(&ModeLabel { mode: mode.into() })
            .inc();
    }

    pub(crate) fn stream_closed(&self, mode: &str) {
        self.streams
            .get_or_create(&ModeLabel { mode: mode.into() })
            .dec();
    }

    pub(crate) fn request(&self, type_url: &str, bytes: usize) {
        let g = self.largest_request.get_or_create(&TypeLabel::of(type_url));
        // One atomic step: two requests at once cannot leave the smaller.
        g.inner()
            .fetch_max(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn set_nodes(&self, n: usize) {
        self.nodes.set(n as i64);
    }
}
