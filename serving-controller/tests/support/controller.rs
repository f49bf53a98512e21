//! Fixtures and checks for `kube_controller.rs`: Knative objects as the API server holds them,
//! the controller started against the fake API server, and lookups in its recorded writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use sluice_serving::kube::controller::{
    ControllerConfig, ControllerStatus, KubeController, TEMPLATE_HASH_ANNOTATION,
};
use sluice_serving::kube::runtime::FIELD_MANAGER;
use sluice_serving::serving::{
    Service, ServingConfig, admit_service, make_configuration, make_route, template_hash,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fake_api::{FakeApi, Write};

pub const APPLY: &str = "application/apply-patch+yaml";

/// A Knative Service `name` (uid `svc-uid-{name}`) running `image` with env `TARGET=target`.
pub fn service(name: &str, target: &str) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "uid": format!("svc-uid-{name}"),
            "generation": 1},
        "spec": {"template": {"spec": {"containers": [{
            "image": "ghcr.io/knative/helloworld-go:latest",
            "env": [{"name": "TARGET", "value": target}]
        }]}}}
    })
}

/// A ready EndpointSlice of Revision `revision`'s private Service (as the EndpointSlice controller
/// labels it: the Service's labels plus `kubernetes.io/service-name`).
pub fn ready_slice(revision: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{revision}-abcde"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": format!("{revision}-private"),
                "serving.knative.dev/revision": revision}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}]
    })
}

pub struct Running {
    pub api: FakeApi,
    pub status: Arc<Mutex<ControllerStatus>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the controller against a fake API server holding `objects`, and waits until it is
/// quiet.
pub async fn start(objects: Vec<Value>) -> Running {
    start_with(objects, Vec::new()).await
}

/// [`start`], the fake API server failing each of `faults` (method, path, code) once. Failed
/// writes are retried after 50 ms (doubling).
pub async fn start_with(objects: Vec<Value>, faults: Vec<(Method, String, u16)>) -> Running {
    start_led(objects, faults, None).await
}

/// [`start_with`], reconciling only while `leader` says so (`None`: always).
pub async fn start_led(
    objects: Vec<Value>,
    faults: Vec<(Method, String, u16)>,
    leader: Option<tokio::sync::watch::Receiver<bool>>,
) -> Running {
    let (client, api) = FakeApi::start(objects, faults);
    let config = ControllerConfig {
        concurrency: 1,
        backoff: Duration::from_millis(50),
        ..ControllerConfig::default()
    };
    let mut controller = KubeController::new(client, config);
    if let Some(leader) = leader {
        controller = controller.with_leader(leader);
    }
    let status = controller.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        controller
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("the controller ends cleanly");
    });
    api.settled().await;
    Running {
        api,
        status,
        stop,
        task,
    }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the controller stops on shutdown")
            .expect("no panic");
    }
}

/// The writes to `path` (exactly), with `method`.
pub fn writes_to<'a>(writes: &'a [Write], method: Method, path: &str) -> Vec<&'a Write> {
    writes
        .iter()
        .filter(|w| w.method == method && w.path == path)
        .collect()
}

/// The one server-side apply of `path`, checked to be forced under the controller's field
/// manager.
pub fn the_apply<'a>(writes: &'a [Write], path: &str) -> &'a Write {
    let applies = writes_to(writes, Method::PATCH, path);
    assert_eq!(applies.len(), 1, "one apply of {path}: {applies:#?}");
    let apply = applies[0];
    assert_eq!(apply.content_type.as_deref(), Some(APPLY), "{path}");
    assert_eq!(
        apply.query.get("fieldManager").map(String::as_str),
        Some(FIELD_MANAGER)
    );
    assert_eq!(apply.query.get("force").map(String::as_str), Some("true"));
    apply
}

pub fn position(writes: &[Write], method: Method, path: &str) -> usize {
    writes
        .iter()
        .position(|w| w.method == method && w.path == path)
        .unwrap_or_else(|| panic!("no {method} {path}"))
}

/// `type=status reason` of each condition of a stored object's status.
pub fn conditions(object: &Value) -> Vec<String> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}",
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default()
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {object:#}"))
}

/// The objects a controller left behind for Service `hello` at revision 00001: its
/// Configuration and Route (as the controller makes them), the Revision (with its labels and
/// template hash), and its Deployment, scaled to `replicas` by the autoscaler.
pub fn reconciled_hello(replicas: i64) -> Vec<Value> {
    let svc: Service = serde_json::from_value(service("hello", "v1")).expect("a Service");
    let admitted = admit_service(&svc, &ServingConfig::default()).expect("valid");
    let mut config = serde_json::to_value(make_configuration(&admitted)).expect("json");
    config["metadata"]["uid"] = json!("cfg-uid");
    config["status"] = json!({"observedGeneration": 1,
        "latestCreatedRevisionName": "hello-00001", "latestReadyRevisionName": "hello-00001",
        "conditions": [{"type": "Ready", "status": "True"}]});
    let route = serde_json::to_value(make_route(&admitted)).expect("json");
    let template = make_configuration(&admitted).spec.template;
    let revision = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": "hello-00001", "namespace": "default", "uid": "rev-uid-1",
            "labels": {"serving.knative.dev/configuration": "hello",
                "serving.knative.dev/configurationGeneration": "1",
                "serving.knative.dev/configurationUID": "cfg-uid",
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/serviceUID": "svc-uid-hello"},
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(&template)},
            "ownerReferences": [{"apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
                "name": "hello", "uid": "cfg-uid",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": serde_json::to_value(&template.spec).expect("json")
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello-00001-deployment", "namespace": "default"},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"serving.knative.dev/revision": "hello-00001"}},
            "template": {"metadata": {}}}
    });
    vec![
        service("hello", "v1"),
        config,
        route,
        revision,
        deployment,
        ready_slice("hello-00001"),
    ]
}
