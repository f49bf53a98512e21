//! The Kubernetes runtime against a mocked API server, and the `deploy/full/` manifests.
//!
//! `tower_test::mock::pair` stands in for the API server behind a real `kube::Client` (as in
//! `kube_api.rs`). Each test lists the calls it expects ([`Call`]): [`serve`] checks every one
//! in order — method, path, query, content type and body — answers it as the API server would,
//! and then fails on any further call. The scenario is awaited with a timeout, so a call that
//! never comes fails the test.
//!
//! The manifests are parsed into their typed k8s-openapi objects and serialized back (a
//! misspelt field is lost in the round trip and fails the test, as in `manifests.rs`); the
//! generated ones (`100-crds.yaml`, `400-gateway.yaml`) are compared with what the code renders
//! — `SLUICE_BLESS=1 cargo test -p sluice-serving --test kube_runtime committed` rewrites them.
//!
//! One test needs a real cluster and is ignored by default (see
//! [`revision_runs_scales_and_is_removed_on_a_cluster`]).

#[path = "support/manifest.rs"]
mod manifest;
use manifest::typed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_autoscaler::{RevisionKey, ScaleError, Scaler};
use sluice_serving::kube::controller::{
    ACTIVATOR_PERMISSIONS, AUTOSCALER_PERMISSIONS, AUTOSCALER_SYSTEM_PERMISSIONS,
    CONTROLLER_PERMISSIONS, CONTROLLER_SYSTEM_PERMISSIONS,
};
use sluice_serving::kube::rbac::Permission;
use sluice_serving::kube::runtime::crds::custom_resource_definitions;
use sluice_serving::kube::runtime::{
    FIELD_MANAGER, KubeRuntime, RUNTIME_PERMISSIONS, Removed, RuntimeConfig, RuntimeError,
};
use sluice_serving::serving::{Readiness, Revision};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const NAMESPACE: &str = "knative-serving";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A Revision as the API server holds it (uid set), serving h2c on 50051 when `h2c`.
fn revision(h2c: bool) -> Revision {
    let port = if h2c {
        json!([{"name": "h2c", "containerPort": 50051}])
    } else {
        json!([{"containerPort": 9000}])
    };
    serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": "hello-00001", "namespace": "default", "uid": "rev-uid-1",
            "labels": {
                "serving.knative.dev/configuration": "hello",
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/configurationGeneration": "1"
            }
        },
        "spec": {
            "timeoutSeconds": 300,
            "containerConcurrency": 10,
            "containers": [{
                "name": "user-container",
                "image": "ghcr.io/knative/helloworld-go:latest",
                "env": [{"name": "TARGET", "value": "Sluice"}],
                "ports": port,
                "readinessProbe": {"httpGet": {"path": "/healthz"}}
            }]
        }
    }))
    .expect("a valid Revision")
}

fn response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn ok(body: &Value) -> Response<Body> {
    response(StatusCode::OK, body)
}

/// A `Status` answer, as the API server sends for errors (and for deletes).
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "reason": reason, "code": code, "message": message
    });
    response(StatusCode::from_u16(code).expect("status code"), &body)
}

/// The object an apply returns: the patch plus what the server adds.
fn applied(mut patch: Value) -> Response<Body> {
    patch["metadata"]["uid"] = json!("server-uid");
    patch["metadata"]["resourceVersion"] = json!("42");
    ok(&patch)
}

/// `%XX`-decoding (and `+` as space) of a query component.
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The mocked API server

type ApiServerHandle = Handle<Request<Body>, Response<Body>>;

