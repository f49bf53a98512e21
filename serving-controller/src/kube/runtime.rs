//! The Kubernetes runtime of the full profile: a Revision runs as a Deployment behind two
//! Kubernetes Services (Knative's serverless-service design), all owned by the Revision, and
//! the autoscaler's decisions reach the Deployment through its `scale` subresource.
//!
//! - [`objects`]: the pure builders — [`revision_deployment`] (`{revision}-deployment`, as
//!   Knative names it), [`revision_private_service`] (`{revision}-private`, selecting the
//!   pods) and [`revision_service`] (named after the Revision, port 80 `http` or `http2`, no
//!   selector: exactly what the gateway's KIngress splits name, `serviceName: {revision}`,
//!   `servicePort: 80`; `sluice autoscaler --kube` writes its EndpointSlices — the ready pods,
//!   or the activator's);
//! - [`endpoints`]: the EndpointSlices of a Revision's private Service read back into its ready
//!   addresses ([`RevisionEndpoints`]) and the [`Readiness`](crate::serving::Readiness) they
//!   give;
//! - [`crds`]: the `serving.knative.dev/v1` CustomResourceDefinitions (and the KIngress one the
//!   gateway watches) generated from our types, committed as `deploy/full/100-crds.yaml`;
//! - [`error`]: [`RuntimeError`], naming the object and what to do;
//! - this module: [`KubeRuntime`], which talks to the API server — a forced server-side apply of
//!   both objects under the field manager [`FIELD_MANAGER`], deletes that tolerate objects
//!   already gone, the scale patch (also as the autoscaler's [`Scaler`]) and the EndpointSlice
//!   LIST — and [`RUNTIME_PERMISSIONS`], the API access all of that needs (mirrored by the
//!   `sluice-controller-runtime` ClusterRole in `deploy/full/`, a test compares them).
//!
//! ```no_run
//! # async fn run(
//! #     client: ::kube::Client,
//! #     revision: sluice_serving::serving::Revision,
//! # ) -> Result<(), sluice_serving::kube::runtime::RuntimeError> {
//! use sluice_serving::kube::runtime::{KubeRuntime, RuntimeConfig};
//!
//! let runtime = KubeRuntime::new(client, RuntimeConfig::default());
//! // A new Revision starts at its initial scale; later applies pass the current desired scale.
//! runtime.apply_revision(&revision, 1).await?;
//! let endpoints = runtime.endpoints(&revision).await?;
//! let readiness = endpoints.readiness(); // feeds reconcile_configuration's ReadinessReport
//! runtime.scale(revision.namespace(), revision.name(), 3).await?;
//! runtime.remove_revision(revision.namespace(), revision.name()).await?;
//! # Ok(())
//! # }
//! ```

pub mod crds;
pub mod endpoints;
pub mod error;
pub mod objects;

use ::kube::Client;
use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_autoscaler::{RevisionKey, ScaleError, Scaler};

pub use endpoints::{RevisionEndpoints, revision_endpoints};
pub use error::{RuntimeError, Step};
pub use objects::{
    APP_LABEL, DEFAULT_PROGRESS_DEADLINE_SECONDS, READINESS_PERIOD_SECONDS, REVISION_LABEL,
    REVISION_UID_LABEL, RuntimeConfig, USER_PORT_NAME, check_revision, deployment_name,
    private_service_name, revision_deployment, revision_labels, revision_private_service,
    revision_service, service_port_name,
};

use super::rbac::Permission;
use crate::lookup::SERVICE_NAME_LABEL;
use crate::serving::{Key, Revision};

/// The field manager of every write the runtime makes.
pub const FIELD_MANAGER: &str = "sluice-controller";

/// Everything [`KubeRuntime`] does, no more.
///
/// A server-side apply is a `patch`, and also needs `create` when the object does not exist
/// yet (the API server authorizes the implied create); removal is a `delete`; the autoscaler's
/// scale is a `patch` of `deployments/scale`; EndpointSlices are read with one `list` per
/// Revision (label selector `kubernetes.io/service-name`).
pub const RUNTIME_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["create", "patch", "delete"],
    },
    Permission {
        group: "apps",
        resource: "deployments/scale",
        verbs: &["patch"],
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["create", "patch", "delete"],
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list"],
    },
];

