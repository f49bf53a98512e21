//! What a client holds, as far as its ACKs tell, and the rule that keeps a
//! route from reaching Envoy before the clusters it names are usable there.
//!
//! Sending clusters before routes is not enough: Envoy ACKs a CDS response as
//! soon as it accepts it, but a new EDS cluster only becomes usable ("warm")
//! once its endpoints arrive, which Envoy asks for after the cluster. A route
//! to a cluster that is still warming answers 503. So a RouteConfiguration is
//! held back until the client has ACKed every cluster it names and, for EDS
//! clusters, their ClusterLoadAssignment (any version: endpoint churn must not
//! delay routes). The stream re-checks after every ACK.

use std::collections::{HashMap, HashSet};

use crate::cache::Snapshot;
use crate::resource::{CLUSTER, ENDPOINT, ROUTE, Resource};

/// The clusters and endpoints a client ACKed, by name (routes wait on those only; other
/// types and versions are not kept — at 10k KIngresses that is tens of thousands of names).
#[derive(Debug, Default)]
pub(crate) struct Held {
    types: HashMap<&'static str, HashSet<String>>,
    /// Types whose newest response was NACKed: nothing waits on them.
    rejected: HashMap<String, bool>,
    /// Names ACKed by Delta answers since [`Self::take_acked`] last ran: only routes waiting
    /// on one of them can have become ready.
    acked: Vec<String>,
    /// Something else may have made any waiting route ready (a NACK or its end, a SotW
    /// answer, a reconnect's seed, or too many names to list): look at all of them.
    all: bool,
}

/// At most this many ACKed names are listed between two looks; past it, all waiting routes are
/// looked at (a cold start's answers come in batches of a few thousand).
const MAX_ACKED: usize = 1 << 18;

/// Which waiting resources to look at again ([`Held::take_acked`]).
#[derive(Debug)]
pub(crate) enum Recheck {
    /// Every one.
    All,
    /// Those waiting on these names.
    Names(Vec<String>),
}

impl Held {
    /// A SotW ACK: the response held the whole set of its type.
    pub fn replace(&mut self, type_url: &str, resources: &[(String, String, u64)]) {
        if let Some(t) = self.names(type_url) {
            t.clear();
            t.extend(resources.iter().map(|(n, _, _)| n.clone()));
            self.all = true;
        }
        self.accepted(type_url);
    }

    /// The newest response of `type_url` was accepted.
    fn accepted(&mut self, type_url: &str) {
        if self.rejected.insert(type_url.to_string(), false) == Some(true) {
            self.all = true;
        }
    }

    /// The ACKed names of `type_url`, when it is a type routes wait on.
    fn names(&mut self, type_url: &str) -> Option<&mut HashSet<String>> {
        let t = [CLUSTER, ENDPOINT].into_iter().find(|t| *t == type_url)?;
        Some(self.types.entry(t).or_default())
    }

    /// A Delta ACK: additions and removals.
    pub fn apply(
        &mut self,
        type_url: &str,
        resources: &[(String, String, u64)],
        removed: &[String],
    ) {
        if let Some(t) = self.names(type_url) {
            for n in removed {
                t.remove(n);
            }
            t.extend(resources.iter().map(|(n, _, _)| n.clone()));
            if self.acked.len() + resources.len() > MAX_ACKED {
                self.all = true;
                self.acked = Vec::new();
            } else if !self.all {
                self.acked
                    .extend(resources.iter().map(|(n, _, _)| n.clone()));
            }
        }
        self.accepted(type_url);
    }

    /// A reconnecting Delta client's `initial_resource_versions`: what it
    /// already holds.
    pub fn seed(&mut self, type_url: &str, versions: &HashMap<String, String>) {
        if let Some(t) = self.names(type_url) {
            t.extend(versions.keys().cloned());
            self.all = true;
        }
    }

    /// A NACK of `type_url`.
    pub fn rejected(&mut self, type_url: &str) {
        self.all = true;
        self.rejected.insert(type_url.to_string(), true);
    }

    /// Types whose newest response was NACKed: the client kept what it had before, which may
    /// still name resources the rejected version no longer does.
    pub fn rejected_types(&self) -> impl Iterator<Item = &str> {
        self.rejected
            .iter()
            .filter(|(_, r)| **r)
            .map(|(t, _)| t.as_str())
    }

    /// What may have become ready since the last call: the names ACKed, or everything.
    pub fn take_acked(&mut self) -> Recheck {
        if std::mem::take(&mut self.all) {
            self.acked = Vec::new();
            Recheck::All
        } else {
            Recheck::Names(std::mem::take(&mut self.acked))
        }
    }

    /// The names `r`'s readiness depends on (its clusters and their assignments): it is
    /// looked at again only once one of them was ACKed.
    pub fn depends_on(r: &Resource, snap: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for c in r.refs().iter().filter(|x| x.type_url == CLUSTER) {
            out.push(c.name.to_string());
            if let Some(cluster) = snap.get(CLUSTER, &c.name) {
                out.extend(
                    cluster
                        .refs()
                        .iter()
                        .filter(|x| x.type_url == ENDPOINT)
                        .map(|e| e.name.to_string()),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn has(&self, type_url: &str, name: &str) -> bool {
        self.rejected.get(type_url).copied().unwrap_or(false)
            || self.types.get(type_url).is_some_and(|t| t.contains(name))
    }

    /// Whether `r` may be sent now. Only route configurations wait, and only
    /// on a stream that takes clusters (and endpoints) from this server.
    pub fn ready(&self, r: &Resource, snap: &Snapshot, subscribed_types: &[&str]) -> bool {
        if r.type_url() != ROUTE || !subscribed_types.contains(&CLUSTER) {
            return true;
        }
        let eds = subscribed_types.contains(&ENDPOINT);
        r.refs().iter().filter(|x| x.type_url == CLUSTER).all(|c| {
            self.has(CLUSTER, &c.name)
                && (!eds
                    || snap.get(CLUSTER, &c.name).is_none_or(|cluster| {
                        cluster
                            .refs()
                            .iter()
                            .filter(|x| x.type_url == ENDPOINT)
                            .all(|e| self.has(ENDPOINT, &e.name))
                    }))
        })
    }
}
