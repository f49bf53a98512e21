//! The snapshot cache: per node group, a versioned set of resources.
//!
//! The cache knows nothing of transport. Writers replace a whole snapshot
//! ([`SnapshotCache::set_snapshot`]) or apply an incremental [`Update`]; both
//! are checked for consistency before anything is served. Every change bumps
//! the group's *generation*; each resource remembers the generation at which it
//! last changed and each type the generation at which any of its resources
//! changed. Stream handlers watch single types ([`SnapshotCache::watch`]) and
//! are woken only when that type changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::consistency::{self, Inconsistency};
use crate::resource::{Resource, SNAPSHOT_TYPES};

mod changes;
mod referrers;

pub(crate) use referrers::Referrers;

pub use changes::{ChangeLog, LOG_MAX_NAMES};

/// Resources of one type, by name, shared cheaply between the cache and streams: a
/// persistent map, so a change copies O(log N) while streams still hold the previous
/// snapshot, and a clone is O(1).
pub type Resources = imbl::OrdMap<String, Arc<Resource>>;

/// All resources of one type in a group, at one version.
#[derive(Debug, Clone, Default)]
pub struct TypeSnapshot {
    /// Generation at which this type last changed (0 = never set).
    pub version: u64,
    /// The resources.
    pub resources: Resources,
    /// Which names changed at which generation, lately.
    pub changes: ChangeLog,
}

/// A consistent view of a group: every type, at one generation.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The group's generation (0 = no snapshot set yet).
    pub generation: u64,
    /// Resources per type URL.
    pub types: BTreeMap<String, TypeSnapshot>,
}

impl Snapshot {
    /// The resources of one type (empty if none).
    pub fn of_type(&self, type_url: &str) -> TypeSnapshot {
        self.types.get(type_url).cloned().unwrap_or_default()
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(type_url)?.resources.get(name)
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.types.values().map(|t| t.resources.len()).sum()
    }

    /// Whether the snapshot holds no resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An incremental change: resources to add or replace, and removals.
#[derive(Debug, Default, Clone)]
pub struct Update {
    /// Added or replaced resources (by type URL + name).
    pub upserts: Vec<Resource>,
    /// Removed resources: (type URL, name).
    pub removals: Vec<(String, String)>,
}

impl Update {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a resource.
    pub fn upsert(mut self, r: Resource) -> Self {
        self.upserts.push(r);
        self
    }

    /// Removes a resource.
    pub fn remove(mut self, type_url: &str, name: impl Into<String>) -> Self {
        self.removals.push((type_url.to_string(), name.into()));
        self
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Why a snapshot or update was refused. Nothing was applied; the previous
/// snapshot keeps being served.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The result would have dangling references.
    #[error("snapshot for group {group:?} is inconsistent, not served: {}", consistency::describe(.problems))]
    Inconsistent {
        /// The node group.
        group: String,
        /// Every dangling reference found.
        problems: Vec<Inconsistency>,
    },
    /// The same resource appears twice in one snapshot or update.
    #[error("resource {type_url} {name:?} appears twice in one update for group {group:?}")]
    Duplicate {
        /// The node group.
        group: String,
        /// Type URL.
        type_url: String,
        /// Resource name.
        name: String,
    },
}

/// What an applied change did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// The group's generation after the change (unchanged if nothing changed).
    pub generation: u64,
    /// Type URLs whose content changed.
    pub changed_types: BTreeSet<String>,
    /// Number of resources whose content changed or that were added.
    pub changed: usize,
    /// Number of resources removed.
    pub removed: usize,
}

struct Group {
    snapshot: Snapshot,
    watchers: HashMap<String, watch::Sender<u64>>,
    /// Resources removed lately, newest last (see [`SnapshotCache::recently_removed`]).
    removed: VecDeque<(Instant, Arc<Resource>)>,
    /// How many references the snapshot's resources make to each (type, name), by hash: a
    /// removal nothing refers to is known consistent without a scan of every reference.
    referrers: Referrers,
}

/// How long a removed resource is remembered for clients that reconnect holding it.
pub const REMOVED_KEPT_FOR: Duration = Duration::from_secs(120);
/// How many removed resources a group remembers at most.
pub const REMOVED_KEPT_MAX: usize = 4096;

impl Group {
    fn new() -> Self {
        Self {
            snapshot: Snapshot::default(),
            watchers: HashMap::new(),
            removed: VecDeque::new(),
            referrers: Referrers::default(),
        }
    }

