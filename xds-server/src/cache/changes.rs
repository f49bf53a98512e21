//! Which resources of a type changed at which generation, so a stream that is a few
//! generations behind looks at those names only instead of diffing the whole type.

use std::ops::Bound;
use std::sync::Arc;

/// How many changed names a type's log lists at most. A stream further behind than the log
/// reaches (or a single change larger than this, such as a cold start) diffs the whole type.
pub const LOG_MAX_NAMES: usize = 16 * 1024;

/// The recent changes of one type, shared cheaply between snapshots (a persistent map: a
/// new entry copies O(log entries), not the log).
#[derive(Debug, Clone, Default)]
pub struct ChangeLog {
    /// Generation → names added, replaced or removed at it.
    entries: imbl::OrdMap<u64, Arc<[String]>>,
    /// How many names `entries` lists.
    names: usize,
    /// Changes at or before this generation are no longer listed.
    floor: u64,
}

impl ChangeLog {
    /// Records the names that changed at `generation` (newer than any recorded before).
    pub(crate) fn record(&mut self, generation: u64, names: Vec<String>) {
        if names.len() > LOG_MAX_NAMES {
            *self = Self {
                floor: generation,
                ..Self::default()
            };
            return;
        }
        self.names += names.len();
        self.entries.insert(generation, names.into());
        while self.names > LOG_MAX_NAMES {
            let Some((oldest, names)) = self.entries.get_min().cloned() else {
                break;
            };
            self.entries.remove(&oldest);
            self.names -= names.len();
            self.floor = oldest;
        }
    }

    /// The names changed after generation `since`, each once per generation it changed at
    /// (so possibly repeated); `None` if the log no longer reaches back that far.
    pub fn since(&self, since: u64) -> Option<impl Iterator<Item = &str>> {
        (since >= self.floor).then(|| {
            self.entries
                .range((Bound::Excluded(since), Bound::Unbounded))
                .flat_map(|(_, names)| names.iter().map(String::as_str))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(log: &ChangeLog, since: u64) -> Option<Vec<&str>> {
        log.since(since).map(|i| i.collect())
    }

    #[test]
    fn lists_what_changed_after_a_generation() {
        let mut log = ChangeLog::default();
        log.record(1, vec!["a".into(), "b".into()]);
        log.record(3, vec!["c".into()]);
        log.record(4, vec!["a".into()]);
        assert_eq!(names(&log, 0), Some(vec!["a", "b", "c", "a"]));
        assert_eq!(names(&log, 1), Some(vec!["c", "a"]));
        assert_eq!(names(&log, 2), Some(vec!["c", "a"]));
        assert_eq!(names(&log, 4), Some(vec![]));
    }

    #[test]
    fn a_stream_behind_the_log_is_told_to_diff_everything() {
        let mut log = ChangeLog::default();
        let many = |p: &str| (0..LOG_MAX_NAMES / 2).map(|i| format!("{p}{i}")).collect();
        log.record(1, many("a"));
        log.record(2, many("b"));
        log.record(3, vec!["c".into()]);
        // Generation 1 was dropped to stay within the bound.
        assert!(names(&log, 0).is_none());
        assert_eq!(names(&log, 1).map(|n| n.len()), Some(LOG_MAX_NAMES / 2 + 1));
        // A change larger than the whole log is not listed at all.
        log.record(4, (0..=LOG_MAX_NAMES).map(|i| i.to_string()).collect());
        assert!(names(&log, 3).is_none());
        assert_eq!(names(&log, 4), Some(vec![]));
        log.record(5, vec!["d".into()]);
        assert_eq!(names(&log, 4), Some(vec!["d"]));
    }
}
