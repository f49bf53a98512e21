//! Hosts claimed by more than one KIngress.
//!
//! As in net-kourier, the KIngress that claimed a host first keeps it; a later one that claims
//! any host already taken is rejected as a whole (`LoadBalancerReady=False`, reason
//! `DomainConflict`) and serves nothing, so it claims nothing either. "First" is the older
//! `metadata.creationTimestamp`, then namespace/name; an object without a timestamp (a file
//! not yet stamped) counts as newer than any stamped one, so it never evicts one that is
//! already serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::ingress::{Ingress, IngressKey};

/// The condition reason for a rejected KIngress.
pub const DOMAIN_CONFLICT: &str = "DomainConflict";

/// Why one KIngress is rejected: a host it claims is served by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConflict {
    /// The rejected KIngress.
    pub ingress: IngressKey,
    /// The first contested host (in the rejected KIngress's rule order).
    pub host: String,
    /// The KIngress that keeps the host.
    pub winner: IngressKey,
}

impl DomainConflict {
    /// The condition reason, `DomainConflict`.
    pub fn reason(&self) -> &'static str {
        DOMAIN_CONFLICT
    }
}

impl fmt::Display for DomainConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {:?} of ingress {} is already served by ingress {}",
            self.host, self.ingress, self.winner
        )
    }
}

/// Finds the KIngresses to reject: every one that claims a host an earlier accepted one claims.
/// Pure; the input order does not matter. Each KIngress is considered once (first occurrence).
pub fn resolve_conflicts<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
) -> BTreeMap<IngressKey, DomainConflict> {
    let mut seen = BTreeSet::new();
    let mut ordered: Vec<&Ingress> = ingresses
        .into_iter()
        .filter(|i| seen.insert(i.key()))
        .collect();
    ordered.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        // None (unknown age) after every timestamp.
        let by_time = match (ta, tb) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_time.then_with(|| a.key().cmp(&b.key()))
    });

    let mut owner: HashMap<&str, IngressKey> = HashMap::new();
    let mut rejected = BTreeMap::new();
    for ing in ordered {
        let key = ing.key();
        let hosts: Vec<&str> = ing
            .spec
            .rules
            .iter()
            .flat_map(|r| r.served_hosts())
            .collect();
        if let Some((host, winner)) = hosts
            .iter()
            .find_map(|h| owner.get(h).map(|w| (*h, w.clone())))
        {
            rejected.insert(
                key.clone(),
                DomainConflict {
                    ingress: key,
                    host: host.to_string(),
                    winner,
                },
            );
            continue;
        }
        for h in hosts {
            owner.entry(h).or_insert_with(|| key.clone());
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::IngressRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ing(ns: &str, name: &str, created: Option<i64>, hosts: &[&str]) -> Ingress {
        let mut i = Ingress::default();
        i.metadata.namespace = Some(ns.into());
        i.metadata.name = Some(name.into());
        i.metadata.creation_timestamp =
            created.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        i.spec.rules = vec![IngressRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }];
        i
    }

    fn key(ns: &str, name: &str) -> IngressKey {
        IngressKey::new(ns, name)
    }

    #[test]
    fn later_claimant_is_rejected() {
        struct Case {
            name: &'static str,
            ingresses: Vec<Ingress>,
            want: Vec<(IngressKey, &'static str, IngressKey)>,
        }
        let cases = [
            Case {
                name: "no overlap",
                ingresses: vec![
                    ing("a", "x", Some(10), &["x.com"]),
                    ing("a", "y", Some(5), &["y.com"]),
                ],
                want: vec![],
            },
            Case {
                name: "older wins regardless of name",
                ingresses: vec![
                    ing("a", "aaa", Some(20), &["h.com"]),
                    ing("b", "zzz", Some(10), &["h.com", "z.com"]),
                ],
                want: vec![(key("a", "aaa"), "h.com", key("b", "zzz"))],
            },
            Case {
                name: "same age: namespace/name decides",
                ingresses: vec![
                    ing("b", "a", Some(10), &["h.com"]),
                    ing("a", "b", Some(10), &["h.com"]),
                ],
                want: vec![(key("b", "a"), "h.com", key("a", "b"))],
            },
            Case {
                name: "unstamped loses to stamped",
                ingresses: vec![
                    ing("a", "a", None, &["h.com"]),
                    ing("z", "z", Some(99), &["h.com"]),
                ],
                want: vec![(key("a", "a"), "h.com", key("z", "z"))],
            },
            Case {
                name: "a rejected ingress claims nothing",
                ingresses: vec![
                    ing("n", "first", Some(1), &["a.com"]),
                    ing("n", "second", Some(2), &["a.com", "b.com"]),
                    ing("n", "third", Some(3), &["b.com"]),
                ],
                want: vec![(key("n", "second"), "a.com", key("n", "first"))],
            },
            Case {
                name: "a host repeated inside one ingress is no conflict",
                ingresses: vec![ing("n", "self", Some(1), &["a.com", "a.com"])],
                want: vec![],
            },
        ];
        for c in cases {
            let got = resolve_conflicts(&c.ingresses);
            let want: BTreeMap<_, _> = c
                .want
                .into_iter()
                .map(|(loser, host, winner)| {
                    (
                        loser.clone(),
                        DomainConflict {
                            ingress: loser,
                            host: host.into(),
                            winner,
                        },
                    )
                })
                .collect();
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn message_names_both_ingresses() {
        let got = resolve_conflicts(&[
            ing("a", "old", Some(1), &["h.com"]),
            ing("a", "new", Some(2), &["h.com"]),
        ]);
        let c = &got[&key("a", "new")];
        assert_eq!(c.reason(), "DomainConflict");
        assert_eq!(
            c.to_string(),
            r#"host "h.com" of ingress a/new is already served by ingress a/old"#
        );
    }
}
