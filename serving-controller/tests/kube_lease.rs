//! Leader election ([`LeaderElector`]) against a mocked API server.
//!
//! `tower_test::mock::pair` stands in for the API server behind a real `kube::Client`. The fake
//! here keeps one `coordination.k8s.io/v1` Lease as the API server would: `GET` (404 when
//! absent), `POST` (409 when it exists), `PUT` guarded by `metadata.resourceVersion` (409 when
//! stale; each write bumps it). Tests can write the Lease as another replica would, fail the
//! next calls with a status code, or stop answering, and read every call made. Several
//! electors may share one fake (one mocked client each). Time is paused: the electors' retry
//! periods, renew deadline and lease duration pass as the tests advance the clock, so the
//! assertions about *when* leadership changes hold on any machine (their bounds allow for the
//! candidates' random jitter of 2–4.4 s between attempts, as client-go's).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sluice_serving::kube::lease::{LeaderElector, LeaseConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower_test::mock;

const NAMESPACE: &str = "knative-serving";
const NAME: &str = "sluice-controller";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/knative-serving/leases";

fn lease_path() -> String {
    format!("{COLLECTION}/{NAME}")
}

/// One call the elector made.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

#[derive(Default)]
struct State {
    lease: Option<Value>,
    version: u64,
    /// The next calls (any method) fail with these codes.
    faults: VecDeque<u16>,
    /// Requests are left unanswered (a hung API server).
    hang: bool,
    calls: Vec<Call>,
}

/// The fake API server's state, shared by every client served.
#[derive(Clone, Default)]
struct FakeLeases(Arc<Mutex<State>>);

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn status(code: u16, reason: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "code": code, "message": format!("fake: {reason}")}),
    )
}

impl FakeLeases {
    /// A client served by this fake.
    fn client(&self) -> Client {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let state = self.0.clone();
        tokio::spawn(async move {
            let mut hung = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let bytes = request.into_body().collect_bytes().await.expect("body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON body")
                };
                let mut s = state.lock().unwrap();
                s.calls.push(Call {
                    method: method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                });
                if s.hang {
                    hung.push(send);
                    continue;
                }
                if let Some(code) = s.faults.pop_front() {
                    send.send_response(status(code, "Injected"));
                    continue;
                }
                let answer = s.answer(&method, &path, body);
                send.send_response(answer);
            }
        });
        Client::new(service, "default")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Writes the Lease as another replica would (holder, duration), bumping its version.
    fn write_holder(&self, holder: &str, duration_seconds: i64) {
        let mut s = self.lock();
        s.version += 1;
        let version = s.version;
        let transitions = s
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["leaseTransitions"].as_i64())
            .unwrap_or(0);
        s.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "resourceVersion": version.to_string()},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_seconds,
                "acquireTime": "2026-01-01T00:00:00.000000Z",
                "renewTime": format!("2026-01-01T00:00:{:02}.000000Z", version % 60),
                "leaseTransitions": transitions}
        }));
    }

    fn holder(&self) -> Option<String> {
        self.lock()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    fn spec(&self) -> Value {
        self.lock()
            .lease
            .as_ref()
            .map(|l| l["spec"].clone())
            .unwrap_or(Value::Null)
    }

    fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn writes(&self, method: Method) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }
}