    fn remember_removed(&mut self, removed: impl IntoIterator<Item = Arc<Resource>>) {
        let now = Instant::now();
        for r in removed {
            if crate::ads::is_referenced_type(r.type_url()) {
                self.removed.push_back((now, r));
            }
        }
        while self.removed.len() > REMOVED_KEPT_MAX
            || self
                .removed
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > REMOVED_KEPT_FOR)
        {
            self.removed.pop_front();
        }
    }

    fn notify(&mut self, type_url: &str, version: u64) {
        if let Some(tx) = self.watchers.get(type_url) {
            tx.send_replace(version);
        }
    }
}

/// The snapshot cache, shared by the writer (a translator) and the xDS streams.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    groups: Arc<RwLock<HashMap<String, Group>>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("groups", &self.groups())
            .finish()
    }
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names of groups that have a snapshot or a watcher.
    pub fn groups(&self) -> Vec<String> {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = g.keys().cloned().collect();
        v.sort();
        v
    }

    /// The current snapshot of a group (generation 0 if none was set).
    pub fn snapshot(&self, group: &str) -> Snapshot {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        g.get(group).map(|g| g.snapshot.clone()).unwrap_or_default()
    }

    /// One type of a group's snapshot plus the group generation; cheaper than
    /// [`Self::snapshot`] when only one type is needed.
    pub fn type_snapshot(&self, group: &str, type_url: &str) -> (u64, TypeSnapshot) {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        match g.get(group) {
            Some(g) => (g.snapshot.generation, g.snapshot.of_type(type_url)),
            None => (0, TypeSnapshot::default()),
        }
    }

    /// Whether a group's snapshot holds type `type_url` (served to clients that ask for it).
    pub fn has_type(&self, group: &str, type_url: &str) -> bool {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        g.get(group)
            .is_some_and(|g| g.snapshot.types.contains_key(type_url))
    }

    /// How many resources of `type_url` a group's snapshot holds.
    pub fn type_len(&self, group: &str, type_url: &str) -> usize {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        g.get(group)
            .and_then(|g| g.snapshot.types.get(type_url))
            .map_or(0, |t| t.resources.len())
    }

    /// Forgets a group that never had a snapshot once no stream watches it any more: a client
    /// whose node maps to a group of its own leaves nothing behind when it goes.
    pub fn release(&self, group: &str) {
        let mut g = self.groups.write().unwrap_or_else(|e| e.into_inner());
        if g.get(group).is_some_and(|g| {
            g.snapshot.generation == 0 && g.watchers.values().all(|w| w.receiver_count() == 0)
        }) {
            g.remove(group);
        }
    }

    /// Watches one type of a group: the receiver's value is the type's version
    /// (the generation at which it last changed), and it changes only when that
    /// type does. Creates the group if needed, so a watcher may start before the
    /// first snapshot.
    pub fn watch(&self, group: &str, type_url: &str) -> watch::Receiver<u64> {
        let mut g = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let group = g.entry(group.to_string()).or_insert_with(Group::new);
        let current = group
            .snapshot
            .types
            .get(type_url)
            .map(|t| t.version)
            .unwrap_or(group.snapshot.generation);
        group
            .watchers
            .entry(type_url.to_string())
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }

    /// Resources of `type_url` removed from a group in the last [`REMOVED_KEPT_FOR`] (at most
    /// [`REMOVED_KEPT_MAX`] per group) and not in its snapshot now, newest version per name.
    /// A State-of-the-World client that reconnects holding an older configuration cannot say
    /// what it holds; these are what it may still use until its routes are brought up to date.
    pub fn recently_removed(&self, group: &str, type_url: &str) -> BTreeMap<String, Arc<Resource>> {
        let g = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let Some(g) = g.get(group) else {
            return BTreeMap::new();
        };
        let current = g.snapshot.types.get(type_url);
        g.removed
            .iter()
            .filter(|(_, r)| r.type_url() == type_url)
            .filter(|(_, r)| current.is_none_or(|t| !t.resources.contains_key(r.name())))
            .map(|(_, r)| (r.name().to_string(), r.clone()))
            .collect()
    }

    /// Replaces a group's whole snapshot. Resources whose content did not change
    /// keep their generation, so streams send only what changed.
    pub fn set_snapshot(
        &self,
        group: &str,
        resources: impl IntoIterator<Item = Resource>,
    ) -> Result<Applied, CacheError> {
        let mut by_type: BTreeMap<String, BTreeMap<String, Resource>> = BTreeMap::new();
        for r in resources {
            let t = by_type.entry(r.type_url().to_string()).or_default();
            if t.contains_key(r.name()) {
                return Err(CacheError::Duplicate {
                    group: group.to_string(),
                    type_url: r.type_url().to_string(),
                    name: r.name().to_string(),
                });
            }
            t.insert(r.name().to_string(), r);
        }
        let mut g = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let entry = g.entry(group.to_string()).or_insert_with(Group::new);
        let old = &entry.snapshot;
        let generation = old.generation + 1;
        let mut types = BTreeMap::new();
        let mut applied = Applied {
            generation,
            ..Default::default()
        };
        let mut removed_resources = Vec::new();
        let all_types: BTreeSet<String> = by_type
            .keys()
            .cloned()
            .chain(old.types.keys().cloned())
            .chain(SNAPSHOT_TYPES.iter().map(|t| t.to_string()))
            .collect();
        for type_url in all_types {
            let old_t = old.of_type(&type_url);
            let new_rs = by_type.remove(&type_url).unwrap_or_default();
            let mut changed = old.generation == 0 && !old.types.contains_key(&type_url);
            let mut out = Resources::new();
            let mut names = Vec::new();
            for (name, mut r) in new_rs {
                match old_t.resources.get(&name) {
                    Some(prev) if prev.version() == r.version() => {
                        out.insert(name, prev.clone());
                    }
                    _ => {
                        r.generation = generation;
                        changed = true;
                        applied.changed += 1;
                        names.push(name.clone());
                        out.insert(name, Arc::new(r));
                    }
                }
            }
            let gone: Vec<Arc<Resource>> = old_t
                .resources
                .iter()
                .filter(|(n, _)| !out.contains_key(*n))
                .map(|(_, r)| r.clone())
                .collect();
            let removed = gone.len();
            names.extend(gone.iter().map(|r| r.name().to_string()));
            removed_resources.extend(gone);
            if removed > 0 {
                changed = true;
                applied.removed += removed;
            }
            let t = if changed {
                applied.changed_types.insert(type_url.clone());
                let mut changes = old_t.changes;
                changes.record(generation, names);
                TypeSnapshot {
                    version: generation,
                    resources: out,
                    changes,
                }
            } else {
                old_t
            };
            types.insert(type_url, t);
        }
        let referrers = Referrers::of(types.values().flat_map(|t| t.resources.values()));
        let candidate = Snapshot { generation, types };
        let problems = consistency::check(&candidate);
        let applied = self.commit(
            entry,
            group,
            candidate,
            applied,
            problems,
            removed_resources,
        )?;
        entry.referrers = referrers;
        Ok(applied)
    }

    /// Applies an incremental update to a group.
    pub fn update(&self, group: &str, update: Update) -> Result<Applied, CacheError> {
        let mut g = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let entry = g.entry(group.to_string()).or_insert_with(Group::new);
        let old_generation = entry.snapshot.generation;
        let generation = old_generation + 1;
        let mut applied = Applied {
            generation,
            ..Default::default()
        };
        let mut types = entry.snapshot.types.clone();
        // Resources whose references start or stop counting.
        let (mut added, mut dropped) = (Vec::new(), Vec::new());
        if old_generation == 0 {
            for t in SNAPSHOT_TYPES {
                types.entry(t.to_string()).or_default();
                applied.changed_types.insert(t.to_string());
            }
        }
        let mut seen = BTreeSet::new();
        let mut changed_keys = Vec::new();
        let mut removed_keys = Vec::new();
        for mut r in update.upserts {
            if !seen.insert((r.type_url().to_string(), r.name().to_string())) {
                return Err(CacheError::Duplicate {
                    group: group.to_string(),
                    type_url: r.type_url().to_string(),
                    name: r.name().to_string(),
                });
            }
            let t = types.entry(r.type_url().to_string()).or_default();
            if t.resources
                .get(r.name())
                .is_some_and(|p| p.version() == r.version())
            {
                continue;
            }
            r.generation = generation;
            applied.changed += 1;
            applied.changed_types.insert(r.type_url().to_string());
            changed_keys.push((r.type_url().to_string(), r.name().to_string()));
            let r = Arc::new(r);
            added.push(r.clone());
            if let Some(old) = t.resources.insert(r.name().to_string(), r) {
                dropped.push(old);
            }
        }
        let mut removed_resources = Vec::new();
        for (type_url, name) in update.removals {
            if let Some(t) = types.get_mut(&type_url)
                && t.resources.contains_key(&name)
            {
                if let Some(r) = t.resources.remove(&name) {
                    dropped.push(r.clone());
                    removed_resources.push(r);
                }
                applied.removed += 1;
                applied.changed_types.insert(type_url.clone());
                removed_keys.push((type_url, name));
            }
        }
        if applied.changed_types.is_empty() {
            return Ok(Applied {
                generation: old_generation,
                ..Default::default()
            });
        }
        let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (t, n) in changed_keys.iter().chain(&removed_keys) {
            names.entry(t.as_str()).or_default().push(n.clone());
        }
        for t in &applied.changed_types {
            if let Some(ts) = types.get_mut(t) {
                ts.version = generation;
                ts.changes
                    .record(generation, names.remove(t.as_str()).unwrap_or_default());
            }
        }
        let candidate = Snapshot { generation, types };
        let counts = &mut entry.referrers;
        added.iter().for_each(|r| counts.add(r));
        dropped.iter().for_each(|r| counts.remove(r));
        let problems = consistency::check_change(&candidate, &changed_keys, &removed_keys, counts);
        if !problems.is_empty() {
            // Refused: the counts go back to the served snapshot's.
            added.iter().for_each(|r| counts.remove(r));
            dropped.iter().for_each(|r| counts.add(r));
        }
        self.commit(
            entry,
            group,
            candidate,
            applied,
            problems,
            removed_resources,
        )
    }

    fn commit(
        &self,
        entry: &mut Group,
        group: &str,
        candidate: Snapshot,
        applied: Applied,
        problems: Vec<Inconsistency>,
        removed: Vec<Arc<Resource>>,
    ) -> Result<Applied, CacheError> {
        if applied.changed_types.is_empty() {
            return Ok(Applied {
                generation: entry.snapshot.generation,
                ..Default::default()
            });
        }
        if !problems.is_empty() {
            return Err(CacheError::Inconsistent {
                group: group.to_string(),
                problems,
            });
        }
        entry.snapshot = candidate;
        entry.remember_removed(removed);
        for t in &applied.changed_types {
            entry.notify(t, applied.generation);
        }
        tracing::debug!(
            group,
            generation = applied.generation,
            changed = applied.changed,
            removed = applied.removed,
            types = ?applied.changed_types,
            "snapshot updated"
        );
        Ok(applied)
    }
}

#[cfg(test)]
mod tests;
