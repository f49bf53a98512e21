//! Configuration → Revisions (knative/serving `pkg/reconciler/configuration`).
//!
//! A new Revision is created only when the template differs from the latest created
//! Revision's (compared by [`template_hash`]): reverting to an older template creates a new
//! Revision, as upstream. It is named `{config}-00001`, `-00002`, … from the generation counter
//! in [`ServingState`], or the template's own `metadata.name` (an error when that name already
//! exists with another template). `latestReadyRevisionName` follows the runtime's readiness
//! report and only moves forward (a newer ready Revision replaces it; an older one never does).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::conditions::{FALSE, READY, TRUE, UNKNOWN, condition, happy};
use super::names::child_name;
use super::state::{ConfigurationState, RevisionRecord, ServingState, state_key};
use super::types::{
    API_VERSION, Configuration, ConfigurationStatus, Key, Revision, RevisionStatus,
    RevisionTemplateSpec,
};
use super::{
    CONFIG_UID_LABEL, CONFIGURATION_GENERATION_LABEL, CONFIGURATION_LABEL, SERVICE_LABEL,
    SERVICE_UID_LABEL,
};

/// What the runtime reports about one Revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Readiness {
    /// Not (yet) serving: starting, or no report at all.
    #[default]
    Pending,
    /// At least one instance passes its readiness check.
    Ready,
    /// It cannot become ready (e.g. no `command` for the standalone runtime, crash loop).
    Failed {
        /// CamelCase reason.
        reason: String,
        /// Human-readable detail.
        message: String,
    },
}

/// Readiness by Revision; a Revision not listed is [`Readiness::Pending`].
pub type ReadinessReport = BTreeMap<Key, Readiness>;

/// Why a Configuration could not create its Revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    /// `spec.template.metadata.name` names a Revision that exists with another template.
    #[error(
        "revision {name:?} already exists with a different template; change the template's metadata.name"
    )]
    RevisionNameTaken {
        /// The requested name.
        name: String,
    },
}

/// The result of one Configuration pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigurationOutcome {
    /// The Configuration with its status.
    pub configuration: Configuration,
    /// All its Revisions (oldest first), with their status.
    pub revisions: Vec<Revision>,
    /// The Revision created in this pass, if any.
    pub created: Option<String>,
    /// A Revision could not be created (the status says so too).
    pub error: Option<ConfigurationError>,
}

/// Canonical hash of a template: SHA-256 of its JSON (name, labels, annotations, spec; maps are
/// sorted, so equal templates hash equally whatever their YAML key order).
pub fn template_hash(t: &RevisionTemplateSpec) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        name: &'a Option<String>,
        labels: &'a Option<BTreeMap<String, String>>,
        annotations: &'a Option<BTreeMap<String, String>>,
        spec: &'a super::pod::RevisionSpec,
    }
    let c = Canonical {
        name: &t.metadata.name,
        labels: &t.metadata.labels,
        annotations: &t.metadata.annotations,
        spec: &t.spec,
    };
    let bytes = serde_json::to_vec(&c).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Knative's controller owner reference (`kmeta.NewControllerRef`).
