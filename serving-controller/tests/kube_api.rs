//! The Kubernetes source and status writer against a mocked API server (controller-rs style).
//!
//! `tower_test::mock::pair` stands in for the API server behind a real `kube::Client`. Each test
//! runs a [`Scenario`] on an [`ApiServerVerifier`]: every expected call is checked (method,
//! path, query, body) and answered as the API server would; the scenario is awaited with a
//! timeout, so a call that never comes fails the test, and `RadioSilence` fails on any call.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sluice_serving::Ingress;
use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};
use sluice_serving::kube::{
    EventPublisher, EventType, KubeError, KubeEvent, KubeSource, LoadBalancers, PatchOutcome,
    Readiness, Scope, SourceConfig, StatusWriter, desired_status, error_policy, patch_status,
};
use sluice_serving::lookup::Lookup;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

const KINGRESS_API: &str = "/apis/networking.internal.knative.dev/v1alpha1";
const KOURIER: &str = "kourier.ingress.networking.knative.dev";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A KIngress (as the API server returns it) of the given class.
fn kingress(name: &str, class: Option<&str>, generation: i64) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(class) = class {
        annotations.insert(INGRESS_CLASS_ANNOTATION.into(), class.into());
    }
    json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "metadata": {
            "name": name, "namespace": "default", "generation": generation,
            "resourceVersion": format!("{generation}0"),
            "annotations": annotations,
            "managedFields": [{"manager": "controller", "operation": "Update"}]
        },
        "spec": {"rules": [{
            "hosts": [format!("{name}.default.example.com")],
            "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{
                "serviceName": name, "serviceNamespace": "default",
                "servicePort": 80, "percent": 100
            }]}]}
        }]}
    })
}

/// A KIngress of our class with a TLS block naming Secret `default/secret`.
fn tls_kingress(name: &str, secret: &str) -> Value {
    let mut k = kingress(name, Some(SLUICE_INGRESS_CLASS), 1);
    k["spec"]["tls"] = json!([{
        "hosts": [format!("{name}.default.example.com")],
        "secretName": secret, "secretNamespace": "default"
    }]);
    k
}

fn ingress(name: &str, class: Option<&str>) -> Ingress {
    serde_json::from_value(kingress(name, class, 1)).expect("a valid KIngress")
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"resourceVersion": "100"}, "items": items
    })
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// A `Status` answer with code 403, as the API server sends when RBAC denies a call.
fn forbidden(message: &str) -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
        "code": 403, "message": message
    });
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&status).expect("json")))
        .expect("response")
}

fn watch_events(events: &[(&str, Value)]) -> Response<Body> {
    let mut body = Vec::new();
    for (type_, object) in events {
        serde_json::to_writer(&mut body, &json!({"type": type_, "object": object})).expect("json");
        body.push(b'\n');
    }
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(body))
        .expect("response")
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
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The mocked API server

type ApiServerHandle = Handle<Request<Body>, Response<Body>>;

/// Checks and answers the calls a scenario expects.
struct ApiServerVerifier(ApiServerHandle);

/// What the API server should see.
enum Scenario {
    /// One server-side apply PATCH of `name`'s status with exactly `body`.
    StatusPatch { name: &'static str, body: Value },
    /// One status PATCH of `name`, answered 403 Forbidden.
    StatusPatchForbidden { name: &'static str },
    /// One event created for `name` with `reason`.
    EventCreate {
        name: &'static str,
        reason: &'static str,
    },
    /// No call at all.
    RadioSilence,
    /// The KIngress LIST answered 403 Forbidden (missing RBAC); every other call held open.
    IngressListForbidden,
    /// Every LIST answered with an empty list and recorded (path and query) until the client
    /// is dropped; the recorded LISTs must be exactly `expected`.
    EmptyLists { expected: Vec<String> },
    /// LISTs with a KIngress naming Secret `tls` and three Secrets; the KIngress WATCH adds a
    /// KIngress naming Secret `late`, which must then be fetched with one GET.
    SecretsOnDemand,
    /// The four initial LISTs answered (`ingresses` as the KIngress list), the first KIngress
    /// WATCH answered with `watch`; every other WATCH held open until the client is dropped.
    Watches {
        ingresses: Vec<Value>,
        watch: Vec<(&'static str, Value)>,
    },
}

fn mocked_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServerVerifier(handle))
}

/// Awaits a scenario, failing if it does not complete within 5 s.
async fn timeout_after_5s(scenario: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(5), scenario)
        .await
        .expect("timeout on the mock API server: an expected call was not made")
        .expect("scenario succeeded");
}

