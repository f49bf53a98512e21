//! KIngress status as Knative reads it, written with server-side apply.
//!
//! Knative's Route reconciler waits for its KIngress to report `Ready=True` with
//! `observedGeneration` equal to `metadata.generation`, then points the Route at
//! `status.publicLoadBalancer` / `privateLoadBalancer`. [`desired_status`] builds that status
//! from what the gateway core knows ([`Readiness`]), with Knative's condition semantics
//! (`knative.dev/pkg/apis` living condition set: `Ready` follows `NetworkConfigured` and
//! `LoadBalancerReady`; conditions sorted by type; `lastTransitionTime` kept while a
//! condition's status stays the same). [`patch_status`] writes it to the `status` subresource
//! with a server-side apply patch under the fixed field manager [`FIELD_MANAGER`], forced —
//! Sluice owns the status of its class — and only when it differs from what the object shows.

use ::kube::Client;
use ::kube::api::{Api, DynamicObject, Patch, PatchParams};
use k8s_openapi::jiff::Timestamp;

use super::KubeError;
use super::resource::{class_of, ingress_api_resource};
use crate::ingress::{
    API_VERSION, CONDITION_LOAD_BALANCER_READY, CONDITION_NETWORK_CONFIGURED, CONDITION_READY,
    Condition, Ingress, IngressStatus, KIND, LoadBalancerIngressStatus, LoadBalancerStatus,
    is_ours,
};

/// The field manager of every status patch.
pub const FIELD_MANAGER: &str = "sluice-gateway";

/// Reason of `LoadBalancerReady=Unknown` while Envoy has not been shown to serve the current
/// generation (Knative's own reason for this state).
pub const REASON_UNINITIALIZED: &str = "Uninitialized";

/// The gateway Services a KIngress is reachable through, as written to
/// `status.publicLoadBalancer` / `privateLoadBalancer` (`ingress[].domainInternal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancers {
    /// The external gateway Service's cluster DNS name.
    pub public: String,
    /// The internal (cluster-local) gateway Service's cluster DNS name.
    pub private: String,
}

impl LoadBalancers {
    /// `SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN` for both gateway Services.
    pub fn new(namespace: &str, public: &str, private: &str, cluster_domain: &str) -> Self {
        Self {
            public: format!("{public}.{namespace}.svc.{cluster_domain}"),
            private: format!("{private}.{namespace}.svc.{cluster_domain}"),
        }
    }
}

impl Default for LoadBalancers {
    /// `sluice-gateway` / `sluice-internal` in `knative-serving` (see `deploy/ingress/`).
    fn default() -> Self {
        Self::new(
            "knative-serving",
            "sluice-gateway",
            "sluice-internal",
            "cluster.local",
        )
    }
}

/// Where a KIngress stands, as the gateway core knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Translated and pushed; not yet proven served (Envoy ACK and probe pending):
    /// `NetworkConfigured=True`, `LoadBalancerReady=Unknown`, `Ready=Unknown`.
    InProgress {
        /// CamelCase reason, e.g. [`REASON_UNINITIALIZED`].
        reason: String,
        /// What is being waited for.
        message: String,
    },
    /// Every gateway serves the current generation: all three conditions `True`.
    Ready,
    /// The KIngress cannot be programmed (it does not decode, fails validation or
    /// translation): `NetworkConfigured=False`, `LoadBalancerReady=Unknown`, `Ready=False`.
    NotConfigured {
        /// CamelCase reason, e.g. `TranslationFailed`.
        reason: String,
        /// Which object and field, and what was expected.
        message: String,
    },
    /// Programmed, but the gateway will not serve it (a host claimed by an earlier KIngress,
    /// Envoy rejected the configuration): `NetworkConfigured=True`, `LoadBalancerReady=False`,
    /// `Ready=False`.
    LoadBalancerFailed {
        /// CamelCase reason, e.g. `DomainConflict`.
        reason: String,
        /// The detail.
        message: String,
    },
}

impl Readiness {
    /// Waiting for Envoy to serve the current generation (`Uninitialized`).
    pub fn waiting() -> Self {
        Readiness::InProgress {
            reason: REASON_UNINITIALIZED.to_string(),
            message: "Waiting for Envoy to serve the current generation".to_string(),
        }
    }
}

/// Whether a patch was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOutcome {
    /// The status was written.
    Patched,
    /// The object already shows this status: no request was made.
    Unchanged,
}

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

