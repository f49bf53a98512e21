//! Revision garbage collection under `sluice up`: `config-gc` with Knative's rules
//! ([`sluice_serving::serving::gc`]).
//!
//! Each Revision's routing state follows the KIngresses actually served (and those waiting to
//! be): named by one → `active`; no longer named after having been → `reserve`, with the time
//! it changed, persisted in the state directory with the Revisions themselves. A collected
//! Revision leaves the state; the next pass stops its instances and drops its Service, as for
//! a deleted Configuration's Revisions.

use std::collections::BTreeSet;

use sluice_serving::serving::Key;
use sluice_serving::serving::gc::{Candidate, NO_GC_ANNOTATION, collect};
use sluice_serving::serving::state::{RoutingRecord, RoutingState};

use super::Controller;
use super::objects::split_revisions;

impl Controller {
    /// Brings routing states up to date and deletes what `config-gc` collects, at `now` (Unix
    /// seconds). Returns whether a pass is due (something was collected, or the state is to be
    /// written). Call it between passes, not before the first: before Routes are reconciled
    /// nothing looks routed.
    pub fn collect_garbage(&mut self, now: i64) -> bool {
        self.update_routing(now);
        let cfg = self.cfg.gc;
        let mut collected = Vec::new();
        for (ck, c) in &self.state.configurations {
            let candidates: Vec<Candidate> = c
                .revisions
                .iter()
                .filter_map(|(name, rec)| {
                    let r = c.routing.get(name)?;
                    let no_gc = rec
                        .revision
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(NO_GC_ANNOTATION))
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    Some(Candidate {
                        name: name.clone(),
                        created: r.created,
                        routing_state_modified: r.modified,
                        active: *name == c.latest_ready
                            || *name == c.latest_created
                            || r.state != RoutingState::Reserve
                            || no_gc,
                    })
                })
                .collect();
            for name in collect(&cfg, &candidates, now) {
                collected.push((ck.clone(), name));
            }
        }
        for (ck, name) in &collected {
            let Some((ns, config)) = ck.split_once('/') else {
                continue;
            };
            let key = Key::new(ns, config);
            if self.state.remove_revision(&key, name).is_some() {
                tracing::info!(configuration = %key, revision = %name, "revision garbage-collected (config-gc)");
                self.state_changed = true;
                self.dirty_configs.insert(key);
            }
        }
        !collected.is_empty() || self.state_changed
    }

    /// Moves each Revision's routing state after the KIngresses served (and waiting to be) at
    /// `now` (Unix seconds). Run after every pass, so a Revision routed for less than a tick
    /// still counts as having been active.
    pub(super) fn update_routing(&mut self, now: i64) {
        let routed: BTreeSet<(String, String)> = self
            .served
            .iter()
            .chain(self.pending.iter().map(|(k, (i, _))| (k, i)))
            .flat_map(|(k, i)| {
                split_revisions(i)
                    .into_iter()
                    .map(|r| (k.namespace.clone(), r))
            })
            .collect();
        for (ck, c) in self.state.configurations.iter_mut() {
            let namespace = ck.split_once('/').map_or("", |(ns, _)| ns).to_string();
            for name in c.revisions.keys() {
                let r = c.routing.entry(name.clone()).or_insert_with(|| {
                    self.state_changed = true;
                    RoutingRecord {
                        created: now,
                        state: RoutingState::Pending,
                        modified: None,
                    }
                });
                let next = if routed.contains(&(namespace.clone(), name.clone())) {
                    RoutingState::Active
                } else if r.state == RoutingState::Active {
                    RoutingState::Reserve
                } else {
                    r.state
                };
                if next != r.state {
                    tracing::debug!(revision = %name, from = ?r.state, to = ?next, "routing state");
                    r.state = next;
                    r.modified = Some(now);
                    self.state_changed = true;
                }
            }
        }
    }
}
