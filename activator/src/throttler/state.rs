//! One revision's throttling state: its instances with their breakers, its
//! balancer and its FIFO of waiting requests. Everything here runs under the
//! revision's lock and never blocks.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::Permit;
use crate::breaker::Breaker;
use crate::lb::{Balancer, Policy};

/// Counters shared by every revision of one throttler.
#[derive(Debug, Default)]
pub(super) struct Global {
    /// Requests waiting right now, over all revisions.
    pub queued: AtomicUsize,
    /// The most that ever waited at once.
    pub peak_queued: AtomicUsize,
    /// Requests that got an instance (at once or after waiting).
    pub admitted: AtomicU64,
    /// Requests that had to wait.
    pub waited: AtomicU64,
    /// Requests turned away because a queue was full.
    pub rejected: AtomicU64,
    /// Requests that gave up waiting (timeout).
    pub timed_out: AtomicU64,
    /// Pokes sent.
    pub pokes: AtomicU64,
    /// Pokes dropped because the poke channel was full or closed.
    pub pokes_dropped: AtomicU64,
}

/// An instance and its in-flight accounting.
#[derive(Debug)]
pub(super) struct Instance {
    pub addr: SocketAddr,
    pub breaker: Breaker,
}

impl AsMut<Breaker> for Instance {
    fn as_mut(&mut self) -> &mut Breaker {
        &mut self.breaker
    }
}

/// A revision as the throttler holds it.
#[derive(Debug)]
pub(super) struct Revision {
    pub global: Arc<Global>,
    state: Mutex<State>,
}

/// The lock-protected part of a [`Revision`].
#[derive(Debug)]
pub(super) struct State {
    pub container_concurrency: u32,
    /// Instances whose capacity is this activator's share rather than `containerConcurrency`
    /// (several activators in the Revision's path: [`crate::share`]).
    pub shares: HashMap<SocketAddr, u32>,
    /// Ready instances, in the order last given.
    pub instances: Vec<Instance>,
    /// Instances no longer ready but with requests still in flight: their
    /// count must survive until those finish (and if the instance comes back
    /// before then, it comes back with its count).
    pub draining: Vec<Instance>,
    pub balancer: Balancer,
    /// Waiting requests in arrival order (key = arrival sequence number).
    pub waiters: BTreeMap<u64, oneshot::Sender<Permit>>,
    pub next_waiter: u64,
    pub peak_waiters: usize,
    /// Set once the revision is removed: nothing is admitted any more.
    pub removed: bool,
}

impl Revision {
    pub fn new(global: Arc<Global>, container_concurrency: u32, seed: u64) -> Self {
        let policy = Policy::for_container_concurrency(container_concurrency);
        Self {
            global,
            state: Mutex::new(State {
                container_concurrency,
                shares: HashMap::new(),
                instances: Vec::new(),
                draining: Vec::new(),
                balancer: Balancer::new(policy, seed),
                waiters: BTreeMap::new(),
                next_waiter: 0,
                peak_waiters: 0,
                removed: false,
            }),
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave the
    /// counts half-updated (every mutation is a single step), so a poisoned
    /// lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands free capacity to waiting requests, oldest first, until either
    /// runs out.
    pub fn dispatch(self: &Arc<Self>, st: &mut State) {
        while !st.waiters.is_empty() {
            let Some(i) = st.balancer.acquire(&mut st.instances) else {
                return;
            };
            let addr = st.instances[i].addr;
            let Some((_, tx)) = st.waiters.pop_first() else {
                st.release(addr);
                return;
            };
            self.global.queued.fetch_sub(1, Ordering::AcqRel);
            if let Err(mut permit) = tx.send(Permit::new(Arc::clone(self), addr)) {
                // The waiter left between its last check and now; undo here,
                // under the lock we already hold, and try the next one.
                permit.disarm();
                st.release(addr);
            } else {
                self.global.admitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Releases a permit's slot and passes it on.
    pub fn release(self: &Arc<Self>, addr: SocketAddr) {
        let mut st = self.lock();
        st.release(addr);
        self.dispatch(&mut st);
    }
}

impl State {
    /// Releases one slot on `addr`, wherever the instance is now.
    pub fn release(&mut self, addr: SocketAddr) {
        if let Some(inst) = self.instances.iter_mut().find(|i| i.addr == addr) {
            inst.breaker.release();
        } else if let Some(pos) = self.draining.iter().position(|i| i.addr == addr) {
            self.draining[pos].breaker.release();
            if self.draining[pos].breaker.in_flight() == 0 {
                self.draining.swap_remove(pos);
            }
        }
    }

    /// Replaces the ready set, keeping the counts of instances that stay (or
    /// come back while draining).
    pub fn set_instances(&mut self, addrs: &[SocketAddr]) {
        let mut old = std::mem::take(&mut self.instances);
        let mut next = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            if next.iter().any(|i: &Instance| i.addr == addr) {
                continue;
            }
            let inst = if let Some(pos) = old.iter().position(|i| i.addr == addr) {
                old.swap_remove(pos)
            } else if let Some(pos) = self.draining.iter().position(|i| i.addr == addr) {
                self.draining.swap_remove(pos)
            } else {
                Instance {
                    addr,
                    breaker: Breaker::new(self.capacity_of(addr)),
                }
            };
            next.push(inst);
        }
        self.draining
            .extend(old.into_iter().filter(|i| i.breaker.in_flight() > 0));
        self.instances = next;
    }

    /// Changes `containerConcurrency`: every breaker's capacity and the policy.
    pub fn set_container_concurrency(&mut self, cc: u32) {
        self.container_concurrency = cc;
        self.recapacitate();
        self.balancer
            .set_policy(Policy::for_container_concurrency(cc));
    }

    /// Replaces the per-instance shares (instances not named get `containerConcurrency`).
    pub fn set_shares(&mut self, shares: HashMap<SocketAddr, u32>) {
        self.shares = shares;
        self.recapacitate();
    }

    /// The capacity of the breaker for `addr`.
    fn capacity_of(&self, addr: SocketAddr) -> u32 {
        self.shares
            .get(&addr)
            .copied()
            .unwrap_or(self.container_concurrency)
    }

    fn recapacitate(&mut self) {
        let capacities: Vec<u32> = self
            .instances
            .iter()
            .chain(self.draining.iter())
            .map(|i| self.capacity_of(i.addr))
            .collect();
        for (inst, cap) in self
            .instances
            .iter_mut()
            .chain(self.draining.iter_mut())
            .zip(capacities)
        {
            inst.breaker.set_capacity(cap);
        }
    }
}