/// One call the API server expects, and its answer.
struct Call {
    method: Method,
    path: String,
    /// The exact query parameters (decoded).
    query: Vec<(&'static str, String)>,
    /// The request's `content-type`, when it must have one.
    content_type: Option<&'static str>,
    /// Checks the JSON body (`null` when there is none) and returns the answer.
    answer: Box<dyn FnOnce(Value) -> Response<Body> + Send>,
}

impl Call {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            content_type: None,
            answer: Box::new(|_| status(500, "Unanswered", "no answer configured")),
        }
    }

    /// A forced server-side apply under the runtime's field manager.
    fn apply(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
            .query(&[("fieldManager", FIELD_MANAGER), ("force", "true")])
            .content_type(APPLY)
    }

    fn query(mut self, pairs: &[(&'static str, &str)]) -> Self {
        self.query = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    fn answer(mut self, answer: impl FnOnce(Value) -> Response<Body> + Send + 'static) -> Self {
        self.answer = Box::new(answer);
        self
    }
}

fn mocked_client() -> (Client, ApiServerHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Serves `calls` in order, then fails on any further call (until the client is dropped, or
/// 300 ms of silence).
fn serve(mut handle: ApiServerHandle, calls: Vec<Call>) -> JoinHandle<()> {
    tokio::spawn(async move {
        for (index, call) in calls.into_iter().enumerate() {
            let (request, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!("call {index} ({} {}) never made", call.method, call.path)
            });
            let what = format!("call {index}: {} {}", request.method(), request.uri());
            assert_eq!(request.method(), call.method, "{what}");
            assert_eq!(request.uri().path(), call.path, "{what}");
            let expected: BTreeMap<String, String> = call
                .query
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            assert_eq!(query(&request), expected, "{what}: query");
            if let Some(content_type) = call.content_type {
                assert_eq!(
                    request
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok()),
                    Some(content_type),
                    "{what}: content type"
                );
            }
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
            };
            send.send_response((call.answer)(body));
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
        {
            panic!("unexpected call: {} {}", request.method(), request.uri());
        }
    })
}

/// Awaits a scenario, failing if it does not complete within 5 s.
async fn timeout_after_5s(scenario: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(5), scenario)
        .await
        .expect("timeout on the mock API server: an expected call was not made")
        .expect("scenario succeeded");
}

fn runtime(client: Client) -> KubeRuntime {
    KubeRuntime::new(client, RuntimeConfig::default())
}

// ---------------------------------------------------------------------------------------------
// Apply

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_revision_server_side_applies_the_deployment_then_the_service() {
    let (client, handle) = mocked_client();
    let scenario = serve(
        handle,
        vec![
            Call::apply(format!("{DEPLOYMENTS}/hello-00001-deployment")).answer(|body| {
                assert_eq!(body["apiVersion"], "apps/v1");
                assert_eq!(body["kind"], "Deployment");
                let meta = &body["metadata"];
                assert_eq!(meta["name"], "hello-00001-deployment");
                assert_eq!(meta["namespace"], "default");
                assert_eq!(
                    meta["labels"]["serving.knative.dev/revision"],
                    "hello-00001"
                );
                assert_eq!(
                    meta["labels"]["serving.knative.dev/revisionUID"],
                    "rev-uid-1"
                );
                assert_eq!(meta["labels"]["serving.knative.dev/configuration"], "hello");
                assert_eq!(
                    meta["ownerReferences"],
                    json!([{
                        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                        "name": "hello-00001", "uid": "rev-uid-1",
                        "controller": true, "blockOwnerDeletion": true
                    }])
                );
                let spec = &body["spec"];
                assert_eq!(spec["replicas"], 2);
                assert_eq!(
                    spec["selector"],
                    json!({"matchLabels": {"serving.knative.dev/revision": "hello-00001"}})
                );
                assert_eq!(
                    spec["template"]["metadata"]["labels"]["serving.knative.dev/revision"],
                    "hello-00001",
                    "the selector matches the pods"
                );
                let pod = &spec["template"]["spec"];
                assert_eq!(pod["terminationGracePeriodSeconds"], 300);
                assert_eq!(pod["enableServiceLinks"], false);
                let containers = pod["containers"].as_array().expect("containers");
                assert_eq!(containers.len(), 1);
                let c = &containers[0];
                assert_eq!(c["name"], "user-container");
                assert_eq!(c["image"], "ghcr.io/knative/helloworld-go:latest");
                assert_eq!(
                    c["ports"],
                    json!([{"name": "user-port", "containerPort": 9000, "protocol": "TCP"}])
                );
                let env: Vec<(String, String)> = [
                    ("TARGET", "Sluice"),
                    ("PORT", "9000"),
                    ("K_REVISION", "hello-00001"),
                    ("K_CONFIGURATION", "hello"),
                    ("K_SERVICE", "hello"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                assert_eq!(env_of(c), env);
                assert_eq!(
                    c["readinessProbe"],
                    json!({"httpGet": {"path": "/healthz", "port": 9000}, "periodSeconds": 1}),
                    "the user's probe, on the user port"
                );
                assert!(body.get("status").is_none(), "no status in an apply");
                applied(body)
            }),
            // The private Service selects the pods …
            Call::apply(format!("{SERVICES}/hello-00001-private")).answer(|body| {
                assert_eq!(body["apiVersion"], "v1");
                assert_eq!(body["kind"], "Service");
                assert_eq!(body["metadata"]["name"], "hello-00001-private");
                assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "rev-uid-1");
                assert_eq!(
                    body["spec"],
                    json!({
                        "type": "ClusterIP",
                        "selector": {"serving.knative.dev/revision": "hello-00001"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 9000,
                            "protocol": "TCP"}]
                    })
                );
                applied(body)
            }),
            // … the public one, what KIngresses name, has no selector: the autoscaler writes
            // its endpoints.
            Call::apply(format!("{SERVICES}/hello-00001")).answer(|body| {
                assert_eq!(body["metadata"]["name"], "hello-00001");
                assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "rev-uid-1");
                assert_eq!(
                    body["spec"],
                    json!({
                        "type": "ClusterIP",
                        "ports": [{"name": "http", "port": 80, "targetPort": 9000,
                            "protocol": "TCP"}]
                    })
                );
                applied(body)
            }),
        ],
    );
    let result = runtime(client).apply_revision(&revision(false), 2).await;
    timeout_after_5s(scenario).await;
    let applied = result.expect("applied");
    assert_eq!(
        applied.deployment.metadata.uid.as_deref(),
        Some("server-uid"),
        "what the server answered is returned"
    );
    assert_eq!(
        applied.service.metadata.name.as_deref(),
        Some("hello-00001")
    );
}

