//! Service → Configuration + Route, and the Service's status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{admit_or_reject, meta_shows};
use crate::kube::controller::action::Action;
use crate::kube::controller::core::Core;
use crate::kube::controller::status::{REASON_NOT_OWNED, status_patch};
use crate::kube::controller::watch::ObjectKind;
use crate::serving::conditions::{
    CONFIGURATIONS_READY, FALSE, ROUTES_READY, condition, with_ready,
};
use crate::serving::{Key, admit_service, make_configuration, make_route, service_status};

impl Core {
    pub(super) fn service_pass(&mut self, key: &Key, now: &str, out: &mut Vec<Action>) {
        let problem = format!("Service {key}");
        let Some(observed) = self.services.get(key) else {
            self.problems.remove(&problem);
            return;
        };
        let cfg = &self.cfg;
        let Some(service) = admit_or_reject(
            &mut self.problems,
            problem,
            ObjectKind::Service,
            key,
            observed,
            &observed.object.status,
            |s| admit_service(s, cfg),
            now,
            out,
        ) else {
            return;
        };
        let uid = service.metadata.uid.clone().unwrap_or_default();
        let config = self.configurations.get(key).map(|o| &o.object);
        let route = self.routes.get(key).map(|o| &o.object);
        let foreign = [
            ("Configuration", config.map(|c| &c.metadata)),
            ("Route", route.map(|r| &r.metadata)),
        ]
        .into_iter()
        .find(|(_, meta)| meta.is_some_and(|m| !controlled_by(m, &uid)))
        .map(|(kind, _)| kind);
        let desired_config = make_configuration(&service);
        let desired_route = make_route(&service);
        let status = match foreign {
            Some(kind) => {
                let message = format!(
                    "There is an existing {kind} {:?} that we do not own.",
                    key.name
                );
                let mut status = observed.object.status.clone();
                status.observed_generation = service.metadata.generation;
                let type_ = if kind == "Route" {
                    ROUTES_READY
                } else {
                    CONFIGURATIONS_READY
                };
                status.conditions =
                    with_ready(vec![condition(type_, FALSE, REASON_NOT_OWNED, &message)]);
                status
            }
            None => {
                if config.is_none_or(|c| {
                    c.spec != desired_config.spec
                        || !meta_shows(&c.metadata, &desired_config.metadata)
                }) {
                    out.push(Action::ApplyConfiguration(Box::new(desired_config.clone())));
                }
                if route.is_none_or(|r| {
                    r.spec != desired_route.spec
                        || !meta_shows(&r.metadata, &desired_route.metadata)
                }) {
                    out.push(Action::ApplyRoute(Box::new(desired_route.clone())));
                }
                let config_view = self
                    .config_outcomes
                    .get(key)
                    .map(|o| o.configuration.clone())
                    .or_else(|| config.cloned())
                    .unwrap_or_default();
                let route_view = self
                    .route_outcomes
                    .get(key)
                    .map(|o| o.route.clone())
                    .or_else(|| route.cloned())
                    .unwrap_or_default();
                service_status(&service, &config_view, &route_view)
            }
        };
        out.extend(status_patch(
            ObjectKind::Service,
            key,
            status,
            &observed.object.status,
            now,
        ));
    }
}

/// Whether `meta` is controlled by the object with `uid`.
fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}
