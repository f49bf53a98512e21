//! `sluice autoscaler --kube` end to end, without a cluster: the real binary against the fake
//! API server (a Revision and its Deployment), a real gateway and Envoy streaming its stats to
//! the autoscaler (`--metrics-sink`), and a known load through Envoy. The autoscaler takes the
//! Lease, sees the load as Envoy's concurrency for the Revision, scales the Deployment up
//! through its `scale` subresource, and back down to one (not zero: no activator on the
//! cluster yet) once the load is gone.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::fake_kube::{
    CONFIG_MAPS, DEPLOYMENTS, FakeApi, INGRESSES, REVISIONS, SERVICES,
};
use crate::support::gateway::{Gateway, backend_objects, service, simple_kingress, yaml};
use crate::support::{BackendOptions, free_addr, get, start, wait_for};

const DEPLOYMENT: &str = "default/hello-00001-deployment";

/// Starts `sluice ARGS` against the fake API server (its kubeconfig), logging to stderr.
pub(crate) fn sluice(args: &[&str], api: &FakeApi) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("KUBECONFIG", &api.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice starts")
}

/// An EndpointSlice `namespace/name` with `labels`: `addresses` ready, port `http` = `port`.
pub(crate) fn slice(
    name: &str,
    namespace: &str,
    labels: Value,
    addresses: &[&str],
    port: u16,
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "addressType": "IPv4",
        "endpoints": addresses.iter()
            .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    })
}

/// Starts `sluice autoscaler --kube` as `autoscaler-0`: stats on `stats`, debug on `debug`.
pub(crate) fn autoscaler(api: &FakeApi, stats: SocketAddr, debug: SocketAddr) -> Child {
    let (stats, debug) = (stats.to_string(), debug.to_string());
    sluice(
        &[
            "autoscaler",
            "--kube",
            "--instance",
            "autoscaler-0",
            "--stats",
            &stats,
            "--debug",
            &debug,
        ],
        api,
    )
}

/// Pushes what the controller writes for Revision `default/hello-00001`: its public Service
/// (no selector) with its timeouts as annotations, and the KIngress `hello` whose split names
/// the Revision in headers (the activator reads them).
pub(crate) fn push_routed_revision(api: &FakeApi, idle_timeout_seconds: u32) {
    let mut public = service("hello-00001", "http", None, 80);
    public["metadata"]["annotations"] = json!({
        "sluice.knative.dev/timeout-seconds": "30",
        "sluice.knative.dev/idle-timeout-seconds": idle_timeout_seconds.to_string(),
    });
    api.state.push(SERVICES, "ADDED", public);
    let mut ingress = crate::kingress("hello", "hello-00001", 1, "2026-01-01T00:00:00Z");
    ingress["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["appendHeaders"] = json!({
        "Knative-Serving-Namespace": "default",
        "Knative-Serving-Revision": "hello-00001"
    });
    api.state.push(INGRESSES, "ADDED", ingress);
}

/// Seeds `config-autoscaler` (6 s stable window, 2 s grace), Revision `default/hello-00001`
/// (routed, uid `rev-uid`, with `annotations` and `spec`) and its Deployment (1 pod, ready).
pub(crate) fn seed_revision(api: &FakeApi, annotations: Value, spec: Value) {
    api.state.push(
        CONFIG_MAPS,
        "ADDED",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
            "data": {"stable-window": "6s", "scale-to-zero-grace-period": "2s"}}),
    );
    api.state.push(
        REVISIONS,
        "ADDED",
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "default", "uid": "rev-uid",
                "labels": {"serving.knative.dev/routingState": "active"},
                "annotations": annotations},
            "spec": spec}),
    );
    api.state.push(
        DEPLOYMENTS,
        "ADDED",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hello-00001-deployment", "namespace": "default",
                "labels": {"serving.knative.dev/revision": "hello-00001"}},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"replicas": 1, "readyReplicas": 1}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_concurrency_scales_a_revisions_deployment_up_and_back_to_one() {
    let api = FakeApi::start("autoscaler-kube").await;
    // Target 2 in flight per pod (70 %: 1.4), so 6 held requests want 5 pods.
    seed_revision(
        &api,
        json!({"autoscaling.knative.dev/target": "2"}),
        json!({"containers": [{"image": "x"}]}),
    );
    let stats = free_addr();
    let debug = free_addr();
    let mut autoscaler = autoscaler(&api, stats, debug);
    wait_for(
        "the autoscaler to hold its Lease (ready)",
        Duration::from_secs(20),
        || async move {
            let status = get(debug, "localhost", "/ready", &[])
                .await
                .map(|r| r.status);
            match status {
                Ok(s) if s.as_u16() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let backend = start(BackendOptions::new("hello-00001")).await;
    let files = [
        ("backend.yaml", backend_objects("hello-00001", backend.addr)),
        (
            "hello.yaml",
            yaml(&simple_kingress(
                "hello",
                "hello.example.com",
                "hello-00001",
            )),
        ),
    ];
    let sink = stats.to_string();
    let gw = Gateway::start_with("autoscaler-gw", &files, &["--metrics-sink", &sink]).await;
    gw.wait_ready("hello").await;

    // 6 requests held open through Envoy: 6 / 1.4 → 5 pods.
    async fn held(gw: &Gateway) -> anyhow::Result<u16> {
        let r = gw.get("hello.example.com", "/?initialTimeout=8000").await?;
        Ok(r.status.as_u16())
    }
    let load = futures::future::join_all((0..6).map(|_| held(&gw)));
    let scaled_up = wait_for(
        "a scale of the Revision's Deployment to 5",
        Duration::from_secs(8),
        || {
            let scales = api.state.scales.lock().unwrap().clone();
            async move {
                scales
                    .iter()
                    .any(|(d, r)| d == DEPLOYMENT && *r == 5)
                    .then_some(scales)
                    .ok_or("not yet")
            }
        },
    );
    let (statuses, scales) = tokio::join!(load, scaled_up);
    assert!(
        statuses.iter().all(|s| s.as_ref().is_ok_and(|s| *s == 200)),
        "{statuses:?}"
    );
    assert!(
        scales
            .iter()
            .all(|(d, r)| d == DEPLOYMENT && (1..=5).contains(r)),
        "{scales:?}"
    );

    // Idle: back to one once the stable window has passed — never zero.
    wait_for("the Deployment back to 1", Duration::from_secs(30), || {
        let last = api.state.scales.lock().unwrap().last().cloned();
        async move { (last.as_ref().map(|(_, r)| *r) == Some(1)).then_some(()) }
    })
    .await;
    assert!(
        api.state
            .scales
            .lock()
            .unwrap()
            .iter()
            .all(|(_, r)| *r >= 1),
        "never below one"
    );
    let status = get(debug, "localhost", "/status", &[])
        .await
        .expect("status")
        .json();
    assert_eq!(status["leader"], true);
    assert_eq!(status["revisions"], 1);
    assert_eq!(status["sink"]["envoys"].as_array().map(Vec::len), Some(1));
    gw.stop().await;
    let _ = autoscaler.start_kill();
    let _ = autoscaler.wait().await;
}