#[tokio::test]
async fn h2c_revision_gets_an_http2_service_port() {
    let (client, handle) = mocked_client();
    let scenario = serve(
        handle,
        vec![
            Call::apply(format!("{DEPLOYMENTS}/hello-00001-deployment")).answer(|body| {
                let c = &body["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(c["ports"][0]["containerPort"], 50051);
                assert!(env_of(c).contains(&("PORT".to_string(), "50051".to_string())));
                applied(body)
            }),
            Call::apply(format!("{SERVICES}/hello-00001-private")).answer(|body| {
                assert_eq!(
                    body["spec"]["ports"],
                    json!([{"name": "http2", "port": 80, "targetPort": 50051,
                        "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}])
                );
                applied(body)
            }),
            Call::apply(format!("{SERVICES}/hello-00001")).answer(|body| {
                assert_eq!(
                    body["spec"]["ports"],
                    json!([{"name": "http2", "port": 80, "targetPort": 50051,
                        "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}])
                );
                applied(body)
            }),
        ],
    );
    let result = runtime(client).apply_revision(&revision(true), 1).await;
    timeout_after_5s(scenario).await;
    result.expect("applied");
}

#[tokio::test]
async fn a_revision_not_from_the_api_server_is_refused_without_a_request() {
    let (client, handle) = mocked_client();
    let scenario = serve(handle, vec![]);
    let runtime = runtime(client);
    let mut local = revision(false);
    local.metadata.uid = None;
    let err = runtime.apply_revision(&local, 1).await.expect_err("no uid");
    assert!(
        matches!(err, RuntimeError::MissingMetadata { field: "uid", .. }),
        "{err}"
    );
    let mut imageless = revision(false);
    imageless.spec.containers[0].image.clear();
    let err = runtime
        .apply_revision(&imageless, 1)
        .await
        .expect_err("no image");
    assert!(
        err.to_string().contains("spec.containers[0].image"),
        "{err}"
    );
    let err = runtime.scale("default", "", 1).await.expect_err("no name");
    assert!(matches!(
        err,
        RuntimeError::MissingMetadata { field: "name", .. }
    ));
    drop(runtime);
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn api_error_surfaces_naming_the_object_and_stops_the_apply() {
    let (client, handle) = mocked_client();
    let scenario = serve(
        handle,
        vec![
            Call::apply(format!("{DEPLOYMENTS}/hello-00001-deployment")).answer(|_| {
                status(
                    403,
                    "Forbidden",
                    "deployments.apps \"hello-00001-deployment\" is forbidden: User \
                     \"system:serviceaccount:knative-serving:sluice-controller\" cannot patch \
                     resource \"deployments\"",
                )
            }),
        ],
    );
    let result = runtime(client).apply_revision(&revision(false), 1).await;
    timeout_after_5s(scenario).await; // and no Service apply after the failure
    let err = result.expect_err("forbidden");
    assert_eq!(err.status_code(), Some(403));
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.starts_with("applying Deployment default/hello-00001-deployment failed: "),
        "{message}"
    );
    assert!(message.contains("cannot patch resource"), "{message}");
    assert!(message.contains("deploy/full/200-rbac.yaml"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Scale

fn scale_call(replicas: i64) -> Call {
    Call::new(
        Method::PATCH,
        format!("{DEPLOYMENTS}/hello-00001-deployment/scale"),
    )
    .query(&[("fieldManager", FIELD_MANAGER)])
    .content_type(MERGE)
    .answer(move |body| {
        assert_eq!(body, json!({"spec": {"replicas": replicas}}));
        ok(&json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "hello-00001-deployment", "namespace": "default"},
            "spec": {"replicas": replicas}, "status": {"replicas": 1}
        }))
    })
}

#[tokio::test]
async fn scale_patches_the_deployment_scale_subresource() {
    let (client, handle) = mocked_client();
    let scenario = serve(handle, vec![scale_call(3), scale_call(0)]);
    let runtime = runtime(client);
    let three = runtime.scale("default", "hello-00001", 3).await;
    let zero = runtime.scale("default", "hello-00001", 0).await;
    timeout_after_5s(scenario).await;
    three.expect("scaled to 3");
    zero.expect("scaled to 0");
}

#[tokio::test]
async fn the_autoscaler_scales_through_the_scaler_trait() {
    let (client, handle) = mocked_client();
    let missing = Call::new(
        Method::PATCH,
        format!("{DEPLOYMENTS}/gone-00001-deployment/scale"),
    )
    .query(&[("fieldManager", FIELD_MANAGER)])
    .answer(|_| {
        status(
            404,
            "NotFound",
            "deployments.apps \"gone-00001-deployment\" not found",
        )
    });
    let failing = Call::new(
        Method::PATCH,
        format!("{DEPLOYMENTS}/hello-00001-deployment/scale"),
    )
    .query(&[("fieldManager", FIELD_MANAGER)])
    .answer(|_| status(503, "ServiceUnavailable", "etcd is unavailable"));
    let scenario = serve(handle, vec![scale_call(5), missing, failing]);
    let runtime = runtime(client);
    let scaled = Scaler::scale(&runtime, &RevisionKey::new("default", "hello-00001"), 5).await;
    let gone = Scaler::scale(&runtime, &RevisionKey::new("default", "gone-00001"), 1).await;
    let failed = Scaler::scale(&runtime, &RevisionKey::new("default", "hello-00001"), 2).await;
    timeout_after_5s(scenario).await;
    scaled.expect("scaled");
    assert!(
        matches!(&gone, Err(ScaleError::NotFound { revision }) if revision.name == "gone-00001"),
        "{gone:?}"
    );
    let Err(ScaleError::Failed {
        desired, source, ..
    }) = failed
    else {
        panic!("a 503 is a failure to retry: {failed:?}");
    };
    assert_eq!(desired, 2);
    let message = source.to_string();
    assert!(
        message.contains("scaling Deployment default/hello-00001-deployment"),
        "{message}"
    );
    assert!(message.contains("retry later"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Remove

fn delete_call(path: String, answer: Response<Body>) -> Call {
    Call::new(Method::DELETE, path).answer(move |body| {
        assert_eq!(
            body["propagationPolicy"], "Background",
            "ReplicaSets and Pods go with the Deployment"
        );
        answer
    })
}

#[tokio::test]
async fn remove_revision_deletes_both_and_tolerates_objects_already_gone() {
    let (client, handle) = mocked_client();
    let scenario = serve(
        handle,
        vec![
            delete_call(
                format!("{DEPLOYMENTS}/hello-00001-deployment"),
                status(
                    404,
                    "NotFound",
                    "deployments.apps \"hello-00001-deployment\" not found",
                ),
            ),
            delete_call(
                format!("{SERVICES}/hello-00001-private"),
                status(200, "", ""),
            ),
            delete_call(format!("{SERVICES}/hello-00001"), status(200, "", "")),
        ],
    );
    let result = runtime(client)
        .remove_revision("default", "hello-00001")
        .await;
    timeout_after_5s(scenario).await;
    assert_eq!(
        result.expect("a 404 is not an error"),
        Removed {
            deployment: false,
            service: true
        }
    );
}

#[tokio::test]
async fn remove_revision_reports_other_failures() {
    let (client, handle) = mocked_client();
    let scenario = serve(
        handle,
        vec![delete_call(
            format!("{DEPLOYMENTS}/hello-00001-deployment"),
            status(500, "InternalError", "etcdserver: request timed out"),
        )],
    );
    let result = runtime(client)
        .remove_revision("default", "hello-00001")
        .await;
    timeout_after_5s(scenario).await;
    let err = result.expect_err("a 500 is an error");
    assert_eq!(err.status_code(), Some(500));
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("deleting Deployment default/hello-00001-deployment failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// EndpointSlices read back

#[tokio::test]
async fn endpoints_are_read_back_from_the_revision_endpoint_slices() {
    let (client, handle) = mocked_client();
    let slice = |name: &str, endpoints: Value| {
        json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "hello-00001-private"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9000, "protocol": "TCP"}],
            "endpoints": endpoints
        })
    };
    let list = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "100"},
        "items": [
            slice("hello-00001-abc", json!([
                {"addresses": ["10.0.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false}}
            ])),
            slice("hello-00001-def", json!([
                {"addresses": ["10.0.1.2"], "conditions": {"ready": true}}
            ]))
        ]
    });
    let empty = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "101"}, "items": []
    });
    let list_call = |answer: Value| {
        Call::new(Method::GET, SLICES)
            .query(&[(
                "labelSelector",
                "kubernetes.io/service-name=hello-00001-private",
            )])
            .answer(move |_| ok(&answer))
    };
    let scenario = serve(handle, vec![list_call(list), list_call(empty)]);
    let runtime = runtime(client);
    let ready = runtime.endpoints(&revision(false)).await;
    let none = runtime.endpoints(&revision(false)).await;
    timeout_after_5s(scenario).await;
    let ready = ready.expect("listed");
    let addresses: Vec<String> = ready
        .ready
        .iter()
        .map(|(ip, port)| format!("{ip}:{port}"))
        .collect();
    assert_eq!(addresses, ["10.0.0.7:9000", "10.0.1.2:9000"]);
    assert_eq!(ready.not_ready, 1);
    assert_eq!(ready.readiness(), Readiness::Ready);
    assert_eq!(none.expect("listed").readiness(), Readiness::Pending);
}

// ---------------------------------------------------------------------------------------------
// deploy/full/

fn full_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/full")
}

fn ingress_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ingress")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Every object of `deploy/full/*.yaml`, typed.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    crds: Vec<CustomResourceDefinition>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
}

/// The non-empty YAML documents of `text`, as JSON.
fn documents(text: &str, file: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{file} document {}: not YAML: {e}", index + 1));
        if !yaml.is_null() {
            out.push(serde_json::to_value(&yaml).expect("YAML maps to JSON"));
        }
    }
    out
}

fn load() -> Manifests {
    let files = yaml_files(&full_dir());
    assert!(!files.is_empty(), "no manifests in deploy/full");
    let mut m = Manifests::default();
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable");
        for (index, value) in documents(&text, &name).into_iter().enumerate() {
            let at = format!("{name} document {}", index + 1);
            let api_version = value["apiVersion"].as_str().unwrap_or_default();
            let kind = value["kind"].as_str().unwrap_or_default();
            match (api_version, kind) {
                ("v1", "Namespace") => m.namespaces.push(typed(&value, &at)),
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    m.crds.push(typed(&value, &at))
                }
                ("v1", "ServiceAccount") => m.service_accounts.push(typed(&value, &at)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    m.cluster_roles.push(typed(&value, &at))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.cluster_role_bindings.push(typed(&value, &at))
                }
                ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(typed(&value, &at)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.role_bindings.push(typed(&value, &at))
                }
                ("apps/v1", "Deployment") => m.deployments.push(typed(&value, &at)),
                ("v1", "Service") => m.services.push(typed(&value, &at)),
                ("v1", "ConfigMap") => m.config_maps.push(typed(&value, &at)),
                ("policy/v1", "PodDisruptionBudget") => {
                    m.disruption_budgets.push(typed(&value, &at))
                }
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    m.network_policies.push(typed(&value, &at))
                }
                other => panic!("{at}: unexpected kind {other:?}"),
            }
        }
    }
    m
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn find<'a, T: k8s_openapi::Metadata<Ty = ObjectMeta>>(items: &'a [T], wanted: &str) -> &'a T {
    items
        .iter()
        .find(|item| name(item.metadata()) == wanted)
        .unwrap_or_else(|| panic!("{wanted} not found"))
}

