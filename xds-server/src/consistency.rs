//! The consistency check run before a snapshot is served: every reference a
//! resource makes (listener → route configuration, route → cluster, EDS cluster
//! → assignment, TLS → secret, scoped route → route configuration) must resolve
//! inside the same snapshot.

use std::fmt;

use crate::cache::{Referrers, Snapshot};
use crate::resource::{Ref, short_name};

/// One dangling reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    /// Type URL of the resource that makes the reference.
    pub from_type: String,
    /// Name of the resource that makes the reference.
    pub from: String,
    /// What it refers to.
    pub missing: Ref,
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} refers to missing {} {:?}",
            singular(short_name(&self.from_type)),
            self.from,
            singular(short_name(self.missing.type_url)),
            self.missing.name
        )
    }
}

fn singular(s: &str) -> &str {
    s.strip_suffix('s').unwrap_or(s)
}

/// Joins problems for an error message (the first few, then a count).
pub(crate) fn describe(problems: &[Inconsistency]) -> String {
    const SHOWN: usize = 5;
    let mut s = problems
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        s.push_str(&format!(" (and {} more)", problems.len() - SHOWN));
    }
    s
}

/// Every dangling reference in a snapshot, in a stable order.
pub fn check(snapshot: &Snapshot) -> Vec<Inconsistency> {
    let mut problems = Vec::new();
    for (type_url, t) in &snapshot.types {
        for r in t.resources.values() {
            for reference in r.refs() {
                if snapshot.get(reference.type_url, &reference.name).is_none() {
                    problems.push(Inconsistency {
                        from_type: type_url.clone(),
                        from: r.name().to_string(),
                        missing: reference.clone(),
                    });
                }
            }
        }
    }
    problems
}

/// The dangling references an incremental change can introduce: references
/// made by the resources that changed, and references to the resources that
/// were removed. Equivalent to [`check`] on a snapshot that was consistent
/// before the change, at a cost proportional to the change (plus one scan of
/// the reference lists when something removed is still referred to: an error).
pub(crate) fn check_change(
    snapshot: &Snapshot,
    changed: &[(String, String)],
    removed: &[(String, String)],
    referrers: &Referrers,
) -> Vec<Inconsistency> {
    let mut problems = Vec::new();
    for (type_url, name) in changed {
        let Some(r) = snapshot.get(type_url, name) else {
            continue;
        };
        for reference in r.refs() {
            if snapshot.get(reference.type_url, &reference.name).is_none() {
                problems.push(Inconsistency {
                    from_type: type_url.clone(),
                    from: name.clone(),
                    missing: reference.clone(),
                });
            }
        }
    }
    // Only a removed resource something still refers to (by the snapshot's reference counts,
    // which may err towards yes) needs the scan that finds who.
    let gone: std::collections::HashSet<(&str, &str)> = removed
        .iter()
        .filter(|(t, n)| snapshot.get(t, n).is_none() && referrers.any(t, n))
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    if !gone.is_empty() {
        for (type_url, t) in &snapshot.types {
            for r in t.resources.values() {
                for reference in r.refs() {
                    if gone.contains(&(reference.type_url, reference.name.as_str())) {
                        problems.push(Inconsistency {
                            from_type: type_url.clone(),
                            from: r.name().to_string(),
                            missing: reference.clone(),
                        });
                    }
                }
            }
        }
    }
    problems.sort_by(|a, b| (&a.from_type, &a.from).cmp(&(&b.from_type, &b.from)));
    problems.dedup();
    problems
}
