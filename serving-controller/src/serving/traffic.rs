//! A Route's traffic resolved to Revisions (knative/serving `pkg/reconciler/route/traffic`).
//!
//! `configurationName` targets (and Service targets, which name the Service's Configuration)
//! go to the Configuration's latest *ready* Revision; `revisionName` targets must name a ready
//! Revision. Targets are grouped by tag: the default group (`""`) holds every target, each tag
//! group its own target (always 100% of the tag's host). Within a group, entries naming the
//! same Revision are summed. Errors are deferred so that the worst one is reported: a failure
//! (missing object, failed Revision) wins over a wait (not ready yet).

use std::collections::BTreeMap;

use super::CONFIGURATION_LABEL;
use super::catalog::Catalog;
use super::conditions::{ALL_TRAFFIC_ASSIGNED, FALSE, READY, UNKNOWN, condition};
use super::types::{HasConditions, Revision, Route, TrafficTarget};
use crate::ingress::Condition;

/// The group of untagged (all) targets.
pub const DEFAULT_TARGET: &str = "";

/// Why a traffic target cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// A named Configuration or Revision does not exist.
    #[error("{kind} {name:?} referenced in traffic not found.")]
    Missing {
        /// `Configuration` or `Revision`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A Configuration has no ready Revision (yet).
    #[error("Configuration {name:?} not ready, isFailure={failed}")]
    UnreadyConfiguration {
        /// Its name.
        name: String,
        /// Its `Ready` is `False`.
        failed: bool,
    },
    /// A named Revision is not ready (yet).
    #[error("Revision {name:?} not ready, isFailure={failed}")]
    UnreadyRevision {
        /// Its name.
        name: String,
        /// Its `Ready` is `False`.
        failed: bool,
    },
}

impl TargetError {
    /// A true failure, as opposed to waiting for readiness.
    pub fn is_failure(&self) -> bool {
        match self {
            Self::Missing { .. } => true,
            Self::UnreadyConfiguration { failed, .. } | Self::UnreadyRevision { failed, .. } => {
                *failed
            }
        }
    }

    /// The Route's `AllTrafficAssigned` condition for this error (upstream's messages).
    pub fn condition(&self) -> Condition {
        let status = if self.is_failure() { FALSE } else { UNKNOWN };
        let (reason, message) = match self {
            Self::Missing { kind, name } => (
                format!("{kind}Missing"),
                format!("{kind} {name:?} referenced in traffic not found."),
            ),
            Self::UnreadyConfiguration { name, failed: true } => (
                "RevisionMissing".into(),
                format!("Configuration {name:?} does not have any ready Revision."),
            ),
            Self::UnreadyConfiguration {
                name,
                failed: false,
            } => (
                "RevisionMissing".into(),
                format!("Configuration {name:?} is waiting for a Revision to become ready."),
            ),
            Self::UnreadyRevision { name, failed: true } => (
                "RevisionMissing".into(),
                format!("Revision {name:?} failed to become ready."),
            ),
            Self::UnreadyRevision {
                name,
                failed: false,
            } => (
                "RevisionMissing".into(),
                format!("Revision {name:?} is not yet ready."),
            ),
        };
        condition(ALL_TRAFFIC_ASSIGNED, status, &reason, &message)
    }
}

/// A Route's traffic at the Revision level.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficConfig {
    /// Targets by tag (`""` = the default group), each entry naming a Revision.
    pub targets: BTreeMap<String, Vec<TrafficTarget>>,
    /// The spec's targets flattened to Revisions, for `status.traffic`.
    pub revision_targets: Vec<TrafficTarget>,
    /// The Revisions referred to, by name.
    pub revisions: BTreeMap<String, Revision>,
}