#[test]
fn every_full_manifest_parses_into_its_type_without_unknown_fields() {
    let m = load();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(name(&m.namespaces[0].metadata), NAMESPACE);
    assert_eq!(m.crds.len(), 5);
    // The controller's, the gateway control plane's, Envoy's, the autoscaler's and the
    // activator's.
    assert_eq!(m.service_accounts.len(), 5);
    assert_eq!(m.cluster_roles.len(), 5);
    assert_eq!(m.cluster_role_bindings.len(), 5);
    assert_eq!(m.roles.len(), 3);
    assert_eq!(m.role_bindings.len(), 3);
    // The controller (300-controller.yaml), the gateway's control plane and its Envoys, the
    // autoscaler (500-autoscaler.yaml), the activator (600-activator.yaml).
    assert_eq!(m.deployments.len(), 5);
    assert_eq!(m.services.len(), 5);
    // The Envoy bootstrap, and the full profile's replacement of it (450-envoy-bootstrap.yaml,
    // the same name: applied later, it wins).
    assert_eq!(m.config_maps.len(), 2);
    assert!(
        m.config_maps
            .iter()
            .all(|c| name(&c.metadata) == "sluice-envoy-bootstrap")
    );
    // The controller's, the gateway control plane's, its Envoys', the autoscaler's and the
    // activator's.
    assert_eq!(m.disruption_budgets.len(), 5);
    assert_eq!(m.network_policies.len(), 2);
    let budget = find(&m.disruption_budgets, "sluice-controller");
    let spec = budget.spec.as_ref().expect("spec");
    assert_eq!(
        spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let controller = find(&m.deployments, "sluice-controller");
    assert_eq!(
        spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
        controller.spec.selector.match_labels.clone(),
        "the controller's budget selects its pods"
    );
    let namespaced = m
        .deployments
        .iter()
        .map(|d| &d.metadata)
        .chain(m.services.iter().map(|s| &s.metadata))
        .chain(m.service_accounts.iter().map(|s| &s.metadata))
        .chain(m.config_maps.iter().map(|c| &c.metadata))
        .chain(m.roles.iter().map(|r| &r.metadata))
        .chain(m.role_bindings.iter().map(|b| &b.metadata))
        .chain(m.disruption_budgets.iter().map(|b| &b.metadata))
        .chain(m.network_policies.iter().map(|p| &p.metadata));
    for meta in namespaced {
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{}", name(meta));
    }
    let cluster_scoped = m
        .cluster_roles
        .iter()
        .map(|r| &r.metadata)
        .chain(m.cluster_role_bindings.iter().map(|b| &b.metadata))
        .chain(m.crds.iter().map(|c| &c.metadata))
        .chain(m.namespaces.iter().map(|n| &n.metadata));
    for meta in cluster_scoped {
        assert_eq!(meta.namespace, None, "{} is cluster-scoped", name(meta));
    }
}

/// What a ClusterRole grants, as (group, resource) → verbs.
fn grants(role: &ClusterRole) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    granted
}

