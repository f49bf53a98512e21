//! Reference counts per referenced resource, so the consistency check of a removal costs
//! O(1) instead of a scan of every reference in the snapshot.

use crate::resource::Resource;

/// How many references point at each (type URL, name), keyed by a hash of the pair. A hash
/// collision can only make a resource look referenced when it is not, which costs a scan (the
/// scan is exact), never a missed dangling reference. Kept beside the served snapshot (a plain
/// map: about 12 bytes per reference); a refused update takes its counts back.
#[derive(Debug, Default)]
pub(crate) struct Referrers(std::collections::HashMap<u64, u32>);

fn key(type_url: &str, name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(
        name.as_bytes(),
        xxhash_rust::xxh3::xxh3_64(type_url.as_bytes()),
    )
}

impl Referrers {
    /// The counts for a whole set of resources.
    pub fn of<'a>(resources: impl Iterator<Item = &'a std::sync::Arc<Resource>>) -> Self {
        let mut out = Self::default();
        for r in resources {
            out.add(r);
        }
        out
    }

    /// Counts the references `r` makes.
    pub fn add(&mut self, r: &Resource) {
        for x in r.refs() {
            *self.0.entry(key(x.type_url, &x.name)).or_insert(0) += 1;
        }
    }

    /// Forgets the references `r` made.
    pub fn remove(&mut self, r: &Resource) {
        for x in r.refs() {
            let k = key(x.type_url, &x.name);
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.0.entry(k) {
                if *e.get() > 1 {
                    *e.get_mut() -= 1;
                } else {
                    e.remove();
                }
            }
        }
    }

    /// Whether anything may refer to (type URL, name).
    pub fn any(&self, type_url: &str, name: &str) -> bool {
        self.0.contains_key(&key(type_url, name))
    }
}
