//! Statuses the controller writes: condition transition times, the status of objects it
//! rejects, and a Revision's status from its readiness.

use serde::Serialize;

use super::action::Action;
use super::watch::ObjectKind;
use crate::ingress::Condition;
use crate::serving::conditions::{FALSE, READY, UNKNOWN, condition, happy};
use crate::serving::types::{ConfigurationStatus, RevisionStatus, RouteStatus, ServiceStatus};
use crate::serving::{Key, Readiness, Revision};

/// Reason of `Ready=False` on an object that fails decoding or Knative's validation.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Reason of a Revision's `Ready=False` when it cannot run (the message names the field).
pub const REASON_DEPLOYMENT_FAILED: &str = "DeploymentFailed";

/// Reason of a Service's `Ready=False` when a Configuration or Route of its name exists and
/// is not its own (Knative's).
pub const REASON_NOT_OWNED: &str = "NotOwned";

/// The fields every Knative status has.
pub trait KnativeStatus: Serialize + Clone {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, to change.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// Sets `observedGeneration`.
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

macro_rules! knative_status {
    ($($t:ty),*) => {$(
        impl KnativeStatus for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}

knative_status!(
    ServiceStatus,
    ConfigurationStatus,
    RouteStatus,
    RevisionStatus
);

/// The status patch for `desired`: its conditions stamped against `observed`'s
/// ([`stamp`]), and nothing when the object already shows it.
pub fn status_patch<S: KnativeStatus>(
    kind: ObjectKind,
    key: &Key,
    mut desired: S,
    observed: &S,
    now: &str,
) -> Option<Action> {
    stamp(desired.conditions_mut(), observed.conditions(), now);
    patch_if_changed(kind, key, &desired, observed)
}

/// The status patch for an object that does not decode or fails validation: its other status
/// fields kept, `observedGeneration` = `generation`, [`rejected_conditions`].
pub fn rejected_patch<S: KnativeStatus>(
    kind: ObjectKind,
    key: &Key,
    generation: Option<i64>,
    observed: &S,
    message: &str,
    now: &str,
) -> Option<Action> {
    let mut status = observed.clone();
    status.set_observed_generation(generation);
    *status.conditions_mut() = rejected_conditions(message);
    status_patch(kind, key, status, observed, now)
}

/// Sets each condition's `lastTransitionTime`: kept from `observed` while the condition is
/// unchanged (as knative/pkg's condition set), else `now`.
pub fn stamp(conditions: &mut [Condition], observed: &[Condition], now: &str) {
    for c in conditions {
        let same = observed.iter().find(|o| {
            o.type_ == c.type_
                && o.status == c.status
                && o.reason == c.reason
                && o.message == c.message
                && o.severity == c.severity
        });
        c.last_transition_time = Some(
            same.and_then(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.to_string()),
        );
    }
}

/// The conditions of an object that does not decode or fails validation: `Ready=False`,
/// [`REASON_INVALID_SPEC`], the message naming the field.
pub fn rejected_conditions(message: &str) -> Vec<Condition> {
    vec![condition(READY, FALSE, REASON_INVALID_SPEC, message)]
}

/// A Revision's status: `Ready` from its readiness (as the standalone reconciler writes it),
/// its Service's name, the generation observed.
pub fn revision_status(revision: &Revision, readiness: &Readiness) -> RevisionStatus {
    let ready = match readiness {
        Readiness::Ready => happy(READY),
        Readiness::Pending => condition(READY, UNKNOWN, "Deploying", ""),
        Readiness::Failed { reason, message } => condition(READY, FALSE, reason, message),
    };
    RevisionStatus {
        observed_generation: revision.metadata.generation,
        conditions: vec![ready],
        service_name: revision.name().to_string(),
        annotations: revision.status.annotations.clone(),
    }
}

/// A status patch when `desired` (stamped against `observed`) differs from `observed`.
pub fn patch_if_changed<S: Serialize>(
    kind: ObjectKind,
    key: &Key,
    desired: &S,
    observed: &S,
) -> Option<Action> {
    let desired = serde_json::to_value(desired).ok()?;
    let observed = serde_json::to_value(observed).ok()?;
    (desired != observed).then(|| Action::PatchStatus {
        kind,
        key: key.clone(),
        status: desired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::conditions::TRUE;

    #[test]
    fn transition_time_kept_while_the_condition_is_unchanged() {
        let mut observed = vec![condition(READY, UNKNOWN, "Deploying", "")];
        stamp(&mut observed, &[], "2026-01-01T00:00:00Z");
        let mut same = vec![condition(READY, UNKNOWN, "Deploying", "")];
        stamp(&mut same, &observed, "2026-01-01T00:01:00Z");
        assert_eq!(same, observed);
        let mut ready = vec![condition(READY, TRUE, "", "")];
        stamp(&mut ready, &observed, "2026-01-01T00:02:00Z");
        assert_eq!(
            ready[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:02:00Z")
        );
    }

    #[test]
    fn no_patch_when_the_object_shows_the_status() {
        let key = Key::new("default", "hello-00001");
        let mut revision = Revision::default();
        revision.metadata.name = Some(key.name.clone());
        let status = revision_status(&revision, &Readiness::Ready);
        assert_eq!(
            patch_if_changed(ObjectKind::Revision, &key, &status, &status),
            None
        );
        let pending = revision_status(&revision, &Readiness::Pending);
        assert!(patch_if_changed(ObjectKind::Revision, &key, &status, &pending).is_some());
    }
}
