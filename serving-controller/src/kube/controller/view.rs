//! What the controller shows: [`ControllerStatus`] (`/status`, metrics).

use std::collections::BTreeMap;

use serde::Serialize;

use super::core::Core;
use crate::serving::HasConditions;
use crate::serving::conditions::READY;

/// A Service's line in [`ControllerStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    /// `namespace/name`.
    pub name: String,
    /// Its `Ready` status (`True`, `False`, `Unknown`).
    pub ready: String,
    /// The reason when not ready.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Its URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its latest ready Revision.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub latest_ready_revision: String,
}

/// What the controller shows (`/status`, metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControllerStatus {
    /// Every watch has listed once.
    pub synced: bool,
    /// This replica leads (holds the Lease; always without an election): only the leader
    /// reconciles and writes, the others keep their caches warm.
    pub leader: bool,
    /// Objects known per resource.
    pub objects: BTreeMap<&'static str, usize>,
    /// Knative Services with their readiness.
    pub services: Vec<ServiceView>,
    /// Objects failing decoding or validation: `Kind ns/name` → message.
    pub problems: BTreeMap<String, String>,
    /// The last failure of each write (`apply KIngress default/hello` → error; cleared when
    /// it succeeds), and of each watch before the first sync (`watch <resource>`).
    pub errors: BTreeMap<String, String>,
    /// Reconciles run.
    pub reconciles: u64,
    /// Writes made, by action.
    pub writes: BTreeMap<&'static str, u64>,
    /// Writes failed, by action.
    pub write_failures: BTreeMap<&'static str, u64>,
}

impl Core {
    /// Objects that fail validation or decoding (`Kind ns/name` → message), and a ConfigMap that
    /// does not parse.
    pub fn problems(&self) -> BTreeMap<String, String> {
        let mut out = self.problems.clone();
        if let Some(e) = &self.config_error {
            out.insert("ConfigMap knative-serving".into(), e.clone());
        }
        out
    }

    /// How many objects of each kind are known.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("services", self.services.len()),
            ("configurations", self.configurations.len()),
            ("revisions", self.revisions.len()),
            ("routes", self.routes.len()),
            ("ingresses", self.ingresses.len()),
            ("endpointslices", self.slices.len()),
            ("deployments", self.deployments.len()),
            ("pods", self.pods.len()),
        ])
    }
}

impl ControllerStatus {
    /// Refreshes what the core knows (objects, Services, problems, sync).
    pub fn update(&mut self, core: &Core) {
        self.services = core
            .services
            .iter()
            .map(|(key, o)| {
                let status = &o.object.status;
                ServiceView {
                    name: key.to_string(),
                    ready: status.condition_status(READY).to_string(),
                    reason: status
                        .condition(READY)
                        .map(|c| c.reason.clone())
                        .unwrap_or_default(),
                    url: status.url.clone(),
                    latest_ready_revision: status.latest_ready_revision_name.clone(),
                }
            })
            .collect();
        self.synced = core.is_synced();
        if self.synced {
            // Watch failures before the first sync explain a controller that does nothing;
            // later ones are retried and only logged.
            self.errors.retain(|k, _| !k.starts_with("watch "));
        }
        self.objects = core.counts();
        self.problems = core.problems();
    }
}
