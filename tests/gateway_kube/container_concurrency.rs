//! `containerConcurrency` across several activators, and the Revision's response timeouts,
//! end to end without a cluster: the real gateway (and its Envoy), `sluice autoscaler --kube`
//! and two `sluice activator --kube` replicas (on 127.0.0.2 and 127.0.0.3, as two pods)
//! against the fake API server, with two test backends as the Revision's pods.
//!
//! A Revision with `containerConcurrency: 1` stays behind the activators; its public slice
//! names both of them (2 pods × cc 1), and each takes one pod. Many requests at once through
//! Envoy are all answered while no pod ever holds more than one. The activators also enforce
//! `responseStartTimeoutSeconds` (504) and `idleTimeoutSeconds` (the response is cut).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::autoscaler::{autoscaler, push_routed_revision, seed_revision, slice, sluice};
use crate::support::fake_kube::{FakeApi, SLICES};
use crate::support::gateway::Gateway;
use crate::support::{BackendOptions, free_addr, get, start, wait_for};

/// An activator's `/status` share of Revision `default/hello-00001`: the pods it was given.
async fn assigned(debug: SocketAddr) -> Result<Vec<(String, u64)>, String> {
    let r = get(debug, "localhost", "/status", &[])
        .await
        .map_err(|e| e.to_string())?;
    let status: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let share = &status["revisions"]["default/hello-00001"];
    if share["activators"] != 2 {
        return Err(format!("not yet behind both activators: {share}"));
    }
    Ok(share["assigned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["pod"].as_str().unwrap_or_default().to_string(),
                a["capacity"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_concurrency_holds_across_two_activators_and_timeouts_are_enforced() {
    let api = FakeApi::start("container-concurrency").await;
    // Two pods on one port, as on a cluster: the private Service's slice lists both.
    let pod_port = free_addr().port();
    let pods = [
        start(BackendOptions::new("pod-a").bind(SocketAddr::from(([127, 0, 0, 4], pod_port))))
            .await,
        start(BackendOptions::new("pod-b").bind(SocketAddr::from(([127, 0, 0, 5], pod_port))))
            .await,
    ];
    seed_revision(
        &api,
        json!({"autoscaling.knative.dev/min-scale": "2"}),
        json!({"containers": [{"image": "x"}], "containerConcurrency": 1, "timeoutSeconds": 30,
            "responseStartTimeoutSeconds": 2, "idleTimeoutSeconds": 2}),
    );
    api.state.push(
        SLICES,
        "ADDED",
        slice(
            "hello-00001-private-abcde",
            "default",
            json!({"kubernetes.io/service-name": "hello-00001-private",
                "serving.knative.dev/revision": "hello-00001"}),
            &["127.0.0.4", "127.0.0.5"],
            pod_port,
        ),
    );
    // Two activator pods on one port, as on a cluster (a port free on 127.0.0.1 is very likely
    // free on the other loopback addresses too).
    let port = free_addr().port();
    let activators: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 2], port)),
        SocketAddr::from(([127, 0, 0, 3], port)),
    ];
    api.state.push(
        SLICES,
        "ADDED",
        slice(
            "sluice-activator-abcde",
            "knative-serving",
            json!({"kubernetes.io/service-name": "sluice-activator"}),
            &["127.0.0.2", "127.0.0.3"],
            port,
        ),
    );
    push_routed_revision(&api, 2);

    let stats = free_addr();
    let autoscaler_debug = free_addr();
    let mut children = vec![autoscaler(&api, stats, autoscaler_debug)];
    let debugs = [free_addr(), free_addr()];
    for (listen, debug) in activators.iter().zip(debugs) {
        children.push(sluice(
            &[
                "activator",
                "--kube",
                "--listen",
                &listen.to_string(),
                "--autoscaler",
                &format!("http://{stats}"),
                "--debug",
                &debug.to_string(),
            ],
            &api,
        ));
    }
    let sink = stats.to_string();
    let gw = Gateway::start_kube_with(
        "container-concurrency",
        &api.kubeconfig,
        &["--metrics-sink", &sink],
        [free_addr(), free_addr(), free_addr(), free_addr()],
    )
    .await;

    // Each activator takes one of the two pods, with its whole cc (found by its --listen IP).
    let shares = wait_for(
        "each activator to take its share of the pods",
        Duration::from_secs(30),
        || async {
            let (a, b) = (assigned(debugs[0]).await?, assigned(debugs[1]).await?);
            if a.len() == 1 && b.len() == 1 && a[0].0 != b[0].0 {
                Ok((a, b))
            } else {
                Err(format!("{a:?} / {b:?}"))
            }
        },
    )
    .await;
    assert_eq!((shares.0[0].1, shares.1[0].1), (1, 1), "{shares:?}");
    let public = api
        .state
        .applied_slices
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a public slice");
    assert_eq!(
        public["metadata"]["labels"]["sluice.knative.dev/mode"], "proxy",
        "cc > 0 stays behind the activators: {public:#}"
    );
    let named: Vec<&str> = public["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["addresses"][0].as_str())
        .collect();
    assert_eq!(named, ["127.0.0.2", "127.0.0.3"]);
    wait_for(
        "the Revision served through the activators",
        Duration::from_secs(30),
        || async {
            get(gw.external_http, crate::HOST, "/", &[])
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;

    // 16 requests at once, 400 ms each, over two pods of cc 1: all answered, never two at
    // once on a pod. Meanwhile the autoscaler reads the Revision's concurrency from the
    // activators (in its path), not from Envoy.
    for pod in &pods {
        pod.reset_counters();
    }
    let load = (0..16).map(|_| async {
        get(gw.external_http, crate::HOST, "/?initialTimeout=400", &[])
            .await
            .map(|r| r.status.as_u16())
            .unwrap_or(0)
    });
    let figure = async {
        wait_for(
            "the autoscaler's figure from the activators",
            Duration::from_secs(10),
            || async {
                let r = get(autoscaler_debug, "localhost", "/status", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                let status: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                let f = status["figures"]["default/hello-00001"].clone();
                if f["from"] == "activators" && f["concurrency"].as_f64() > Some(0.0) {
                    Ok(f)
                } else {
                    Err(format!("{f}"))
                }
            },
        )
        .await
    };
    let (statuses, figure) = tokio::join!(futures::future::join_all(load), figure);
    assert_eq!(figure["from"], "activators", "{figure}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for pod in &pods {
        assert!(pod.requests() > 0, "{} got no request", pod.name());
        assert_eq!(
            pod.max_in_flight(),
            1,
            "{} held more than containerConcurrency",
            pod.name()
        );
    }
    assert_eq!(pods[0].requests() + pods[1].requests(), 16);

    // Waiting at an activator for room counts toward neither limit: 4 requests of 1.5 s
    // over two pods of cc 1 (each activator holds one while another is served) take 3 s from
    // Envoy's point of view, past idleTimeoutSeconds, and all succeed — behind the activators
    // the gateway leaves the idle timeout to them.
    let started = std::time::Instant::now();
    let waited = futures::future::join_all((0..4).map(|_| async {
        get(gw.external_http, crate::HOST, "/?initialTimeout=1500", &[])
            .await
            .map(|r| r.status.as_u16())
            .unwrap_or(0)
    }))
    .await;
    assert_eq!(waited, [200; 4], "after {:?}", started.elapsed());
    assert!(
        started.elapsed() > Duration::from_millis(2900),
        "some waited for room: {:?}",
        started.elapsed()
    );

    // responseStartTimeoutSeconds: 2 — a pod that starts its response after 3 s gets 504.
    let late = get(gw.external_http, crate::HOST, "/?initialTimeout=3000", &[])
        .await
        .expect("an answer");
    assert_eq!(late.status, 504, "{}", String::from_utf8_lossy(&late.body));
    assert!(
        String::from_utf8_lossy(&late.body).contains("did not respond within 2s"),
        "{}",
        String::from_utf8_lossy(&late.body)
    );
    // idleTimeoutSeconds: 2 — a response whose body is due after 5 s is cut (by the
    // activator: behind it, the gateway's route has no idle timeout); one within both limits
    // is whole.
    let started = std::time::Instant::now();
    let stalled = get(gw.external_http, crate::HOST, "/?timeout=5000", &[]).await;
    assert!(
        stalled.is_err(),
        "a response silent past idleTimeoutSeconds is cut: {:?}",
        stalled.map(|r| r.status)
    );
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "cut after {:?}, not at the idle timeout",
        started.elapsed()
    );
    let fine = get(gw.external_http, crate::HOST, "/?initialTimeout=1000", &[])
        .await
        .expect("an answer");
    assert_eq!(fine.status, 200);

    gw.stop().await;
    for mut child in children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
