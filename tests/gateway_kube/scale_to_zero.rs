//! Knative's serverless-service design on a cluster, end to end without one: the real
//! `sluice gateway --kube` (and its Envoy), `sluice autoscaler --kube` and `sluice activator
//! --kube` against the fake API server, with a test backend standing in for the Revision's pod
//! (the fake API "starts" it when the Deployment is scaled above zero by listing it in the
//! Revision's private Service's EndpointSlice, and "stops" it at zero).
//!
//! The Revision is served directly (the autoscaler writes its public EndpointSlice: the pod),
//! goes idle, is put behind the activator (the public slice now names the activator) and only
//! then scaled to zero; the next request waits at the activator, whose poke brings the pod
//! back, and is answered by the backend. Served directly again, the route carries the
//! Revision's `idleTimeoutSeconds` from its public Service.

use std::time::Duration;

use serde_json::{Value, json};

use crate::autoscaler::{autoscaler, push_routed_revision, seed_revision, slice, sluice};
use crate::support::fake_kube::{FakeApi, SLICES};
use crate::support::gateway::Gateway;
use crate::support::{BackendOptions, free_addr, get, start, wait_for};

const DEPLOYMENT: &str = "default/hello-00001-deployment";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_scales_to_zero_behind_the_activator_and_back_on_the_next_request() {
    let api = FakeApi::start("scale-to-zero").await;
    let backend = start(BackendOptions::new("hello-00001")).await;
    let activator_addr = free_addr();
    // The activator in the path only at zero (with Knative's default target-burst-capacity
    // of 200, a one-pod Revision would stay behind it; so would one with a
    // containerConcurrency, see container_concurrency.rs).
    seed_revision(
        &api,
        json!({"autoscaling.knative.dev/target-burst-capacity": "0"}),
        json!({"containers": [{"image": "x"}], "timeoutSeconds": 30, "idleTimeoutSeconds": 2}),
    );
    // The pod, behind the private Service (Kubernetes keeps this slice).
    let pods = slice(
        "hello-00001-private-abcde",
        "default",
        json!({"kubernetes.io/service-name": "hello-00001-private",
            "serving.knative.dev/revision": "hello-00001"}),
        &["127.0.0.1"],
        backend.addr.port(),
    );
    api.state.push(SLICES, "ADDED", pods.clone());
    api.state
        .pods
        .lock()
        .unwrap()
        .insert(DEPLOYMENT.into(), pods);
    // The public Service (no selector) the KIngress names, with the Revision's timeouts as
    // the controller writes them, and the activator's pod.
    push_routed_revision(&api, 2);
    api.state.push(
        SLICES,
        "ADDED",
        slice(
            "sluice-activator-abcde",
            "knative-serving",
            json!({"kubernetes.io/service-name": "sluice-activator"}),
            &["127.0.0.1"],
            activator_addr.port(),
        ),
    );

    let stats = free_addr();
    let (debug_a, debug_b) = (free_addr(), free_addr());
    let mut autoscaler = autoscaler(&api, stats, debug_a);
    let mut activator = sluice(
        &[
            "activator",
            "--kube",
            "--listen",
            &activator_addr.to_string(),
            "--autoscaler",
            &format!("http://{stats}"),
            "--debug",
            &debug_b.to_string(),
        ],
        &api,
    );
    let listeners = [free_addr(), free_addr(), free_addr(), free_addr()];
    let sink = stats.to_string();
    let gw = Gateway::start_kube_with(
        "scale-to-zero",
        &api.kubeconfig,
        &["--metrics-sink", &sink],
        listeners,
    )
    .await;
    let request = || async {
        get(gw.external_http, crate::HOST, "/", &[])
            .await
            .map(|r| (r.status.as_u16(), r.backend().map(str::to_string)))
    };

    let port_of = |s: &Value| s["ports"][0]["port"].as_u64();
    let pod_port = u64::from(backend.addr.port());
    let activator_port = u64::from(activator_addr.port());

    // A new Revision starts behind the activator (it proves its capacity first): the first
    // requests go through it to the pod.
    wait_for(
        "the Revision served through its public Service",
        Duration::from_secs(30),
        || async { request().await.ok().filter(|(s, _)| *s == 200) },
    )
    .await;
    let first = api.state.applied_slices.lock().unwrap()[0].clone();
    assert_eq!(first["metadata"]["name"], "hello-00001-sluice");
    assert_eq!(
        first["metadata"]["labels"]["kubernetes.io/service-name"],
        "hello-00001"
    );
    assert_eq!(first["metadata"]["ownerReferences"][0]["uid"], "rev-uid");
    assert_eq!(port_of(&first), Some(activator_port), "{first:#}");

    // Idle for the stable window: to zero, the public Service still naming the activator.
    wait_for(
        "the Deployment scaled to zero",
        Duration::from_secs(40),
        || async {
            let scales = api.state.scales.lock().unwrap().clone();
            scales
                .iter()
                .any(|(d, r)| d == DEPLOYMENT && *r == 0)
                .then_some(())
        },
    )
    .await;
    let last = api
        .state
        .applied_slices
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("slices");
    assert_eq!(
        port_of(&last),
        Some(activator_port),
        "at zero the public Service names the activator: {last:#}"
    );

    // The activator has seen the pod go (else the next request would still reach the
    // backend, which the fake stops only by removing it from the slice).
    wait_for(
        "the activator to see no pod",
        Duration::from_secs(10),
        || async {
            let r = get(debug_b, "localhost", "/status", &[])
                .await
                .map_err(|e| e.to_string())?;
            let status: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            let pods = &status["revisions"]["default/hello-00001"]["pods"];
            if pods == 0 {
                Ok(())
            } else {
                Err(format!("pods: {pods}"))
            }
        },
    )
    .await;

    // The next request waits at the activator, which pokes the autoscaler: the pod comes back
    // and answers.
    let before = api.state.scales.lock().unwrap().len();
    let (status, answered_by) = request().await.expect("answered");
    assert_eq!(status, 200);
    assert_eq!(answered_by.as_deref(), Some("hello-00001"));
    let scales = api.state.scales.lock().unwrap()[before..].to_vec();
    assert_eq!(
        scales.first(),
        Some(&(DEPLOYMENT.to_string(), 1)),
        "scaled from zero for the waiting request: {scales:?}"
    );

    // Under steady load with capacity to spare, the activator leaves the path: the public
    // Service names the pod (serve mode), and requests keep being answered meanwhile.
    let served = wait_for(
        "the public slice to name the pod (serve mode)",
        Duration::from_secs(30),
        || async {
            let (status, _) = get(gw.external_http, crate::HOST, "/?initialTimeout=200", &[])
                .await
                .map(|r| (r.status.as_u16(), ()))
                .map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("answered {status}"));
            }
            let applied = api.state.applied_slices.lock().unwrap().clone();
            applied
                .iter()
                .rev()
                .find(|s| port_of(s) == Some(pod_port))
                .cloned()
                .ok_or_else(|| "still proxied".to_string())
        },
    )
    .await;
    assert_eq!(served["endpoints"][0]["addresses"][0], "127.0.0.1");
    // Served directly, Envoy enforces idleTimeoutSeconds (the route's idle timeout): a body
    // due after 5 s is cut at 2 s (the client sees the connection end a second later:
    // Envoy's delayed close).
    let started = std::time::Instant::now();
    let stalled = get(gw.external_http, crate::HOST, "/?timeout=5000", &[]).await;
    assert!(
        stalled.is_err(),
        "cut by Envoy's route idle timeout: {:?}",
        stalled.as_ref().map(|r| r.status)
    );
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "cut after {:?}, not at the idle timeout",
        started.elapsed()
    );

    gw.stop().await;
    let _ = autoscaler.start_kill();
    let _ = activator.start_kill();
    let _ = autoscaler.wait().await;
    let _ = activator.wait().await;
}
