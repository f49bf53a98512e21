//! Make-before-break on every stream, fresh or reconnected: a resource is removed from a client
//! only once nothing the client may still hold can name it.
//!
//! Within one round the streams already order additions (clusters before the routes that use
//! them) and removals (routes before the clusters they used). A reconnecting client adds a case
//! a round cannot see: it holds the previous server's configuration, and it asks for its types
//! one request at a time. When its cluster request arrives first and the snapshot moved on while
//! it was away (a route now names cluster `c` instead of `a`), answering it in full would drop
//! `a` while the client's old route still sends traffic there — 503s until the route request
//! arrives and is answered. So on a reconnecting stream, removals of a type wait until every type
//! that may refer to it was requested and brought up to date, or until a short grace period
//! shows the client does not take that type at all.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

/// How long a reconnecting client may take to ask again for every type it held. Envoy asks for
/// all of them at once when its stream is back; this only matters for clients that never ask
/// for some type (then its removals go out after this long).
pub(crate) const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// Types whose resources may name a resource of `type_url`: routes name clusters, clusters their
/// endpoints and secrets, listeners their route configurations and secrets, scoped routes their
/// route configurations.
pub(crate) fn referrers(type_url: &str) -> &'static [&'static str] {
    match type_url {
        SECRET => &[LISTENER, CLUSTER],
        CLUSTER => &[ROUTE, LISTENER],
        ENDPOINT => &[CLUSTER],
        ROUTE => &[LISTENER, SCOPED_ROUTE],
        _ => &[],
    }
}

/// The types whose removals must wait when the types in `unsettled` may still name old
/// resources. A type whose removals wait keeps old resources that may name others in turn, so
/// the rule follows references down (routes → clusters → endpoints and secrets).
pub(crate) fn blocked_removals(unsettled: &BTreeSet<&str>) -> BTreeSet<&'static str> {
    let mut blocked = BTreeSet::new();
    // Four passes reach the deepest chain (scoped route → route → cluster → endpoint).
    for _ in 0..4 {
        for t in [SECRET, CLUSTER, ENDPOINT, ROUTE] {
            if referrers(t)
                .iter()
                .any(|r| unsettled.contains(r) || blocked.contains(r))
            {
                blocked.insert(t);
            }
        }
    }
    blocked
}

/// Whether a stream belongs to a client that came back holding configuration, and since when.
#[derive(Debug)]
pub(crate) struct Reconnect {
    /// The client said it holds resources (Delta `initial_resource_versions`, SotW
    /// `version_info` on a first request).
    pub holding: bool,
    /// When the stream opened.
    pub since: Instant,
}

impl Reconnect {
    pub fn new() -> Self {
        Self {
            holding: false,
            since: Instant::now(),
        }
    }

    /// Until when types the client has not asked for yet count as unsettled (None: they do
    /// not, the client held nothing or the grace period is over).
    pub fn pending_until(&self) -> Option<Instant> {
        let until = self.since + RECONNECT_GRACE;
        (self.holding && Instant::now() < until).then_some(until)
    }

    /// The referring types not yet requested on this stream while that still matters.
    pub fn unrequested<'a>(&self, requested: impl Fn(&str) -> bool) -> Vec<&'a str> {
        if self.pending_until().is_none() {
            return Vec::new();
        }
        [LISTENER, ROUTE, SCOPED_ROUTE, CLUSTER]
            .into_iter()
            .filter(|t| !requested(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_wait_down_the_reference_chain() {
        let unsettled = BTreeSet::from([SCOPED_ROUTE]);
        assert_eq!(
            blocked_removals(&unsettled),
            BTreeSet::from([ROUTE, CLUSTER, ENDPOINT, SECRET])
        );
        let unsettled = BTreeSet::from([ROUTE]);
        assert_eq!(
            blocked_removals(&unsettled),
            BTreeSet::from([CLUSTER, ENDPOINT, SECRET])
        );
        assert!(blocked_removals(&BTreeSet::new()).is_empty());
        // Nothing names a scoped route or a listener: their removals never wait.
        let all = BTreeSet::from([LISTENER, ROUTE, SCOPED_ROUTE, CLUSTER, ENDPOINT, SECRET]);
        let blocked = blocked_removals(&all);
        assert!(!blocked.contains(LISTENER) && !blocked.contains(SCOPED_ROUTE));
    }

    #[tokio::test(start_paused = true)]
    async fn unrequested_types_matter_only_for_a_holding_client_within_grace() {
        let mut r = Reconnect::new();
        assert!(r.unrequested(|_| false).is_empty(), "a fresh client");
        r.holding = true;
        assert_eq!(
            r.unrequested(|t| t == CLUSTER),
            vec![LISTENER, ROUTE, SCOPED_ROUTE]
        );
        tokio::time::advance(RECONNECT_GRACE).await;
        assert!(r.unrequested(|_| false).is_empty(), "grace over");
    }
}
