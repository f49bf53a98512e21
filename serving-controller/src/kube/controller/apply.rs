//! The controller's writes: each [`Action`] carried out against the API server, its answer
//! turned into [`Feedback`] for the core (the object as the API server now holds it, so the
//! next reconcile compares against it without waiting for the watch).
//!
//! Every write is a server-side apply under the field manager
//! [`FIELD_MANAGER`](crate::kube::runtime::FIELD_MANAGER), forced (the controller owns these
//! fields), except Revisions, which are created once (`POST`: Revisions are immutable, and a
//! name taken meanwhile is a conflict, not something to overwrite).
//!
//! **Replicas.** [`KubeRuntime::apply_revision`] sets the Deployment's `spec.replicas` on every
//! apply. So that a restart of the controller does not undo the autoscaler's last scale, a
//! Revision is run once per process, and at the count its Deployment has when it already
//! exists (one `GET`); only a new Deployment starts at the initial scale. From then on the
//! replica count belongs to the `scale` subresource (the autoscaler,
//! [`KubeRuntime::scale`]). A scale landing between that `GET` and the apply is undone; the
//! autoscaler's next tick sets it again.

use ::kube::Client;
use ::kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use ::kube::core::ApiResource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Service as CoreService};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::ControllerError;
use super::action::{Action, EventSpec, Feedback};
use super::decode::{SERVING_GROUP, SERVING_VERSION, ServingObject, api_resource, decode};
use super::reconcile::gc::{ROUTING_STATE_LABEL, ROUTING_STATE_MODIFIED_ANNOTATION, routing_label};
use super::watch::{ObjectKind, Watched};
use crate::kube::resource::{decode_or_stub, ingress_api_resource};
use crate::kube::runtime::{FIELD_MANAGER, KubeRuntime, RuntimeConfig, deployment_name};
use crate::serving::{Configuration, Key, Revision, Route, Service};

/// A failed write: what to reconcile again (after a backoff), and why.
#[derive(Debug)]
pub struct Failure {
    /// The object to reconcile again.
    pub kind: ObjectKind,
    /// Its key.
    pub key: Key,
    /// What went wrong.
    pub error: ControllerError,
}

/// Carries out [`Action`]s.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    runtime: KubeRuntime,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn api_error(
    action: &'static str,
    kind: &'static str,
    key: &Key,
) -> impl FnOnce(::kube::Error) -> ControllerError {
    let key = key.clone();
    move |source| ControllerError::Api {
        action,
        kind,
        key,
        source: Box::new(source),
    }
}

impl Executor {
    /// Writes with `client`; Revisions run on `runtime`.
    pub fn new(client: Client, runtime: KubeRuntime) -> Self {
        Self { client, runtime }
    }

