//! Routing states and Revision garbage collection on a cluster, as Knative's labeler and
//! `pkg/reconciler/gc` keep them: the state lives on the Revision objects, so a restart or
//! another replica carries on from it.
//!
//! - **Routing state** (label `serving.knative.dev/routingState`, annotation
//!   `serving.knative.dev/routingStateModified`, RFC 3339): `active` while a KIngress — the one
//!   in the API or the one about to be applied — splits traffic to the Revision; `reserve` once
//!   it no longer does, stamped with the time; `pending` until it ever was. Written with a JSON
//!   merge patch of those two keys only (a server-side apply by the manager that created the
//!   Revision would drop the fields it set at creation).
//! - **Collection** ([`collect`] with `config-gc`, Knative's rules): per Configuration, never
//!   the latest created or ready Revision, one not in `reserve`, or one annotated
//!   `serving.knative.dev/no-gc: "true"`. A collected Revision is deleted; its Deployment and
//!   Service go with it (owner references).
//!
//! Both run after the passes of a reconcile that touched a Route, a KIngress or a
//! Configuration, and on the controller's periodic tick (ages grow without events).

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use crate::kube::controller::action::Action;
use crate::kube::controller::core::Core;
use crate::kube::controller::rebuild::configuration_of;
use crate::serving::Key;
use crate::serving::gc::{Candidate, NO_GC_ANNOTATION, collect};
use crate::serving::state::RoutingState;

/// Label: a Revision's routing state (Knative's).
pub const ROUTING_STATE_LABEL: &str = "serving.knative.dev/routingState";
/// Annotation: when that state last changed, RFC 3339 (Knative's).
pub const ROUTING_STATE_MODIFIED_ANNOTATION: &str = "serving.knative.dev/routingStateModified";

/// The label's value for a state.
pub fn routing_label(state: RoutingState) -> &'static str {
    match state {
        RoutingState::Pending => "pending",
        RoutingState::Active => "active",
        RoutingState::Reserve => "reserve",
    }
}

fn parse_state(value: &str) -> Option<RoutingState> {
    match value {
        "pending" => Some(RoutingState::Pending),
        "active" => Some(RoutingState::Active),
        "reserve" => Some(RoutingState::Reserve),
        _ => None,
    }
}

fn unix(time: &str) -> Option<i64> {
    time.parse::<Timestamp>().ok().map(|t| t.as_second())
}

impl Core {
    /// Moves routing states after the KIngresses and collects what `config-gc` says, at `now`
    /// (RFC 3339, seconds).
    pub(super) fn collect_garbage(&mut self, now: &str, out: &mut Vec<Action>) {
        let Some(now_unix) = unix(now) else {
            return;
        };
        self.update_routing(now, out);
        let cfg = self.cfg.gc;
        for (config_key, names) in &self.revisions_by_config {
            let latest = self
                .config_outcomes
                .get(config_key)
                .map(|o| &o.configuration.status);
            let candidates: Vec<Candidate> = names
                .iter()
                .filter_map(|name| {
                    let key = Key::new(config_key.namespace.clone(), name);
                    let revision = &self.revisions.get(&key)?.object;
                    let meta = &revision.metadata;
                    let state = meta
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(ROUTING_STATE_LABEL))
                        .and_then(|v| parse_state(v));
                    let no_gc = meta
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(NO_GC_ANNOTATION))
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    let latest = latest.is_none_or(|s| {
                        s.latest_created_revision_name == *name
                            || s.latest_ready_revision_name == *name
                    });
                    Some(Candidate {
                        name: name.clone(),
                        created: meta
                            .creation_timestamp
                            .as_ref()
                            .map_or(now_unix, |t| t.0.as_second()),
                        routing_state_modified: meta
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ROUTING_STATE_MODIFIED_ANNOTATION))
                            .and_then(|t| unix(t)),
                        active: latest
                            || state != Some(RoutingState::Reserve)
                            || no_gc
                            || self.deleting.contains(&key),
                    })
                })
                .collect();
            for name in collect(&cfg, &candidates, now_unix) {
                let key = Key::new(config_key.namespace.clone(), name);
                tracing::info!(configuration = %config_key, revision = %key, "collecting Revision (config-gc)");
                if let Some(config) = self.configurations.get(config_key) {
                    out.push(super::event(
                        "Configuration",
                        config_key,
                        &config.object.metadata,
                        false,
                        "Collected",
                        format!("Revision {:?} collected (config-gc)", key.name),
                    ));
                }
                out.push(Action::DeleteRevision(key));
            }
        }
        for action in out.iter() {
            if let Action::DeleteRevision(key) = action {
                self.deleting.insert(key.clone());
            }
        }
    }

    /// Labels each Revision whose routing state moved.
    fn update_routing(&self, now: &str, out: &mut Vec<Action>) {
        let routed: BTreeSet<Key> = self
            .ingresses
            .values()
            .chain(
                self.route_outcomes
                    .values()
                    .filter_map(|o| o.ingress.as_ref()),
            )
            .flat_map(|i| {
                let namespace = i.metadata.namespace.clone().unwrap_or_default();
                i.split_services()
                    .into_iter()
                    .map(move |name| Key::new(namespace.clone(), name))
            })
            .collect();
        for (key, observed) in &self.revisions {
            if observed.error.is_some()
                || configuration_of(&observed.object).is_none()
                || self.deleting.contains(key)
            {
                continue;
            }
            let current = observed
                .object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ROUTING_STATE_LABEL))
                .and_then(|v| parse_state(v));
            let next = if routed.contains(key) {
                RoutingState::Active
            } else if current == Some(RoutingState::Active) {
                RoutingState::Reserve
            } else {
                current.unwrap_or(RoutingState::Pending)
            };
            if current != Some(next) {
                tracing::debug!(revision = %key, from = ?current, to = ?next, "routing state");
                out.push(Action::LabelRevision {
                    revision: key.clone(),
                    state: next,
                    modified: now.to_string(),
                });
            }
        }
    }
}
