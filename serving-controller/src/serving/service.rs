//! Service → Configuration + Route (knative/serving `pkg/reconciler/service/resources`), and
//! the Service status propagated from theirs (`service_lifecycle.go`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::conditions::{CONFIGURATIONS_READY, READY, ROUTES_READY, propagate, with_ready};
use super::configuration::controller_ref;
use super::types::{
    Configuration, ConfigurationSpec, HasConditions, Route, RouteSpec, Service, ServiceStatus,
};
use super::{LAST_APPLIED_ANNOTATION, SERVICE_LABEL, SERVICE_UID_LABEL};

/// The metadata a Service gives its children: same name and namespace, the Service's labels
/// plus `serving.knative.dev/service`, its annotations minus kubectl's last-applied copy, and
/// a controller owner reference.
fn child_meta(service: &Service) -> ObjectMeta {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_LABEL.into(), service.name().to_string());
    if let Some(uid) = &service.metadata.uid {
        labels.insert(SERVICE_UID_LABEL.into(), uid.clone());
    }
    let annotations: BTreeMap<String, String> = service
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ObjectMeta {
        name: service.metadata.name.clone(),
        namespace: service.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![controller_ref(Service::KIND, &service.metadata)]),
        ..ObjectMeta::default()
    }
}

/// `MakeConfiguration`: the Service's template under the Service's name.
pub fn make_configuration(service: &Service) -> Configuration {
    Configuration {
        metadata: child_meta(service),
        spec: ConfigurationSpec {
            template: service.spec.template.clone(),
        },
        ..Configuration::default()
    }
}

/// `MakeRoute`: the Service's traffic, with `configurationName` filled in wherever no
/// `revisionName` is given.
pub fn make_route(service: &Service) -> Route {
    let mut traffic = service.spec.traffic.clone();
    for t in &mut traffic {
        if t.revision_name.is_empty() {
            t.configuration_name = service.name().to_string();
        }
    }
    Route {
        metadata: child_meta(service),
        spec: RouteSpec { traffic },
        ..Route::default()
    }
}

/// The Service status from its reconciled Configuration and Route: `ConfigurationsReady` and
/// `RoutesReady` follow their `Ready`, and their status fields are copied.
pub fn service_status(service: &Service, config: &Configuration, route: &Route) -> ServiceStatus {
    ServiceStatus {
        observed_generation: service.metadata.generation,
        conditions: with_ready(vec![
            propagate(config.status.condition(READY), CONFIGURATIONS_READY),
            propagate(route.status.condition(READY), ROUTES_READY),
        ]),
        latest_ready_revision_name: config.status.latest_ready_revision_name.clone(),
        latest_created_revision_name: config.status.latest_created_revision_name.clone(),
        url: route.status.url.clone(),
        address: route.status.address.clone(),
        traffic: route.status.traffic.clone(),
    }
}