impl ApiServerVerifier {
    fn run(self, scenario: Scenario) -> JoinHandle<()> {
        tokio::spawn(async move {
            match scenario {
                Scenario::StatusPatch { name, body } => self.handle_status_patch(name, body).await,
                Scenario::StatusPatchForbidden { name } => self.handle_forbidden(name).await,
                Scenario::EventCreate { name, reason } => self.handle_event(name, reason).await,
                Scenario::RadioSilence => self.handle_silence().await,
                Scenario::IngressListForbidden => self.handle_forbidden_list().await,
                Scenario::EmptyLists { expected } => self.handle_empty_lists(expected).await,
                Scenario::Watches { ingresses, watch } => {
                    self.handle_watches(ingresses, watch).await
                }
                Scenario::SecretsOnDemand => self.handle_secrets_on_demand().await,
            }
        })
    }

    async fn next(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        self.0.next_request().await.expect("service not called")
    }

    async fn handle_status_patch(mut self, name: &str, expected: Value) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            format!(
                "{KINGRESS_API}/namespaces/default/ingresses/{name}/status?&force=true&fieldManager=sluice-gateway"
            )
        );
        assert_eq!(
            request.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/apply-patch+yaml"[..]),
            "a server-side apply patch"
        );
        let body = request.into_body().collect_bytes().await.expect("body");
        let patch: Value = serde_json::from_slice(&body).expect("the patch is JSON");
        assert_eq!(patch, expected);
        let mut object = kingress(name, Some(SLUICE_INGRESS_CLASS), 1);
        object["status"] = patch["status"].clone();
        send.send_response(ok(&object));
    }

    async fn handle_forbidden(mut self, name: &str) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert!(
            request
                .uri()
                .path()
                .ends_with(&format!("/ingresses/{name}/status"))
        );
        send.send_response(forbidden(
            "ingresses.networking.internal.knative.dev \"hello\" is forbidden",
        ));
    }

    async fn handle_event(mut self, name: &str, reason: &str) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/apis/events.k8s.io/v1/namespaces/default/events?"
        );
        let body = request.into_body().collect_bytes().await.expect("body");
        let event: Value = serde_json::from_slice(&body).expect("event JSON");
        assert_eq!(event["reason"], reason);
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reportingController"], "sluice-gateway");
        assert_eq!(event["regarding"]["kind"], "Ingress");
        assert_eq!(event["regarding"]["name"], name);
        assert_eq!(
            event["regarding"]["apiVersion"],
            "networking.internal.knative.dev/v1alpha1"
        );
        send.send_response(ok(&event));
    }

    async fn handle_forbidden_list(mut self) {
        let mut held = Vec::new();
        let mut refused = false;
        while let Some((request, send)) = self.0.next_request().await {
            if request.uri().path() == format!("{KINGRESS_API}/ingresses") && !refused {
                refused = true;
                send.send_response(forbidden(
                    "ingresses.networking.internal.knative.dev is forbidden",
                ));
            } else {
                held.push(send);
            }
        }
        assert!(refused, "the KIngress LIST was made");
        drop(held);
    }

    async fn handle_empty_lists(mut self, expected: Vec<String>) {
        let mut held = Vec::new();
        let mut seen = Vec::new();
        while let Some((request, send)) = self.0.next_request().await {
            if query(&request).contains_key("watch") {
                held.push(send);
                continue;
            }
            seen.push(request.uri().to_string());
            send.send_response(ok(&list("List", "v1", vec![])));
        }
        seen.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(seen, expected);
        drop(held);
    }

    async fn handle_secrets_on_demand(mut self) {
        let secret = |name: &str, rv: &str| {
            json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "other": "eA=="}})
        };
        let mut held = Vec::new();
        let mut fetched = false;
        let mut ingress_watches = 0;
        while let Some((request, send)) = self.0.next_request().await {
            let path = request.uri().path().to_string();
            let q = query(&request);
            if q.get("watch").map(String::as_str) == Some("true") {
                if path == format!("{KINGRESS_API}/ingresses") && ingress_watches == 0 {
                    ingress_watches += 1;
                    send.send_response(watch_events(&[("ADDED", tls_kingress("second", "late"))]));
                } else {
                    held.push(send);
                }
                continue;
            }
            let body = match path.as_str() {
                p if p == format!("{KINGRESS_API}/ingresses") => list(
                    "IngressList",
                    "networking.internal.knative.dev/v1alpha1",
                    vec![tls_kingress("first", "tls")],
                ),
                "/api/v1/services"
                | "/apis/discovery.k8s.io/v1/endpointslices"
                | "/api/v1/namespaces/knative-serving/configmaps" => list("List", "v1", vec![]),
                "/api/v1/secrets" => list(
                    "SecretList",
                    "v1",
                    vec![
                        secret("tls", "7"),
                        secret("late", "8"),
                        secret("unrelated", "9"),
                    ],
                ),
                "/api/v1/namespaces/default/secrets/late" => {
                    assert!(!fetched, "fetched once");
                    fetched = true;
                    secret("late", "8")
                }
                other => panic!("unexpected GET {other}"),
            };
            send.send_response(ok(&body));
        }
        assert!(fetched, "the Secret named later was fetched");
        drop(held);
    }

    async fn handle_silence(mut self) {
        // Either the client is dropped (no request ever) or nothing arrives for a while.
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.0.next_request()).await
        {
            panic!("unexpected call: {} {}", request.method(), request.uri());
        }
    }

    async fn handle_watches(mut self, ingresses: Vec<Value>, watch: Vec<(&'static str, Value)>) {
        let mut listed = BTreeMap::new();
        let mut held = Vec::new();
        let mut ingress_watches = 0;
        // Until the client is dropped: the LISTs, the first KIngress WATCH answered, every
        // other WATCH held open.
        while let Some((request, send)) = self.0.next_request().await {
            assert_eq!(request.method(), Method::GET);
            let path = request.uri().path().to_string();
            let q = query(&request);
            if q.get("watch").map(String::as_str) == Some("true") {
                assert_eq!(
                    q.get("allowWatchBookmarks").map(String::as_str),
                    Some("true")
                );
                let is_ingresses = path == format!("{KINGRESS_API}/ingresses");
                if !is_ingresses || ingress_watches == 0 {
                    // Watches start where the LIST left off.
                    assert_eq!(
                        q.get("resourceVersion").map(String::as_str),
                        Some("100"),
                        "{path}"
                    );
                }
                if is_ingresses && ingress_watches == 0 {
                    ingress_watches += 1;
                    send.send_response(watch_events(&watch));
                } else {
                    held.push(send);
                }
                continue;
            }
            assert_eq!(
                q.get("limit").map(String::as_str),
                Some("500"),
                "{path}: a paged LIST"
            );
            let body = match path.as_str() {
                p if p == format!("{KINGRESS_API}/ingresses") => list(
                    "IngressList",
                    "networking.internal.knative.dev/v1alpha1",
                    ingresses.clone(),
                ),
                "/api/v1/services" => list(
                    "ServiceList",
                    "v1",
                    vec![json!({"metadata": {"name": "web", "namespace": "default",
                        "resourceVersion": "5"}, "spec": {"ports": [{"port": 80}]}})],
                ),
                "/apis/discovery.k8s.io/v1/endpointslices" => list(
                    "EndpointSliceList",
                    "discovery.k8s.io/v1",
                    vec![
                        json!({"metadata": {"name": "web-abc", "namespace": "default",
                        "resourceVersion": "6", "labels": {"kubernetes.io/service-name": "web"}},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}]}),
                    ],
                ),
                "/api/v1/secrets" => list(
                    "SecretList",
                    "v1",
                    vec![json!({"metadata": {"name": "tls", "namespace": "default",
                        "resourceVersion": "7"}, "type": "kubernetes.io/tls",
                        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "other": "eA=="}})],
                ),
                "/api/v1/namespaces/knative-serving/configmaps" => list(
                    "ConfigMapList",
                    "v1",
                    vec![json!({"metadata": {"name": "config-kourier",
                        "namespace": "knative-serving", "resourceVersion": "8"},
                        "data": {"enable-service-access-logging": "false"}})],
                ),
                other => panic!("unexpected LIST {other}"),
            };
            assert!(
                listed.insert(path.clone(), ()).is_none(),
                "{path} listed twice"
            );
            send.send_response(ok(&body));
        }
        assert_eq!(listed.len(), 5, "every kind listed: {listed:?}");
        drop(held);
    }
}

