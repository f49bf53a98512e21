//! kube-runtime's list-then-watch as a consumer that keeps its own state sees it: a (re-)list
//! starts ([`Relist::init`]), lists objects ([`Relist::applied`]) and ends
//! ([`Relist::init_done`]); whatever was known before and is not in the new list was deleted
//! while the watch was away, and is handed back to be dropped.

use std::collections::BTreeSet;

use sluice_serving::serving::Key;

/// The keys of one watched kind.
#[derive(Debug, Default)]
pub struct Relist {
    known: BTreeSet<Key>,
    listing: Option<BTreeSet<Key>>,
    listed: bool,
}

impl Relist {
    /// A (re-)list starts.
    pub fn init(&mut self) {
        self.listing = Some(BTreeSet::new());
    }

    /// An object was listed, created or changed.
    pub fn applied(&mut self, key: Key) {
        if let Some(listing) = &mut self.listing {
            listing.insert(key.clone());
        }
        self.known.insert(key);
    }

    /// An object was deleted.
    pub fn deleted(&mut self, key: &Key) {
        self.known.remove(key);
        if let Some(listing) = &mut self.listing {
            listing.remove(key);
        }
    }

    /// The (re-)list is complete: the keys known before that it no longer holds.
    pub fn init_done(&mut self) -> Vec<Key> {
        let listed = self.listing.take().unwrap_or_default();
        let gone = self.known.difference(&listed).cloned().collect();
        self.known = listed;
        self.listed = true;
        gone
    }

    /// Whether one list has completed.
    pub fn listed(&self) -> bool {
        self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relist_hands_back_what_it_no_longer_holds() {
        let (a, b, c) = (
            Key::new("ns", "a"),
            Key::new("ns", "b"),
            Key::new("ns", "c"),
        );
        let mut r = Relist::default();
        assert!(!r.listed());
        r.init();
        r.applied(a.clone());
        r.applied(b.clone());
        assert!(r.init_done().is_empty());
        assert!(r.listed());
        // The watch expires; meanwhile b went and c came.
        r.init();
        r.applied(a.clone());
        r.applied(c.clone());
        assert_eq!(r.init_done(), [b]);
        // Live events between lists.
        r.deleted(&a);
        r.init();
        r.applied(c);
        assert!(r.init_done().is_empty(), "a was already reported deleted");
    }
}