/// Resolves a Route's traffic (upstream's `BuildTrafficConfiguration`).
pub fn build_traffic(route: &Route, catalog: &impl Catalog) -> Result<TrafficConfig, TargetError> {
    let ns = route.namespace();
    let mut cfg = TrafficConfig::default();
    let mut deferred: Option<TargetError> = None;
    for t in &route.spec.traffic {
        let resolved = if !t.revision_name.is_empty() {
            revision_target(t, ns, catalog)
        } else if !t.configuration_name.is_empty() {
            configuration_target(t, ns, catalog)
        } else {
            continue;
        };
        match resolved {
            Ok((target, rev)) => {
                cfg.revisions
                    .insert(target.revision_name.clone(), rev.clone());
                add_flattened(&mut cfg, target);
            }
            Err(e) => {
                if deferred.is_none() || e.is_failure() {
                    deferred = Some(e);
                }
            }
        }
    }
    if let Some(e) = deferred {
        return Err(e);
    }
    for group in cfg.targets.values_mut() {
        consolidate(group);
    }
    Ok(cfg)
}

fn configuration_target<'a>(
    t: &TrafficTarget,
    ns: &str,
    catalog: &'a impl Catalog,
) -> Result<(TrafficTarget, &'a Revision), TargetError> {
    let config = catalog
        .configuration(ns, &t.configuration_name)
        .ok_or_else(|| missing("Configuration", &t.configuration_name))?;
    let latest = &config.status.latest_ready_revision_name;
    if latest.is_empty() {
        return Err(TargetError::UnreadyConfiguration {
            name: t.configuration_name.clone(),
            failed: config.status.condition_status(READY) == FALSE,
        });
    }
    let rev = catalog
        .revision(ns, latest)
        .ok_or_else(|| missing("Revision", latest))?;
    let mut target = t.clone();
    target.revision_name = latest.clone();
    Ok((target, rev))
}

fn revision_target<'a>(
    t: &TrafficTarget,
    ns: &str,
    catalog: &'a impl Catalog,
) -> Result<(TrafficTarget, &'a Revision), TargetError> {
    let rev = catalog
        .revision(ns, &t.revision_name)
        .ok_or_else(|| missing("Revision", &t.revision_name))?;
    let status = rev.status.condition_status(READY);
    if status != "True" {
        return Err(TargetError::UnreadyRevision {
            name: t.revision_name.clone(),
            failed: status == FALSE,
        });
    }
    let mut target = t.clone();
    if let Some(config) = rev
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONFIGURATION_LABEL))
    {
        target.configuration_name = config.clone();
        if catalog.configuration(ns, config).is_none() {
            return Err(missing("Configuration", config));
        }
    }
    Ok((target, rev))
}

fn missing(kind: &'static str, name: &str) -> TargetError {
    TargetError::Missing {
        kind,
        name: name.to_string(),
    }
}

fn add(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (a, Some(b)) => Some(a.unwrap_or(0).saturating_add(b)),
        (a, None) => a,
    }
}

/// `mergeIfNecessary` then grouping by tag.
fn add_flattened(cfg: &mut TrafficConfig, target: TrafficTarget) {
    match cfg.revision_targets.iter_mut().find(|r| {
        r.tag == target.tag
            && r.revision_name == target.revision_name
            && r.latest_revision == target.latest_revision
    }) {
        Some(r) => r.percent = add(r.percent, target.percent),
        None => cfg.revision_targets.push(target.clone()),
    }
    if !target.tag.is_empty() {
        cfg.targets
            .entry(target.tag.clone())
            .or_default()
            .push(target.clone());
    }
    cfg.targets
        .entry(DEFAULT_TARGET.to_string())
        .or_default()
        .push(target);
}

/// Entries naming the same Revision are summed (first one kept); a lone entry gets 100%.
fn consolidate(group: &mut Vec<TrafficTarget>) {
    let mut out: Vec<TrafficTarget> = Vec::with_capacity(group.len());
    for t in group.drain(..) {
        match out.iter_mut().find(|o| o.revision_name == t.revision_name) {
            Some(o) => o.percent = add(o.percent, t.percent),
            None => out.push(t),
        }
    }
    if let [only] = out.as_mut_slice() {
        only.percent = Some(100);
    }
    *group = out;
}
