//! The whole full profile (`deploy/full/`) on a real cluster: what the other tests here prove
//! against the fake API server, checked against the real thing. Ignored on these machines (no
//! API server can run here).
//!
//! How to run it (kind; a few minutes; images are pulled from the internet):
//!
//! ```text
//! kind create cluster --name sluice
//! kind load docker-image ghcr.io/sluice/sluice:latest --name sluice   # see deploy/ingress, "Image"
//! kubectl apply -f deploy/full/000-namespace.yaml
//! deploy/ingress/xds-certs.sh
//! kubectl apply -f deploy/full/
//! kubectl -n knative-serving rollout status deployment/sluice-controller \
//!   deployment/sluice-gateway deployment/sluice-autoscaler deployment/sluice-activator
//! kubectl -n knative-serving port-forward svc/sluice-gateway 8080:80 &
//! cargo test -p sluice --test gateway_kube full_profile -- --ignored --nocapture
//! ```
//!
//! It reads `SLUICE_GATEWAY` (the gateway's HTTP address from here, default `127.0.0.1:8080`),
//! `SLUICE_TEST_IMAGE` (default `ghcr.io/knative/helloworld-go:latest`) and
//! `SLUICE_TEST_NAMESPACE` (default `default`), creates the Knative Service
//! `sluice-profile-test` there, and deletes it at the end. In order:
//!
//! 1. the Service becomes Ready and its URL is served through the gateway;
//! 2. with `containerConcurrency: 1` its public EndpointSlice names the activators
//!    (`sluice.knative.dev/mode: proxy`) and eight requests at once are all answered;
//! 3. idle, its Deployment goes to zero (6 s window; `config-autoscaler`'s grace period), and
//!    the next request is answered once a pod is back;
//! 4. a template whose container exits makes a Revision `Ready=False` with upstream's
//!    `ContainerHealthy` reason `ExitCode3`; the Service shows it, and the Ready Revision keeps
//!    serving.

use std::net::SocketAddr;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::support::{get, wait_for};

const NAME: &str = "sluice-profile-test";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn serving(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", kind),
        plural,
    )
}

/// The condition `type_` of an object's status: (status, reason, message).
fn condition(object: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = object.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cluster: kind with deploy/full applied and the gateway port-forwarded (see module docs)"]
async fn the_full_profile_serves_scales_to_zero_and_back_and_shows_failures() {
    let client = kube::Client::try_default()
        .await
        .expect("a kubeconfig (see the module docs)");
    let namespace = env_or("SLUICE_TEST_NAMESPACE", "default");
    let image = env_or("SLUICE_TEST_IMAGE", "ghcr.io/knative/helloworld-go:latest");
    let gateway: SocketAddr = env_or("SLUICE_GATEWAY", "127.0.0.1:8080")
        .parse()
        .expect("SLUICE_GATEWAY is HOST:PORT");
    let services: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &serving("Service", "services"));
    let revisions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &serving("Revision", "revisions"),
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &namespace);
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), &namespace);

    let _ = services.delete(NAME, &DeleteParams::default()).await;
    wait_for(
        "a leftover Service to go",
        Duration::from_secs(60),
        || async {
            services
                .get_opt(NAME)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let template = |container: Value| {
        json!({"metadata": {"annotations": {"autoscaling.knative.dev/window": "6s"}},
            "spec": {"containerConcurrency": 1, "timeoutSeconds": 30, "containers": [container]}})
    };
    let service: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"template": template(json!({"image": image, "env": [{"name": "TARGET", "value": "Sluice"}]}))},
    }))
    .expect("a Knative Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("Service created (deploy/full applied?)");

    // 1. Ready, and served through the gateway at its URL's host.
    let host = wait_for(
        "the Service Ready with a URL",
        Duration::from_secs(300),
        || async {
            let s = services.get(NAME).await.map_err(|e| e.to_string())?;
            match condition(&s, "Ready") {
                Some((status, _, _)) if status == "True" => {}
                other => return Err(format!("Ready: {other:?}")),
            }
            let url = s.data["status"]["url"].as_str().unwrap_or_default();
            url.split_once("://")
                .map(|(_, h)| h.trim_end_matches('/').to_string())
                .ok_or_else(|| format!("no URL yet: {url:?}"))
        },
    )
    .await;
    let request = || async {
        get(gateway, &host, "/", &[])
            .await
            .map(|r| r.status.as_u16())
            .unwrap_or(0)
    };
    wait_for(
        "the Service served through the gateway",
        Duration::from_secs(120),
        || async { (request().await == 200).then_some(()) },
    )
    .await;

    // 2. containerConcurrency 1: behind the activators, every request answered.
    let revision = format!("{NAME}-00001");
    let public = slices
        .get(&format!("{revision}-sluice"))
        .await
        .expect("the public EndpointSlice written by sluice-autoscaler");
    let mode = public
        .metadata
        .labels
        .unwrap_or_default()
        .get("sluice.knative.dev/mode")
        .cloned();
    assert_eq!(
        mode.as_deref(),
        Some("proxy"),
        "cc > 0 stays behind the activators"
    );
    let statuses = futures::future::join_all((0..8).map(|_| request())).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // 3. To zero when idle, and back on the next request.
    let deployment = format!("{revision}-deployment");
    let replicas = || async {
        deployments
            .get(&deployment)
            .await
            .ok()
            .and_then(|d| d.spec.replicas)
    };
    wait_for(
        "the Deployment scaled to zero",
        Duration::from_secs(240),
        || async { (replicas().await == Some(0)).then_some(()) },
    )
    .await;
    assert_eq!(request().await, 200, "answered from zero");
    assert!(replicas().await.unwrap_or(0) >= 1, "a pod is back");

    // 4. A container that exits: Ready=False with upstream's reason; the old one serves.
    let patch = json!({"spec": {"template": template(
        json!({"image": "busybox:1.36", "command": ["sh", "-c", "exit 3"]}))}});
    services
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("template changed");
    let failed = format!("{NAME}-00002");
    let healthy = wait_for(
        "the failing Revision's ContainerHealthy=False",
        Duration::from_secs(300),
        || async {
            let r = revisions.get(&failed).await.map_err(|e| e.to_string())?;
            match condition(&r, "ContainerHealthy") {
                Some(c) if c.0 == "False" => Ok(c),
                other => Err(format!("ContainerHealthy: {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(healthy.1, "ExitCode3", "{healthy:?}");
    assert!(
        healthy.2.starts_with("Container failed with"),
        "{healthy:?}"
    );
    let r = revisions.get(&failed).await.expect("the Revision");
    assert_eq!(
        condition(&r, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    wait_for(
        "the Service to show the failure",
        Duration::from_secs(60),
        || async {
            let s = services.get(NAME).await.ok()?;
            condition(&s, "Ready").filter(|c| c.0 == "False")
        },
    )
    .await;
    assert_eq!(request().await, 200, "the Ready Revision still serves");

    let _ = services.delete(NAME, &DeleteParams::default()).await;
}
