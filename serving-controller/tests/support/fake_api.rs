//! A small fake API server behind a real `kube::Client` (`tower_test::mock::pair`), for tests
//! of controllers that watch and write many kinds at once.
//!
//! It keeps objects by path and answers as the API server would for what the controllers here
//! do: LIST (with a label selector of `key` or `key=value` terms), WATCH (held open; events the
//! test injects are sent on it, one response per batch — the watcher then watches again), GET of
//! one object (404 when absent), server-side apply (`PATCH` with `application/apply-patch+yaml`,
//! of an object or its `status`; new objects get a uid and generation 1, a changed `spec` bumps
//! the generation), `POST` (409 when the name is taken). Every request other than a LIST or WATCH
//! is recorded as a [`Write`], with its method, path, query, content type and JSON body, in
//! order, for the test to assert on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{self, SendResponse};

use crate::fake_store::{Store, Target, matches_selector, path_of, query, respond, status};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Write {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
}

/// The fake API server: a handle to its objects and recorded writes.
#[derive(Clone)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    events: mpsc::UnboundedSender<(String, Value)>,
}

impl FakeApi {
    /// A client and the fake API server answering it, holding `objects` and failing each of
    /// `faults` (method, path, code) once.
    pub fn start(objects: Vec<Value>, faults: Vec<(Method, String, u16)>) -> (Client, FakeApi) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let store = Arc::new(Mutex::new(Store::default()));
        {
            let mut s = store.lock().unwrap();
            s.faults = faults;
            for object in objects {
                let path = path_of(&object);
                s.put(&path, object);
            }
        }
        let (events, mut event_rx) = mpsc::unbounded_channel::<(String, Value)>();
        let api = FakeApi {
            store: store.clone(),
            events,
        };
        tokio::spawn(async move {
            // Held WATCH requests by collection path, and events not yet sent.
            let mut held: Vec<(Target, SendResponse<Response<Body>>)> = Vec::new();
            let mut queued: Vec<(String, Value)> = Vec::new();
            loop {
                tokio::select! {
                    next = handle.next_request() => {
                        let Some((request, send)) = next else { break };
                        store.lock().unwrap().requests += 1;
                        let q = query(&request);
                        let target = Target::parse(request.uri().path());
                        let watch = q.get("watch").is_some_and(|w| w == "true");
                        if request.method() == Method::GET && watch {
                            held.push((target, send));
                        } else if request.method() == Method::GET && target.name.is_none() {
                            let s = store.lock().unwrap();
                            let items: Vec<Value> = s.objects.iter()
                                .filter(|(p, o)| {
                                    target.covers(p)
                                        && matches_selector(o, q.get("labelSelector"))
                                })
                                .map(|(_, o)| o.clone())
                                .collect();
                            send.send_response(respond(StatusCode::OK, &json!({
                                "apiVersion": "v1", "kind": "List",
                                "metadata": {"resourceVersion": s.resource_version.to_string()},
                                "items": items
                            })));
                        } else {
                            let answer = handle_write(&store, request, q, target).await;
                            send.send_response(answer);
                        }
                    }
                    Some(event) = event_rx.recv() => queued.push(event),
                }
                // Send queued events on the held watch of their collection.
                let mut rest = Vec::new();
                for (path, event) in queued.drain(..) {
                    match held.iter().position(|(t, _)| t.covers(&path)) {
                        Some(i) => {
                            let (_, send) = held.remove(i);
                            let mut body = serde_json::to_vec(&event).expect("json");
                            body.push(b'\n');
                            send.send_response(
                                Response::builder()
                                    .status(StatusCode::OK)
                                    .body(Body::from(body))
                                    .expect("response"),
                            );
                        }
                        None => rest.push((path, event)),
                    }
                }
                queued = rest;
            }
        });
        (Client::new(service, "default"), api)
    }

    /// Stores `object` as a user's `kubectl apply` would, and sends the watch event.
    pub fn user_apply(&self, object: Value) -> Value {
        let path = path_of(&object);
        let (stored, type_) = {
            let mut s = self.store.lock().unwrap();
            let type_ = if s.objects.contains_key(&path) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            (s.put(&path, object), type_)
        };
        let _ = self
            .events
            .send((path, json!({"type": type_, "object": stored.clone()})));
        stored
    }

    /// Sets an object's status (as another controller would) and sends the watch event.
    pub fn set_status(&self, path: &str, status: Value) -> Value {
        let stored = {
            let mut s = self.store.lock().unwrap();
            let mut object = s.objects.get(path).cloned().expect("object exists");
            object["status"] = status;
            s.stamp_version(&mut object);
            s.objects.insert(path.to_string(), object.clone());
            object
        };
        let _ = self.events.send((
            path.to_string(),
            json!({"type": "MODIFIED", "object": stored.clone()}),
        ));
        stored
    }

    /// An object as stored now.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    /// Every recorded write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.store.lock().unwrap().writes.clone()
    }

    /// Waits until no request has arrived for 400 ms (fails after 10 s). Under
    /// `#[tokio::test(start_paused = true)]` time only advances when every task waits, so this
    /// returns once the controller is idle, however slow the machine.
    pub async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = u64::MAX;
        loop {
            let now = self.store.lock().unwrap().requests;
            if now == last {
                return;
            }
            last = now;
            assert!(
                tokio::time::Instant::now() < deadline,
                "the controller did not settle within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

async fn handle_write(
    store: &Arc<Mutex<Store>>,
    request: Request<Body>,
    query: BTreeMap<String, String>,
    target: Target,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    let mut s = store.lock().unwrap();
    s.writes.push(Write {
        method: method.clone(),
        path: path.clone(),
        query,
        content_type: content_type.clone(),
        body: body.clone(),
    });
    if let Some(i) = s
        .faults
        .iter()
        .position(|(m, p, _)| *m == method && *p == path)
    {
        let (_, _, code) = s.faults.remove(i);
        return status(code, "InternalError", "fake API: injected failure");
    }
    match (method, target.name.as_deref(), target.status) {
        (Method::GET, Some(name), _) => match s.objects.get(&target.object_path(name)) {
            Some(object) => respond(StatusCode::OK, object),
            None => status(
                404,
                "NotFound",
                &format!("{} {name:?} not found", target.plural),
            ),
        },
        (Method::PATCH, Some(name), true) => {
            let object_path = target.object_path(name);
            let Some(mut object) = s.objects.get(&object_path).cloned() else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", target.plural),
                );
            };
            object["status"] = body["status"].clone();
            s.stamp_version(&mut object);
            s.objects.insert(object_path, object.clone());
            respond(StatusCode::OK, &object)
        }
        (Method::PATCH, Some(name), false)
            if content_type.as_deref() == Some("application/merge-patch+json") =>
        {
            let object_path = target.object_path(name);
            let Some(mut object) = s.objects.get(&object_path).cloned() else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", target.plural),
                );
            };
            merge_patch(&mut object, &body);
            s.stamp_version(&mut object);
            s.objects.insert(object_path, object.clone());
            respond(StatusCode::OK, &object)
        }
        (Method::PATCH, Some(name), false) => {
            assert_eq!(
                content_type.as_deref(),
                Some("application/apply-patch+yaml"),
                "{path}: writes are server-side applies (or merge patches)"
            );
            let mut object = body;
            object["metadata"]["namespace"] = json!(target.namespace.clone().unwrap_or_default());
            let stored = s.put(&target.object_path(name), object);
            respond(StatusCode::OK, &stored)
        }
        (Method::POST, None, _) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let object_path = target.object_path(&name);
            if s.objects.contains_key(&object_path) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} {name:?} already exists", target.plural),
                );
            }
            let mut object = body;
            object["metadata"]["namespace"] = json!(target.namespace.clone().unwrap_or_default());
            let stored = s.put(&object_path, object);
            respond(StatusCode::CREATED, &stored)
        }
        (Method::DELETE, Some(name), false) => match s.objects.remove(&target.object_path(name)) {
            Some(object) => respond(StatusCode::OK, &object),
            None => status(
                404,
                "NotFound",
                &format!("{} {name:?} not found", target.plural),
            ),
        },
        (method, _, _) => status(
            405,
            "MethodNotAllowed",
            &format!("fake API: {method} {path}"),
        ),
    }
}