fn permissions(list: &[Permission]) -> BTreeMap<(String, String), BTreeSet<String>> {
    list.iter()
        .map(|p| {
            (
                (p.group.to_string(), p.resource.to_string()),
                p.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

/// A Role's or ClusterRole's rules as (group, resource) → verbs.
fn role_grants(
    rules: Option<&Vec<k8s_openapi::api::rbac::v1::PolicyRule>>,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in rules.into_iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    granted
}

#[test]
fn activator_role_grants_exactly_what_it_does_and_its_service_is_what_the_autoscaler_reads() {
    let m = load();
    let role = find(&m.cluster_roles, "sluice-activator");
    assert_eq!(
        role_grants(role.rules.as_ref()),
        permissions(ACTIVATOR_PERMISSIONS),
        "ClusterRole sluice-activator must grant ACTIVATOR_PERMISSIONS, no more, no less"
    );
    let binding = find(&m.cluster_role_bindings, "sluice-activator");
    assert_eq!(
        binding.subjects.as_deref().unwrap_or_default()[0].name,
        "sluice-activator"
    );
    let deployment = find(&m.deployments, "sluice-activator");
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(&args[..2], ["activator", "--kube"]);
    assert!(args.contains(&"--listen=0.0.0.0:8012".to_string()));
    assert!(
        args.contains(
            &"--autoscaler=http://sluice-autoscaler.knative-serving.svc:8080".to_string()
        ),
        "reports to the autoscaler's Service, on its stats port"
    );
    // The autoscaler's default --activator-service.
    let service = find(&m.services, "sluice-activator");
    assert_eq!(service.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        service.spec.as_ref().and_then(|s| s.selector.clone()),
        deployment.spec.selector.match_labels.clone()
    );
}

#[test]
fn autoscaler_roles_grant_exactly_what_it_does() {
    let m = load();
    let cluster = find(&m.cluster_roles, "sluice-autoscaler");
    assert_eq!(
        role_grants(cluster.rules.as_ref()),
        permissions(AUTOSCALER_PERMISSIONS),
        "ClusterRole sluice-autoscaler must grant AUTOSCALER_PERMISSIONS, no more, no less"
    );
    let config = find(&m.roles, "sluice-autoscaler-config");
    assert_eq!(
        role_grants(config.rules.as_ref()),
        permissions(AUTOSCALER_SYSTEM_PERMISSIONS)
    );
    let binding = find(&m.cluster_role_bindings, "sluice-autoscaler");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].name, "sluice-autoscaler");
    let binding = find(&m.role_bindings, "sluice-autoscaler-config");
    assert_eq!(binding.role_ref.name, "sluice-autoscaler-config");
    assert_eq!(
        binding.subjects.as_deref().unwrap_or_default()[0].name,
        "sluice-autoscaler"
    );
    let deployment = find(&m.deployments, "sluice-autoscaler");
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("sluice-autoscaler")
    );
    let sluice = &pod.containers[0];
    let args = sluice.args.clone().unwrap_or_default();
    assert_eq!(&args[..2], ["autoscaler", "--kube"]);
    assert!(args.contains(&"--stats=0.0.0.0:8080".to_string()));
    let ready = sluice
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|g| g.path.clone());
    assert_eq!(ready.as_deref(), Some("/ready"), "only the leader is ready");
    // The Envoys stream to the autoscaler's Service, on its stats port.
    let service = find(&m.services, "sluice-autoscaler");
    let spec = service.spec.as_ref().expect("spec");
    assert_eq!(spec.selector, deployment.spec.selector.match_labels.clone());
    assert_eq!(spec.ports.as_ref().expect("ports")[0].port, 8080);
}

