//! What runs and where Envoy sends it: which Revisions run (and whether a Route reaches
//! them), what the runtime reports back, each Revision's Service and Endpoints for the
//! gateway, and whether those Endpoints are the activator or the instances.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use sluice_serving::serving::{Key, Readiness, Revision};

use super::objects::{min_scale, revision_timeout, split_revisions};
use super::{
    Controller, Output, Run, RuntimeReport, make_endpoints, make_revision_service, object_key,
    process_spec,
};
use crate::gateway::documents::{Kind, Object};

impl Controller {
    /// Routes every Revision's traffic through the activator at `addr` unless
    /// [`Self::set_direct`] takes it out of the path.
    pub fn with_activator(mut self, addr: SocketAddr) -> Self {
        self.activator = Some(addr);
        self
    }

    /// `config-autoscaler` in force (defaults when absent or invalid).
    pub fn autoscaler_config(&self) -> &sluice_autoscaler::Config {
        &self.autoscaler_cfg
    }

    /// Whether Envoy sends the Revision's traffic through the activator.
    pub fn via_activator(&self, revision: &Key) -> bool {
        self.activator.is_some() && !self.direct.contains(revision)
    }

    /// Whether some Revision is served without the activator.
    pub fn any_direct(&self) -> bool {
        !self.direct.is_empty()
    }

    /// The autoscaler's path decision: straight to the instances (`direct`) or through the
    /// activator. The Revision's Service (its per-instance limit) and Endpoints follow.
    pub fn set_direct(&mut self, revision: &Key, direct: bool) {
        let changed = if direct {
            self.direct.insert(revision.clone())
        } else {
            self.direct.remove(revision)
        };
        if changed {
            self.dirty_path.insert(revision.clone());
        }
    }

    /// What the runtime reports for a Revision now.
    pub fn runtime_changed(&mut self, revision: &Key, report: RuntimeReport) {
        if self.runtime.get(revision) == Some(&report) {
            return;
        }
        let readiness_changed = self.readiness.get(revision) != Some(&report.readiness);
        self.readiness
            .insert(revision.clone(), report.readiness.clone());
        let ready_changed = self
            .runtime
            .get(revision)
            .is_none_or(|r| r.ready != report.ready);
        self.runtime.insert(revision.clone(), report);
        if readiness_changed && let Some(config) = self.configuration_of(revision) {
            self.dirty_configs.insert(config);
        }
        if ready_changed {
            // Endpoints, and KIngresses waiting for this Revision.
            let waiting: Vec<Key> = self
                .pending
                .iter()
                .filter(|(_, (_, revs))| revs.contains(&revision.name))
                .map(|(k, _)| k.clone())
                .collect();
            self.dirty_routes.extend(waiting);
            self.dirty_endpoints.insert(revision.clone());
        }
    }

    /// The Revision's Service and (empty until instances are ready) Endpoints for the gateway.
    pub(super) fn revision_service(&mut self, revision: &Revision, out: &mut Output) {
        let key = revision.key();
        let svc = make_revision_service(revision, &self.cfg, !self.via_activator(&key));
        if self.revision_services.get(&key) != Some(&svc) {
            out.gateway.push((
                object_key(Kind::Service, &key),
                Some(Object::Service(Box::new(svc.clone()))),
            ));
            self.revision_services.insert(key.clone(), svc);
            self.dirty_endpoints.insert(key);
            self.dirty_scale = true;
        }
    }

    pub(super) fn revision_gone(&mut self, key: &Key, out: &mut Output) {
        self.catalog.revisions.remove(key);
        if self.revision_services.remove(key).is_some() {
            out.gateway.push((object_key(Kind::Service, key), None));
        }
        if self.revision_endpoints.remove(key).is_some() {
            out.gateway.push((object_key(Kind::Endpoints, key), None));
        }
        self.desired.remove(key);
        self.direct.remove(key);
        self.runtime.remove(key);
        self.readiness.remove(key);
        out.remove.push(key.clone());
    }

