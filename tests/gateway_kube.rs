//! `sluice gateway --kube` end to end, without a cluster: the real binary (and the real Envoy
//! it launches) against a small fake API server that lists and watches KIngresses, Services,
//! EndpointSlices and Secrets, and records the status patches and events the gateway writes.
//! Traffic goes through Envoy to a real test backend.
//!
//! The fake answers what kube-runtime's watchers and Sluice's status writer ask: `GET` of a
//! collection (a list, or with `watch=true` a stream of watch events that stays open), `PATCH`
//! of `ingresses/NAME/status` (merged into the object, which is then sent to the watchers as
//! `MODIFIED`, as an API server would), and `POST` of `events.k8s.io/v1` events.
//!
//! `gateway_serves_the_current_cluster` (ignored) does the same against the cluster of the
//! current kubeconfig; see its docs.

mod support;

#[path = "gateway_kube/autoscaler.rs"]
mod autoscaler;
#[path = "gateway_kube/container_concurrency.rs"]
mod container_concurrency;
#[path = "gateway_kube/full_profile.rs"]
mod full_profile;
#[path = "gateway_kube/scale_to_zero.rs"]
mod scale_to_zero;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::{FakeApi, INGRESSES, SERVICES, SLICES};
use support::gateway::{Gateway, SETTLE, endpoint_slice, service, simple_kingress};
use support::{BackendOptions, wait_for};

const HOST: &str = "hello.example.com";