impl State {
    fn answer(&mut self, method: &Method, path: &str, mut body: Value) -> Response<Body> {
        let lease_path = lease_path();
        match (method.as_str(), path) {
            ("GET", p) if p == lease_path => match &self.lease {
                Some(lease) => respond(200, lease),
                None => status(404, "NotFound"),
            },
            ("POST", COLLECTION) => {
                if self.lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                self.version += 1;
                body["metadata"]["resourceVersion"] = json!(self.version.to_string());
                self.lease = Some(body.clone());
                respond(201, &body)
            }
            ("PUT", p) if p == lease_path => {
                let current = self
                    .lease
                    .as_ref()
                    .and_then(|l| l["metadata"]["resourceVersion"].as_str())
                    .map(str::to_string);
                if current.is_none() {
                    return status(404, "NotFound");
                }
                if body["metadata"]["resourceVersion"].as_str() != current.as_deref() {
                    return status(409, "Conflict");
                }
                self.version += 1;
                body["metadata"]["resourceVersion"] = json!(self.version.to_string());
                self.lease = Some(body.clone());
                respond(200, &body)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

/// An elector running for `identity` against `fake`, and how to stop it.
struct Running {
    leader: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig::new(NAMESPACE, NAME, identity)
}

fn start(fake: &FakeLeases, identity: &str) -> Running {
    let elector = LeaderElector::new(fake.client(), config(identity)).expect("valid config");
    let leader = elector.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    Running { leader, stop, task }
}

impl Running {
    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Waits (paused time) until leadership is `want`, at most `within`.
    async fn expect(&mut self, want: bool, within: Duration) {
        tokio::time::timeout(within, self.leader.wait_for(|l| *l == want))
            .await
            .unwrap_or_else(|_| panic!("leadership did not become {want} within {within:?}"))
            .expect("the elector is running");
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("no panic");
    }
}

/// Lets the elector's tasks run at the current (paused) instant.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_is_created_held_by_the_pod() {
    let fake = FakeLeases::default();
    let mut a = start(&fake, "sluice-controller-a");
    a.expect(true, Duration::from_secs(1)).await;

    let calls = fake.calls();
    assert_eq!(calls[0].method, Method::GET);
    assert_eq!(calls[0].path, lease_path());
    assert_eq!(calls[1].method, Method::POST);
    assert_eq!(calls[1].path, COLLECTION);
    let body = &calls[1].body;
    assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["name"], NAME);
    assert_eq!(body["metadata"]["namespace"], NAMESPACE);
    let spec = &body["spec"];
    assert_eq!(spec["holderIdentity"], "sluice-controller-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["acquireTime"].is_string() && spec["renewTime"].is_string());
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_renews_every_retry_period_guarded_by_the_resource_version() {
    let fake = FakeLeases::default();
    let mut a = start(&fake, "a");
    a.expect(true, Duration::from_secs(1)).await;
    let acquired = fake.spec()["acquireTime"].clone();

    advance(Duration::from_millis(10_100)).await;
    let renews = fake.writes(Method::PUT);
    assert_eq!(renews.len(), 5, "one renew per 2 s over 10 s: {renews:#?}");
    for (i, renew) in renews.iter().enumerate() {
        assert_eq!(renew.path, lease_path());
        // Each write carries the version the previous one left (POST left 1).
        assert_eq!(
            renew.body["metadata"]["resourceVersion"],
            json!((i + 1).to_string())
        );
        assert_eq!(renew.body["spec"]["holderIdentity"], "a");
        assert_eq!(renew.body["spec"]["acquireTime"], acquired, "kept on renew");
        assert_eq!(renew.body["spec"]["leaseTransitions"], 0);
    }
    assert!(a.is_leader());
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_valid_lease_of_another_holder_is_respected_then_taken_over_once_expired() {
    let fake = FakeLeases::default();
    fake.write_holder("b", 15);
    let mut a = start(&fake, "a");
    settle().await;
    assert!(!a.is_leader());

    // While b renews, a never takes over.
    for _ in 0..20 {
        advance(Duration::from_secs(2)).await;
        fake.write_holder("b", 15);
        assert!(!a.is_leader(), "b renews: a must wait");
    }
    assert!(
        fake.writes(Method::PUT).is_empty(),
        "no write while b holds it"
    );

    // b stops renewing: a takes over once it has seen no change for 15 s, not before. a
    // retries every 2–4.4 s (jittered), so it sees b's last write up to 4.4 s late and acts up
    // to 4.4 s after the expiry: at most 23.8 s after that write.
    advance(Duration::from_secs(15)).await;
    assert!(
        !a.is_leader(),
        "15 s after b's last renew the Lease is still b's"
    );
    a.expect(true, Duration::from_millis(8_900)).await;
    let spec = fake.spec();
    assert_eq!(spec["holderIdentity"], "a");
    assert_eq!(spec["leaseTransitions"], 1, "a transition counted");
    assert_ne!(spec["acquireTime"], "2026-01-01T00:00:00.000000Z");
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_steps_down_at_once_when_another_holder_shows() {
    let fake = FakeLeases::default();
    let mut a = start(&fake, "a");
    a.expect(true, Duration::from_secs(1)).await;
    fake.write_holder("b", 15);
    // The next renew reads b's Lease: a stops leading then, without waiting for a deadline.
    a.expect(false, Duration::from_millis(2100)).await;
    assert_eq!(fake.holder().as_deref(), Some("b"), "b's Lease untouched");
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_gives_up_when_no_renew_succeeds_within_the_renew_deadline() {
    let fake = FakeLeases::default();
    let mut a = start(&fake, "a");
    a.expect(true, Duration::from_secs(1)).await;
    fake.lock().faults = std::iter::repeat_n(500, 1000).collect();
    advance(Duration::from_millis(8_100)).await;
    assert!(
        a.is_leader(),
        "8 s of failures are within the 10 s renew deadline"
    );
    a.expect(false, Duration::from_millis(2_100)).await;
    // It campaigns again and leads once the API answers.
    fake.lock().faults.clear();
    a.expect(true, Duration::from_secs(5)).await;
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_server_cannot_keep_a_replica_leading() {
    let fake = FakeLeases::default();
    let mut a = start(&fake, "a");
    a.expect(true, Duration::from_secs(1)).await;
    fake.lock().hang = true;
    a.expect(false, Duration::from_millis(10_100)).await;
    let _ = a.stop.send(());
    // `run` may be stuck in nothing: it returns even though its calls are unanswered.
    tokio::time::timeout(Duration::from_secs(30), a.task)
        .await
        .expect("run returns")
        .expect("no panic");
}

#[tokio::test(start_paused = true)]
async fn of_two_candidates_racing_exactly_one_leads_and_conflicts_are_retried() {
    let fake = FakeLeases::default();
    let a = start(&fake, "a");
    let b = start(&fake, "b");
    settle().await;
    let leaders = [a.is_leader(), b.is_leader()];
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    for _ in 0..30 {
        advance(Duration::from_secs(1)).await;
        assert_ne!(
            a.is_leader(),
            b.is_leader(),
            "exactly one leader at all times"
        );
    }
    let (leader, mut other) = if a.is_leader() { (a, b) } else { (b, a) };

    // A 409 on a renew (someone else wrote between read and write) is retried, not fatal.
    fake.lock().faults.push_back(409);
    advance(Duration::from_secs(4)).await;
    assert!(leader.is_leader() && !other.is_leader());

    // The leader releases on shutdown; the other takes over within a retry, not after 15 s.
    let stopping = tokio::spawn(leader.stop());
    other.expect(true, Duration::from_millis(4_500)).await;
    stopping.await.expect("stopped");
    let releases: Vec<Call> = fake
        .writes(Method::PUT)
        .into_iter()
        .filter(|c| c.body["spec"]["holderIdentity"].is_null())
        .collect();
    assert_eq!(releases.len(), 1, "one release: {releases:#?}");
    assert_eq!(releases[0].body["spec"]["leaseDurationSeconds"], 1);
    let spec = fake.spec();
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert!(spec["holderIdentity"].is_string());
    assert_ne!(spec["holderIdentity"], json!(null));
    other.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_candidate_that_was_never_leader_releases_nothing() {
    let fake = FakeLeases::default();
    fake.write_holder("b", 15);
    let a = start(&fake, "a");
    settle().await;
    a.stop().await;
    assert!(fake.writes(Method::PUT).is_empty());
    assert_eq!(fake.holder().as_deref(), Some("b"));
}

#[test]
fn an_invalid_configuration_is_refused_before_any_call() {
    let fake_client = || {
        let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
        Client::new(service, "default")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let error = LeaderElector::new(
            fake_client(),
            LeaseConfig {
                renew_deadline: Duration::from_secs(20),
                ..config("a")
            },
        )
        .expect_err("renew deadline past the lease duration");
        assert!(error.to_string().contains("renew deadline"), "{error}");
    });
}