    /// Which Revisions run, and how many instances.
    pub(super) fn scale(&mut self, out: &mut Output) {
        // Reachable: some Route sends (or is about to send) traffic to it.
        let mut active: BTreeSet<Key> = BTreeSet::new();
        let mut latest: BTreeSet<Key> = BTreeSet::new();
        for outcome in self.config_outcomes.values() {
            let st = &outcome.configuration.status;
            if !st.latest_created_revision_name.is_empty() {
                latest.insert(Key::new(
                    outcome.configuration.namespace(),
                    &st.latest_created_revision_name,
                ));
            }
        }
        for (key, outcome) in &self.route_outcomes {
            for t in &outcome.route.spec.traffic {
                let name = if !t.revision_name.is_empty() {
                    t.revision_name.clone()
                } else if let Some(c) = self
                    .config_outcomes
                    .get(&Key::new(&key.namespace, &t.configuration_name))
                {
                    let st = &c.configuration.status;
                    if st.latest_ready_revision_name.is_empty() {
                        st.latest_created_revision_name.clone()
                    } else {
                        st.latest_ready_revision_name.clone()
                    }
                } else {
                    continue;
                };
                active.insert(Key::new(&key.namespace, &name));
            }
        }
        for (key, ingress) in self
            .served
            .iter()
            .chain(self.pending.iter().map(|(k, (i, _))| (k, i)))
        {
            for r in split_revisions(ingress) {
                active.insert(Key::new(&key.namespace, &r));
            }
        }
        let mut changed = Vec::new();
        for (key, revision) in &self.catalog.revisions {
            let min = min_scale(revision);
            let is_active = active.contains(key) || latest.contains(key);
            let want = if is_active { min.max(1) } else { min };
            let ask = (want, is_active, active.contains(key));
            if self.desired.get(key) != Some(&ask) {
                changed.push((key.clone(), ask));
            }
        }
        for (key, ask) in changed {
            self.desired.insert(key.clone(), ask);
            if let Some(revision) = self.catalog.revisions.get(&key) {
                let (instances, active, reachable) = ask;
                out.run.push(Run {
                    spec: process_spec(revision, &self.cfg),
                    instances,
                    active,
                    reachable,
                    annotations: revision.metadata.annotations.clone().unwrap_or_default(),
                    timeout: std::time::Duration::from_secs(
                        u64::try_from(revision_timeout(revision, &self.cfg)).unwrap_or(0),
                    ),
                    response_start_timeout: revision.spec.response_start_timeout(),
                    idle_timeout: revision.spec.idle_timeout(),
                    h2c: revision.spec.is_h2c(),
                });
            }
        }
    }

    /// Endpoints for the Revisions whose ready instances changed.
    pub(super) fn endpoints(&mut self, out: &mut Output) {
        for key in std::mem::take(&mut self.dirty_endpoints) {
            let Some(revision) = self.catalog.revisions.get(&key) else {
                continue;
            };
            let ready = match &self.activator {
                Some(addr) if !self.direct.contains(&key) => std::slice::from_ref(addr),
                _ => self
                    .runtime
                    .get(&key)
                    .map(|r| r.ready.as_slice())
                    .unwrap_or_default(),
            };
            let endpoints = make_endpoints(revision, ready);
            if self.revision_endpoints.get(&key) != Some(&endpoints) {
                out.gateway.push((
                    object_key(Kind::Endpoints, &key),
                    Some(Object::Endpoints(Box::new(endpoints.clone()))),
                ));
                self.revision_endpoints.insert(key, endpoints);
            }
        }
    }

    /// Whether a Revision can take traffic now: it has a ready instance, or it was Ready and
    /// the activator (which wakes it and holds requests meanwhile) is in its path.
    pub(super) fn can_answer(&self, revision: &Key) -> bool {
        let Some(rt) = self.runtime.get(revision) else {
            return false;
        };
        !rt.ready.is_empty() || (self.via_activator(revision) && rt.readiness == Readiness::Ready)
    }
}