// ---------------------------------------------------------------------------------------------
// (a) status patch, (b) other classes untouched

#[tokio::test]
async fn status_patch_is_a_forced_server_side_apply_of_the_status() {
    let (client, verifier) = mocked_client();
    let object = ingress("hello", Some(SLUICE_INGRESS_CLASS));
    let now = "2026-05-01T12:00:00Z".parse().expect("time");
    let status = desired_status(&object, &Readiness::Ready, &LoadBalancers::default(), now);
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": "2026-05-01T12:00:00Z"});
    let expected = json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition("LoadBalancerReady"),
                condition("NetworkConfigured"),
                condition("Ready")
            ],
            "publicLoadBalancer": {"ingress": [
                {"domainInternal": "sluice-gateway.knative-serving.svc.cluster.local"}]},
            "privateLoadBalancer": {"ingress": [
                {"domainInternal": "sluice-internal.knative-serving.svc.cluster.local"}]}
        }
    });
    let scenario = verifier.run(Scenario::StatusPatch {
        name: "hello",
        body: expected,
    });
    let outcome = patch_status(&client, &object, &status)
        .await
        .expect("patched");
    assert_eq!(outcome, PatchOutcome::Patched);
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn status_writer_reports_failures_with_their_reason() {
    let (client, verifier) = mocked_client();
    let object = ingress("second", Some(SLUICE_INGRESS_CLASS));
    let status = desired_status(
        &object,
        &Readiness::LoadBalancerFailed {
            reason: "DomainConflict".into(),
            message: "host second.default.example.com is claimed by default/first".into(),
        },
        &LoadBalancers::default(),
        "2026-05-01T12:00:00Z".parse().expect("time"),
    );
    let mut expected = json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "Ingress",
        "status": serde_json::to_value(&status).expect("json"),
    });
    // Spelled out, so the test reads as the API server sees it.
    assert_eq!(
        expected["status"]["conditions"][0],
        json!({"type": "LoadBalancerReady", "status": "False", "reason": "DomainConflict",
            "message": "host second.default.example.com is claimed by default/first",
            "lastTransitionTime": "2026-05-01T12:00:00Z"})
    );
    assert_eq!(expected["status"]["conditions"][2]["status"], "False");
    expected["status"]["observedGeneration"] = json!(1);
    let scenario = verifier.run(Scenario::StatusPatch {
        name: "second",
        body: expected,
    });
    assert_eq!(
        patch_status(&client, &object, &status)
            .await
            .expect("patched"),
        PatchOutcome::Patched
    );
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn ingress_of_another_class_is_never_patched() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::RadioSilence);
    let writer = StatusWriter::new(client.clone(), LoadBalancers::default());
    for class in [Some(KOURIER), None] {
        let other = ingress("theirs", class);
        let err = writer
            .update(&other, &Readiness::Ready)
            .await
            .expect_err("refused");
        assert!(matches!(err, KubeError::ForeignClass { .. }), "{err}");
        assert_eq!(error_policy(&err, 0), Action::await_change());
        let events = EventPublisher::new(client.clone(), "test");
        assert!(
            events
                .publish(&other, EventType::Warning, "Translate", "Nope", "")
                .await
                .is_err()
        );
    }
    drop((writer, client));
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn unchanged_status_is_not_patched_again() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::RadioSilence);
    let lbs = LoadBalancers::default();
    let mut object = ingress("hello", Some(SLUICE_INGRESS_CLASS));
    object.status = desired_status(
        &object,
        &Readiness::Ready,
        &lbs,
        "2026-05-01T12:00:00Z".parse().expect("time"),
    );
    let writer = StatusWriter::new(client.clone(), lbs);
    assert_eq!(
        writer.update(&object, &Readiness::Ready).await.expect("ok"),
        PatchOutcome::Unchanged
    );
    drop((writer, client));
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn forbidden_patch_is_an_api_error_retried_slowly() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::StatusPatchForbidden { name: "hello" });
    let writer = StatusWriter::new(client, LoadBalancers::default());
    let object = ingress("hello", Some(SLUICE_INGRESS_CLASS));
    let err = writer
        .update(&object, &Readiness::waiting())
        .await
        .expect_err("forbidden");
    assert_eq!(err.status_code(), Some(403), "{err}");
    assert!(err.to_string().contains("default/hello"), "{err}");
    assert_eq!(
        error_policy(&err, 0),
        Action::requeue(Duration::from_secs(60))
    );
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn warning_event_is_created_once_per_distinct_message() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::EventCreate {
        name: "hello",
        reason: "DomainConflict",
    });
    let events = EventPublisher::new(client, "sluice-gateway-abc");
    let object = ingress("hello", Some(SLUICE_INGRESS_CLASS));
    let publish = || {
        events.publish(
            &object,
            EventType::Warning,
            "Translate",
            "DomainConflict",
            "host hello.default.example.com is claimed by default/first",
        )
    };
    assert!(publish().await.expect("created"));
    assert!(
        !publish().await.expect("suppressed"),
        "a repeat is not sent"
    );
    timeout_after_5s(scenario).await;
}