/// What [`KubeRuntime::apply_revision`] left in the API server: both objects as it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The Deployment after the apply.
    pub deployment: Deployment,
    /// The public Service after the apply.
    pub service: Service,
    /// The private Service after the apply.
    pub private_service: Service,
}

/// What [`KubeRuntime::remove_revision`] found: `true` where the object existed and is now
/// being deleted, `false` where it was already gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The Deployment.
    pub deployment: bool,
    /// The Service.
    pub service: bool,
}

/// Runs Revisions as Deployments and Services through the API server.
///
/// Cheap to clone (the client is shared); every call is independent, so calls for different
/// Revisions may run concurrently.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    field_manager: String,
    config: RuntimeConfig,
}

impl std::fmt::Debug for KubeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRuntime")
            .field("field_manager", &self.field_manager)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KubeRuntime {
    /// A runtime writing as [`FIELD_MANAGER`].
    pub fn new(client: Client, config: RuntimeConfig) -> Self {
        Self {
            client,
            field_manager: FIELD_MANAGER.to_string(),
            config,
        }
    }

    /// The same runtime writing under another field manager (at most 128 characters, as the
    /// API server requires; a longer one fails every write with a validation error).
    pub fn with_field_manager(mut self, field_manager: impl Into<String>) -> Self {
        self.field_manager = field_manager.into();
        self
    }

    /// The field manager of every write.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// How Deployments are built.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The same runtime, building Deployments with `config` (what the ConfigMaps in force say).
    pub fn with_config(&self, config: RuntimeConfig) -> Self {
        Self {
            config,
            ..self.clone()
        }
    }

    /// Makes the Revision's Deployment (at `replicas`) and Service what
    /// [`revision_deployment`] and [`revision_service`] build: a forced server-side apply of
    /// each, Deployment first.
    ///
    /// The apply owns `spec.replicas`: pass the autoscaler's current desired scale (the
    /// initial scale for a new Revision), or the apply undoes the last [`scale`](Self::scale).
    /// Fields other managers set and these objects do not (an HPA's, a user's label) are left
    /// alone. The Revision must come from the API server (its `metadata.uid` is the owner
    /// reference's) and have one container with an image ([`check_revision`]); otherwise no
    /// request is made.
    pub async fn apply_revision(
        &self,
        revision: &Revision,
        replicas: u32,
    ) -> Result<Applied, RuntimeError> {
        check_revision(revision)?;
        let namespace = revision.namespace();
        let deployment = revision_deployment(revision, &self.config, replicas);
        let service = revision_service(revision);
        let params = PatchParams::apply(&self.field_manager).force();
        tracing::debug!(revision = %revision.key(), replicas, "applying Deployment and Service");

        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let name = deployment_name(revision.name());
        let deployment = deployments
            .patch(&name, &params, &Patch::Apply(&deployment))
            .await
            .map_err(|e| RuntimeError::api(Step::Apply, "Deployment", namespace, &name, e))?;

        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let private_name = private_service_name(revision.name());
        let private_service = services
            .patch(
                &private_name,
                &params,
                &Patch::Apply(&revision_private_service(revision)),
            )
            .await
            .map_err(|e| RuntimeError::api(Step::Apply, "Service", namespace, &private_name, e))?;
        let service = services
            .patch(revision.name(), &params, &Patch::Apply(&service))
            .await
            .map_err(|e| {
                RuntimeError::api(Step::Apply, "Service", namespace, revision.name(), e)
            })?;
        Ok(Applied {
            deployment,
            service,
            private_service,
        })
    }

    /// Deletes the Revision's Deployment and Service (background propagation: the API answers
    /// at once, the garbage collector removes ReplicaSets and Pods). An object already gone
    /// (404) is not an error.
    ///
    /// Deleting the Revision object itself removes both as well (they are owned by it); this is
    /// for a runtime that stops serving a Revision which stays.
    pub async fn remove_revision(
        &self,
        namespace: &str,
        revision: &str,
    ) -> Result<Removed, RuntimeError> {
        check_key(namespace, revision)?;
        let params = DeleteParams::background();
        let name = deployment_name(revision);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let deployment = gone_is_fine(deployments.delete(&name, &params).await)
            .map_err(|e| RuntimeError::api(Step::Delete, "Deployment", namespace, &name, e))?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let private_name = private_service_name(revision);
        gone_is_fine(services.delete(&private_name, &params).await)
            .map_err(|e| RuntimeError::api(Step::Delete, "Service", namespace, &private_name, e))?;
        let service = gone_is_fine(services.delete(revision, &params).await)
            .map_err(|e| RuntimeError::api(Step::Delete, "Service", namespace, revision, e))?;
        tracing::debug!(%namespace, %revision, deployment, service, "removed Revision objects");
        Ok(Removed {
            deployment,
            service,
        })
    }

    /// Sets the Revision's Deployment to `replicas` through its `scale` subresource (a merge
    /// patch of `spec.replicas`, recorded under the runtime's field manager). Counts above
    /// `i32::MAX` are clamped to it.
    pub async fn scale(
        &self,
        namespace: &str,
        revision: &str,
        replicas: u32,
    ) -> Result<(), RuntimeError> {
        check_key(namespace, revision)?;
        let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
        let name = deployment_name(revision);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        tracing::debug!(%namespace, %revision, replicas, "scaling Deployment");
        deployments
            .patch_scale(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| RuntimeError::api(Step::Scale, "Deployment", namespace, &name, e))?;
        Ok(())
    }

    /// The ready addresses behind the Revision's private Service, from its EndpointSlices (one
    /// LIST, label selector `kubernetes.io/service-name={revision}-private`), resolved as the gateway
    /// resolves them ([`revision_endpoints`]).
    pub async fn endpoints(&self, revision: &Revision) -> Result<RevisionEndpoints, RuntimeError> {
        let (namespace, name) = (revision.namespace(), revision.name());
        check_key(namespace, name)?;
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let private = private_service_name(name);
        let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={private}"));
        let list = slices.list(&params).await.map_err(|e| {
            RuntimeError::api(
                Step::ReadBack,
                "EndpointSlices of Service",
                namespace,
                name,
                e,
            )
        })?;
        Ok(revision_endpoints(revision, list.items))
    }
}

