//! Prometheus metrics of the proxy path (`prometheus-client`).
//!
//! Register them under the process's `sluice` prefix with
//! [`Activator::register_metrics`]; names then read
//! `sluice_activator_requests_total{code}`,
//! `sluice_activator_failures_total{kind}`,
//! `sluice_activator_response_start_seconds` (arrival → response head, queue
//! wait included), and the throttler's counters read at scrape time:
//! `sluice_activator_queued`, `…_queue_peak`, `…_admitted_total`,
//! `…_waited_total`, `…_rejected_total`, `…_timed_out_total`,
//! `…_pokes_total`, `…_pokes_dropped_total`.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::activator::Activator;
use crate::throttler::Throttler;

/// Responses by status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    code: u16,
}

/// Failures by cause ([`crate::Error::kind`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    kind: &'static str,
}

/// The proxy's own metrics (the throttler's are read at scrape time).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    requests: Family<CodeLabel, Counter>,
    failures: Family<KindLabel, Counter>,
    response_start: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            failures: Family::default(),
            // 100 µs … ~13 s.
            response_start: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
        }
    }
}

impl Metrics {
    /// One response sent with `code`, its head `seconds` after arrival.
    pub fn response(&self, code: u16, seconds: f64) {
        self.requests.get_or_create(&CodeLabel { code }).inc();
        self.response_start.observe(seconds);
    }

    /// One request failed for `kind`.
    pub fn failure(&self, kind: &'static str) {
        self.failures.get_or_create(&KindLabel { kind }).inc();
    }
}

impl Activator {
    /// Registers the activator's metrics in `registry` (names under
    /// `activator_`; see `metrics.rs`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("activator");
        let m = &self.inner.metrics;
        sub.register(
            "requests",
            "Responses sent, by status code",
            m.requests.clone(),
        );
        sub.register(
            "failures",
            "Requests that failed in the activator, by cause",
            m.failures.clone(),
        );
        sub.register(
            "response_start_seconds",
            "Time from a request's arrival to its response head, queue wait included",
            m.response_start.clone(),
        );
        sub.register_collector(Box::new(ThrottlerCollector(self.inner.throttler.clone())));
    }
}

/// Reads the throttler's counters at scrape time.
struct ThrottlerCollector(Throttler);

impl fmt::Debug for ThrottlerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThrottlerCollector")
    }
}

impl Collector for ThrottlerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.0.stats();
        let gauges = [
            ("queued", "Requests waiting for capacity now", s.queued),
            (
                "queue_peak",
                "Most requests ever waiting at once",
                s.peak_queued,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            ("admitted", "Requests that got an instance", s.admitted),
            ("waited", "Requests that had to wait for capacity", s.waited),
            (
                "rejected",
                "Requests shed because a queue was full",
                s.rejected,
            ),
            (
                "timed_out",
                "Requests whose time ran out while waiting",
                s.timed_out,
            ),
            ("pokes", "Pokes sent to the autoscaler", s.pokes),
            (
                "pokes_dropped",
                "Pokes dropped (channel full)",
                s.pokes_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::activator::ActivatorConfig;

    #[tokio::test]
    async fn metrics_render_with_the_sluice_prefix() {
        let (activator, _pokes) = Activator::new(ActivatorConfig::default());
        activator.inner.metrics.response(503, 0.002);
        activator.inner.metrics.failure("queue_full");
        let mut registry = Registry::with_prefix("sluice");
        activator.register_metrics(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "sluice_activator_requests_total{code=\"503\"} 1",
            "sluice_activator_failures_total{kind=\"queue_full\"} 1",
            "sluice_activator_response_start_seconds_count 1",
            "sluice_activator_queued 0",
            "sluice_activator_rejected_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
