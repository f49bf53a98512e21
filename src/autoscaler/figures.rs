//! The activators' figures: in proxy mode a Revision's concurrency is what the activators in
//! its path measured (time-averaged over each second, as upstream's activator reports it),
//! summed over the activators, instead of Envoy's — every request they hold also passes
//! through an Envoy cluster of the Revision, so adding both would count it twice.
//!
//! Each activator reports each second for the Revisions it saw traffic for. The latest report
//! of each (Revision, activator) counts while it is fresh ([`FRESH`]). The caller keeps
//! Envoy's figure when it is the higher one: an activator whose stream is down (reconnecting
//! after a failover, say) reports nothing, and must not make the Revision look idle.

use std::collections::HashMap;
use std::time::Duration;

use sluice_autoscaler::Stat;
use sluice_serving::serving::Key;
use tokio::time::Instant;

/// How long an activator's report counts: its period (1 s) and some jitter.
pub const FRESH: Duration = Duration::from_millis(1500);

/// The latest report of each activator for each Revision.
#[derive(Debug, Default)]
pub struct ActivatorFigures {
    latest: HashMap<Key, HashMap<String, (Stat, Instant)>>,
}

impl ActivatorFigures {
    /// Takes one activator's report for one Revision.
    pub fn record(&mut self, now: Instant, revision: Key, activator: String, stat: Stat) {
        self.latest
            .entry(revision)
            .or_default()
            .insert(activator, (stat, now));
    }

    /// Drops the reports that are no longer fresh, then gives each Revision some activator
    /// reported lately its figure: the sum over its activators.
    pub fn current(&mut self, now: Instant) -> HashMap<Key, Stat> {
        self.latest.retain(|_, by_activator| {
            by_activator.retain(|_, (_, at)| now.saturating_duration_since(*at) <= FRESH);
            !by_activator.is_empty()
        });
        self.latest
            .iter()
            .map(|(revision, by_activator)| {
                let sum = by_activator.values().fold(
                    Stat {
                        concurrency: 0.0,
                        requests: 0.0,
                    },
                    |acc, (s, _)| Stat {
                        concurrency: acc.concurrency + s.concurrency,
                        requests: acc.requests + s.requests,
                    },
                );
                (revision.clone(), sum)
            })
            .collect()
    }

    /// Whether no report is held.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(concurrency: f64, requests: f64) -> Stat {
        Stat {
            concurrency,
            requests,
        }
    }

    #[test]
    fn sums_the_activators_latest_fresh_reports() {
        let start = Instant::now();
        let hello = Key::new("default", "hello-00001");
        let mut f = ActivatorFigures::default();
        f.record(start, hello.clone(), "a0".into(), stat(1.0, 3.0));
        f.record(start, hello.clone(), "a1".into(), stat(2.5, 4.0));
        // A newer report of a0 replaces its older one.
        let later = start + Duration::from_millis(900);
        f.record(later, hello.clone(), "a0".into(), stat(2.0, 5.0));
        let now = start + Duration::from_millis(1000);
        assert_eq!(f.current(now)[&hello], stat(4.5, 9.0));
        // a1 goes quiet: only a0's counts, then nothing (Envoy's figure is used again).
        let now = start + Duration::from_millis(2000);
        assert_eq!(f.current(now)[&hello], stat(2.0, 5.0));
        let now = later + FRESH + Duration::from_millis(1);
        assert!(!f.current(now).contains_key(&hello));
        assert!(f.is_empty(), "stale reports are freed");
    }
}
