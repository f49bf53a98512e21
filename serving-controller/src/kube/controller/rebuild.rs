//! The [`ServingState`] rebuilt from the Revision objects in the API: which Revisions each
//! Configuration has, their generation numbers (label
//! `serving.knative.dev/configurationGeneration`) and the template each was created from
//! ([`TEMPLATE_HASH_ANNOTATION`]). There is no state file: the API is the state.
//!
//! [`ServingState`]: crate::serving::ServingState

use super::core::Core;
use crate::serving::state::{ConfigurationState, RevisionRecord, state_key};
use crate::serving::{
    CONFIG_UID_LABEL, CONFIGURATION_GENERATION_LABEL, CONFIGURATION_LABEL, Configuration, Key,
    Revision, RevisionTemplateSpec, SERVICE_LABEL, SERVICE_UID_LABEL, template_hash,
};

/// Annotation on each Revision the controller creates: the hash of the (defaulted) template it
/// was created from ([`template_hash`]), so that a restart knows whether the current template
/// still matches the latest Revision.
pub const TEMPLATE_HASH_ANNOTATION: &str = "serving.sluice.dev/template-hash";

impl Core {
    /// The whole [`ServingState`] from the Revision objects (at the first sync).
    pub(super) fn rebuild_state(&mut self) {
        let configs: Vec<Key> = self.revisions_by_config.keys().cloned().collect();
        for config in configs {
            self.rebuild_entry(&config);
        }
        let total: usize = self
            .state
            .configurations
            .values()
            .map(|c| c.revisions.len())
            .sum();
        tracing::info!(
            configurations = self.state.configurations.len(),
            revisions = total,
            "serving state rebuilt from the API"
        );
    }

    /// One Configuration's entry of the state from its Revision objects. The latest created
    /// and latest ready Revisions are kept when they still exist, else taken from the
    /// Configuration's status, else (latest created) the highest generation.
    pub(super) fn rebuild_entry(&mut self, config: &Key) {
        let mut entry = ConfigurationState::default();
        let config_uid = self
            .configurations
            .get(config)
            .and_then(|o| o.object.metadata.uid.clone());
        for name in self.revisions_by_config.get(config).into_iter().flatten() {
            let Some(observed) = self.revisions.get(&Key::new(&config.namespace, name)) else {
                continue;
            };
            if observed.error.is_some() {
                continue;
            }
            let revision = &observed.object;
            if !owned_by(revision, config_uid.as_deref()) {
                // A Revision of an earlier Configuration of this name, not yet collected.
                continue;
            }
            let Some(generation) =
                label(revision, CONFIGURATION_GENERATION_LABEL).and_then(|g| g.parse::<u64>().ok())
            else {
                tracing::warn!(
                    revision = %revision.key(),
                    label = CONFIGURATION_GENERATION_LABEL,
                    "Revision without a valid generation label: not counted"
                );
                continue;
            };
            entry.generation = entry.generation.max(generation);
            entry.revisions.insert(
                name.clone(),
                RevisionRecord {
                    generation,
                    template_hash: revision_template_hash(revision),
                    revision: revision.clone(),
                },
            );
        }
        let previous = self
            .state
            .configuration(config)
            .cloned()
            .unwrap_or_default();
        let status = self.configurations.get(config).map(|o| &o.object.status);
        let exists = |name: &str| !name.is_empty() && entry.revisions.contains_key(name);
        entry.latest_created = [
            previous.latest_created.as_str(),
            status.map_or("", |s| s.latest_created_revision_name.as_str()),
        ]
        .into_iter()
        .find(|n| exists(n))
        .map(str::to_string)
        .or_else(|| {
            entry
                .revisions
                .iter()
                .max_by_key(|(_, r)| r.generation)
                .map(|(n, _)| n.clone())
        })
        .unwrap_or_default();
        entry.latest_ready = [
            previous.latest_ready.as_str(),
            status.map_or("", |s| s.latest_ready_revision_name.as_str()),
        ]
        .into_iter()
        .find(|n| exists(n))
        .map(str::to_string)
        .unwrap_or_default();
        if entry.revisions.is_empty() {
            self.state.remove_configuration(config);
        } else {
            self.state.configurations.insert(state_key(config), entry);
        }
    }
}
fn label<'a>(revision: &'a Revision, name: &str) -> Option<&'a str> {
    revision
        .metadata
        .labels
        .as_ref()?
        .get(name)
        .map(String::as_str)
}

/// Whether a Revision is controlled by the Configuration with `uid` (or by no Configuration,
/// or the Configuration is not known).
fn owned_by(revision: &Revision, uid: Option<&str>) -> bool {
    let owner = revision
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == Configuration::KIND);
    match (owner, uid) {
        (Some(owner), Some(uid)) => owner.uid == uid,
        _ => true,
    }
}

/// The Configuration a Revision belongs to (label `serving.knative.dev/configuration`).
pub(crate) fn configuration_of(revision: &Revision) -> Option<Key> {
    label(revision, CONFIGURATION_LABEL)
        .filter(|n| !n.is_empty())
        .map(|n| Key::new(revision.namespace(), n))
}

