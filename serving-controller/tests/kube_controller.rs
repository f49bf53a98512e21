//! The Kubernetes serving controller (`sluice controller --kube`) against a fake API server.
//!
//! `support/fake_api.rs` (with `fake_store.rs`) stands in for the API server behind a real
//! `kube::Client` (`tower_test::mock::pair`): it answers the controller's LISTs from the objects a
//! test seeds, holds its WATCHes open (sending the events a test injects), answers its writes as
//! the API server would (or fails the ones a test names), and records each write — method, path,
//! query, content type and body — for the test to assert on. Each test runs the real
//! [`KubeController`] (one write at a time, so the order is the reconcile's) on paused time until
//! it is idle, then checks the writes and the stored objects (fixtures and lookups:
//! `support/controller.rs`).
//!
//! One test needs a real cluster and is ignored by default (see
//! [`service_becomes_ready_on_a_cluster`]).

#[path = "kube_controller/failures.rs"]
mod failures;
#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/fake_store.rs"]
mod fake_store;
#[path = "kube_controller/gc.rs"]
mod gc;
#[path = "support/controller.rs"]
mod harness;
#[path = "kube_controller/hpa.rs"]
mod hpa;
#[path = "kube_controller/leader.rs"]
mod leader;
#[path = "kube_controller/multi_container.rs"]
mod multi_container;
#[path = "kube_controller/placeholders.rs"]
mod placeholders;

use std::time::Duration;

use harness::{
    APPLY, condition, conditions, position, ready_slice, reconciled_hello, service, start,
    start_with, the_apply, writes_to,
};
use http::Method;
use serde_json::{Value, json};
use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};
use sluice_serving::kube::controller::{
    ControllerConfig, KubeController, TEMPLATE_HASH_ANNOTATION,
};
use sluice_serving::kube::runtime::FIELD_MANAGER;
use tokio::sync::oneshot;

const SERVING: &str = "/apis/serving.knative.dev/v1/namespaces/default";
const KINGRESS: &str =
    "/apis/networking.internal.knative.dev/v1alpha1/namespaces/default/ingresses";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CORE_SERVICES: &str = "/api/v1/namespaces/default/services";

// ---------------------------------------------------------------------------------------------
// Service → Configuration, Route, Revision, Deployment + Service, KIngress