// ---------------------------------------------------------------------------------------------
// (c) watchers: only our class reaches the cache and the stream

/// Collects events until `done` says so (5 s at most).
async fn collect(source: &mut KubeSource, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&seen) {
        let event = tokio::time::timeout_at(deadline, source.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; events so far: {seen:?}"))
            .expect("the source does not end");
        seen.push(match event {
            Ok(KubeEvent::Synced) => "synced".to_string(),
            Ok(KubeEvent::IngressApplied(i)) => format!("applied {}", i.key()),
            Ok(KubeEvent::IngressDeleted(key)) => format!("deleted {key}"),
            Ok(KubeEvent::IngressRejected { ingress, error }) => {
                assert!(error.to_string().contains("invalid type"), "{error}");
                format!("rejected {}", ingress.key())
            }
            Ok(
                event @ (KubeEvent::EndpointSliceApplied(_) | KubeEvent::EndpointSliceDeleted(_)),
            ) => {
                let service = event
                    .service_key()
                    .map(|k| k.to_string())
                    .unwrap_or_default();
                format!("endpoints of {service}")
            }
            Ok(KubeEvent::ServiceApplied(s)) => format!("service {}", s.name_any()),
            Ok(KubeEvent::ServiceDeleted(s)) => format!("service deleted {}", s.name_any()),
            Ok(KubeEvent::SecretApplied(s)) => format!("secret {}", s.name_any()),
            Ok(KubeEvent::SecretDeleted(s)) => format!("secret deleted {}", s.name_any()),
            Ok(KubeEvent::ConfigMapApplied(c)) => format!("configmap {}", c.name_any()),
            Ok(KubeEvent::ConfigMapDeleted(c)) => format!("configmap deleted {}", c.name_any()),
            Err(error) => panic!("unexpected error: {error}"),
        });
    }
    seen
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn watcher_keeps_only_ingresses_of_our_class() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::Watches {
        ingresses: vec![
            kingress("ours", Some(SLUICE_INGRESS_CLASS), 1),
            kingress("theirs", Some(KOURIER), 1),
        ],
        watch: vec![],
    });
    let mut source = KubeSource::new(client, &SourceConfig::default());
    let seen = collect(&mut source, |seen| seen.iter().any(|e| e == "synced")).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("synced"),
        "Synced comes last"
    );
    assert_eq!(
        sorted(seen),
        [
            "applied default/ours",
            "configmap config-kourier",
            "endpoints of default/web",
            "service web",
            "synced"
        ],
        "no KIngress names Secret tls: it is not handed on"
    );
    assert!(source.is_synced());

    let cache = source.cache();
    let names: Vec<_> = cache.ingresses().map(|i| i.key().to_string()).collect();
    assert_eq!(names, ["default/ours"]);
    let ours = &cache.ingresses().next().expect("ours").metadata;
    assert_eq!(
        ours.managed_fields, None,
        "managedFields dropped from the cache"
    );
    assert!(cache.service("default", "web").is_some());
    assert_eq!(cache.endpoint_slices("default", "web").len(), 1);
    let secret = cache
        .secret("default", "tls")
        .expect("a stub of the secret");
    assert_eq!(secret.data, None, "nothing names it: its keys are not kept");
    drop(source);
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn watch_events_follow_class_changes_and_bad_objects_stay_contained() {
    let (client, verifier) = mocked_client();
    let mut bad = kingress("bad", Some(SLUICE_INGRESS_CLASS), 1);
    bad["spec"]["rules"] = json!("not a list");
    let mut leaving = kingress("leaving", Some(KOURIER), 2);
    leaving["metadata"]["resourceVersion"] = json!("21");
    let mut joining = kingress("joining", Some(SLUICE_INGRESS_CLASS), 2);
    joining["metadata"]["resourceVersion"] = json!("22");
    let scenario = verifier.run(Scenario::Watches {
        ingresses: vec![
            kingress("leaving", Some(SLUICE_INGRESS_CLASS), 1),
            kingress("joining", Some(KOURIER), 1),
            bad,
            kingress("gone", Some(SLUICE_INGRESS_CLASS), 1),
            kingress("theirs", Some(KOURIER), 1),
        ],
        watch: vec![
            ("MODIFIED", leaving),
            ("MODIFIED", joining),
            ("MODIFIED", kingress("theirs", Some(KOURIER), 2)),
            ("DELETED", kingress("gone", Some(SLUICE_INGRESS_CLASS), 1)),
            ("ADDED", kingress("new", Some(SLUICE_INGRESS_CLASS), 1)),
        ],
    });
    let mut source = KubeSource::new(client, &SourceConfig::default());
    let seen = collect(&mut source, |seen| {
        seen.iter().any(|e| e == "synced") && seen.iter().any(|e| e == "applied default/new")
    })
    .await;
    assert!(seen.iter().any(|e| e == "synced"));
    let ingress_events: Vec<_> = seen
        .iter()
        .filter(|e| {
            ["applied", "deleted", "rejected"]
                .iter()
                .any(|p| e.starts_with(p))
        })
        .cloned()
        .collect();
    assert_eq!(
        sorted(ingress_events[..3].to_vec()),
        [
            "applied default/gone",
            "applied default/leaving",
            "rejected default/bad"
        ],
        "the bad object is reported, the rest of the LIST still served"
    );
    assert_eq!(
        ingress_events[3..],
        [
            "deleted default/leaving",
            "applied default/joining",
            "deleted default/gone",
            "applied default/new"
        ],
        "watch events in order, none for the other class"
    );
    let names: Vec<_> = source
        .cache()
        .ingresses()
        .map(|i| i.key().to_string())
        .collect();
    assert_eq!(names, ["default/joining", "default/new"]);
    drop(source);
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn a_failing_watch_is_reported_with_the_resource_it_concerns() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::IngressListForbidden);
    let mut source = KubeSource::new(client, &SourceConfig::default());
    let first = tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .expect("an event")
        .expect("the source does not end");
    let err = first.expect_err("the LIST was refused");
    assert!(
        matches!(
            err,
            KubeError::Watch {
                resource: "ingresses.networking.internal.knative.dev",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert_eq!(
        error_policy(&err, 0),
        Action::requeue(Duration::from_millis(500))
    );
    assert!(!source.is_synced());
    drop(source);
    timeout_after_5s(scenario).await;
}

#[tokio::test]
async fn scopes_choose_namespaces_and_label_selectors() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::EmptyLists {
        expected: vec![
            format!("{KINGRESS_API}/namespaces/team-a/ingresses?&limit=500"),
            "/api/v1/namespaces/a/services?&limit=500".to_string(),
            "/api/v1/namespaces/b/services?&limit=500".to_string(),
            "/apis/discovery.k8s.io/v1/endpointslices?&limit=500".to_string(),
            "/api/v1/secrets?&labelSelector=networking.internal.knative.dev%2Fcertificate-uid&limit=500"
                .to_string(),
            "/api/v1/namespaces/knative-serving/configmaps?&limit=500".to_string(),
        ],
    });
    let config = SourceConfig {
        ingresses: Scope::namespaces(["team-a"]),
        services: Scope::namespaces(["b", "a", "b"]),
        endpoint_slices: Scope::all(),
        secrets: Scope::all().with_labels("networking.internal.knative.dev/certificate-uid"),
        pinned_secrets: Vec::new(),
        config_maps: Scope::namespaces(["knative-serving"]),
    };
    let mut source = KubeSource::new(client, &config);
    let seen = collect(&mut source, |seen| seen.iter().any(|e| e == "synced")).await;
    assert_eq!(
        seen,
        ["synced"],
        "empty lists, one watch per namespace, then synced"
    );
    drop(source);
    timeout_after_5s(scenario).await;
}