#[test]
fn controller_roles_grant_exactly_what_the_runtime_and_serving_api_need() {
    let m = load();
    let runtime_role = find(&m.cluster_roles, "sluice-controller-runtime");
    assert_eq!(
        grants(runtime_role),
        permissions(RUNTIME_PERMISSIONS),
        "ClusterRole sluice-controller-runtime must grant RUNTIME_PERMISSIONS, no more, no less"
    );
    let serving_role = find(&m.cluster_roles, "sluice-controller-serving");
    assert_eq!(
        grants(serving_role),
        permissions(CONTROLLER_PERMISSIONS),
        "ClusterRole sluice-controller-serving must grant CONTROLLER_PERMISSIONS, no more, no less"
    );
    let config_role = find(&m.roles, "sluice-controller-config");
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in config_role.rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    assert_eq!(granted, permissions(CONTROLLER_SYSTEM_PERMISSIONS));
    let config_binding = find(&m.role_bindings, "sluice-controller-config");
    assert_eq!(config_binding.role_ref.kind, "Role");
    assert_eq!(config_binding.role_ref.name, "sluice-controller-config");
    let subjects = config_binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].name, "sluice-controller");
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));

    let account = find(&m.service_accounts, "sluice-controller");
    for role in ["sluice-controller-runtime", "sluice-controller-serving"] {
        let binding = find(&m.cluster_role_bindings, role);
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, role);
        let subjects = binding.subjects.as_deref().unwrap_or_default();
        assert_eq!(subjects.len(), 1, "{role}");
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, name(&account.metadata));
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    }
}