pub fn controller_ref(kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Reconciles one (admitted) Configuration: creates its Revision when the template changed,
/// records it in `state`, and computes the statuses from `readiness`.
pub fn reconcile_configuration(
    config: &Configuration,
    state: &mut ServingState,
    readiness: &ReadinessReport,
) -> ConfigurationOutcome {
    let key = config.key();
    let hash = template_hash(&config.spec.template);
    let wanted = config
        .spec
        .template
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty());
    let taken_elsewhere = wanted.as_deref().is_some_and(|n| {
        state.revision_exists(&key.namespace, n)
            && state
                .configuration(&key)
                .is_none_or(|c| !c.revisions.contains_key(n))
    });
    let entry = state.configurations.entry(state_key(&key)).or_default();
    let mut created = None;
    let mut error = None;
    let unchanged = entry
        .revisions
        .get(&entry.latest_created)
        .is_some_and(|r| r.template_hash == hash);
    if !unchanged {
        match wanted {
            Some(name) if taken_elsewhere => {
                error = Some(ConfigurationError::RevisionNameTaken { name });
            }
            Some(name) => match entry.revisions.get(&name) {
                Some(r) if r.template_hash == hash => entry.latest_created = name,
                Some(_) => error = Some(ConfigurationError::RevisionNameTaken { name }),
                None => created = Some(create(entry, config, name, hash)),
            },
            None => {
                // Skip numbers already used by an explicitly named Revision.
                let mut generation = entry.generation.saturating_add(1);
                let mut name = child_name(&key.name, &format!("-{generation:05}"));
                while entry.revisions.contains_key(&name) && generation < u64::MAX {
                    generation += 1;
                    name = child_name(&key.name, &format!("-{generation:05}"));
                }
                entry.generation = generation.saturating_sub(1);
                created = Some(create(entry, config, name, hash));
            }
        }
    }

    let status_of = |name: &str| {
        readiness
            .get(&Key::new(&key.namespace, name))
            .cloned()
            .unwrap_or_default()
    };
    // Latest ready: the newest ready Revision, if newer than the recorded one.
    let current = entry
        .revisions
        .get(&entry.latest_ready)
        .map_or(0, |r| r.generation);
    if let Some((name, _)) = entry
        .revisions
        .iter()
        .filter(|(n, r)| r.generation > current && status_of(n) == Readiness::Ready)
        .max_by_key(|(_, r)| r.generation)
    {
        entry.latest_ready = name.clone();
    }

    let mut records: Vec<&RevisionRecord> = entry.revisions.values().collect();
    records.sort_by_key(|r| r.generation);
    let revisions = records
        .into_iter()
        .map(|r| {
            let mut rev = r.revision.clone();
            rev.status = revision_status(rev.name(), &status_of(rev.name()));
            rev
        })
        .collect();

    let mut configuration = config.clone();
    configuration.status = configuration_status(
        config,
        entry,
        &status_of(&entry.latest_created),
        error.as_ref(),
    );
    ConfigurationOutcome {
        configuration,
        revisions,
        created,
        error,
    }
}

fn create(
    entry: &mut ConfigurationState,
    config: &Configuration,
    name: String,
    hash: String,
) -> String {
    entry.generation = entry.generation.saturating_add(1);
    let generation = entry.generation;
    let template = &config.spec.template;
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.insert(CONFIGURATION_LABEL.into(), config.name().to_string());
    labels.insert(
        CONFIGURATION_GENERATION_LABEL.into(),
        generation.to_string(),
    );
    let parent = config.metadata.labels.clone().unwrap_or_default();
    if let Some(s) = parent.get(SERVICE_LABEL) {
        labels.insert(SERVICE_LABEL.into(), s.clone());
    }
    if let Some(uid) = &config.metadata.uid {
        labels.insert(CONFIG_UID_LABEL.into(), uid.clone());
    }
    if let Some(uid) = parent.get(SERVICE_UID_LABEL) {
        labels.insert(SERVICE_UID_LABEL.into(), uid.clone());
    }
    let revision = Revision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: config.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            owner_references: Some(vec![controller_ref(Configuration::KIND, &config.metadata)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        ..Revision::default()
    };
    entry.revisions.insert(
        name.clone(),
        RevisionRecord {
            generation,
            template_hash: hash,
            revision,
        },
    );
    entry.latest_created = name.clone();
    name
}

fn revision_status(name: &str, readiness: &Readiness) -> RevisionStatus {
    let ready = match readiness {
        Readiness::Ready => happy(READY),
        Readiness::Pending => condition(READY, UNKNOWN, "Deploying", ""),
        Readiness::Failed { reason, message } => condition(READY, FALSE, reason, message),
    };
    RevisionStatus {
        conditions: vec![ready],
        service_name: name.to_string(),
        ..RevisionStatus::default()
    }
}

fn configuration_status(
    config: &Configuration,
    entry: &ConfigurationState,
    latest_created: &Readiness,
    error: Option<&ConfigurationError>,
) -> ConfigurationStatus {
    let ready = match (error, latest_created) {
        (Some(e), _) => condition(
            READY,
            FALSE,
            "RevisionFailed",
            &format!("Revision creation failed with message: {e}."),
        ),
        (None, Readiness::Failed { message, .. }) => condition(
            READY,
            FALSE,
            "RevisionFailed",
            &format!(
                "Revision {:?} failed with message: {message}.",
                entry.latest_created
            ),
        ),
        _ if entry.latest_ready == entry.latest_created && !entry.latest_created.is_empty() => {
            condition(READY, TRUE, "", "")
        }
        _ => condition(READY, UNKNOWN, "", ""),
    };
    ConfigurationStatus {
        observed_generation: config.metadata.generation,
        conditions: vec![ready],
        latest_ready_revision_name: entry.latest_ready.clone(),
        latest_created_revision_name: entry.latest_created.clone(),
    }
}
