//! The autoscaler's end of the stat stream: a `sluice.autoscaler.v1.Stats` gRPC service that
//! turns the activators' batches into [`Report`]s on a channel.
//!
//! Each reporter (an activator) keeps one client stream open and sends a batch per period
//! and an immediate batch per poke. Every entry is checked before it is passed on: an entry
//! without a namespace or revision, or with a negative or non-finite figure, is dropped and
//! counted (never a panic, never a poisoned decider). The channel is bounded: a slow consumer
//! makes the stream wait (gRPC flow control pushes back to the reporter, whose own queue
//! drops whole periods), so memory stays bounded on both sides.
//!
//! `sluice up` runs the activator and the autoscaler in one process and hands the figures over
//! in memory; this service is the path when they run apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_proto::autoscaler::v1::stats_server::{Stats, StatsServer};
use sluice_proto::autoscaler::v1::{ReportAck, RevisionStat, StatBatch};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::closer::StreamCloser;
use crate::decider::Stat;
use crate::scaler::RevisionKey;

/// One revision's figures from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Who measured (the activator's id).
    pub source: String,
    /// The revision.
    pub revision: RevisionKey,
    /// What it measured over its period.
    pub stat: Stat,
    /// Sent at once because a request waits at zero: decide now.
    pub poke: bool,
}

/// The `Stats` service; clone it freely (the clones share the channel and counters).
#[derive(Debug, Clone)]
pub struct StatsIngest {
    reports: mpsc::Sender<Report>,
    dropped: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    closer: StreamCloser,
}

impl StatsIngest {
    /// The service and the receiving end of its reports (`capacity` reports may wait).
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Report>) {
        let (reports, rx) = mpsc::channel(capacity.max(1));
        let ingest = Self {
            reports,
            dropped: Arc::default(),
            batches: Arc::default(),
            closer: StreamCloser::default(),
        };
        (ingest, rx)
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> StatsServer<Self> {
        StatsServer::new(self)
    }

    /// Ends every open stream (`UNAVAILABLE`), and new ones until [`Self::accept_streams`]:
    /// the reporters reconnect, through their
    /// Service, to the replica that decides now (a replica that lost its Lease calls this).
    pub fn close_streams(&self) {
        self.closer.close_all();
    }

    /// Takes streams again after [`Self::close_streams`] (until then new streams are ended at
    /// once, so the reporters reach the replica that decides).
    pub fn accept_streams(&self) {
        self.closer.accept();
    }

    /// Entries dropped as invalid so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Batches received so far, over all streams.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Checks one entry; `None` when it cannot be used.
fn report_of(source: &str, s: &RevisionStat) -> Option<Report> {
    let sane = |v: f64| v.is_finite() && v >= 0.0;
    if s.namespace.is_empty() || s.revision.is_empty() {
        return None;
    }
    if !sane(s.concurrency) || !sane(s.requests) {
        return None;
    }
    Some(Report {
        source: source.to_string(),
        revision: RevisionKey::new(&s.namespace, &s.revision),
        stat: Stat {
            concurrency: s.concurrency,
            requests: s.requests,
        },
        poke: s.poke,
    })
}

#[tonic::async_trait]
impl Stats for StatsIngest {
    async fn report(
        &self,
        request: Request<Streaming<StatBatch>>,
    ) -> Result<Response<ReportAck>, Status> {
        let mut stream = request.into_inner();
        let mut batches = 0;
        let closed = self.closer.closed();
        tokio::pin!(closed);
        loop {
            let batch = tokio::select! {
                batch = stream.message() => match batch? {
                    Some(batch) => batch,
                    None => break,
                },
                status = &mut closed => return Err(status),
            };
            batches += 1;
            self.batches.fetch_add(1, Ordering::Relaxed);
            for s in &batch.stats {
                let Some(report) = report_of(&batch.source, s) else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(source = %batch.source, namespace = %s.namespace, revision = %s.revision, "invalid stat dropped");
                    continue;
                };
                if self.reports.send(report).await.is_err() {
                    return Err(Status::unavailable("the autoscaler is shutting down"));
                }
            }
        }
        Ok(Response::new(ReportAck { batches }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(ns: &str, rev: &str, concurrency: f64, requests: f64) -> RevisionStat {
        RevisionStat {
            namespace: ns.into(),
            revision: rev.into(),
            concurrency,
            requests,
            window_ms: 1000,
            poke: false,
        }
    }

    #[test]
    fn valid_entries_become_reports() {
        let r = report_of("activator-0", &stat("default", "hello-00001", 2.5, 10.0)).unwrap();
        assert_eq!(r.revision, RevisionKey::new("default", "hello-00001"));
        assert_eq!(
            r.stat,
            Stat {
                concurrency: 2.5,
                requests: 10.0
            }
        );
        assert_eq!(r.source, "activator-0");
    }

    #[test]
    fn nonsense_is_dropped_not_passed_on() {
        for bad in [
            stat("", "hello-00001", 1.0, 1.0),
            stat("default", "", 1.0, 1.0),
            stat("default", "hello-00001", -1.0, 1.0),
            stat("default", "hello-00001", f64::NAN, 1.0),
            stat("default", "hello-00001", 1.0, f64::INFINITY),
        ] {
            assert_eq!(report_of("a", &bad), None, "{bad:?}");
        }
    }
}
