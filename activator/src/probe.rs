//! Probing new instances before they get traffic.
//!
//! An instance the control plane reports ready may not accept connections
//! yet (endpoint updates race process start-up). Upstream's activator probes
//! each new pod before using it; so does this one: a new address goes to the
//! throttler only after a TCP connect to it succeeds, retried every
//! `probe_interval` (Knative: ~200 ms) for as long as the address stays in
//! the revision's set. Without a queue-proxy there is no probe endpoint to
//! ask, and the app's own paths may not answer probes, so "accepts
//! connections" is the readiness we can check. Addresses already probed stay
//! ready across updates; one that leaves and comes back is probed again.
//!
//! Lock order: the probe table, then (inside the throttler) a revision.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::activator::{Activator, Inner};
use crate::error::Error;
use crate::revision::RevisionKey;

/// How long one probe's connect may take.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One revision's instances as the control plane gave them, and which of
/// them have answered a probe.
#[derive(Debug, Default)]
pub(crate) struct Probed {
    desired: Vec<SocketAddr>,
    ready: HashSet<SocketAddr>,
    probing: HashSet<SocketAddr>,
}

impl Probed {
    /// The ready subset, in the control plane's order.
    fn ready_set(&self) -> Vec<SocketAddr> {
        self.desired
            .iter()
            .copied()
            .filter(|a| self.ready.contains(a))
            .collect()
    }
}

/// The probe table of all revisions.
pub(crate) type ProbeTable = HashMap<RevisionKey, Probed>;

impl Activator {
    /// Replaces a revision's instances. With probing on (the default), new
    /// addresses get traffic once a TCP connect to them succeeds (retried
    /// every `probe_interval` while they stay listed); without it, at once.
    /// Requests in flight on an instance that leaves keep their slot until
    /// they finish.
    pub fn update_instances(&self, key: &RevisionKey, addrs: &[SocketAddr]) -> Result<(), Error> {
        let throttler = &self.inner.throttler;
        if !throttler.contains(key) {
            return Err(Error::UnknownRevision(key.clone()));
        }
        let Some(interval) = self.inner.config.probe_interval else {
            return throttler.update_instances(key, addrs);
        };
        let mut table = self.probes();
        let probed = table.entry(key.clone()).or_default();
        probed.desired.clear();
        for &a in addrs {
            if !probed.desired.contains(&a) {
                probed.desired.push(a);
            }
        }
        let desired: HashSet<_> = probed.desired.iter().copied().collect();
        probed.ready.retain(|a| desired.contains(a));
        let new: Vec<_> = probed
            .desired
            .iter()
            .copied()
            .filter(|a| !probed.ready.contains(a) && !probed.probing.contains(a))
            .collect();
        probed.probing.extend(&new);
        throttler.update_instances(key, &probed.ready_set())?;
        drop(table);
        for addr in new {
            let inner = Arc::downgrade(&self.inner);
            tokio::spawn(probe(inner, key.clone(), addr, interval));
        }
        Ok(())
    }

    /// Replaces a revision's instances with this activator's share of them ([`crate::share`]:
    /// each pod with the most requests this activator may have on it). Otherwise as
    /// [`Activator::update_instances`].
    pub fn update_assigned(
        &self,
        key: &RevisionKey,
        assigned: &[(SocketAddr, u32)],
    ) -> Result<(), Error> {
        self.inner
            .throttler
            .set_shares(key, assigned.iter().copied().collect())?;
        let addrs: Vec<SocketAddr> = assigned.iter().map(|(a, _)| *a).collect();
        self.update_instances(key, &addrs)
    }

    /// Addresses of a revision still waiting for a successful probe.
    pub fn probing(&self, key: &RevisionKey) -> Vec<SocketAddr> {
        let table = self.probes();
        table.get(key).map_or_else(Vec::new, |p| {
            p.desired
                .iter()
                .copied()
                .filter(|a| p.probing.contains(a))
                .collect()
        })
    }

    /// Drops a revision's probe state (its probes stop at their next try).
    pub(crate) fn forget_probes(&self, key: &RevisionKey) {
        self.probes().remove(key);
    }

    fn probes(&self) -> MutexGuard<'_, ProbeTable> {
        self.inner
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Probes `addr` until it accepts a connection (then hands the revision's
/// new ready set to the throttler), leaves the revision's set, or the
/// activator is gone.
async fn probe(inner: Weak<Inner>, key: RevisionKey, addr: SocketAddr, interval: Duration) {
    loop {
        let ok = matches!(
            tokio::time::timeout(PROBE_CONNECT_TIMEOUT, TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        if !record(&inner, &key, addr, ok) {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Records one probe's outcome; true if the address should be probed again.
fn record(inner: &Weak<Inner>, key: &RevisionKey, addr: SocketAddr, ok: bool) -> bool {
    let Some(inner) = inner.upgrade() else {
        return false;
    };
    let activator = Activator { inner };
    let mut table = activator.probes();
    let Some(probed) = table.get_mut(key) else {
        return false;
    };
    if !probed.desired.contains(&addr) {
        probed.probing.remove(&addr);
        return false;
    }
    if !ok {
        return true;
    }
    probed.probing.remove(&addr);
    probed.ready.insert(addr);
    let ready = probed.ready_set();
    // Fails only if the revision was removed meanwhile: nothing to update.
    let _ = activator.inner.throttler.update_instances(key, &ready);
    tracing::debug!(revision = %key, %addr, "instance answered its probe");
    false
}
