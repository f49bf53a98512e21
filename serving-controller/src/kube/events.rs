//! Kubernetes Events on a KIngress, so `kubectl describe kingress` shows why it is not Ready.
//!
//! Events go to the `events.k8s.io/v1` API with `create` only (the one verb the RBAC grants):
//! instead of kube-runtime's `Recorder`, which also patches event series, repeats are
//! suppressed here — an event is published only when its reason or note differs from the last
//! one published for the same KIngress.

use std::collections::HashMap;
use std::sync::Mutex;

use ::kube::api::{Api, PostParams};
use ::kube::{Client, Resource};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use super::KubeError;
use super::status::{FIELD_MANAGER, ours_and_addressable};
use crate::ingress::{Ingress, IngressKey};

/// Longest note Kubernetes accepts on an event (1 kB).
const MAX_NOTE: usize = 1024;

/// Event type `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something worth knowing.
    Normal,
    /// Something is wrong with the object.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Publishes events about KIngresses of our class.
pub struct EventPublisher {
    client: Client,
    instance: String,
    last: Mutex<HashMap<IngressKey, (String, String)>>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// `note` cut to at most [`MAX_NOTE`] bytes, on a character boundary.
fn truncate(note: &str) -> &str {
    if note.len() <= MAX_NOTE {
        return note;
    }
    let mut end = MAX_NOTE;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

impl EventPublisher {
    /// Publishes as controller `sluice-gateway`, instance `instance` (e.g. the pod name).
    pub fn new(client: Client, instance: impl Into<String>) -> Self {
        Self {
            client,
            instance: instance.into(),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an event about `ingress` (`action` e.g. `Translate`, `reason` CamelCase).
    /// Returns `false` without a request when it repeats the last event for this KIngress.
    /// Refuses KIngresses of other classes.
    pub async fn publish(
        &self,
        ingress: &Ingress,
        type_: EventType,
        action: &str,
        reason: &str,
        note: &str,
    ) -> Result<bool, KubeError> {
        let (namespace, name) = ours_and_addressable(ingress)?;
        let note = truncate(note);
        let key = ingress.key();
        let entry = (reason.to_string(), note.to_string());
        if self.last_for(&key).as_ref() == Some(&entry) {
            return Ok(false);
        }
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.as_str().to_string()),
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            regarding: Some(ingress.object_ref(&())),
            reporting_controller: Some(FIELD_MANAGER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &event)
            .await
            .map_err(|source| KubeError::Api {
                action: "event",
                ingress: key.clone(),
                source: Box::new(source),
            })?;
        if let Ok(mut last) = self.last.lock() {
            last.insert(key, entry);
        }
        Ok(true)
    }

    /// Forgets a deleted KIngress (so a re-created one gets its events again).
    pub fn forget(&self, key: &IngressKey) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(key);
        }
    }

    fn last_for(&self, key: &IngressKey) -> Option<(String, String)> {
        self.last.lock().ok()?.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_NOTE && cut.len() >= MAX_NOTE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