/// The status Sluice writes for `ingress` in state `readiness` at time `now`.
///
/// `observedGeneration` is the object's `metadata.generation`; both load balancers are always
/// set (they name the gateway Services, which do not depend on the state). A condition keeps
/// the `lastTransitionTime` the object shows while its status is unchanged; otherwise it gets
/// `now` (seconds precision, as Kubernetes writes times).
pub fn desired_status(
    ingress: &Ingress,
    readiness: &Readiness,
    load_balancers: &LoadBalancers,
    now: Timestamp,
) -> IngressStatus {
    let (network, balancer, ready) = match readiness {
        Readiness::Ready => (cond(TRUE, "", ""), cond(TRUE, "", ""), cond(TRUE, "", "")),
        Readiness::InProgress { reason, message } => (
            cond(TRUE, "", ""),
            cond(UNKNOWN, reason, message),
            cond(UNKNOWN, reason, message),
        ),
        Readiness::NotConfigured { reason, message } => (
            cond(FALSE, reason, message),
            cond(UNKNOWN, reason, message),
            cond(FALSE, reason, message),
        ),
        Readiness::LoadBalancerFailed { reason, message } => (
            cond(TRUE, "", ""),
            cond(FALSE, reason, message),
            cond(FALSE, reason, message),
        ),
    };
    let now = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Sorted by type, as Knative's condition set keeps them.
    let conditions = [
        (CONDITION_LOAD_BALANCER_READY, balancer),
        (CONDITION_NETWORK_CONFIGURED, network),
        (CONDITION_READY, ready),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        let previous = ingress
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            severity: String::new(),
            last_transition_time: Some(previous.unwrap_or_else(|| now.clone())),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    })
    .collect();
    let balancer = |domain: &str| {
        Some(LoadBalancerStatus {
            ingress: vec![LoadBalancerIngressStatus {
                domain_internal: domain.to_string(),
                ..LoadBalancerIngressStatus::default()
            }],
        })
    };
    IngressStatus {
        observed_generation: ingress.metadata.generation,
        conditions,
        annotations: Default::default(),
        public_load_balancer: balancer(&load_balancers.public),
        private_load_balancer: balancer(&load_balancers.private),
    }
}

fn cond<'a>(status: &'a str, reason: &'a str, message: &'a str) -> (&'a str, &'a str, &'a str) {
    (status, reason, message)
}

/// Whether `current` already shows everything `desired` sets.
fn shows(current: &IngressStatus, desired: &IngressStatus) -> bool {
    current.observed_generation == desired.observed_generation
        && current.conditions == desired.conditions
        && current.public_load_balancer == desired.public_load_balancer
        && current.private_load_balancer == desired.private_load_balancer
}

/// Checks that `ingress` may be written by Sluice and returns its namespace and name.
pub(crate) fn ours_and_addressable(ingress: &Ingress) -> Result<(&str, &str), KubeError> {
    if !is_ours(ingress) {
        return Err(KubeError::ForeignClass {
            ingress: ingress.key(),
            class: class_of(&ingress.metadata).map(str::to_string),
        });
    }
    let namespace = ingress
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(KubeError::MissingMetadata { field: "namespace" })?;
    let name = ingress
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(KubeError::MissingMetadata { field: "name" })?;
    Ok((namespace, name))
}

/// Writes `status` to the `status` subresource of `ingress` with a forced server-side apply
/// patch (field manager [`FIELD_MANAGER`]).
///
/// Never touches a KIngress of another class ([`KubeError::ForeignClass`], no request). Makes
/// no request when `ingress` already shows `status` ([`PatchOutcome::Unchanged`]): re-deriving
/// the same state after a re-list costs the API server nothing.
pub async fn patch_status(
    client: &Client,
    ingress: &Ingress,
    status: &IngressStatus,
) -> Result<PatchOutcome, KubeError> {
    let (namespace, name) = ours_and_addressable(ingress)?;
    if shows(&ingress.status, status) {
        return Ok(PatchOutcome::Unchanged);
    }
    let encoded = serde_json::to_value(status).map_err(|source| KubeError::Encode {
        what: "status",
        ingress: ingress.key(),
        source,
    })?;
    let body = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": encoded,
    });
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ingress_api_resource());
    tracing::debug!(ingress = %ingress.key(), generation = ?status.observed_generation, "patching KIngress status");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| KubeError::Api {
            action: "status patch",
            ingress: ingress.key(),
            source: Box::new(source),
        })?;
    Ok(PatchOutcome::Patched)
}

/// Writes KIngress status: [`desired_status`] at the current time, then [`patch_status`].
#[derive(Clone)]
pub struct StatusWriter {
    client: Client,
    load_balancers: LoadBalancers,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("load_balancers", &self.load_balancers)
            .finish_non_exhaustive()
    }
}

impl StatusWriter {
    /// A writer naming `load_balancers` in every status.
    pub fn new(client: Client, load_balancers: LoadBalancers) -> Self {
        Self {
            client,
            load_balancers,
        }
    }

    /// The gateway Services written to status.
    pub fn load_balancers(&self) -> &LoadBalancers {
        &self.load_balancers
    }

    /// Writes the status for `readiness` (no request if the object already shows it).
    pub async fn update(
        &self,
        ingress: &Ingress,
        readiness: &Readiness,
    ) -> Result<PatchOutcome, KubeError> {
        let status = desired_status(ingress, readiness, &self.load_balancers, Timestamp::now());
        patch_status(&self.client, ingress, &status).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};

