//! What the activator tells the autoscaler: per revision, the time-averaged
//! concurrency and the request count of each report period (1 s).
//!
//! Concurrency is ∫ in-flight dt / period — the same quantity upstream's
//! activator reports (`AverageConcurrentRequests`) and the KPA divides by the
//! per-instance target. A request counts from its arrival at the activator
//! (time spent waiting for capacity included: that is demand the revision
//! must scale for) until its response has been sent completely.
//!
//! The accumulator is pure: the caller passes the time, so tests drive it with
//! paused time. Areas are kept in integer request·nanoseconds, so known loads
//! give exact results.

use std::time::Duration;

use tokio::time::Instant;

/// One report period's figures for one revision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodStat {
    /// Time-averaged concurrency over the period.
    pub concurrency: f64,
    /// Requests that arrived during the period.
    pub requests: u64,
    /// The period's length.
    pub window: Duration,
}

/// Accumulates one revision's in-flight requests over time.
#[derive(Debug, Clone)]
pub struct ConcurrencyAccumulator {
    in_flight: u64,
    period_start: Instant,
    last_change: Instant,
    /// ∫ in-flight dt from `period_start` to `last_change`, in request·ns.
    area: u128,
    requests: u64,
}

impl ConcurrencyAccumulator {
    /// An accumulator whose first period starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            period_start: now,
            last_change: now,
            area: 0,
            requests: 0,
        }
    }

    /// A request arrived.
    pub fn request_in(&mut self, now: Instant) {
        self.advance(now);
        self.in_flight += 1;
        self.requests += 1;
    }

    /// A request finished (its response was sent, or it failed).
    pub fn request_out(&mut self, now: Instant) {
        self.advance(now);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Whether the period so far saw nothing at all (no request in flight,
    /// none arrived): such revisions are left out of reports, as upstream.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.requests == 0 && self.area == 0
    }

    /// Closes the period at `now`, returns its figures and starts the next.
    /// A zero-length period reports the current in-flight count.
    pub fn report(&mut self, now: Instant) -> PeriodStat {
        self.advance(now);
        let window = self
            .last_change
            .saturating_duration_since(self.period_start);
        let nanos = window.as_nanos();
        let concurrency = if nanos == 0 {
            self.in_flight as f64
        } else {
            self.area as f64 / nanos as f64
        };
        let stat = PeriodStat {
            concurrency,
            requests: self.requests,
            window,
        };
        self.period_start = self.last_change;
        self.area = 0;
        self.requests = 0;
        stat
    }

    /// Adds the area since the last change. Time never runs backwards here: an
    /// earlier `now` (callers racing on the clock) counts as no time passed.
    fn advance(&mut self, now: Instant) {
        if now > self.last_change {
            let dt = now.duration_since(self.last_change).as_nanos();
            self.area += u128::from(self.in_flight) * dt;
            self.last_change = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn two_half_second_requests_in_one_second_average_one() {
        let t0 = Instant::now();
        let mut acc = ConcurrencyAccumulator::new(t0);
        acc.request_in(t0);
        acc.request_in(t0 + 200 * MS);
        acc.request_out(t0 + 500 * MS);
        acc.request_out(t0 + 700 * MS);
        let stat = acc.report(t0 + 1000 * MS);
        assert_eq!(stat.concurrency, 1.0);
        assert_eq!(stat.requests, 2);
        assert_eq!(stat.window, 1000 * MS);
        assert!(acc.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_request_spans_periods() {
        let t0 = Instant::now();
        let mut acc = ConcurrencyAccumulator::new(t0);
        acc.request_in(t0 + 750 * MS);
        let first = acc.report(t0 + 1000 * MS);
        assert_eq!((first.concurrency, first.requests), (0.25, 1));
        let second = acc.report(t0 + 2000 * MS);
        assert_eq!((second.concurrency, second.requests), (1.0, 0));
        assert!(!acc.is_idle(), "still in flight");
        acc.request_out(t0 + 2500 * MS);
        let third = acc.report(t0 + 3000 * MS);
        assert_eq!((third.concurrency, third.requests), (0.5, 0));
        assert!(acc.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn steady_load_with_paused_clock() {
        // 10 requests in flight at all times for a whole period: 10.0.
        let mut acc = ConcurrencyAccumulator::new(Instant::now());
        for _ in 0..10 {
            acc.request_in(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let stat = acc.report(Instant::now());
        assert_eq!(stat.concurrency, 10.0);
        assert_eq!(stat.requests, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_length_period_and_clock_skew_are_harmless() {
        let t0 = Instant::now();
        let mut acc = ConcurrencyAccumulator::new(t0 + 10 * MS);
        acc.request_in(t0); // earlier than the period start: no negative time
        let stat = acc.report(t0 + 10 * MS);
        assert_eq!(stat.window, Duration::ZERO);
        assert_eq!(stat.concurrency, 1.0);
        acc.request_out(t0);
        acc.request_out(t0); // more outs than ins: saturates
        assert_eq!(acc.in_flight(), 0);
    }

    proptest! {
        /// Requests of known durations placed anywhere inside one period:
        /// the average is their total duration over the period.
        #[test]
        fn average_is_total_busy_time_over_the_period(reqs in prop::collection::vec((0u64..1000, 0u64..1000), 0..50)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let t0 = Instant::now();
                let mut events = Vec::new();
                let mut busy = 0u64;
                for &(a, b) in &reqs {
                    let (start, end) = (a.min(b), a.max(b));
                    busy += end - start;
                    events.push((start, 0));
                    events.push((end, 1));
                }
                // Process in time order (ins before outs at the same instant,
                // so a zero-length request never leaves before it arrives).
                events.sort();
                let mut acc = ConcurrencyAccumulator::new(t0);
                for (at, out) in events {
                    let when = t0 + Duration::from_millis(at);
                    if out == 0 { acc.request_in(when) } else { acc.request_out(when) }
                }
                let stat = acc.report(t0 + 1000 * MS);
                prop_assert!((stat.concurrency - busy as f64 / 1000.0).abs() < 1e-9);
                prop_assert_eq!(stat.requests, reqs.len() as u64);
                Ok(())
            })?;
        }
    }
}