/// The template hash a Revision was created from: its [`TEMPLATE_HASH_ANNOTATION`], else
/// recomputed from its labels (without the ones the controller adds), annotations and spec.
pub fn revision_template_hash(revision: &Revision) -> String {
    let annotations = revision.metadata.annotations.clone().unwrap_or_default();
    if let Some(hash) = annotations.get(TEMPLATE_HASH_ANNOTATION) {
        return hash.clone();
    }
    let mut labels = revision.metadata.labels.clone().unwrap_or_default();
    for added in [
        CONFIGURATION_LABEL,
        CONFIGURATION_GENERATION_LABEL,
        SERVICE_LABEL,
        CONFIG_UID_LABEL,
        SERVICE_UID_LABEL,
    ] {
        labels.remove(added);
    }
    let mut template = RevisionTemplateSpec::default();
    template.metadata.labels = (!labels.is_empty()).then_some(labels);
    template.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    template.spec = revision.spec.clone();
    template_hash(&template)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube::controller::action::Action;
    use crate::kube::controller::decode::Observed;
    use crate::kube::controller::watch::{ObjectKind, WatchEvent, Watched};
    use crate::serving::{
        ReadinessReport, ServingState, admit_configuration, reconcile_configuration,
    };

    fn configuration(uid: &str, target: &str) -> Configuration {
        serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default", "uid": uid, "generation": 1},
            "spec": {"template": {"spec": {"containers": [{"image": "img",
                "env": [{"name": "TARGET", "value": target}]}]}}}
        }))
        .expect("a Configuration")
    }

    /// The Revision `reconcile_configuration` makes for `config`, as the API server returns
    /// it (uid set), with or without the hash annotation.
    fn created(config: &Configuration, annotate: bool) -> Revision {
        let admitted = admit_configuration(config, &Default::default()).expect("valid");
        let mut state = ServingState::default();
        let outcome = reconcile_configuration(&admitted, &mut state, &ReadinessReport::new());
        let record = state
            .configuration(&admitted.key())
            .and_then(|c| {
                c.revisions
                    .get(outcome.created.as_deref().unwrap_or_default())
            })
            .expect("created")
            .clone();
        let mut revision = record.revision;
        revision.metadata.uid = Some("rev-uid".into());
        if annotate {
            revision
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(TEMPLATE_HASH_ANNOTATION.into(), record.template_hash);
        }
        revision
    }

    fn observed<T>(object: T) -> Observed<T> {
        Observed {
            object,
            error: None,
        }
    }

    /// A core that listed `config` and `revisions`, nothing else.
    fn synced(config: Configuration, revisions: Vec<Revision>) -> Core {
        let mut core = Core::new(None);
        for kind in ObjectKind::ALL {
            core.observe(WatchEvent::Init(kind));
        }
        core.observe(WatchEvent::Applied(Watched::Configuration(Box::new(
            observed(config),
        ))));
        for r in revisions {
            core.observe(WatchEvent::Applied(Watched::Revision(Box::new(observed(
                r,
            )))));
        }
        for kind in ObjectKind::ALL {
            core.observe(WatchEvent::InitDone(kind));
        }
        core
    }

    fn creates(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateRevision { revision, .. } => Some(revision.name().to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_template_hash_is_recomputed_when_the_annotation_is_missing() {
        let config = configuration("cfg-uid", "v1");
        assert_eq!(
            revision_template_hash(&created(&config, false)),
            revision_template_hash(&created(&config, true))
        );
    }

    #[test]
    fn a_synced_core_rebuilds_the_state_and_creates_only_for_a_new_template() {
        let config = configuration("cfg-uid", "v1");
        let revision = created(&config, true);
        let mut core = synced(config.clone(), vec![revision]);
        let key = Key::new("default", "hello");
        let entry = core.state().configuration(&key).expect("rebuilt");
        assert_eq!(entry.generation, 1);
        assert_eq!(entry.latest_created, "hello-00001");
        let actions = core.reconcile("2026-01-01T00:00:00Z");
        assert!(creates(&actions).is_empty(), "{actions:#?}");

        let mut edited = configuration("cfg-uid", "v2");
        edited.metadata.generation = Some(2);
        core.observe(WatchEvent::Applied(Watched::Configuration(Box::new(
            observed(edited),
        ))));
        assert_eq!(
            creates(&core.reconcile("2026-01-01T00:00:01Z")),
            ["hello-00002"]
        );
    }

    #[test]
    fn revisions_of_an_earlier_configuration_of_the_same_name_do_not_count() {
        let old = configuration("old-uid", "v1");
        let revision = created(&old, true);
        let mut core = synced(configuration("new-uid", "v1"), vec![revision]);
        assert!(
            core.state()
                .configuration(&Key::new("default", "hello"))
                .is_none()
        );
        // The new Configuration starts again at 00001: while the old Revision is not yet
        // collected, the API answers the create with a conflict and the controller retries.
        let actions = core.reconcile("2026-01-01T00:00:00Z");
        assert_eq!(creates(&actions), ["hello-00001"]);
    }
}