/// Whether to rewrite generated files instead of comparing them.
fn bless() -> bool {
    std::env::var_os("SLUICE_BLESS").is_some()
}

/// Compares `file` with `rendered`, or rewrites it under `SLUICE_BLESS`.
fn check_generated(file: &Path, rendered: &str, what: &str) {
    if bless() {
        std::fs::write(file, rendered).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return;
    }
    let committed = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is not {what}: regenerate it with \
         `SLUICE_BLESS=1 cargo test -p sluice-serving --test kube_runtime committed` \
         and review the diff",
        file.display()
    );
}

const CRDS_HEADER: &str = "\
# GENERATED from sluice_serving::kube::runtime::crds by serving-controller/tests/kube_runtime.rs.
# Do not edit: SLUICE_BLESS=1 cargo test -p sluice-serving --test kube_runtime committed
#
# serving.knative.dev/v1 Service, Configuration, Revision and Route, and the
# networking.internal.knative.dev/v1alpha1 Ingress (KIngress) the gateway watches. The schemas are
# structural but open (`spec` and `status` preserve unknown fields): our types derive no JSON
# schema, so Sluice checks each object when it decodes it (see README.md).
";

fn rendered_crds() -> String {
    let mut out = CRDS_HEADER.to_string();
    for crd in custom_resource_definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD renders as YAML"));
    }
    out
}

#[test]
fn crds_match_committed_yaml() {
    check_generated(
        &full_dir().join("100-crds.yaml"),
        &rendered_crds(),
        "what sluice_serving::kube::runtime::crds generates",
    );
    let m = load();
    assert_eq!(
        m.crds,
        custom_resource_definitions(),
        "100-crds.yaml parses back into the generated objects"
    );
}

const GATEWAY_HEADER: &str = "\
# GENERATED: a copy of deploy/ingress/*.yaml (the gateway is the same in both profiles), made by
# serving-controller/tests/kube_runtime.rs, which fails when the two differ.
# Do not edit: change deploy/ingress/ and run
#   SLUICE_BLESS=1 cargo test -p sluice-serving --test kube_runtime committed
# (deploy/ingress/patches/ is not copied: it patches upstream Knative's config-network.)
";

