//! What Envoy rejected, kept apart so the rest of a batch applies (Delta streams).
//!
//! A Delta response carries many resources (a cold start sends a thousand per response), and
//! one that Envoy refuses NACKs the whole response: for route configurations Envoy may not even
//! apply the others. So a NACK is answered by isolating the culprit: the resources the error
//! message names are quarantined (not sent again until their content changes) and the rest of
//! the response is sent again. When the message names none of them, the type is sent one
//! resource per response until every resource of the rejected response was answered alone, so
//! each NACK then names its resource by construction.

use std::collections::HashMap;

use crate::cache::TypeSnapshot;
use crate::resource::{Resource, version_id};

/// One type's quarantine on one stream.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    /// Rejected resources: name → content version (as [`version_id`]) that was rejected.
    rejected: HashMap<String, u64>,
    /// Send one resource per response (a NACK named none of its resources).
    pub isolating: bool,
}

impl Quarantine {
    /// A NACK of a response that carried `sent` (name, content version, generation) with
    /// Envoy's `error`. Returns the names now quarantined and the names to send again.
    pub fn nacked(
        &mut self,
        sent: &[(String, String, u64)],
        error: &str,
    ) -> (Vec<String>, Vec<String>) {
        let named: Vec<&(String, String, u64)> =
            sent.iter().filter(|(n, _, _)| names(error, n)).collect();
        let culprits: Vec<&(String, String, u64)> = if !named.is_empty() {
            named
        } else if sent.len() == 1 {
            sent.iter().collect()
        } else {
            // Nothing to go by: find it one resource at a time.
            self.isolating = true;
            Vec::new()
        };
        for (n, v, _) in &culprits {
            self.rejected.insert(n.clone(), version_id(v));
        }
        let bad: Vec<String> = culprits.iter().map(|(n, _, _)| n.clone()).collect();
        let again = sent
            .iter()
            .map(|(n, _, _)| n)
            .filter(|n| !bad.contains(n))
            .cloned()
            .collect();
        (bad, again)
    }

    /// Whether `r` is the content Envoy rejected (so it is not sent again).
    pub fn blocks(&self, r: &Resource) -> bool {
        self.rejected.get(r.name()) == Some(&r.version_id())
    }

    /// Forgets rejections of resources that changed or went away: their new content is sent.
    pub fn forget_stale(&mut self, ts: &TypeSnapshot) {
        if self.rejected.is_empty() {
            return;
        }
        self.rejected
            .retain(|n, v| ts.resources.get(n).is_some_and(|r| r.version_id() == *v));
    }

    /// How many resources are quarantined.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rejected.len()
    }
}

/// Whether `error` names resource `name`: it appears with no name character right before or
/// after it (so `a` is not found in `cluster-a2`).
fn names(error: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    error.match_indices(name).any(|(at, _)| {
        let before = error[..at].chars().next_back();
        let after = error[at + name.len()..].chars().next();
        !before.is_some_and(|c| inner(c) || c == ':') && !after.is_some_and(inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(names: &[&str]) -> Vec<(String, String, u64)> {
        names
            .iter()
            .map(|n| (n.to_string(), "00000000000000aa".to_string(), 1))
            .collect()
    }

    #[test]
    fn a_named_culprit_is_quarantined_and_the_rest_sent_again() {
        let mut q = Quarantine::default();
        let (bad, again) = q.nacked(
            &sent(&["default/a:80", "default/b:80", "default/a:8080"]),
            "Error adding/updating cluster(s) default/a:80: unknown transport socket",
        );
        assert_eq!(bad, ["default/a:80"]);
        assert_eq!(again, ["default/b:80", "default/a:8080"]);
        assert!(!q.isolating);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_anonymous_nack_isolates_and_a_lone_resource_is_its_own_culprit() {
        let mut q = Quarantine::default();
        let (bad, again) = q.nacked(&sent(&["r1", "r2"]), "something went wrong");
        assert!(bad.is_empty());
        assert_eq!(again, ["r1", "r2"]);
        assert!(q.isolating);
        let (bad, again) = q.nacked(&sent(&["r2"]), "something went wrong");
        assert_eq!(bad, ["r2"]);
        assert!(again.is_empty());
    }

    #[test]
    fn names_are_matched_whole() {
        assert!(names("cluster a: bad", "a"));
        assert!(!names("cluster a2: bad", "a"));
        assert!(!names("cluster xa: bad", "a"));
        assert!(names("listener(s) default/x:80: bad", "default/x:80"));
        assert!(!names("listener(s) default/x:8080: bad", "default/x:80"));
    }
}
