//! Per-Revision concurrency on the direct path, measured by Envoy itself.
//!
//! Knative counts concurrency in a queue-proxy in front of every pod: one more hop on every
//! request. Sluice has no such hop. Envoy already holds every request of a Revision's cluster,
//! so its per-cluster gauges `upstream_rq_active` (requests on upstream connections) and
//! `upstream_rq_pending_active` (requests queued by the cluster's per-instance limit) add up to
//! the Revision's concurrency, and the counter `upstream_rq_total` gives its request rate.
//! [`EnvoySampler`] reads them from Envoy's admin interface (`/stats`, filtered to those three
//! per cluster: they are in the bootstrap's stats inclusion list) [`SAMPLE_INTERVAL`] apart
//! and averages the samples of each second, which estimates the time-averaged concurrency the
//! KPA wants without bias (sampling at fixed points of a stationary load). Why not the other
//! options DESIGN.md lists: Envoy's MetricsService pushes *every* stat (thousands per Revision
//! set) on one flush interval, and LRS reports per endpoint and needs a load-reporting server;
//! a filtered admin read costs Envoy's main thread one regex pass and us a few hundred bytes
//! per Revision. When the activator is in the path it measures the Revision's requests
//! itself, so this sampler only matters for Revisions served directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_autoscaler::Stat;
use sluice_serving::serving::Key;
use sluice_serving::serving::kingress::REVISION_SERVICE_PORT;
use sluice_serving::translate::names::service_of_stat_cluster;

/// How often Envoy's gauges are read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Which stats to read: the three figures of every cluster.
const STATS_FILTER: &str =
    r"^cluster\.[^.]+\.(upstream_rq_active|upstream_rq_pending_active|upstream_rq_total)$";

/// The admin path reading [`STATS_FILTER`] as text (the regex percent-encoded).
fn stats_path() -> String {
    let mut path = String::from("/stats?filter=");
    for b in STATS_FILTER.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// One cluster's figures in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests in flight (active + pending).
    pub in_flight: u64,
    /// Requests ever sent (a counter).
    pub total: u64,
}

#[derive(Debug, Default)]
struct Acc {
    sum: u64,
    samples: u32,
    last_total: Option<u64>,
    requests: u64,
}

/// Reads Envoy's per-Revision figures from its admin interface.
#[derive(Debug, Clone)]
pub struct EnvoyStats {
    admin: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl EnvoyStats {
    /// A reader of the Envoy whose admin interface is at `admin`.
    pub fn new(admin: SocketAddr) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(1)));
        Self {
            admin,
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }

    /// One sample of every Revision cluster. An Envoy that is not (yet) answering is an error
    /// the caller logs at debug level and retries on the next interval.
    pub async fn read(&self) -> Result<HashMap<Key, Sample>, String> {
        let uri = format!("http://{}{}", self.admin, stats_path());
        let req = hyper::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(2), self.client.request(req))
            .await
            .map_err(|_| "Envoy's admin interface did not answer in 2 s".to_string())?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("Envoy's admin /stats answered {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(parse(&String::from_utf8_lossy(&body)))
    }
}

/// Turns each second's samples of Envoy's gauges into a [`Stat`] per Revision.
#[derive(Debug, Default)]
pub struct EnvoySampler {
    acc: HashMap<Key, Acc>,
    wanted: bool,
}

impl EnvoySampler {
    /// Whether any Revision is served directly (else reading Envoy is wasted work: the
    /// activator measures every Revision in its path).
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Says whether samples are wanted; when not, what was gathered is dropped.
    pub fn set_wanted(&mut self, wanted: bool) {
        if !wanted {
            self.acc.clear();
        }
        self.wanted = wanted;
    }

    /// Adds one sample of every Revision cluster.
    pub fn add(&mut self, samples: &HashMap<Key, Sample>) {
        for (key, s) in samples {
            let acc = self.acc.entry(key.clone()).or_default();
            acc.sum += s.in_flight;
            acc.samples += 1;
            if let Some(last) = acc.last_total {
                acc.requests += s.total.saturating_sub(last);
            }
            acc.last_total = Some(s.total);
        }
        self.acc.retain(|k, _| samples.contains_key(k));
    }

    /// Closes the period: each Revision's mean in-flight count and the requests sent.
    pub fn take(&mut self) -> HashMap<Key, Stat> {
        self.acc
            .iter_mut()
            .filter(|(_, a)| a.samples > 0)
            .map(|(k, a)| {
                let stat = Stat {
                    concurrency: a.sum as f64 / f64::from(a.samples),
                    requests: a.requests as f64,
                };
                a.sum = 0;
                a.samples = 0;
                a.requests = 0;
                (k.clone(), stat)
            })
            .collect()
    }
}

/// Parses Envoy's text stats (`cluster.<ns>/<revision>_80.<stat>: <value>`) into each Revision
/// cluster's sample. Other clusters and lines are skipped.
pub fn parse(text: &str) -> HashMap<Key, Sample> {
    let mut out: HashMap<Key, Sample> = HashMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("cluster.") else {
            continue;
        };
        let Some((cluster, stat)) = rest.rsplit_once('.') else {
            continue;
        };
        // Envoy writes the cluster `ns/name:80` as `ns/name_80` in stat names.
        let Some((ns, revision)) = service_of_stat_cluster(cluster, REVISION_SERVICE_PORT) else {
            continue;
        };
        let sample = out.entry(Key::new(ns, revision)).or_default();
        match stat {
            "upstream_rq_active" | "upstream_rq_pending_active" => sample.in_flight += value,
            "upstream_rq_total" => sample.total = value,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
cluster.default/hello-00001_80.upstream_rq_active: 3
cluster.default/hello-00001_80.upstream_rq_pending_active: 2
cluster.default/hello-00001_80.upstream_rq_total: 120
cluster.shop/api-00002_80.upstream_rq_active: 0
cluster.shop/api-00002_80.upstream_rq_pending_active: 0
cluster.shop/api-00002_80.upstream_rq_total: 7
cluster.xds_cluster.upstream_rq_active: 1
cluster.default/plain_8080.upstream_rq_active: 9
";

    #[test]
    fn parses_revision_clusters_only() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            s[&Key::new("default", "hello-00001")],
            Sample {
                in_flight: 5,
                total: 120
            }
        );
        assert_eq!(
            s[&Key::new("shop", "api-00002")],
            Sample {
                in_flight: 0,
                total: 7
            }
        );
    }

    #[test]
    fn a_period_is_the_mean_of_its_samples_and_the_counter_delta() {
        let mut sampler = EnvoySampler::default();
        let key = Key::new("default", "hello-00001");
        for (in_flight, total) in [(4, 100), (2, 110), (3, 125), (3, 130)] {
            sampler.add(&HashMap::from([(key.clone(), Sample { in_flight, total })]));
        }
        let stat = sampler.take()[&key];
        assert_eq!(stat.concurrency, 3.0);
        assert_eq!(stat.requests, 30.0, "counted from the first sample on");
        sampler.add(&HashMap::from([(
            key.clone(),
            Sample {
                in_flight: 1,
                total: 131,
            },
        )]));
        let stat = sampler.take()[&key];
        assert_eq!((stat.concurrency, stat.requests), (1.0, 1.0));
        assert!(sampler.take().is_empty(), "no sample: no figure");
    }
}