fn rendered_gateway() -> String {
    let mut out = GATEWAY_HEADER.to_string();
    for file in yaml_files(&ingress_dir()) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let text = std::fs::read_to_string(&file).expect("readable");
        out.push_str(&format!("---\n# ---- deploy/ingress/{name}\n"));
        out.push_str(text.trim_start_matches("---\n"));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[test]
fn gateway_matches_committed_copy_of_the_ingress_profile() {
    let file = full_dir().join("400-gateway.yaml");
    check_generated(
        &file,
        &rendered_gateway(),
        "a copy of deploy/ingress/*.yaml",
    );
    // The copy holds the same objects.
    let objects = |files: Vec<PathBuf>| -> Vec<Value> {
        files
            .iter()
            .flat_map(|f| documents(&std::fs::read_to_string(f).expect("readable"), "?"))
            .collect()
    };
    assert_eq!(objects(vec![file]), objects(yaml_files(&ingress_dir())));
}

// ---------------------------------------------------------------------------------------------
// Against a real cluster

/// Runs a Revision on a real cluster: apply, wait for a ready endpoint, scale, re-apply,
/// remove.
///
/// How to run it (kind or k3d, a few minutes; the image is pulled from the internet):
///
/// ```text
/// kind create cluster --name sluice              # or: k3d cluster create sluice
/// kubectl apply -f deploy/full/100-crds.yaml     # the Revision CRD (nothing else is needed)
/// # with the kubeconfig pointing at that cluster (KUBECONFIG or ~/.kube/config):
/// cargo test -p sluice-serving --test kube_runtime -- --ignored
/// ```
///
/// It reads `SLUICE_TEST_IMAGE` (default `ghcr.io/knative/helloworld-go:latest`; any image
/// serving HTTP on `$PORT` works) and `SLUICE_TEST_NAMESPACE` (default `default`). It creates
/// the Revision `sluice-runtime-test` there (deleted at the end) and runs as the kubeconfig's
/// user, not the controller's ServiceAccount.
#[tokio::test]
#[ignore = "needs cluster: kind/k3d with deploy/full/100-crds.yaml applied (see the doc comment)"]
async fn revision_runs_scales_and_is_removed_on_a_cluster() {
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let client = Client::try_default()
        .await
        .expect("a kubeconfig (see the doc comment)");
    let namespace = std::env::var("SLUICE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image = std::env::var("SLUICE_TEST_IMAGE")
        .unwrap_or_else(|_| "ghcr.io/knative/helloworld-go:latest".into());
    let name = "sluice-runtime-test";
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", "Revision"),
        "revisions",
    );
    let revisions: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let _ = revisions.delete(name, &DeleteParams::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"serving.knative.dev/configuration": "sluice-runtime-test"}},
        "spec": {"containers": [{"image": image, "env": [{"name": "TARGET", "value": "Sluice"}]}]}
    }))
    .expect("object");
    let created = revisions
        .create(&PostParams::default(), &object)
        .await
        .expect("Revision created (is deploy/full/100-crds.yaml applied?)");
    let revision: Revision =
        serde_json::from_value(serde_json::to_value(&created).expect("json")).expect("decodes");
    assert!(revision.metadata.uid.is_some());

    let runtime = KubeRuntime::new(client.clone(), RuntimeConfig::default());
    runtime.apply_revision(&revision, 1).await.expect("applied");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let endpoints = runtime.endpoints(&revision).await.expect("listed");
        if endpoints.readiness() == Readiness::Ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ready endpoint after 180 s: kubectl describe deployment {name}-deployment"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    runtime.scale(&namespace, name, 2).await.expect("scaled");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = deployments
        .get(&format!("{name}-deployment"))
        .await
        .expect("Deployment");
    assert_eq!(deployment.spec.replicas, Some(2));
    let owner = deployment
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("owned");
    assert_eq!(Some(owner.uid), revision.metadata.uid);
    // Applying again at the current scale is a no-op for the count.
    runtime
        .apply_revision(&revision, 2)
        .await
        .expect("re-applied");

    assert_eq!(
        runtime
            .remove_revision(&namespace, name)
            .await
            .expect("removed"),
        Removed {
            deployment: true,
            service: true
        }
    );
    assert_eq!(
        runtime
            .remove_revision(&namespace, name)
            .await
            .expect("removed again"),
        Removed {
            deployment: false,
            service: false
        }
    );
    revisions
        .delete(name, &DeleteParams::default())
        .await
        .expect("Revision deleted");
}