#[tokio::test(start_paused = true)]
async fn a_service_becomes_configuration_route_revision_deployment_and_kingress() {
    let running = start(vec![service("hello", "v1"), ready_slice("hello-00001")]).await;
    let api = &running.api;
    let writes = api.writes();

    // The Configuration and Route: server-side applies owned by the Service.
    let owner = json!([{"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "name": "hello", "uid": "svc-uid-hello", "controller": true, "blockOwnerDeletion": true}]);
    let config = &the_apply(&writes, &format!("{SERVING}/configurations/hello")).body;
    assert_eq!(config["kind"], "Configuration");
    assert_eq!(config["metadata"]["ownerReferences"], owner);
    assert_eq!(
        config["metadata"]["labels"]["serving.knative.dev/service"],
        "hello"
    );
    assert_eq!(
        config["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "TARGET", "value": "v1"}])
    );
    let route = &the_apply(&writes, &format!("{SERVING}/routes/hello")).body;
    assert_eq!(route["metadata"]["ownerReferences"], owner);
    assert_eq!(
        route["spec"]["traffic"],
        json!([{"configurationName": "hello", "latestRevision": true, "percent": 100}])
    );

    // The Revision: created once, owned by the Configuration, labelled as upstream.
    let creates = writes_to(&writes, Method::POST, &format!("{SERVING}/revisions"));
    assert_eq!(creates.len(), 1, "one Revision created: {creates:#?}");
    let revision = &creates[0].body;
    let config_uid = api
        .get(&format!("{SERVING}/configurations/hello"))
        .expect("Configuration stored")["metadata"]["uid"]
        .clone();
    assert_eq!(revision["metadata"]["name"], "hello-00001");
    assert_eq!(
        revision["metadata"]["ownerReferences"],
        json!([{"apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
            "name": "hello", "uid": config_uid, "controller": true, "blockOwnerDeletion": true}])
    );
    let labels = &revision["metadata"]["labels"];
    assert_eq!(labels["serving.knative.dev/configuration"], "hello");
    assert_eq!(labels["serving.knative.dev/configurationGeneration"], "1");
    assert_eq!(labels["serving.knative.dev/service"], "hello");
    assert!(revision["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION].is_string());
    assert_eq!(
        revision["spec"]["containers"][0]["image"],
        "ghcr.io/knative/helloworld-go:latest"
    );

    // The runtime: the Deployment looked up (absent), applied at the initial scale, then the
    // Revision's Service; both owned by the Revision.
    let deployment_path = format!("{DEPLOYMENTS}/hello-00001-deployment");
    assert_eq!(writes_to(&writes, Method::GET, &deployment_path).len(), 1);
    let deployment = &the_apply(&writes, &deployment_path).body;
    let revision_uid = api
        .get(&format!("{SERVING}/revisions/hello-00001"))
        .expect("stored")["metadata"]["uid"]
        .clone();
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        revision_uid
    );
    let revision_service = &the_apply(&writes, &format!("{CORE_SERVICES}/hello-00001")).body;
    assert_eq!(revision_service["spec"]["ports"][0]["port"], 80);

    // The KIngress: our class, owned by the Route, the Route's hosts, 100% to the Revision.
    let ingress = &the_apply(&writes, &format!("{KINGRESS}/hello")).body;
    assert_eq!(
        ingress["metadata"]["annotations"][INGRESS_CLASS_ANNOTATION],
        SLUICE_INGRESS_CLASS
    );
    assert_eq!(ingress["metadata"]["ownerReferences"][0]["kind"], "Route");
    assert_eq!(
        ingress["metadata"]["labels"]["serving.knative.dev/route"],
        "hello"
    );
    let rules = ingress["spec"]["rules"].as_array().expect("rules");
    let hosts: Vec<(Value, Value)> = rules
        .iter()
        .map(|r| (r["visibility"].clone(), r["hosts"].clone()))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                json!("ClusterLocal"),
                json!([
                    "hello.default",
                    "hello.default.svc",
                    "hello.default.svc.cluster.local"
                ])
            ),
            (json!("ExternalIP"), json!(["hello.default.example.com"])),
        ]
    );
    for rule in rules {
        assert_eq!(
            rule["http"]["paths"][0]["splits"],
            json!([{"serviceName": "hello-00001", "serviceNamespace": "default",
                "servicePort": 80, "percent": 100,
                "appendHeaders": {"Knative-Serving-Namespace": "default",
                    "Knative-Serving-Revision": "hello-00001"}}])
        );
    }

    // In dependency order.
    let order = [
        position(
            &writes,
            Method::PATCH,
            &format!("{SERVING}/configurations/hello"),
        ),
        position(&writes, Method::POST, &format!("{SERVING}/revisions")),
        position(&writes, Method::PATCH, &deployment_path),
        position(&writes, Method::PATCH, &format!("{KINGRESS}/hello")),
    ];
    assert!(order.is_sorted(), "{order:?}");

    // Statuses, written on the status subresource.
    let status_writes = writes.iter().filter(|w| w.path.ends_with("/status"));
    for w in status_writes {
        assert_eq!(w.content_type.as_deref(), Some(APPLY), "{}", w.path);
        assert_eq!(
            w.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER)
        );
        assert!(w.body["status"].is_object(), "{}", w.path);
    }
    let revision = api
        .get(&format!("{SERVING}/revisions/hello-00001"))
        .expect("stored");
    assert_eq!(conditions(&revision), ["Ready=True"]);
    assert_eq!(revision["status"]["serviceName"], "hello-00001");
    let config = api
        .get(&format!("{SERVING}/configurations/hello"))
        .expect("stored");
    assert_eq!(conditions(&config), ["Ready=True"]);
    assert_eq!(config["status"]["latestCreatedRevisionName"], "hello-00001");
    assert_eq!(config["status"]["latestReadyRevisionName"], "hello-00001");
    let route = api.get(&format!("{SERVING}/routes/hello")).expect("stored");
    assert_eq!(route["status"]["url"], "http://hello.default.example.com");
    assert_eq!(
        conditions(&route),
        [
            "AllTrafficAssigned=True",
            "CertificateProvisioned=True TLSNotEnabled",
            "IngressReady=Unknown IngressNotConfigured",
            "Ready=Unknown IngressNotConfigured"
        ]
    );
    let svc = api
        .get(&format!("{SERVING}/services/hello"))
        .expect("stored");
    assert_eq!(
        conditions(&svc),
        [
            "ConfigurationsReady=True",
            "Ready=Unknown IngressNotConfigured",
            "RoutesReady=Unknown IngressNotConfigured"
        ]
    );
    assert!(condition(&svc, "Ready")["lastTransitionTime"].is_string());

    // The gateway proves the KIngress served: the Route and the Service become Ready.
    let ingress_path = format!("{KINGRESS}/hello");
    let generation = api.get(&ingress_path).expect("stored")["metadata"]["generation"].clone();
    let before = api.writes().len();
    api.set_status(
        &ingress_path,
        json!({"observedGeneration": generation, "conditions": [
            {"type": "LoadBalancerReady", "status": "True"},
            {"type": "NetworkConfigured", "status": "True"},
            {"type": "Ready", "status": "True"}]}),
    );
    api.settled().await;
    let route = api.get(&format!("{SERVING}/routes/hello")).expect("stored");
    assert_eq!(condition(&route, "Ready")["status"], "True");
    let svc = api
        .get(&format!("{SERVING}/services/hello"))
        .expect("stored");
    assert_eq!(
        conditions(&svc),
        ["ConfigurationsReady=True", "Ready=True", "RoutesReady=True"]
    );
    assert_eq!(svc["status"]["url"], "http://hello.default.example.com");
    assert_eq!(svc["status"]["latestReadyRevisionName"], "hello-00001");
    // Incremental: only the two statuses changed.
    let after: Vec<String> = api.writes()[before..]
        .iter()
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert_eq!(
        after,
        [
            format!("PATCH {SERVING}/routes/hello/status"),
            format!("PATCH {SERVING}/services/hello/status"),
        ]
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Template edits, restarts

#[tokio::test(start_paused = true)]
async fn a_template_edit_creates_revision_00002_and_moves_the_traffic() {
    let running = start(vec![
        service("hello", "v1"),
        ready_slice("hello-00001"),
        ready_slice("hello-00002"),
    ])
    .await;
    let api = &running.api;
    let before = api.writes().len();

    api.user_apply(service("hello", "v2"));
    api.settled().await;
    let writes = api.writes()[before..].to_vec();

    let config = &the_apply(&writes, &format!("{SERVING}/configurations/hello")).body;
    assert_eq!(
        config["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "TARGET", "value": "v2"}])
    );
    let creates = writes_to(&writes, Method::POST, &format!("{SERVING}/revisions"));
    assert_eq!(creates.len(), 1, "{creates:#?}");
    let revision = &creates[0].body;
    assert_eq!(revision["metadata"]["name"], "hello-00002");
    assert_eq!(
        revision["metadata"]["labels"]["serving.knative.dev/configurationGeneration"],
        "2"
    );
    assert_eq!(
        revision["spec"]["containers"][0]["env"],
        json!([{"name": "TARGET", "value": "v2"}])
    );
    // The new Revision runs; the old one is left alone (traffic may still name it).
    the_apply(&writes, &format!("{DEPLOYMENTS}/hello-00002-deployment"));
    assert!(
        writes_to(
            &writes,
            Method::PATCH,
            &format!("{DEPLOYMENTS}/hello-00001-deployment")
        )
        .is_empty()
    );
    assert!(
        api.get(&format!("{SERVING}/revisions/hello-00001"))
            .is_some()
    );

    // latestRevision traffic moves to it.
    let ingress = &the_apply(&writes, &format!("{KINGRESS}/hello")).body;
    for rule in ingress["spec"]["rules"].as_array().expect("rules") {
        let splits = &rule["http"]["paths"][0]["splits"];
        assert_eq!(splits.as_array().map(Vec::len), Some(1));
        assert_eq!(splits[0]["serviceName"], "hello-00002");
        assert_eq!(splits[0]["percent"], 100);
    }
    let config = api
        .get(&format!("{SERVING}/configurations/hello"))
        .expect("stored");
    assert_eq!(config["status"]["latestCreatedRevisionName"], "hello-00002");
    assert_eq!(config["status"]["latestReadyRevisionName"], "hello-00002");
    assert_eq!(config["status"]["observedGeneration"], 2);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn start_up_rebuilds_the_state_from_the_revisions_in_the_api() {
    let mut objects = reconciled_hello(3);
    objects.push(ready_slice("hello-00002"));
    let running = start(objects).await;
    let api = &running.api;
    let writes = api.writes();

    // No second 00001, and the Service's children are left as they are.
    assert!(writes_to(&writes, Method::POST, &format!("{SERVING}/revisions")).is_empty());
    assert!(
        writes_to(
            &writes,
            Method::PATCH,
            &format!("{SERVING}/configurations/hello")
        )
        .is_empty()
    );
    assert!(writes_to(&writes, Method::PATCH, &format!("{SERVING}/routes/hello")).is_empty());
    // The Revision is run again at the autoscaler's count, not reset to the initial scale.
    let deployment = &the_apply(&writes, &format!("{DEPLOYMENTS}/hello-00001-deployment")).body;
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "rev-uid-1"
    );
    let ingress = &the_apply(&writes, &format!("{KINGRESS}/hello")).body;
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["serviceName"],
        "hello-00001"
    );

    // Numbering continues from the API: the next template is 00002.
    let before = api.writes().len();
    api.user_apply(service("hello", "v2"));
    api.settled().await;
    let writes = api.writes()[before..].to_vec();
    let creates = writes_to(&writes, Method::POST, &format!("{SERVING}/revisions"));
    assert_eq!(creates.len(), 1, "{creates:#?}");
    assert_eq!(creates[0].body["metadata"]["name"], "hello-00002");
    assert_eq!(
        creates[0].body["metadata"]["labels"]["serving.knative.dev/configurationGeneration"],
        "2"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn config_domain_names_the_hosts_and_a_change_moves_them() {
    let config_domain = |domain: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config-domain", "namespace": "knative-serving"},
            "data": {domain: ""}
        })
    };
    let running = start(vec![
        config_domain("apps.internal"),
        service("hello", "v1"),
        ready_slice("hello-00001"),
    ])
    .await;
    let api = &running.api;
    let external_host = |ingress: &Value| ingress["spec"]["rules"][1]["hosts"].clone();
    let writes = api.writes();
    let ingress = &the_apply(&writes, &format!("{KINGRESS}/hello")).body;
    assert_eq!(
        external_host(ingress),
        json!(["hello.default.apps.internal"])
    );

    let before = api.writes().len();
    api.user_apply(config_domain("example.org"));
    api.settled().await;
    let writes = api.writes()[before..].to_vec();
    let ingress = &the_apply(&writes, &format!("{KINGRESS}/hello")).body;
    assert_eq!(external_host(ingress), json!(["hello.default.example.org"]));
    let route = api.get(&format!("{SERVING}/routes/hello")).expect("stored");
    assert_eq!(route["status"]["url"], "http://hello.default.example.org");
    // Nothing else about the Service changed: no new Revision, no child re-applied.
    assert!(writes_to(&writes, Method::POST, &format!("{SERVING}/revisions")).is_empty());
    assert!(
        writes_to(
            &writes,
            Method::PATCH,
            &format!("{SERVING}/configurations/hello")
        )
        .is_empty()
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test(start_paused = true)]
async fn a_route_naming_an_unknown_revision_says_so_and_leaves_its_kingress_alone() {
    let route = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Route",
        "metadata": {"name": "pinned", "namespace": "default", "uid": "rt-uid", "generation": 4},
        "spec": {"traffic": [{"revisionName": "ghost-00001", "percent": 100}]}
    });
    let kingress = json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
        "metadata": {"name": "pinned", "namespace": "default",
            "annotations": {INGRESS_CLASS_ANNOTATION: SLUICE_INGRESS_CLASS},
            "ownerReferences": [{"apiVersion": "serving.knative.dev/v1", "kind": "Route",
                "name": "pinned", "uid": "rt-uid",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"rules": [{"hosts": ["pinned.default.example.com"], "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{"serviceName": "pinned-00003",
                "serviceNamespace": "default", "servicePort": 80, "percent": 100}]}]}}]}
    });
    let running = start(vec![route, kingress.clone()]).await;
    let api = &running.api;
    let writes = api.writes();

    assert!(
        writes.iter().all(|w| !w.path.contains("/ingresses")),
        "the KIngress is not touched: {writes:#?}"
    );
    let stored = api.get(&format!("{KINGRESS}/pinned")).expect("still there");
    assert_eq!(stored["spec"], kingress["spec"]);
    let route = api
        .get(&format!("{SERVING}/routes/pinned"))
        .expect("stored");
    let assigned = condition(&route, "AllTrafficAssigned");
    assert_eq!(assigned["status"], "False");
    assert_eq!(assigned["reason"], "RevisionMissing");
    let message = assigned["message"].as_str().unwrap_or_default();
    assert!(message.contains("ghost-00001"), "{message}");
    assert_eq!(condition(&route, "Ready")["status"], "False");
    assert_eq!(route["status"]["observedGeneration"], 4);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_service_gets_a_condition_naming_the_field() {
    let mut limit = service("limit", "v1");
    limit["spec"]["template"]["spec"]["containerConcurrency"] = json!(5000);
    let mut typo = service("typo", "v1");
    typo["spec"]["template"]["spec"]["contaners"] = json!([]);
    let running = start(vec![limit, typo]).await;
    let api = &running.api;
    let writes = api.writes();

    for (name, field) in [
        ("limit", "spec.template.spec.containerConcurrency"),
        ("typo", "contaners"),
    ] {
        let svc = api
            .get(&format!("{SERVING}/services/{name}"))
            .expect("stored");
        let ready = condition(&svc, "Ready");
        assert_eq!(ready["status"], "False", "{name}");
        assert_eq!(ready["reason"], "InvalidSpec", "{name}");
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{name}: {message}");
        assert_eq!(svc["status"]["observedGeneration"], 1);
    }
    let statuses: Vec<&str> = writes.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        statuses,
        [
            format!("{SERVING}/services/limit/status"),
            format!("{SERVING}/services/typo/status"),
        ],
        "nothing but the two statuses is written"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_cannot_run_is_failed_naming_the_field_without_a_request() {
    // A Revision written straight to the API is not validated; the runtime refuses a
    // container without an image before any request.
    let revision = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": "two-00001", "namespace": "default", "uid": "rev-uid-two"},
        "spec": {"containers": [
            {"image": "ghcr.io/knative/helloworld-go:latest", "ports": [{"containerPort": 8080}]},
            {"name": "sidecar"}
        ]}
    });
    let running = start(vec![revision]).await;
    let api = &running.api;
    let writes = api.writes();

    assert!(
        writes.iter().all(|w| !w.path.starts_with(DEPLOYMENTS)),
        "no Deployment request, not even the lookup: {writes:#?}"
    );
    let revision = api
        .get(&format!("{SERVING}/revisions/two-00001"))
        .expect("stored");
    let ready = condition(&revision, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "DeploymentFailed");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.containers[1].image is empty"),
        "{message}"
    );
    let status = running.status.lock().expect("status").clone();
    assert!(
        status.problems.contains_key("Revision default/two-00001"),
        "{status:#?}"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_with_backoff_and_shown_meanwhile() {
    let ingress = format!("{KINGRESS}/hello");
    let running = start_with(
        vec![service("hello", "v1"), ready_slice("hello-00001")],
        vec![(Method::PATCH, ingress.clone(), 500)],
    )
    .await;
    let api = &running.api;
    let writes = api.writes();

    let applies = writes_to(&writes, Method::PATCH, &ingress);
    assert_eq!(
        applies.len(),
        2,
        "the failed apply is made again: {applies:#?}"
    );
    assert_eq!(applies[0].body, applies[1].body);
    assert!(api.get(&ingress).is_some());
    let status = running.status.lock().expect("status").clone();
    assert_eq!(status.write_failures.get("apply_ingress"), Some(&1));
    assert!(
        status.errors.is_empty(),
        "cleared once it worked: {status:#?}"
    );
    assert!(status.synced);
    assert_eq!(status.services.len(), 1);
    assert_eq!(status.services[0].name, "default/hello");
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster

/// Runs the controller in-process against a real cluster: a Knative Service becomes a
/// Configuration, a Route, a ready Revision (its Deployment's pod answering) and a KIngress.
///
/// How to run it (kind or k3d, a few minutes; the image is pulled from the internet):
///
/// ```text
/// kind create cluster --name sluice              # or: k3d cluster create sluice
/// kubectl apply -f deploy/full/000-namespace.yaml -f deploy/full/100-crds.yaml
/// # with the kubeconfig pointing at that cluster (KUBECONFIG or ~/.kube/config), and no
/// # `sluice-controller` Deployment running (this test is the controller):
/// cargo test -p sluice-serving --test kube_controller -- --ignored
/// ```
///
/// It reads `SLUICE_TEST_IMAGE` (default `ghcr.io/knative/helloworld-go:latest`) and
/// `SLUICE_TEST_NAMESPACE` (default `default`), creates the Knative Service
/// `sluice-controller-test` there and deletes it at the end. The Route becomes Ready only with
/// the gateway running too (`kubectl apply -f deploy/full/`, then scale `sluice-controller` to
/// 0); without it the test stops at the KIngress.
#[tokio::test]
#[ignore = "needs cluster: kind/k3d + deploy/full/000-namespace.yaml, 100-crds.yaml (see doc)"]
async fn service_becomes_ready_on_a_cluster() {
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let client = kube::Client::try_default()
        .await
        .expect("a kubeconfig (see the doc comment)");
    let namespace = std::env::var("SLUICE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image = std::env::var("SLUICE_TEST_IMAGE")
        .unwrap_or_else(|_| "ghcr.io/knative/helloworld-go:latest".into());
    let name = "sluice-controller-test";
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("serving.knative.dev", "v1", kind),
            plural,
        )
    };
    let services: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &resource("Service", "services"));
    let revisions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &resource("Revision", "revisions"),
    );
    let _ = services.delete(name, &DeleteParams::default()).await;

    let controller = KubeController::new(client.clone(), ControllerConfig::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async {
        let _ = stopped.await;
    }));
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{"image": image,
            "env": [{"name": "TARGET", "value": "Sluice"}]}]}}}
    }))
    .expect("object");
    services
        .create(&PostParams::default(), &object)
        .await
        .expect("Service created (are the CRDs applied?)");

    let ingresses: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &sluice_serving::kube::ingress_api_resource(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let revision = revisions
            .get_opt(&format!("{name}-00001"))
            .await
            .expect("get");
        let ready = revision.as_ref().is_some_and(|r| {
            r.data["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        if ready && ingresses.get_opt(name).await.expect("get").is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ready Revision and KIngress after 180 s: \
             kubectl get ksvc,rev,kingress -n {namespace}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    services
        .delete(name, &DeleteParams::default())
        .await
        .expect("Service deleted");
    let _ = stop.send(());
    task.await.expect("no panic").expect("clean stop");
}
