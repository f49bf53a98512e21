//! A small fake Kubernetes API server on a loopback port, for the real `sluice` binary
//! (`--kube`, through a kubeconfig pointing at it): it lists and watches the collections below,
//! merges KIngress status patches, answers Leases with the API server's `resourceVersion`
//! check, records events, and scales Deployments through their `scale` subresource (the pods
//! are ready at once, as if the cluster started them instantly).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::gateway::SETTLE;
use super::wait_for;

pub const INGRESSES: &str = "/apis/networking.internal.knative.dev/v1alpha1/ingresses";
pub const SERVICES: &str = "/api/v1/services";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const SECRETS: &str = "/api/v1/secrets";
pub const CONFIG_MAPS: &str = "/api/v1/namespaces/knative-serving/configmaps";

/// Revisions (`sluice autoscaler --kube`).
pub const REVISIONS: &str = "/apis/serving.knative.dev/v1/revisions";
/// Deployments (`sluice autoscaler --kube`).
pub const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";

/// One open watch stream: JSON lines, one watch event each.
type WatchStream = mpsc::UnboundedSender<Result<Bytes, Infallible>>;

/// What the fake API server holds and saw.
#[derive(Default)]
pub struct ApiState {
    /// Collection path → objects by `namespace/name`.
    pub objects: Mutex<BTreeMap<&'static str, BTreeMap<String, Value>>>,
    /// Collection path → open watch streams.
    pub watchers: Mutex<BTreeMap<&'static str, Vec<WatchStream>>>,
    /// Status patches: (KIngress name, the status applied).
    pub patches: Mutex<Vec<(String, Value)>>,
    /// Events created.
    pub events: Mutex<Vec<Value>>,
    pub resource_version: AtomicU64,
    /// Status patches still to refuse with a 500 (the gateway must retry).
    pub refuse_patches: AtomicU64,
    /// Leases by `namespace/name`.
    pub leases: Mutex<BTreeMap<String, Value>>,
    /// EndpointSlices applied (the autoscaler's public slices), in order.
    pub applied_slices: Mutex<Vec<Value>>,
    /// Scales: (`namespace/deployment`, replicas), in order.
    pub scales: Mutex<Vec<(String, i64)>>,
    /// What a scale also does, per `namespace/deployment`: this EndpointSlice (the pods of the
    /// Revision's private Service) is pushed with its endpoints when scaled above zero, and
    /// with none at zero — as if the pods started and stopped at once.
    pub pods: Mutex<BTreeMap<String, Value>>,
}

fn collection(path: &str) -> Option<&'static str> {
    [
        INGRESSES,
        SERVICES,
        SLICES,
        SECRETS,
        CONFIG_MAPS,
        REVISIONS,
        DEPLOYMENTS,
    ]
    .into_iter()
    .find(|c| *c == path)
}