/// The autoscaler's decisions, applied through the scale subresource
/// ([`KubeRuntime::scale`]). A Deployment that does not exist is
/// [`ScaleError::NotFound`]; every other failure is [`ScaleError::Failed`] carrying the
/// [`RuntimeError`].
impl Scaler for KubeRuntime {
    async fn scale(&self, revision: &RevisionKey, desired: u32) -> Result<(), ScaleError> {
        KubeRuntime::scale(self, &revision.namespace, &revision.name, desired)
            .await
            .map_err(|error| match error.status_code() {
                Some(404) => ScaleError::NotFound {
                    revision: revision.clone(),
                },
                _ => ScaleError::Failed {
                    revision: revision.clone(),
                    desired,
                    source: Box::new(error),
                },
            })
    }
}

/// Both parts of a key are needed to address anything.
fn check_key(namespace: &str, revision: &str) -> Result<(), RuntimeError> {
    for (field, value) in [("namespace", namespace), ("name", revision)] {
        if value.is_empty() {
            return Err(RuntimeError::MissingMetadata {
                revision: Key::new(namespace, revision),
                field,
            });
        }
    }
    Ok(())
}

/// `Ok(true)` when the delete went through, `Ok(false)` when the object was already gone.
fn gone_is_fine<T>(result: Result<T, ::kube::Error>) -> Result<bool, ::kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(::kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}
