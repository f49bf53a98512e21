//! Per-instance in-flight accounting: a breaker of capacity
//! `containerConcurrency` (0 = unlimited).
//!
//! Upstream Knative's `queue.Breaker` is a semaphore plus its own wait queue.
//! Here the breaker is only the count: waiting happens once, per revision, in
//! the [`Throttler`](crate::Throttler), which owns every breaker of a revision
//! behind one lock. Checking capacity and taking it are therefore one atomic
//! step, so the revision-level and instance-level counts cannot race (upstream
//! re-enqueues requests when they do).

/// In-flight requests on one instance against its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    capacity: u32,
    in_flight: u32,
}

impl Breaker {
    /// A breaker admitting at most `capacity` concurrent requests; 0 means
    /// unlimited (Knative's `containerConcurrency: 0`).
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            in_flight: 0,
        }
    }

    /// The configured capacity (0 = unlimited).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Requests currently admitted and not yet released.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Whether one more request would be admitted.
    pub fn has_capacity(&self) -> bool {
        self.capacity == 0 || self.in_flight < self.capacity
    }

    /// Free slots; `None` when unlimited.
    pub fn available(&self) -> Option<u32> {
        (self.capacity != 0).then(|| self.capacity.saturating_sub(self.in_flight))
    }

    /// Admits one request if there is capacity; returns whether it did.
    pub fn try_acquire(&mut self) -> bool {
        if self.has_capacity() {
            self.in_flight = self.in_flight.saturating_add(1);
            true
        } else {
            false
        }
    }

    /// Releases one admitted request. Releasing more than was admitted is
    /// ignored (the count never underflows).
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Changes the capacity. Requests already admitted stay admitted even when
    /// the new capacity is lower; no new ones are admitted until the count
    /// drops below it.
    pub fn set_capacity(&mut self, capacity: u32) {
        self.capacity = capacity;
    }
}

impl AsMut<Breaker> for Breaker {
    fn as_mut(&mut self) -> &mut Breaker {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_capacity() {
        let mut b = Breaker::new(2);
        assert!(b.try_acquire());
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.available(), Some(0));
        b.release();
        assert!(b.has_capacity());
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
    }

    #[test]
    fn zero_is_unlimited() {
        let mut b = Breaker::new(0);
        for _ in 0..10_000 {
            assert!(b.try_acquire());
        }
        assert_eq!(b.in_flight(), 10_000);
        assert_eq!(b.available(), None);
    }

    #[test]
    fn release_never_underflows() {
        let mut b = Breaker::new(1);
        b.release();
        assert_eq!(b.in_flight(), 0);
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
    }

    #[test]
    fn lowering_capacity_keeps_admitted_requests() {
        let mut b = Breaker::new(3);
        for _ in 0..3 {
            assert!(b.try_acquire());
        }
        b.set_capacity(1);
        assert_eq!(b.in_flight(), 3);
        assert!(!b.has_capacity());
        b.release();
        b.release();
        assert!(!b.has_capacity(), "1 in flight, capacity 1");
        b.release();
        assert!(b.try_acquire());
    }
}