/// `/api(s)/…/namespaces/NS/PLURAL` → (NS, the cluster-wide path `/api(s)/…/PLURAL`).
fn namespaced(path: &str) -> Option<(String, String)> {
    let (prefix, rest) = path.split_once("/namespaces/")?;
    let (ns, plural) = rest.split_once('/')?;
    (!plural.contains('/')).then(|| (ns.to_string(), format!("{prefix}/{plural}")))
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl ApiState {
    fn next_version(&self) -> String {
        (self.resource_version.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    /// Stores (or, for `DELETED`, removes) `object` and tells the watchers of `path`.
    pub fn push(&self, path: &'static str, type_: &str, mut object: Value) {
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        let key = object_key(&object);
        {
            let mut objects = self.objects.lock().unwrap();
            let of = objects.entry(path).or_default();
            if type_ == "DELETED" {
                of.remove(&key);
            } else {
                of.insert(key, object.clone());
            }
        }
        let line = format!("{}\n", json!({"type": type_, "object": object}));
        let mut watchers = self.watchers.lock().unwrap();
        for w in watchers.entry(path).or_default().iter() {
            let _ = w.send(Ok(Bytes::from(line.clone())));
        }
    }

    /// The object `namespace/name` of a collection, as stored now.
    pub fn object(&self, collection: &'static str, key: &str) -> Option<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(collection)
            .and_then(|o| o.get(key).cloned())
    }

    pub fn patches_of(&self, name: &str) -> Vec<Value> {
        self.patches
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

async fn handle(
    State(api): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or_default();
    // A namespaced list or watch is served from the cluster-wide collection (watches get
    // every namespace's events: the clients filter).
    let namespace_of = namespaced(path);
    let collection_path = namespace_of
        .as_ref()
        .map_or(path.to_string(), |(_, c)| c.clone());
    if method == Method::GET
        && let Some(c) = collection(&collection_path).or_else(|| collection(path))
    {
        if query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
        {
            let (tx, rx) = mpsc::unbounded_channel();
            api.watchers.lock().unwrap().entry(c).or_default().push(tx);
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(UnboundedReceiverStream::new(rx)))
                .unwrap();
        }
        let items: Vec<Value> = api
            .objects
            .lock()
            .unwrap()
            .get(c)
            .map(|o| {
                o.values()
                    .filter(|v| {
                        namespace_of
                            .as_ref()
                            .is_none_or(|(ns, _)| v["metadata"]["namespace"] == json!(ns))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let version = api.resource_version.load(Ordering::Relaxed).to_string();
        return axum::Json(json!({
            "kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": version},
            "items": items,
        }))
        .into_response();
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        (
            "PATCH",
            [
                "apis",
                "networking.internal.knative.dev",
                "v1alpha1",
                "namespaces",
                ns,
                "ingresses",
                name,
                "status",
            ],
        ) => {
            if api
                .refuse_patches
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "try again", "reason": "InternalError",
                    "code": 500});
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(status)).into_response();
            }
            let patch: Value = serde_json::from_slice(&body).expect("a JSON apply patch");
            api.patches
                .lock()
                .unwrap()
                .push((name.to_string(), patch["status"].clone()));
            let key = format!("{ns}/{name}");
            let current = api.object(INGRESSES, &key);
            let Some(mut object) = current else {
                return (StatusCode::NOT_FOUND, axum::Json(not_found(name))).into_response();
            };
            object["status"] = patch["status"].clone();
            api.push(INGRESSES, "MODIFIED", object.clone());
            axum::Json(object).into_response()
        }
        // A single Secret (the gateway fetches one a KIngress starts to name).
        ("GET", ["api", "v1", "namespaces", ns, "secrets", name]) => {
            let key = format!("{ns}/{name}");
            let found = api.object(SECRETS, &key);
            match found {
                Some(secret) => axum::Json(secret).into_response(),
                None => (StatusCode::NOT_FOUND, axum::Json(not_found(name))).into_response(),
            }
        }
        // Leases, with the API server's resourceVersion check (409 on a stale write).
        (
            "GET",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ],
        ) => match api.leases.lock().unwrap().get(&format!("{ns}/{name}")) {
            Some(lease) => axum::Json(lease.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, axum::Json(not_found(name))).into_response(),
        },
        (
            "POST",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
            ],
        ) => {
            let mut lease: Value = serde_json::from_slice(&body).expect("a JSON Lease");
            let key = format!(
                "{ns}/{}",
                lease["metadata"]["name"].as_str().unwrap_or_default()
            );
            let mut leases = api.leases.lock().unwrap();
            if leases.contains_key(&key) {
                return (StatusCode::CONFLICT, axum::Json(conflict(&key))).into_response();
            }
            lease["metadata"]["namespace"] = json!(ns);
            lease["metadata"]["resourceVersion"] = json!(api.next_version());
            leases.insert(key, lease.clone());
            (StatusCode::CREATED, axum::Json(lease)).into_response()
        }
        (
            "PUT",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ],
        ) => {
            let mut lease: Value = serde_json::from_slice(&body).expect("a JSON Lease");
            let key = format!("{ns}/{name}");
            let mut leases = api.leases.lock().unwrap();
            let current = leases
                .get(&key)
                .map(|l| l["metadata"]["resourceVersion"].clone());
            if current.is_none() || current != Some(lease["metadata"]["resourceVersion"].clone()) {
                return (StatusCode::CONFLICT, axum::Json(conflict(&key))).into_response();
            }
            lease["metadata"]["resourceVersion"] = json!(api.next_version());
            leases.insert(key, lease.clone());
            axum::Json(lease).into_response()
        }
        // A Deployment's scale: the wanted count, and the pods ready at once.
        (
            "PATCH",
            [
                "apis",
                "apps",
                "v1",
                "namespaces",
                ns,
                "deployments",
                name,
                "scale",
            ],
        ) => {
            let patch: Value = serde_json::from_slice(&body).expect("a JSON scale patch");
            let replicas = patch["spec"]["replicas"].clone();
            let key = format!("{ns}/{name}");
            let current = api.object(DEPLOYMENTS, &key);
            let Some(mut deployment) = current else {
                return (StatusCode::NOT_FOUND, axum::Json(not_found(name))).into_response();
            };
            api.scales
                .lock()
                .unwrap()
                .push((key.clone(), replicas.as_i64().unwrap_or(-1)));
            deployment["spec"]["replicas"] = replicas.clone();
            deployment["status"]["replicas"] = replicas.clone();
            deployment["status"]["readyReplicas"] = replicas.clone();
            api.push(DEPLOYMENTS, "MODIFIED", deployment);
            let pods = api.pods.lock().unwrap().get(&key).cloned();
            if let Some(mut slice) = pods {
                if replicas.as_i64().unwrap_or(0) == 0 {
                    slice["endpoints"] = json!([]);
                }
                api.push(SLICES, "MODIFIED", slice);
            }
            axum::Json(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": replicas}, "status": {"replicas": replicas}}))
            .into_response()
        }
        // Server-side apply of an EndpointSlice (the autoscaler's public slices).
        (
            "PATCH",
            [
                "apis",
                "discovery.k8s.io",
                "v1",
                "namespaces",
                ns,
                "endpointslices",
                _,
            ],
        ) => {
            let mut slice: Value = serde_json::from_slice(&body).expect("a JSON apply");
            slice["metadata"]["namespace"] = json!(ns);
            api.applied_slices.lock().unwrap().push(slice.clone());
            api.push(SLICES, "MODIFIED", slice.clone());
            axum::Json(slice).into_response()
        }
        ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            let event: Value = serde_json::from_slice(&body).expect("a JSON event");
            api.events.lock().unwrap().push(event.clone());
            (StatusCode::CREATED, axum::Json(event)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(not_found(path))).into_response(),
    }
}

fn conflict(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{what}: the object has been modified"), "reason": "Conflict", "code": 409})
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

/// A fake API server on a loopback port, and a kubeconfig pointing at it.
pub struct FakeApi {
    pub state: Arc<ApiState>,
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    pub async fn start(label: &str) -> FakeApi {
        let state = Arc::new(ApiState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake API server");
        let addr: SocketAddr = listener.local_addr().expect("its address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig =
            std::env::temp_dir().join(format!("sluice-{label}-{}.kubeconfig", std::process::id()));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\n"
            ),
        )
        .expect("writing the kubeconfig");
        FakeApi {
            state,
            kubeconfig,
            task,
        }
    }

    /// Waits until the last status patch of KIngress `default/name` satisfies `check`.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(
            &format!("status of KIngress {name}: {what}"),
            SETTLE,
            || async {
                let patches = self.state.patches_of(name);
                match patches.last() {
                    Some(s) if check(s) => Ok(s.clone()),
                    Some(s) => Err(anyhow::anyhow!("last status written: {s}")),
                    None => Err(anyhow::anyhow!("no status written")),
                }
            },
        )
        .await
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