    /// Carries out one action: the feedback for the core, and the failure if any.
    pub async fn execute(&self, action: Action) -> (Option<Feedback>, Option<Failure>) {
        match action {
            Action::ApplyConfiguration(c) => {
                let key = c.key();
                let result = self
                    .apply_serving(&*c, &key)
                    .await
                    .map(|o| Watched::Configuration(Box::new(decode(o))));
                observed(result, ObjectKind::Service, key)
            }
            Action::ApplyRoute(r) => {
                let key = r.key();
                let result = self
                    .apply_serving(&*r, &key)
                    .await
                    .map(|o| Watched::Route(Box::new(decode(o))));
                observed(result, ObjectKind::Service, key)
            }
            Action::CreateRevision {
                configuration,
                revision,
            } => match self.create_revision(&revision).await {
                Ok(o) => (
                    Some(Feedback::Observed(Watched::Revision(Box::new(decode(o))))),
                    None,
                ),
                Err(error) => (
                    Some(Feedback::RevisionNotCreated {
                        configuration: configuration.clone(),
                    }),
                    Some(Failure {
                        kind: ObjectKind::Configuration,
                        key: configuration,
                        error,
                    }),
                ),
            },
            Action::RunRevision {
                revision,
                initial_scale,
                runtime,
            } => {
                let key = revision.key();
                match self.run_revision(&revision, initial_scale, runtime).await {
                    Ok(()) => (Some(Feedback::RevisionRunning(key)), None),
                    Err(error) => {
                        let retry = error.is_retryable();
                        let feedback = Feedback::RevisionNotRunning {
                            revision: key.clone(),
                            retry,
                            message: error.to_string(),
                        };
                        let failure = Failure {
                            kind: ObjectKind::Revision,
                            key,
                            error,
                        };
                        (Some(feedback), retry.then_some(failure))
                    }
                }
            }
            Action::ApplyIngress(ingress) => {
                let key = Key::new(
                    ingress.metadata.namespace.clone().unwrap_or_default(),
                    ingress.metadata.name.clone().unwrap_or_default(),
                );
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.client.clone(),
                    &key.namespace,
                    &ingress_api_resource(),
                );
                let result = api
                    .patch(&key.name, &apply_params(), &Patch::Apply(&*ingress))
                    .await
                    .map_err(api_error("applying", "KIngress", &key))
                    .map(|o| {
                        let ingress = decode_or_stub(o).unwrap_or_else(|failed| failed.0);
                        Watched::Ingress(Box::new(ingress))
                    });
                observed(result, ObjectKind::Route, key)
            }
            Action::ApplyPlaceholders {
                route,
                services,
                stale,
            } => match self.apply_placeholders(&route, &services, &stale).await {
                Ok(()) => (
                    Some(Feedback::PlaceholdersApplied { route, services }),
                    None,
                ),
                Err(error) => (
                    None,
                    Some(Failure {
                        kind: ObjectKind::Route,
                        key: route,
                        error,
                    }),
                ),
            },
            Action::ApplyHpa { revision, hpa } => {
                let api: Api<HorizontalPodAutoscaler> =
                    Api::namespaced(self.client.clone(), &revision.namespace);
                match api
                    .patch(&revision.name, &apply_params(), &Patch::Apply(&*hpa))
                    .await
                {
                    Ok(_) => (Some(Feedback::HpaApplied { revision, hpa }), None),
                    Err(e) => (
                        None,
                        Some(Failure {
                            kind: ObjectKind::Revision,
                            error: api_error(
                                "applying",
                                "HorizontalPodAutoscaler of Revision",
                                &revision,
                            )(e),
                            key: revision,
                        }),
                    ),
                }
            }
            Action::LabelRevision {
                revision,
                state,
                modified,
            } => {
                let body = serde_json::json!({"metadata": {
                    "labels": {ROUTING_STATE_LABEL: routing_label(state)},
                    "annotations": {ROUTING_STATE_MODIFIED_ANNOTATION: modified},
                }});
                let result = self
                    .revisions(&revision)
                    .patch(
                        &revision.name,
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await
                    .map_err(api_error("labelling", "Revision", &revision))
                    .map(|o| Watched::Revision(Box::new(decode(o))));
                observed(result, ObjectKind::Revision, revision)
            }
            Action::DeleteRevision(key) => {
                match self
                    .revisions(&key)
                    .delete(&key.name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => (Some(Feedback::Gone(ObjectKind::Revision, key)), None),
                    Err(::kube::Error::Api(e)) if e.code == 404 => {
                        (Some(Feedback::Gone(ObjectKind::Revision, key)), None)
                    }
                    Err(e) => (
                        Some(Feedback::RevisionNotDeleted(key.clone())),
                        Some(Failure {
                            kind: ObjectKind::Revision,
                            key: key.clone(),
                            error: api_error("deleting", "Revision", &key)(e),
                        }),
                    ),
                }
            }
            Action::Event(spec) => {
                if let Err(error) = self.publish(&spec).await {
                    tracing::warn!(%error, "event not published");
                }
                (None, None)
            }
            Action::PatchStatus { kind, key, status } => {
                let result = match kind {
                    ObjectKind::Service => self
                        .patch_status::<Service>(&key, status)
                        .await
                        .map(|o| Watched::Service(Box::new(decode(o)))),
                    ObjectKind::Configuration => self
                        .patch_status::<Configuration>(&key, status)
                        .await
                        .map(|o| Watched::Configuration(Box::new(decode(o)))),
                    ObjectKind::Revision => self
                        .patch_status::<Revision>(&key, status)
                        .await
                        .map(|o| Watched::Revision(Box::new(decode(o)))),
                    ObjectKind::Route => self
                        .patch_status::<Route>(&key, status)
                        .await
                        .map(|o| Watched::Route(Box::new(decode(o)))),
                    _ => return (None, None),
                };
                observed(result, kind, key)
            }
        }
    }

