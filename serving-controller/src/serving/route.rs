//! The Route reconciler (knative/serving `pkg/reconciler/route`): traffic → KIngress, and the
//! Route status (`route_lifecycle.go`).
//!
//! `Ready` summarises `AllTrafficAssigned`, `IngressReady` and `CertificateProvisioned`. A Route
//! is Ready only when its KIngress is: the caller passes the KIngress status the gateway
//! reported (after Envoy ACKed and a probe saw its hash) for *this* KIngress spec. When the
//! traffic cannot be resolved, no KIngress is produced: the caller keeps serving the previous
//! one, as upstream leaves the existing KIngress untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use super::catalog::Catalog;
use super::conditions::{
    ALL_TRAFFIC_ASSIGNED, CERTIFICATE_PROVISIONED, FALSE, INGRESS_READY, TRUE, UNKNOWN, condition,
    happy, with_ready,
};
use super::config::ServingConfig;
use super::domains::{TemplateError, cluster_local_domain};
use super::kingress::{is_cluster_local, make_ingress, revision_timeouts, target_hosts};
use super::traffic::{TargetError, TrafficConfig, build_traffic};
use super::types::{Addressable, Route, RouteStatus, TrafficTarget};
use crate::ingress::{CONDITION_READY, Ingress, IngressStatus};

/// The result of one Route pass.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOutcome {
    /// The Route with its status.
    pub route: Route,
    /// The KIngress to serve; `None` when the traffic could not be resolved (keep the
    /// previous one).
    pub ingress: Option<Ingress>,
    /// Request timeout per (namespace, Revision Service) in the KIngress (see
    /// [`revision_timeouts`]).
    pub timeouts: BTreeMap<(String, String), Duration>,
    /// Why the traffic could not be resolved, if so.
    pub error: Option<RouteError>,
}

/// Why a Route produced no KIngress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A traffic target names something missing or not ready.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A host name from the domain or tag template is invalid.
    #[error(transparent)]
    Host(#[from] TemplateError),
}

/// Reconciles one (admitted) Route against the reconciled Configurations and Revisions.
/// `ingress_status` is the status the gateway reported for the KIngress this pass produces.
pub fn reconcile_route(
    route: &Route,
    catalog: &impl Catalog,
    cfg: &ServingConfig,
    ingress_status: Option<&IngressStatus>,
) -> RouteOutcome {
    let mut out = RouteOutcome {
        route: route.clone(),
        ingress: None,
        timeouts: BTreeMap::new(),
        error: None,
    };
    let status = &mut out.route.status;
    status.observed_generation = route.metadata.generation;
    status.address = Some(Addressable {
        url: Some(format!(
            "http://{}",
            cluster_local_domain(route.name(), route.namespace())
        )),
    });
    let traffic_assigned;
    let mut ingress_ready = ingress_condition(ingress_status);
    match target_hosts(route, "", cfg) {
        Ok(hosts) => status.url = Some(hosts.url()),
        Err(e) => {
            ingress_ready = condition(INGRESS_READY, FALSE, "InvalidDomain", &e.to_string());
            out.error = Some(e.into());
        }
    }
    match build_traffic(route, catalog) {
        Err(e) => {
            traffic_assigned = e.condition();
            out.error = Some(e.into());
        }
        Ok(traffic) => {
            traffic_assigned = happy(ALL_TRAFFIC_ASSIGNED);
            match resolved(route, &traffic, cfg) {
                Ok((ingress, status_traffic)) => {
                    out.ingress = Some(ingress);
                    out.timeouts = revision_timeouts(route, &traffic, cfg);
                    status.traffic = status_traffic;
                }
                Err(e) => {
                    ingress_ready =
                        condition(INGRESS_READY, FALSE, "InvalidDomain", &e.to_string());
                    out.error = Some(e.into());
                }
            }
        }
    }
    let tls_message = if is_cluster_local(route) {
        "TLS is not enabled for cluster-local"
    } else {
        "external-domain-tls is not enabled"
    };
    status.conditions = with_ready(vec![
        traffic_assigned,
        ingress_ready,
        condition(CERTIFICATE_PROVISIONED, TRUE, "TLSNotEnabled", tls_message),
    ]);
    out
}

/// The KIngress and `status.traffic` (with tag URLs) of resolved traffic.
fn resolved(
    route: &Route,
    traffic: &TrafficConfig,
    cfg: &ServingConfig,
) -> Result<(Ingress, Vec<TrafficTarget>), TemplateError> {
    let ingress = make_ingress(route, traffic, cfg)?;
    let mut targets = Vec::with_capacity(traffic.revision_targets.len());
    for t in &traffic.revision_targets {
        let url = if t.tag.is_empty() {
            None
        } else {
            Some(target_hosts(route, &t.tag, cfg)?.url())
        };
        targets.push(TrafficTarget {
            tag: t.tag.clone(),
            revision_name: t.revision_name.clone(),
            configuration_name: String::new(),
            latest_revision: t.latest_revision,
            percent: t.percent,
            url,
        });
    }
    Ok((ingress, targets))
}

/// `PropagateIngressStatus`: `IngressReady` follows the KIngress `Ready`.
fn ingress_condition(status: Option<&IngressStatus>) -> crate::ingress::Condition {
    match status.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY)) {
        None => condition(
            INGRESS_READY,
            UNKNOWN,
            "IngressNotConfigured",
            "Ingress has not yet been reconciled.",
        ),
        Some(c) if c.status == TRUE => happy(INGRESS_READY),
        Some(c) => condition(INGRESS_READY, &c.status, &c.reason, &c.message),
    }
}

/// A Route status for a Route the webhook would reject: `Ready` False with the validation
/// message (Sluice keeps serving the last good version and shows this instead).
pub fn rejected_status(route: &Route, message: &str) -> RouteStatus {
    RouteStatus {
        observed_generation: route.metadata.generation,
        conditions: vec![condition(
            super::conditions::READY,
            FALSE,
            "InvalidSpec",
            message,
        )],
        ..route.status.clone()
    }
}