/// `type=status reason` of each condition, sorted by type.
fn conditions(status: &Value) -> Vec<String> {
    let mut c: Vec<String> = status["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{}={} {}",
                        c["type"].as_str().unwrap_or_default(),
                        c["status"].as_str().unwrap_or_default(),
                        c["reason"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}

fn ready(status: &Value) -> bool {
    conditions(status)
        == [
            "LoadBalancerReady=True ",
            "NetworkConfigured=True ",
            "Ready=True ",
        ]
}

/// A KIngress as the API server holds it: generation and creation time set.
fn kingress(name: &str, service: &str, generation: i64, created: &str) -> Value {
    let mut k = simple_kingress(name, HOST, service);
    k["metadata"]["generation"] = json!(generation);
    k["metadata"]["creationTimestamp"] = json!(created);
    k
}

#[tokio::test]
async fn kube_source_serves_and_writes_status() {
    let backend = support::start(BackendOptions::new("hello")).await;
    let port = backend.addr.port();
    let api = FakeApi::start("gateway-kube").await;
    // The first two status writes fail: they are retried (with backoff).
    api.state.refuse_patches.store(2, Ordering::Relaxed);
    let hello = kingress("hello", "hello", 1, "2026-01-01T00:00:00Z");
    api.state.push(INGRESSES, "ADDED", hello.clone());
    api.state
        .push(SERVICES, "ADDED", service("hello", "http", None, port));
    api.state
        .push(SLICES, "ADDED", endpoint_slice("hello", "http", port));
    let gw = Gateway::start_kube("kube", &api.kubeconfig).await;

    // Listed, translated, served through Envoy, proven, and Ready written back with the load
    // balancers and the observed generation.
    let status = api.wait_status("hello", "Ready=True", ready).await;
    assert_eq!(status["observedGeneration"], 1, "{status}");
    assert_eq!(
        api.state.refuse_patches.load(Ordering::Relaxed),
        0,
        "the refused writes were retried"
    );
    assert_eq!(
        status["publicLoadBalancer"]["ingress"][0]["domainInternal"],
        "sluice-gateway.knative-serving.svc.cluster.local"
    );
    assert_eq!(
        status["privateLoadBalancer"]["ingress"][0]["domainInternal"],
        "sluice-internal.knative-serving.svc.cluster.local"
    );
    let first = api.state.patches_of("hello");
    assert!(
        first.len() <= 2,
        "at most InProgress then Ready: {first:#?}"
    );
    gw.wait_backend(gw.external_http, HOST, "hello", 5).await;
    let served = gw.wait_ready("hello").await;
    // Our own status write comes back as a watch event: it must not cause another write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.state.patches_of("hello").len(),
        first.len(),
        "no write loop"
    );

    // A new generation naming a missing Service: NotConfigured (and a Warning event) for
    // generation 2, while Envoy keeps serving generation 1.
    api.state.push(
        INGRESSES,
        "MODIFIED",
        kingress("hello", "missing", 2, "2026-01-01T00:00:00Z"),
    );
    let status = api
        .wait_status("hello", "NetworkConfigured=False", |s| {
            s["observedGeneration"] == 2
        })
        .await;
    assert_eq!(
        conditions(&status),
        [
            "LoadBalancerReady=Unknown TranslationFailed",
            "NetworkConfigured=False TranslationFailed",
            "Ready=False TranslationFailed",
        ]
    );
    let message = status["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("service default/missing not found"),
        "{status}"
    );
    let event = wait_for("a Warning event", SETTLE, || async {
        let events = api.state.events.lock().unwrap().clone();
        events
            .into_iter()
            .find(|e| e["reason"] == "TranslationFailed")
            .ok_or_else(|| anyhow::anyhow!("no event yet"))
    })
    .await;
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["regarding"]["name"], "hello", "{event}");
    assert_eq!(event["reportingInstance"], "e2e-kube", "{event}");
    gw.wait_backend(gw.external_http, HOST, "hello", 5).await;
    let problems = gw.status().await.expect("/status").problems;
    assert!(
        problems.iter().any(|p| p.file == "kube"
            && p.object.as_deref() == Some("Ingress default/hello")
            && p.message.contains("not found")),
        "{problems:#?}"
    );

    // Fixed: Ready again at generation 3.
    api.state.push(
        INGRESSES,
        "MODIFIED",
        kingress("hello", "hello", 3, "2026-01-01T00:00:00Z"),
    );
    api.wait_status("hello", "Ready=True at generation 3", |s| {
        ready(s) && s["observedGeneration"] == 3
    })
    .await;

    // A later KIngress claiming the same host loses it: DomainConflict; the first keeps it.
    api.state.push(
        INGRESSES,
        "ADDED",
        kingress("late", "hello", 1, "2026-02-01T00:00:00Z"),
    );
    let status = api
        .wait_status("late", "DomainConflict", |s| {
            conditions(s).contains(&"LoadBalancerReady=False DomainConflict".to_string())
        })
        .await;
    assert!(
        conditions(&status).contains(&"Ready=False DomainConflict".to_string()),
        "{status}"
    );
    assert!(ready(api.state.patches_of("hello").last().unwrap()));

    // A version that does not decode (rules that are not a list): InvalidIngress on its status
    // and in /status, and the last good version keeps serving. (Unknown fields are ignored, as
    // Go's decoder ignores them.)
    let mut broken = kingress("hello", "hello", 4, "2026-01-01T00:00:00Z");
    broken["spec"]["rules"] = json!("not a list");
    api.state.push(INGRESSES, "MODIFIED", broken);
    let status = api
        .wait_status("hello", "InvalidIngress", |s| s["observedGeneration"] == 4)
        .await;
    assert!(
        conditions(&status).contains(&"NetworkConfigured=False InvalidIngress".to_string()),
        "{status}"
    );
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid type")),
        "{status}"
    );
    wait_for("the rejection in /status", SETTLE, || async {
        let s = gw.status().await?;
        s.problems
            .iter()
            .find(|p| {
                p.object.as_deref() == Some("Ingress default/hello")
                    && p.message.contains("invalid type")
            })
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{:?}", s.problems))
    })
    .await;
    gw.wait_backend(gw.external_http, HOST, "hello", 5).await;
    assert_eq!(
        gw.ingress("hello").await.unwrap().map(|i| i.hash),
        Some(served.hash),
        "the last good generation is still served"
    );

    // Deleted: the host goes away.
    api.state.push(INGRESSES, "DELETED", hello);
    api.state.push(
        INGRESSES,
        "DELETED",
        kingress("late", "hello", 1, "2026-02-01T00:00:00Z"),
    );
    gw.wait_status(gw.external_http, HOST, 404).await;
    gw.stop().await;
    backend.shutdown().await;
}