    async fn apply_serving<T: ServingObject>(
        &self,
        object: &T,
        key: &Key,
    ) -> Result<DynamicObject, ControllerError> {
        tracing::debug!(kind = T::KIND, object = %key, "applying");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &api_resource::<T>());
        api.patch(&key.name, &apply_params(), &Patch::Apply(object))
            .await
            .map_err(api_error("applying", T::KIND, key))
    }

    async fn create_revision(&self, revision: &Revision) -> Result<DynamicObject, ControllerError> {
        let key = revision.key();
        let object: DynamicObject = to_dynamic(revision, "Revision", &key)?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &api_resource::<Revision>(),
        );
        api.create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PostParams::default()
            },
            &object,
        )
        .await
        .map_err(api_error("creating", "Revision", &key))
    }

    async fn run_revision(
        &self,
        revision: &Revision,
        initial: u32,
        runtime: RuntimeConfig,
    ) -> Result<(), ControllerError> {
        let key = revision.key();
        // Checked before any request, so that an unrunnable Revision costs no GET either.
        crate::kube::runtime::check_revision(revision)?;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let current = deployments
            .get_opt(&deployment_name(&key.name))
            .await
            .map_err(api_error("reading", "Deployment of Revision", &key))?;
        let replicas = current
            .and_then(|d| d.spec.replicas)
            .map_or(initial, |r| u32::try_from(r).unwrap_or(0));
        self.runtime
            .with_config(runtime)
            .apply_revision(revision, replicas)
            .await?;
        tracing::info!(revision = %key, replicas, "Revision running");
        Ok(())
    }

    /// Creates the Event (`create` is all the RBAC grants on events: each is a new object).
    async fn publish(&self, spec: &EventSpec) -> Result<(), ::kube::Error> {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", spec.key.name, now.as_nanosecond())),
                namespace: Some(spec.key.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if spec.warning { "Warning" } else { "Normal" }.to_string()),
            action: Some("Reconcile".to_string()),
            reason: Some(spec.reason.clone()),
            note: Some(spec.note.chars().take(1000).collect()),
            regarding: Some(ObjectReference {
                api_version: Some(format!("{SERVING_GROUP}/{SERVING_VERSION}")),
                kind: Some(spec.kind.to_string()),
                name: Some(spec.key.name.clone()),
                namespace: Some(spec.key.namespace.clone()),
                uid: Some(spec.uid.clone()).filter(|u| !u.is_empty()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(FIELD_MANAGER.to_string()),
            reporting_instance: Some(FIELD_MANAGER.to_string()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &spec.key.namespace);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }

    fn revisions(&self, key: &Key) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &api_resource::<Revision>(),
        )
    }

    async fn apply_placeholders(
        &self,
        route: &Key,
        services: &[CoreService],
        stale: &[String],
    ) -> Result<(), ControllerError> {
        let api: Api<CoreService> = Api::namespaced(self.client.clone(), &route.namespace);
        for service in services {
            let name = service.metadata.name.as_deref().unwrap_or_default();
            api.patch(name, &apply_params(), &Patch::Apply(service))
                .await
                .map_err(api_error("applying", "placeholder Service of Route", route))?;
        }
        for name in stale {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(::kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(api_error("deleting", "placeholder Service of Route", route)(e));
                }
            }
        }
        Ok(())
    }

    async fn patch_status<T: ServingObject>(
        &self,
        key: &Key,
        status: serde_json::Value,
    ) -> Result<DynamicObject, ControllerError> {
        let body = serde_json::json!({
            "apiVersion": format!("{SERVING_GROUP}/{SERVING_VERSION}"),
            "kind": T::KIND,
            "status": status,
        });
        let ar: ApiResource = api_resource::<T>();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &ar);
        api.patch_status(&key.name, &apply_params(), &Patch::Apply(&body))
            .await
            .map_err(api_error("patching the status of", T::KIND, key))
    }
}

fn to_dynamic<T: Serialize>(
    object: &T,
    kind: &'static str,
    key: &Key,
) -> Result<DynamicObject, ControllerError> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|source| ControllerError::Encode {
            kind,
            key: key.clone(),
            source,
        })
}

fn observed(
    result: Result<Watched, ControllerError>,
    kind: ObjectKind,
    key: Key,
) -> (Option<Feedback>, Option<Failure>) {
    match result {
        Ok(watched) => (Some(Feedback::Observed(watched)), None),
        Err(error) => (None, Some(Failure { kind, key, error })),
    }
}