/// Only named Secrets are kept whole and handed on: the one a listed KIngress names at the
/// sync, and one a later KIngress names (held as a stub until then, fetched with one GET); a
/// Secret nothing names keeps no key material.
#[tokio::test]
async fn only_secrets_a_kingress_names_are_kept() {
    let (client, verifier) = mocked_client();
    let scenario = verifier.run(Scenario::SecretsOnDemand);
    let mut source = KubeSource::new(client, &SourceConfig::default());
    let seen = collect(&mut source, |seen| seen.iter().any(|e| e == "secret late")).await;
    let synced = seen.iter().position(|e| e == "synced").expect("synced");
    assert!(
        seen[..synced].contains(&"secret tls".to_string()),
        "the named Secret is handed on before the sync: {seen:?}"
    );
    assert!(
        !seen.iter().any(|e| e.contains("unrelated")),
        "a Secret nothing names is never handed on: {seen:?}"
    );
    let cache = source.cache();
    let keys = |name: &str| -> Option<Vec<String>> {
        cache
            .secret("default", name)?
            .data
            .as_ref()
            .map(|d| d.keys().cloned().collect())
    };
    assert_eq!(keys("tls"), Some(vec!["tls.crt".into(), "tls.key".into()]));
    assert_eq!(keys("late"), Some(vec!["tls.crt".into(), "tls.key".into()]));
    assert_eq!(keys("unrelated"), None, "held as a stub, without data");
    drop(source);
    timeout_after_5s(scenario).await;
}