#[tokio::test]
async fn kube_problems_shown_until_synced() {
    // An API server that refuses everything: the gateway keeps running, serves nothing, and
    // says why in /status.
    let api = FakeApi::start("gateway-kube-unsynced").await;
    std::fs::write(
        &api.kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{name: fake, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n\
         users: [{name: fake, user: {}}]\n",
    )
    .expect("kubeconfig");
    let gw = Gateway::start_kube("kube-unsynced", &api.kubeconfig).await;
    let problems = wait_for("watch failures in /status", SETTLE, || async {
        let s = gw.status().await?;
        anyhow::ensure!(
            s.problems
                .iter()
                .any(|p| p.file == "kube" && p.message.starts_with("not synced yet:")),
            "{:?}",
            s.problems
        );
        anyhow::Ok(s.problems)
    })
    .await;
    assert!(
        problems
            .iter()
            .any(|p| p.object.as_deref() == Some("ingresses.networking.internal.knative.dev")),
        "{problems:#?}"
    );
    // Nothing is served before the source is synced: Envoy has no listener.
    assert!(
        support::get(gw.internal_http, "x.example.com", "/", &[])
            .await
            .is_err(),
        "Envoy serves nothing before the source is synced"
    );
    assert!(gw.status().await.expect("/status").ingresses.is_empty());
    gw.stop().await;
}

/// Against the cluster of the current kubeconfig (kind or k3d with the Knative Serving CRDs,
/// and no other gateway of class `sluice.ingress.networking.knative.dev` running — the two would
/// fight over status; see `serving-controller/tests/kube_cluster.rs` for setting one up):
///
/// ```text
/// cargo test -p sluice --test gateway_kube -- --ignored
/// ```
///
/// Runs `sluice gateway --kube` here (with its local Envoy), creates a selector-less Service and
/// a KIngress of our class in `default`, and waits for the KIngress to be Ready on the API
/// server: the probe is answered by Envoy itself, so the Service's endpoints need not be
/// reachable from here.
#[tokio::test]
#[ignore = "needs cluster: kubeconfig pointing at kind/k3d with the Knative Serving CRDs"]
async fn gateway_serves_the_current_cluster() {
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use sluice_serving::kube::{decode_ingress, ingress_api_resource};

    let client = kube::Client::try_default()
        .await
        .expect("a kubeconfig or in-cluster config");
    let name = "sluice-gateway-kube-test";
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let ingresses: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ingress_api_resource());
    let _ = ingresses.delete(name, &DeleteParams::default()).await;
    let _ = services.delete(name, &DeleteParams::default()).await;
    let svc: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(service(name, "http", None, 8080)).expect("service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("Service created");
    let object: DynamicObject =
        serde_json::from_value(simple_kingress(name, "gateway-kube-test.example.com", name))
            .expect("KIngress");
    ingresses
        .create(&PostParams::default(), &object)
        .await
        .expect("KIngress created (CRDs installed?)");

    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".kube/config")
        });
    let gw = Gateway::start_kube("cluster", &kubeconfig).await;
    wait_for("the KIngress Ready on the API server", SETTLE, || async {
        let ingress = decode_ingress(ingresses.get(name).await?)?;
        let ready = ingress
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        anyhow::ensure!(
            ready && ingress.status.observed_generation == ingress.metadata.generation,
            "{:?}",
            ingress.status
        );
        anyhow::Ok(())
    })
    .await;
    gw.wait_ready(name).await;
    gw.stop().await;
    let _ = ingresses.delete(name, &DeleteParams::default()).await;
    let _ = services.delete(name, &DeleteParams::default()).await;
}