    fn ingress(generation: i64) -> Ingress {
        let mut ingress = Ingress::default();
        ingress.metadata.name = Some("hello".into());
        ingress.metadata.namespace = Some("default".into());
        ingress.metadata.generation = Some(generation);
        ingress.metadata.annotations = Some(
            [(
                INGRESS_CLASS_ANNOTATION.to_string(),
                SLUICE_INGRESS_CLASS.to_string(),
            )]
            .into(),
        );
        ingress
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn summary(status: &IngressStatus) -> Vec<String> {
        status
            .conditions
            .iter()
            .map(|c| format!("{}={} {}", c.type_, c.status, c.reason))
            .collect()
    }

    #[test]
    fn ready_sets_all_conditions_generation_and_load_balancers() {
        let status = desired_status(
            &ingress(3),
            &Readiness::Ready,
            &LoadBalancers::default(),
            at("2026-01-02T03:04:05.678Z"),
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            summary(&status),
            [
                "LoadBalancerReady=True ",
                "NetworkConfigured=True ",
                "Ready=True "
            ]
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.last_transition_time.as_deref() == Some("2026-01-02T03:04:05Z"))
        );
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(
            json["publicLoadBalancer"],
            serde_json::json!({"ingress": [{"domainInternal": "sluice-gateway.knative-serving.svc.cluster.local"}]})
        );
        assert_eq!(
            json["privateLoadBalancer"]["ingress"][0]["domainInternal"],
            "sluice-internal.knative-serving.svc.cluster.local"
        );
    }

    #[test]
    fn failures_follow_knative_condition_semantics() {
        let lbs = LoadBalancers::default();
        let now = at("2026-01-01T00:00:00Z");
        let conflict = Readiness::LoadBalancerFailed {
            reason: "DomainConflict".into(),
            message: "host a.example.com is claimed by default/first".into(),
        };
        assert_eq!(
            summary(&desired_status(&ingress(1), &conflict, &lbs, now)),
            [
                "LoadBalancerReady=False DomainConflict",
                "NetworkConfigured=True ",
                "Ready=False DomainConflict"
            ]
        );
        let broken = Readiness::NotConfigured {
            reason: "TranslationFailed".into(),
            message: "spec.rules[0]: no hosts".into(),
        };
        assert_eq!(
            summary(&desired_status(&ingress(1), &broken, &lbs, now)),
            [
                "LoadBalancerReady=Unknown TranslationFailed",
                "NetworkConfigured=False TranslationFailed",
                "Ready=False TranslationFailed"
            ]
        );
        assert_eq!(
            summary(&desired_status(
                &ingress(1),
                &Readiness::waiting(),
                &lbs,
                now
            )),
            [
                "LoadBalancerReady=Unknown Uninitialized",
                "NetworkConfigured=True ",
                "Ready=Unknown Uninitialized"
            ]
        );
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let lbs = LoadBalancers::default();
        let mut object = ingress(1);
        object.status = desired_status(
            &object,
            &Readiness::waiting(),
            &lbs,
            at("2026-01-01T00:00:00Z"),
        );
        let later = desired_status(&object, &Readiness::Ready, &lbs, at("2026-01-01T00:00:09Z"));
        let time = |status: &IngressStatus, t: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == t)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_default()
        };
        assert_eq!(time(&later, "NetworkConfigured"), "2026-01-01T00:00:00Z");
        assert_eq!(time(&later, "Ready"), "2026-01-01T00:00:09Z");
        assert!(!shows(&object.status, &later));
        object.status = later.clone();
        let again = desired_status(&object, &Readiness::Ready, &lbs, at("2026-01-01T00:01:00Z"));
        assert!(shows(&object.status, &again), "same state, same status");
    }

    #[test]
    fn only_our_addressable_ingresses_are_written() {
        let mut other = ingress(1);
        other.metadata.annotations = Some(
            [(
                INGRESS_CLASS_ANNOTATION.to_string(),
                "kourier.ingress.networking.knative.dev".to_string(),
            )]
            .into(),
        );
        assert!(matches!(
            ours_and_addressable(&other),
            Err(KubeError::ForeignClass { class: Some(_), .. })
        ));
        let mut nameless = ingress(1);
        nameless.metadata.name = None;
        assert!(matches!(
            ours_and_addressable(&nameless),
            Err(KubeError::MissingMetadata { field: "name" })
        ));
        assert_eq!(
            ours_and_addressable(&ingress(1)).ok(),
            Some(("default", "hello"))
        );
    }

    #[test]
    fn load_balancer_names_are_configurable() {
        let lbs = LoadBalancers::new("gw", "public", "private", "example.internal");
        assert_eq!(lbs.public, "public.gw.svc.example.internal");
        assert_eq!(lbs.private, "private.gw.svc.example.internal");
    }
}
