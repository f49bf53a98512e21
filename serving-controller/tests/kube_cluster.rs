//! Tests against a real cluster. They are ignored by default: no API server runs on CI machines.
//!
//! How to run them (kind or k3d, a few minutes):
//!
//! ```text
//! kind create cluster --name sluice            # or: k3d cluster create sluice
//! # Knative Serving (CRDs + core), as its docs say:
//! kubectl apply -f https://github.com/knative/serving/releases/latest/download/serving-crds.yaml
//! kubectl apply -f https://github.com/knative/serving/releases/latest/download/serving-core.yaml
//! # Sluice as the ingress class (build and load the image first, see deploy/ingress/README.md):
//! kubectl apply -f deploy/ingress/
//! kubectl patch configmap/config-network -n knative-serving --type merge \
//!   --patch-file deploy/ingress/patches/config-network.yaml
//! kubectl -n knative-serving rollout status deployment/sluice-gateway
//! # then, with the kubeconfig pointing at that cluster:
//! cargo test -p sluice-serving --test kube_cluster -- --ignored --test-threads 1
//! ```
//!
//! `source_syncs_against_the_cluster` and `status_round_trips_through_the_api_server` need only
//! the Knative CRDs; `ksvc_becomes_ready_through_sluice` needs the whole stack above (it creates
//! a Knative Service and waits for Sluice to mark its KIngress Ready).
//!
//! The `sluice gateway --kube` binary itself, run here against the same kubeconfig (with the
//! Knative CRDs, and without the in-cluster `sluice-gateway` Deployment: two gateways would both
//! write KIngress status):
//!
//! ```text
//! cargo test -p sluice --test gateway_kube -- --ignored
//! ```

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::json;
use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};
use sluice_serving::kube::{
    KubeEvent, KubeSource, LoadBalancers, PatchOutcome, Readiness, SourceConfig, StatusWriter,
    decode_ingress, ingress_api_resource,
};

const NAMESPACE: &str = "default";

async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a kubeconfig or in-cluster config (see the module docs)")
}

/// Polls `check` every second until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
#[ignore = "needs cluster: kind/k3d with Knative Serving CRDs (see module docs)"]
async fn source_syncs_against_the_cluster() {
    let mut source = KubeSource::new(client().await, &SourceConfig::default());
    let synced = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = source.next().await {
            match event {
                Ok(KubeEvent::Synced) => return true,
                Ok(_) => {}
                Err(error) => panic!("watch failed (RBAC? CRDs installed?): {error}"),
            }
        }
        false
    })
    .await
    .expect("synced within 60 s");
    assert!(synced);
    assert!(
        source
            .cache()
            .ingresses()
            .all(|i| sluice_serving::is_ours(i)),
        "only our class is cached"
    );
}

#[tokio::test]
#[ignore = "needs cluster: kind/k3d with Knative Serving CRDs (see module docs)"]
async fn status_round_trips_through_the_api_server() {
    let client = client().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &ingress_api_resource());
    let name = "sluice-status-test";
    let _ = api.delete(name, &DeleteParams::default()).await;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE,
            "annotations": {INGRESS_CLASS_ANNOTATION: SLUICE_INGRESS_CLASS}},
        "spec": {"rules": [{"hosts": ["status-test.example.com"], "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{"serviceName": "nothing",
                "serviceNamespace": NAMESPACE, "servicePort": 80, "percent": 100}]}]}}]}
    }))
    .expect("object");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created (Knative's webhook accepts it)");
    let ingress = decode_ingress(created).expect("decodes");
    let writer = StatusWriter::new(client, LoadBalancers::default());
    let outcome = writer
        .update(&ingress, &Readiness::waiting())
        .await
        .expect("status patched");
    assert_eq!(outcome, PatchOutcome::Patched);
    let read = decode_ingress(api.get(name).await.expect("read back")).expect("decodes");
    assert_eq!(read.status.observed_generation, read.metadata.generation);
    let ready = read
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "Unknown");
    let managers: Vec<_> = read
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "sluice-gateway"),
        "{managers:?}"
    );
    api.delete(name, &DeleteParams::default())
        .await
        .expect("cleaned up");
}

#[tokio::test]
#[ignore = "needs cluster: Knative Serving + deploy/ingress applied and config-network patched"]
async fn ksvc_becomes_ready_through_sluice() {
    let client = client().await;
    let ksvc = ApiResource {
        group: "serving.knative.dev".into(),
        version: "v1".into(),
        api_version: "serving.knative.dev/v1".into(),
        kind: "Service".into(),
        plural: "services".into(),
    };
    let services: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &ksvc);
    let name = "sluice-hello";
    let _ = services.delete(name, &DeleteParams::default()).await;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [{
            "image": "ghcr.io/knative/helloworld-go:latest",
            "env": [{"name": "TARGET", "value": "Sluice"}]
        }]}}}
    }))
    .expect("object");
    services
        .create(&PostParams::default(), &object)
        .await
        .expect("ksvc created");

    let ingresses: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &ingress_api_resource());
    let ingress = eventually(Duration::from_secs(180), "the KIngress to be Ready", || {
        let ingresses = ingresses.clone();
        async move {
            let ingress = decode_ingress(ingresses.get(name).await.ok()?).ok()?;
            let ready = ingress
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && ingress.status.observed_generation == ingress.metadata.generation)
                .then_some(ingress)
        }
    })
    .await;
    assert!(sluice_serving::is_ours(&ingress), "Knative chose our class");
    let public = ingress
        .status
        .public_load_balancer
        .as_ref()
        .and_then(|lb| lb.ingress.first())
        .map(|i| i.domain_internal.clone());
    assert_eq!(
        public.as_deref(),
        Some(LoadBalancers::default().public.as_str())
    );
    eventually(Duration::from_secs(60), "the ksvc to be Ready", || {
        let services = services.clone();
        async move {
            let ksvc = services.get(name).await.ok()?;
            let ready = ksvc.data["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        }
    })
    .await;
    services
        .delete(name, &DeleteParams::default())
        .await
        .expect("cleaned up");
}
