//! What `/status` shows of the serving objects: each Service, Route (with its traffic) and
//! Revision, with `IngressReady` taken from what the gateway reports for the KIngress
//! generation being served.

use std::collections::BTreeMap;

use sluice_serving::ingress::Condition;
use sluice_serving::serving::conditions::{
    FALSE, INGRESS_READY, READY, UNKNOWN, condition, propagate, with_ready,
};
use sluice_serving::serving::{HasConditions, Key, Readiness, Route, service_status};

use super::Controller;
use super::objects::configuration_label;

impl Controller {
    /// The status of every Service, Route and Revision, given what the gateway reports for
    /// each KIngress.
    pub fn view(
        &self,
        ingress: impl Fn(&Key) -> Option<IngressReport>,
    ) -> (Vec<ServiceRow>, Vec<RouteRow>, Vec<RevisionRow>) {
        let mut routes = Vec::new();
        let mut route_status = BTreeMap::new();
        for (key, outcome) in &self.route_outcomes {
            let mut route = outcome.route.clone();
            let report = ingress(key);
            let served_gen = self.served.get(key).and_then(|i| i.metadata.generation);
            let ingress_cond = match (&self.pending.get(key), report) {
                (Some((_, waiting)), _) => {
                    // A waited-for revision that cannot start says why.
                    let failed = waiting.iter().find_map(|r| {
                        match self.readiness.get(&Key::new(&key.namespace, r)) {
                            Some(Readiness::Failed { reason, message }) => {
                                Some((reason.clone(), format!("revision {r}: {message}")))
                            }
                            _ => None,
                        }
                    });
                    match failed {
                        Some((reason, message)) => condition(
                            INGRESS_READY,
                            FALSE,
                            &reason,
                            &format!("{message}; the previous configuration keeps serving"),
                        ),
                        None => condition(
                            INGRESS_READY,
                            UNKNOWN,
                            "RevisionStarting",
                            &format!(
                                "waiting for revision(s) {} to have a ready instance; the previous configuration keeps serving",
                                waiting.join(", ")
                            ),
                        ),
                    }
                }
                (None, Some(r)) if r.generation == served_gen => propagate(
                    Some(&condition(READY, &r.ready, &r.reason, &r.message)),
                    INGRESS_READY,
                ),
                (None, _) if self.served.contains_key(key) => condition(
                    INGRESS_READY,
                    UNKNOWN,
                    "IngressNotConfigured",
                    "the gateway has not yet applied the newest KIngress",
                ),
                (None, _) => condition(
                    INGRESS_READY,
                    UNKNOWN,
                    "IngressNotConfigured",
                    "Ingress has not yet been reconciled.",
                ),
            };
            let mut conditions: Vec<_> = route
                .status
                .conditions
                .iter()
                .filter(|c| c.type_ != READY)
                .cloned()
                .collect();
            // Resolution failures already set IngressReady; keep theirs.
            if outcome.error.is_none() {
                conditions.retain(|c| c.type_ != INGRESS_READY);
                conditions.push(ingress_cond);
            }
            route.status.conditions = with_ready(conditions);
            routes.push(RouteRow::of(&route, self.served.contains_key(key)));
            route_status.insert(key.clone(), route);
        }
        let mut services = Vec::new();
        for (key, input) in &self.services {
            let Some(service) = &input.good else {
                services.push(ServiceRow {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    url: String::new(),
                    latest_created: String::new(),
                    latest_ready: String::new(),
                    ready: FALSE.into(),
                    reason: "InvalidSpec".into(),
                    message: "the Service failed validation (see problems)".into(),
                    conditions: Vec::new(),
                });
                continue;
            };
            let (Some(config), Some(route)) =
                (self.config_outcomes.get(key), route_status.get(key))
            else {
                continue;
            };
            let status = service_status(service, &config.configuration, route);
            let ready = status.condition(READY);
            let mut reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
            let mut message = ready.map(|c| c.message.clone()).unwrap_or_default();
            if input.rejected.is_some() {
                reason = "InvalidSpec".into();
                message = "the newest version failed validation (see problems); the last good one is served".into();
            }
            services.push(ServiceRow {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                url: status.url.clone().unwrap_or_default(),
                latest_created: status.latest_created_revision_name.clone(),
                latest_ready: status.latest_ready_revision_name.clone(),
                ready: status.condition_status(READY).to_string(),
                reason,
                message,
                conditions: status.conditions.clone(),
            });
        }
        let revisions = self
            .catalog
            .revisions
            .values()
            .map(|r| {
                let ready = r.status.condition(READY);
                RevisionRow {
                    namespace: r.namespace().to_string(),
                    name: r.name().to_string(),
                    configuration: configuration_label(r).unwrap_or_default().to_string(),
                    desired: self.desired.get(&r.key()).map_or(0, |d| d.0),
                    ready: r.status.condition_status(READY).to_string(),
                    reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
                    message: ready.map(|c| c.message.clone()).unwrap_or_default(),
                    conditions: r.status.conditions.clone(),
                }
            })
            .collect();
        (services, routes, revisions)
    }
}

/// What the gateway reports about one KIngress.
#[derive(Debug, Clone)]
pub struct IngressReport {
    /// `True`, `False`, `Unknown`.
    pub ready: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// The KIngress generation the report is about.
    pub generation: Option<i64>,
}

/// One Knative Service in `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// External URL.
    pub url: String,
    /// `latestCreatedRevisionName`.
    pub latest_created: String,
    /// `latestReadyRevisionName`.
    pub latest_ready: String,
    /// `Ready`: True / False / Unknown.
    pub ready: String,
    /// Reason of `Ready`.
    pub reason: String,
    /// Message of `Ready`.
    pub message: String,
    /// Every condition (`Ready`, `ConfigurationsReady`, `RoutesReady`), as upstream.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One Route in `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// External URL.
    pub url: String,
    /// `status.traffic`: (tag, revision, percent, tag URL).
    pub traffic: Vec<TrafficRow>,
    /// `Ready`.
    pub ready: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Whether a KIngress is being served for it.
    pub serving: bool,
    /// Every condition (`Ready`, `AllTrafficAssigned`, `IngressReady`,
    /// `CertificateProvisioned`), as upstream.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One `status.traffic` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrafficRow {
    /// Tag (empty: none).
    pub tag: String,
    /// Revision.
    pub revision: String,
    /// Percent.
    pub percent: i64,
    /// Whether it follows the latest ready Revision.
    pub latest: bool,
    /// The tag's URL.
    pub url: String,
}

impl RouteRow {
    fn of(route: &Route, serving: bool) -> Self {
        let ready = route.status.condition(READY);
        RouteRow {
            namespace: route.namespace().to_string(),
            name: route.name().to_string(),
            url: route.status.url.clone().unwrap_or_default(),
            traffic: route
                .status
                .traffic
                .iter()
                .map(|t| TrafficRow {
                    tag: t.tag.clone(),
                    revision: t.revision_name.clone(),
                    percent: t.percent.unwrap_or(0),
                    latest: t.latest_revision.unwrap_or(false),
                    url: t.url.clone().unwrap_or_default(),
                })
                .collect(),
            ready: route.status.condition_status(READY).to_string(),
            reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            serving,
            conditions: route.status.conditions.clone(),
        }
    }
}

/// One Revision in `/status` (its instances are added by the caller).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RevisionRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its Configuration.
    pub configuration: String,
    /// Instances asked for.
    pub desired: u32,
    /// `Ready`.
    pub ready: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Every condition, as upstream.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
