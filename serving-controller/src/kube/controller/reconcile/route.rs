//! Route → KIngress, and the Route's status.

use super::{admit_or_reject, meta_shows};
use crate::ingress::Ingress;
use crate::kube::controller::action::Action;
use crate::kube::controller::core::Core;
use crate::kube::controller::placeholder::{internal_gateway, placeholder_services};
use crate::kube::controller::status::status_patch;
use crate::kube::controller::watch::ObjectKind;
use crate::serving::{Key, Route, admit_route, reconcile_route};

impl Core {
    pub(super) fn route_pass(&mut self, key: &Key, now: &str, out: &mut Vec<Action>) {
        let problem = format!("Route {key}");
        let Some(observed) = self.routes.get(key) else {
            self.problems.remove(&problem);
            // Its placeholder Services go with it (owner reference).
            self.placeholders.remove(key);
            if self.route_outcomes.remove(key).is_some() {
                self.dirty_services.insert(key.clone());
            }
            return;
        };
        let Some(route) = admit_or_reject(
            &mut self.problems,
            problem,
            ObjectKind::Route,
            key,
            observed,
            &observed.object.status,
            admit_route,
            now,
            out,
        ) else {
            return;
        };
        let mut outcome = reconcile_route(&route, &self.catalog, &self.cfg, None);
        if let Some(desired) = &outcome.ingress {
            match self.ingresses.get(key) {
                Some(current) if same_ingress(current, desired) => {
                    // The gateway's status counts only for the generation that carries this spec.
                    let generation = current.metadata.generation;
                    if generation.is_some() && current.status.observed_generation == generation {
                        outcome = reconcile_route(
                            &route,
                            &self.catalog,
                            &self.cfg,
                            Some(&current.status),
                        );
                    }
                }
                _ => out.push(Action::ApplyIngress(Box::new(desired.clone()))),
            }
        } else if let Some(error) = &outcome.error {
            tracing::info!(route = %key, %error, "traffic not resolved; KIngress left as it is");
        }
        self.placeholder_pass(key, &route, out);
        out.extend(status_patch(
            ObjectKind::Route,
            key,
            outcome.route.status.clone(),
            &observed.object.status,
            now,
        ));
        if self.route_outcomes.get(key) != Some(&outcome) {
            self.route_outcomes.insert(key.clone(), outcome);
            self.dirty_services.insert(key.clone());
        }
    }
}

impl Core {
    /// Applies the Route's placeholder Services when they differ from those applied.
    fn placeholder_pass(&self, key: &Key, route: &Route, out: &mut Vec<Action>) {
        let gateway = internal_gateway(self.ingresses.get(key));
        let services = placeholder_services(route, &self.cfg, &gateway);
        let applied = self.placeholders.get(key);
        if applied == Some(&services) {
            return;
        }
        let stale = applied
            .into_iter()
            .flatten()
            .filter_map(|s| s.metadata.name.clone())
            .filter(|name| {
                !services
                    .iter()
                    .any(|s| s.metadata.name.as_ref() == Some(name))
            })
            .collect();
        out.push(Action::ApplyPlaceholders {
            route: key.clone(),
            services,
            stale,
        });
    }
}

/// Whether the KIngress in the API already is the desired one.
fn same_ingress(current: &Ingress, desired: &Ingress) -> bool {
    current.spec == desired.spec && meta_shows(&current.metadata, &desired.metadata)
}
