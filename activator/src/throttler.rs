//! The per-revision throttler: which instance a request may go to, and when.
//!
//! Each revision has its ready instances (set from outside with
//! [`Throttler::update_instances`]), a breaker of `containerConcurrency` per
//! instance and a FIFO of waiting requests. [`Throttler::acquire`] returns a
//! [`Permit`] naming an instance with a free slot; dropping the permit frees
//! the slot and hands it straight to the oldest waiter.
//!
//! Compared with upstream (`revisionThrottler` in `throttler.go`):
//!
//! * **Bounded memory.** A revision's queue and the queue over all revisions
//!   have bounds ([`ThrottlerConfig`]); a request that finds its queue full is
//!   turned away at once ([`Error::QueueFull`], 503) instead of piling up
//!   (serving#13583: activator OOM under back-pressure). A waiting request
//!   holds only a oneshot channel here; its body stays unread in the socket.
//! * **No re-enqueue races.** Upstream checks a revision-wide semaphore, then
//!   a pod's breaker, and re-enqueues when they disagree. Here the pick, the
//!   breaker update and the hand-off to a waiter happen under one per-revision
//!   lock, so a free slot goes to exactly one request, oldest first.
//! * **Scale from zero.** A request that has to wait for a revision with no
//!   instance, when nobody else is waiting yet, sends a poke (the revision's
//!   key) on the poke channel, so the autoscaler can decide at once.
//!
//! The lock is a plain mutex held for a few instructions (never across an
//! await); revision lookup is lock-free (`ArcSwap`).

mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::state::{Global, Revision};
use crate::error::{Error, QueueScope};
use crate::revision::RevisionKey;

/// Queue bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlerConfig {
    /// The most requests that may wait for one revision (upstream's
    /// `breakerQueueDepth`, 10 000).
    pub revision_queue: usize,
    /// The most requests that may wait over all revisions. Each waiting
    /// request costs its connection's buffers and the request head (a few KiB
    /// to a few tens of KiB), so this bounds the activator's memory.
    pub global_queue: usize,
}

impl Default for ThrottlerConfig {
    fn default() -> Self {
        Self {
            revision_queue: 10_000,
            global_queue: 10_000,
        }
    }
}

/// Counters over all revisions (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottlerStats {
    /// Requests waiting now.
    pub queued: usize,
    /// The most requests that ever waited at once.
    pub peak_queued: usize,
    /// Requests that got an instance.
    pub admitted: u64,
    /// Requests that had to wait (and may still be waiting).
    pub waited: u64,
    /// Requests turned away because a queue was full.
    pub rejected: u64,
    /// Requests whose time ran out while waiting.
    pub timed_out: u64,
    /// Pokes sent.
    pub pokes: u64,
    /// Pokes dropped (poke channel full or closed).
    pub pokes_dropped: u64,
}

/// One revision's throttling state (for status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionThrottleStats {
    /// `containerConcurrency` (0 = unlimited).
    pub container_concurrency: u32,
    /// Ready instances and the requests in flight on each.
    pub instances: Vec<(SocketAddr, u32)>,
    /// Requests in flight on instances no longer ready.
    pub draining_in_flight: u32,
    /// Requests waiting now.
    pub queued: usize,
    /// The most requests that ever waited at once.
    pub peak_queued: usize,
}

/// The right to send one request to one instance; the slot is released when
/// the permit is dropped.
#[derive(Debug)]
pub struct Permit {
    revision: Option<Arc<Revision>>,
    addr: SocketAddr,
}

impl Permit {
    fn new(revision: Arc<Revision>, addr: SocketAddr) -> Self {
        Self {
            revision: Some(revision),
            addr,
        }
    }

    /// The instance to send the request to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forgets the slot without releasing it (the caller releases it itself,
    /// already holding the revision's lock).
    fn disarm(&mut self) {
        self.revision = None;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(rev) = self.revision.take() {
            rev.release(self.addr);
        }
    }
}

/// Per-revision throttling with bounded queues; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Throttler {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ThrottlerConfig,
    global: Arc<Global>,
    revisions: ArcSwap<HashMap<RevisionKey, Arc<Revision>>>,
    /// Serialises writers of `revisions` (readers never take it).
    writer: Mutex<()>,
    pokes: mpsc::Sender<RevisionKey>,
    seed: u64,
}

