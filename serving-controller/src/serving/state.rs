//! What the serving reconcilers remember between passes, owned and persisted by the caller
//! (`sluice up` keeps it as JSON in `--state-dir`): every Revision created per Configuration,
//! its generation number and template hash, the generation counter, and the latest ready
//! Revision. A Service file holds only the current template, so this is what keeps older
//! Revisions (and the traffic naming them) alive across template edits and restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Key, Revision};

/// Current [`ServingState::version`].
pub const STATE_VERSION: u32 = 1;

/// The persisted state of all Configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingState {
    /// Format version, for future migrations.
    pub version: u32,
    /// Per Configuration, keyed `namespace/name` (JSON object keys must be strings).
    pub configurations: BTreeMap<String, ConfigurationState>,
}

impl Default for ServingState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            configurations: BTreeMap::new(),
        }
    }
}

/// The Revisions of one Configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationState {
    /// The last generation number handed out (the next Revision gets this + 1).
    pub generation: u64,
    /// The newest Revision created.
    #[serde(default)]
    pub latest_created: String,
    /// The newest Revision seen ready (only moves forward, as upstream).
    #[serde(default)]
    pub latest_ready: String,
    /// Revisions by name.
    #[serde(default)]
    pub revisions: BTreeMap<String, RevisionRecord>,
    /// Per Revision: what garbage collection needs (creation and routing state over time).
    #[serde(default)]
    pub routing: BTreeMap<String, RoutingRecord>,
}

/// A Revision's routing state, as Knative's labeler keeps it
/// (`serving.knative.dev/routingState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoutingState {
    /// No Route has sent it traffic yet.
    Pending,
    /// A Route sends it traffic.
    Active,
    /// A Route sent it traffic and no longer does: it may be collected.
    Reserve,
}

/// When a Revision was first seen and how its routing state moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRecord {
    /// First seen (Unix seconds): its creation, or the upgrade that started keeping this.
    pub created: i64,
    /// Its routing state.
    pub state: RoutingState,
    /// When that state last changed (Unix seconds).
    #[serde(default)]
    pub modified: Option<i64>,
}

/// One created Revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// Its generation number (the `-00042` of generated names).
    pub generation: u64,
    /// Hash of the template it was created from.
    pub template_hash: String,
    /// The Revision (metadata and spec; status is computed on each pass).
    pub revision: Revision,
}

/// The map key of a Configuration.
pub fn state_key(key: &Key) -> String {
    format!("{}/{}", key.namespace, key.name)
}

impl ServingState {
    /// Reads a state written by [`ServingState::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The state as pretty JSON (deterministic: maps are sorted).
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// A Configuration's state, if it ever had a Revision.
    pub fn configuration(&self, key: &Key) -> Option<&ConfigurationState> {
        self.configurations.get(&state_key(key))
    }

    /// Every Revision of every Configuration, in key and name order.
    pub fn revisions(&self) -> impl Iterator<Item = &Revision> {
        self.configurations
            .values()
            .flat_map(|c| c.revisions.values().map(|r| &r.revision))
    }

    /// Whether a Revision of that name exists in the namespace (any Configuration).
    pub fn revision_exists(&self, namespace: &str, name: &str) -> bool {
        self.configurations
            .iter()
            .filter(|(k, _)| k.split_once('/').is_some_and(|(ns, _)| ns == namespace))
            .any(|(_, c)| c.revisions.contains_key(name))
    }

    /// Drops a deleted Configuration and its Revisions; returns what was dropped.
    pub fn remove_configuration(&mut self, key: &Key) -> Option<ConfigurationState> {
        self.configurations.remove(&state_key(key))
    }

    /// Drops one Revision (garbage collection); the generation counter is kept.
    pub fn remove_revision(
        &mut self,
        configuration: &Key,
        revision: &str,
    ) -> Option<RevisionRecord> {
        let c = self.configurations.get_mut(&state_key(configuration))?;
        c.routing.remove(revision);
        c.revisions.remove(revision)
    }
}