/// High availability without a cluster: two control planes (`sluice gateway --kube
/// --no-envoy`) against the fake API server, electing a leader on its Lease, and two real
/// Envoys whose bootstrap names both. Under steady traffic the leader is SIGKILLed: no request
/// fails, every Envoy ends up on the survivor, an edit made after the kill is served, and the
/// survivor takes the Lease over and writes its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_and_two_envoys_survive_a_killed_leader() {
    let hello = support::start(BackendOptions::new("hello")).await;
    let world = support::start(BackendOptions::new("world")).await;
    let api = FakeApi::start("gateway-ha").await;
    for (name, b) in [("hello", &hello), ("world", &world)] {
        api.state.push(
            SERVICES,
            "ADDED",
            service(name, "http", None, b.addr.port()),
        );
        api.state
            .push(SLICES, "ADDED", endpoint_slice(name, "http", b.addr.port()));
    }
    api.state.push(
        INGRESSES,
        "ADDED",
        kingress("hello", "hello", 1, "2026-01-01T00:00:00Z"),
    );
    // The gateway pods: both Envoys listen on the same ports (SO_REUSEPORT), on loopback.
    let mut pods = endpoint_slice("sluice-internal", "http", 8081);
    pods["metadata"]["namespace"] = json!("knative-serving");
    api.state.push(SLICES, "ADDED", pods);

    let listeners = [
        support::free_addr(),
        support::free_addr(),
        support::free_addr(),
        support::free_addr(),
    ];
    let flags = [
        "--no-envoy",
        "--node-id",
        "e2e-ha",
        "--gateway-pods",
        "knative-serving/sluice-internal",
    ];
    let cp1 = Gateway::start_kube_with("ha-1", &api.kubeconfig, &flags, listeners).await;
    let cp2 = Gateway::start_kube_with("ha-2", &api.kubeconfig, &flags, listeners).await;
    let work = std::env::temp_dir().join(format!("sluice-ha-envoys-{}", std::process::id()));
    let mut envoys = Vec::new();
    for i in 0..2 {
        let dir = work.join(format!("envoy-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = sluice::envoy::render(&sluice::envoy::BootstrapParams {
            node_id: "e2e-ha".into(),
            xds_endpoints: [cp1.xds, cp2.xds]
                .iter()
                .map(|a| (a.ip().to_string(), a.port()))
                .collect(),
            admin: support::free_addr(),
            ..sluice::envoy::BootstrapParams::default()
        });
        let mut cfg =
            sluice::envoy::LaunchConfig::new(sluice::envoy::find_envoy(None).unwrap(), yaml, &dir);
        cfg.log_level = "warning".into();
        envoys.push(
            sluice::envoy::Envoy::start(cfg)
                .await
                .expect("Envoy starts"),
        );
    }
    api.wait_status("hello", "Ready=True", ready).await;
    let ext = listeners[0];
    cp1.wait_backend(ext, HOST, "hello", 5).await;

    // Steady traffic through the Envoys.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let served: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let traffic = {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match support::get(ext, HOST, "/", &[]).await {
                    Ok(r) if r.status == 200 => {
                        *served
                            .lock()
                            .unwrap()
                            .entry(r.backend().unwrap_or("?").to_string())
                            .or_default() += 1;
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                }
            }
        })
    };
    // Kill the leader.
    let holder = wait_for("a Lease holder", SETTLE, || async {
        let leases = api.state.leases.lock().unwrap();
        leases
            .get("knative-serving/sluice-gateway")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty())
    })
    .await;
    let (leader, survivor, survivor_name) = if holder == "e2e-ha-1" {
        (cp1, cp2, "e2e-ha-2")
    } else {
        assert_eq!(holder, "e2e-ha-2");
        (cp2, cp1, "e2e-ha-1")
    };
    let patches_before = api.state.patches.lock().unwrap().len();
    leader.kill().await;
    // Every Envoy reconnects to the survivor.
    wait_for("both Envoys on the survivor", SETTLE, || async {
        let s = survivor.status().await?;
        let n = s
            .nodes
            .iter()
            .filter(|n| n.connected && n.id == "e2e-ha")
            .count();
        anyhow::ensure!(n == 2, "{n} connected");
        anyhow::Ok(())
    })
    .await;
    // An edit after the kill is served…
    api.state.push(
        INGRESSES,
        "MODIFIED",
        kingress("hello", "world", 2, "2026-01-01T00:00:00Z"),
    );
    survivor.wait_backend(ext, HOST, "world", 10).await;
    // …and its status written by the survivor, leader now.
    let status = api
        .wait_status("hello", "Ready=True at generation 2", |s| {
            s["observedGeneration"] == 2 && ready(s)
        })
        .await;
    assert!(ready(&status));
    assert!(api.state.patches.lock().unwrap().len() > patches_before);
    let holder = api.state.leases.lock().unwrap()["knative-serving/sluice-gateway"]["spec"]
        ["holderIdentity"]
        .clone();
    assert_eq!(holder, json!(survivor_name), "the survivor holds the Lease");
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let served = served.lock().unwrap().clone();
    assert!(
        served.get("hello").copied().unwrap_or(0) > 0
            && served.get("world").copied().unwrap_or(0) > 0,
        "{served:?}"
    );
    for e in envoys {
        e.stop().await;
    }
    survivor.stop().await;
    let _ = std::fs::remove_dir_all(&work);
}