impl Throttler {
    /// A throttler with `config` bounds that sends pokes on `pokes` (a
    /// bounded channel: if it is full the poke is dropped and counted; the
    /// next stat report carries the demand anyway).
    pub fn new(config: ThrottlerConfig, pokes: mpsc::Sender<RevisionKey>) -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            shared: Arc::new(Shared {
                config,
                global: Arc::new(Global::default()),
                revisions: ArcSwap::from_pointee(HashMap::new()),
                writer: Mutex::new(()),
                pokes,
                seed: RandomState::new().hash_one(0u8),
            }),
        }
    }

    /// The queue bounds.
    pub fn config(&self) -> ThrottlerConfig {
        self.shared.config
    }

    /// Registers a revision or changes its `containerConcurrency` (breaker
    /// capacities and balancing policy follow; raising it admits waiters).
    pub fn set_revision(&self, key: &RevisionKey, container_concurrency: u32) {
        let _w = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.shared.revisions.load();
        if let Some(rev) = current.get(key) {
            let mut st = rev.lock();
            st.set_container_concurrency(container_concurrency);
            rev.dispatch(&mut st);
            return;
        }
        let mut next = HashMap::clone(&current);
        let seed = self.shared.seed ^ (next.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        next.insert(
            key.clone(),
            Arc::new(Revision::new(
                Arc::clone(&self.shared.global),
                container_concurrency,
                seed,
            )),
        );
        self.shared.revisions.store(Arc::new(next));
    }

    /// Replaces a revision's ready instances (duplicates ignored, order kept:
    /// first-available balancing packs in this order). Requests in flight on
    /// an instance that leaves keep their slot until they finish; waiting
    /// requests are admitted if the new set has room.
    pub fn update_instances(&self, key: &RevisionKey, addrs: &[SocketAddr]) -> Result<(), Error> {
        let rev = self
            .revision(key)
            .ok_or_else(|| Error::UnknownRevision(key.clone()))?;
        let mut st = rev.lock();
        st.set_instances(addrs);
        rev.dispatch(&mut st);
        Ok(())
    }

    /// Gives some of a revision's instances a capacity of their own instead of its
    /// `containerConcurrency` (this activator's share of them, [`crate::share::assign`]);
    /// instances not named keep `containerConcurrency`. Raising a capacity admits waiters;
    /// lowering one keeps the requests already admitted.
    pub fn set_shares(
        &self,
        key: &RevisionKey,
        shares: HashMap<SocketAddr, u32>,
    ) -> Result<(), Error> {
        let rev = self
            .revision(key)
            .ok_or_else(|| Error::UnknownRevision(key.clone()))?;
        let mut st = rev.lock();
        st.set_shares(shares);
        rev.dispatch(&mut st);
        Ok(())
    }

    /// Forgets a revision. Its waiting requests fail with
    /// [`Error::RevisionRemoved`]; requests in flight finish normally.
    pub fn remove_revision(&self, key: &RevisionKey) {
        let removed = {
            let _w = self
                .shared
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let current = self.shared.revisions.load();
            if !current.contains_key(key) {
                return;
            }
            let mut next = HashMap::clone(&current);
            let removed = next.remove(key);
            self.shared.revisions.store(Arc::new(next));
            removed
        };
        if let Some(rev) = removed {
            let mut st = rev.lock();
            st.removed = true;
            let dropped = std::mem::take(&mut st.waiters).len();
            rev.global.queued.fetch_sub(dropped, Ordering::AcqRel);
        }
    }

    /// Whether `key` is registered.
    pub fn contains(&self, key: &RevisionKey) -> bool {
        self.shared.revisions.load().contains_key(key)
    }

    /// Waits (at most `timeout`) for a slot on one of the revision's
    /// instances. Fails at once with [`Error::QueueFull`] if it would have to
    /// wait and a queue is at its bound, with [`Error::NoCapacity`] if the
    /// time runs out, [`Error::UnknownRevision`] / [`Error::RevisionRemoved`]
    /// if the revision is not (or no longer) registered. Dropping the future
    /// leaves the queue.
    pub async fn acquire(&self, key: &RevisionKey, timeout: Duration) -> Result<Permit, Error> {
        let start = Instant::now();
        let rev = self
            .revision(key)
            .ok_or_else(|| Error::UnknownRevision(key.clone()))?;
        let global = &rev.global;
        let rx = {
            let mut guard = rev.lock();
            let st = &mut *guard;
            if st.removed {
                return Err(Error::RevisionRemoved(key.clone()));
            }
            if st.waiters.is_empty()
                && let Some(i) = st.balancer.acquire(&mut st.instances)
            {
                global.admitted.fetch_add(1, Ordering::Relaxed);
                return Ok(Permit::new(Arc::clone(&rev), st.instances[i].addr));
            }
            let bounds = self.shared.config;
            if st.waiters.len() >= bounds.revision_queue {
                return Err(self.reject(key, QueueScope::Revision, bounds.revision_queue));
            }
            let bound = bounds.global_queue;
            let queued = global
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    (q < bound).then_some(q + 1)
                });
            let Ok(before) = queued else {
                return Err(self.reject(key, QueueScope::Global, bound));
            };
            global.peak_queued.fetch_max(before + 1, Ordering::Relaxed);
            global.waited.fetch_add(1, Ordering::Relaxed);
            if st.instances.is_empty() && st.waiters.is_empty() {
                self.poke(key);
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_waiter;
            st.next_waiter += 1;
            st.waiters.insert(id, tx);
            st.peak_waiters = st.peak_waiters.max(st.waiters.len());
            Waiter {
                rev: &rev,
                id,
                rx,
                queued: true,
            }
        };
        self.wait(key, rx, start, timeout).await
    }

    async fn wait(
        &self,
        key: &RevisionKey,
        mut waiter: Waiter<'_>,
        start: Instant,
        timeout: Duration,
    ) -> Result<Permit, Error> {
        let received =
            tokio::time::timeout_at(crate::revision::deadline(start, timeout), &mut waiter.rx)
                .await;
        if received.is_ok() {
            // Whoever sent (or dropped) our sender took us off the queue.
            waiter.queued = false;
        }
        match received {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::RevisionRemoved(key.clone())),
            Err(_) => {
                if waiter.leave() {
                    waiter.rev.global.timed_out.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::NoCapacity {
                        revision: key.clone(),
                        waited: start.elapsed(),
                    });
                }
                // Served (or removed) at the deadline: take what was sent.
                waiter
                    .rx
                    .try_recv()
                    .map_err(|_| Error::RevisionRemoved(key.clone()))
            }
        }
    }

    /// Counters over all revisions.
    pub fn stats(&self) -> ThrottlerStats {
        let g = &self.shared.global;
        ThrottlerStats {
            queued: g.queued.load(Ordering::Acquire),
            peak_queued: g.peak_queued.load(Ordering::Relaxed),
            admitted: g.admitted.load(Ordering::Relaxed),
            waited: g.waited.load(Ordering::Relaxed),
            rejected: g.rejected.load(Ordering::Relaxed),
            timed_out: g.timed_out.load(Ordering::Relaxed),
            pokes: g.pokes.load(Ordering::Relaxed),
            pokes_dropped: g.pokes_dropped.load(Ordering::Relaxed),
        }
    }

    /// One revision's state, if registered.
    pub fn revision_stats(&self, key: &RevisionKey) -> Option<RevisionThrottleStats> {
        let rev = self.revision(key)?;
        let st = rev.lock();
        Some(RevisionThrottleStats {
            container_concurrency: st.container_concurrency,
            instances: st
                .instances
                .iter()
                .map(|i| (i.addr, i.breaker.in_flight()))
                .collect(),
            draining_in_flight: st.draining.iter().map(|i| i.breaker.in_flight()).sum(),
            queued: st.waiters.len(),
            peak_queued: st.peak_waiters,
        })
    }

    /// Requests in flight on one instance of a revision, whether it is still in the ready set
    /// or draining after leaving it (0 for an unknown revision or instance).
    pub fn in_flight_on(&self, key: &RevisionKey, addr: SocketAddr) -> u32 {
        let Some(rev) = self.revision(key) else {
            return 0;
        };
        let st = rev.lock();
        st.instances
            .iter()
            .chain(st.draining.iter())
            .filter(|i| i.addr == addr)
            .map(|i| i.breaker.in_flight())
            .sum()
    }

    fn revision(&self, key: &RevisionKey) -> Option<Arc<Revision>> {
        self.shared.revisions.load().get(key).cloned()
    }

    fn reject(&self, key: &RevisionKey, scope: QueueScope, bound: usize) -> Error {
        self.shared.global.rejected.fetch_add(1, Ordering::Relaxed);
        Error::QueueFull {
            revision: key.clone(),
            scope,
            bound,
        }
    }

    fn poke(&self, key: &RevisionKey) {
        let g = &self.shared.global;
        match self.shared.pokes.try_send(key.clone()) {
            Ok(()) => g.pokes.fetch_add(1, Ordering::Relaxed),
            Err(_) => g.pokes_dropped.fetch_add(1, Ordering::Relaxed),
        };
        tracing::debug!(revision = %key, "poke: request waiting for a revision with no instance");
    }
}

/// A place in a revision's queue; leaving it (drop) frees the place.
struct Waiter<'a> {
    rev: &'a Arc<Revision>,
    id: u64,
    rx: oneshot::Receiver<Permit>,
    /// Still (possibly) in the queue.
    queued: bool,
}

impl Waiter<'_> {
    /// Leaves the queue; false if no longer in it (served or removed).
    fn leave(&mut self) -> bool {
        if !std::mem::replace(&mut self.queued, false) {
            return false;
        }
        let mut st = self.rev.lock();
        let left = st.waiters.remove(&self.id).is_some();
        if left {
            self.rev.global.queued.fetch_sub(1, Ordering::AcqRel);
        }
        left
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        // `rx` (and any permit sent into it) drops after this, outside the lock.
        self.leave();
    }
}

#[cfg(test)]
mod tests;
