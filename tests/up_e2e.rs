//! End-to-end tests of `sluice up DIR`: Knative YAML in, real revision processes (a tiny
//! Python server, `tests/apps/hello.py`) behind the real Envoy that `sluice up` launches,
//! requests through Envoy out.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{anyhow, ensure};
use support::gateway::{Gateway, SETTLE};
use support::serving::{host, service, serving, wait_revision, wait_service, wait_traffic};
use support::{get, wait_for};

/// Counts answers per revision over `n` requests; any non-200 fails.
async fn sample(
    addr: SocketAddr,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = get(addr, host, "/", &[])
            .await
            .expect("request through Envoy");
        assert_eq!(r.status, 200, "{}", r.text());
        *counts
            .entry(r.header("x-revision").unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answers_a_new_template_moves_latest_traffic_and_deleting_stops_it() {
    let gw = Gateway::start_up(
        "lifecycle",
        &[("hello.yaml", service("hello", "one", "", ""))],
    )
    .await;
    wait_service(&gw, "hello", "hello-00001").await;
    let r = gw.get(&host("hello"), "/").await.expect("GET");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello one! from hello-00001\n");

    // `sluice logs` finds the revision's log through the running `sluice up`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["logs", "hello-00001", "--debug", &gw.debug.to_string()])
        .output()
        .expect("running sluice logs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("hello-00001 listening on"), "{text}");

    // A new template: revision 2, and latestRevision traffic moves to it.
    gw.write("hello.yaml", &service("hello", "two", "", ""));
    wait_service(&gw, "hello", "hello-00002").await;
    wait_revision(gw.external_http, &host("hello"), &[], "hello-00002").await;
    let s = serving(&gw).await.expect("status");
    let names: Vec<&str> = s
        .revisions
        .iter()
        .map(|r| r.revision.name.as_str())
        .collect();
    assert_eq!(names, ["hello-00001", "hello-00002"]);

    // Deleting the file removes the Service, its revisions and their processes.
    let addrs: Vec<String> = s
        .revisions
        .iter()
        .flat_map(|r| r.instances.iter().map(|i| i.addr.clone()))
        .collect();
    gw.remove("hello.yaml");
    gw.wait_status(gw.external_http, &host("hello"), 404).await;
    wait_for("the revisions to be gone", SETTLE, || async {
        let s = serving(&gw).await?;
        ensure!(s.services.is_empty() && s.revisions.is_empty(), "{s:?}");
        for addr in &addrs {
            ensure!(
                std::net::TcpStream::connect(addr.as_str()).is_err(),
                "an instance still listens on {addr}"
            );
        }
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_edit_under_load_fails_no_request() {
    let gw = Gateway::start_up("canary", &[("hello.yaml", service("hello", "one", "", ""))]).await;
    wait_service(&gw, "hello", "hello-00001").await;
    let canary = "  traffic:\n    - revisionName: hello-00001\n      percent: 90\n    - latestRevision: true\n      percent: 10\n";
    gw.write("hello.yaml", &service("hello", "two", "", canary));
    wait_traffic(&gw, "hello", &[("hello-00001", 90), ("hello-00002", 10)]).await;
    // Binomial(400, 10 %): standard deviation 6 requests; ±7.5 points is five of them
    // (Knative's own checks allow ±10 points).
    let counts = sample(gw.external_http, &host("hello"), 400).await;
    let canary_share = counts.get("hello-00002").copied().unwrap_or(0);
    assert!(
        (10..=70).contains(&canary_share),
        "10% of 400 within ±7.5 points: {counts:?}"
    );

    // A client loop runs while the split moves to 0/100.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (addr, host) = (gw.external_http, host("hello"));
        loops.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &host, "/", &[]).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{}: {}", r.status, r.text()));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                    }
                }
            }
            errors
        }));
    }
    let all_new = "  traffic:\n    - revisionName: hello-00001\n      percent: 0\n    - latestRevision: true\n      percent: 100\n";
    gw.write("hello.yaml", &service("hello", "two", "", all_new));
    wait_traffic(&gw, "hello", &[("hello-00001", 0), ("hello-00002", 100)]).await;
    // Keep the loop going a little past the switch.
    let seen = ok.load(Ordering::Relaxed);
    wait_for("100 more answers after the switch", SETTLE, || async {
        (ok.load(Ordering::Relaxed) >= seen + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for l in loops {
        errors.extend(l.await.expect("client loop"));
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the traffic edit ({} ok): {errors:?}",
        ok.load(Ordering::Relaxed)
    );
    let counts = sample(gw.external_http, &host("hello"), 100).await;
    assert_eq!(counts.get("hello-00002"), Some(&100), "{counts:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_get_their_own_host_and_the_tag_header_routes_to_them() {
    let features = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-serving}\ndata: {tag-header-based-routing: enabled}\n";
    let gw = Gateway::start_up(
        "tags",
        &[
            ("features.yaml", features.to_string()),
            ("hello.yaml", service("hello", "one", "", "")),
        ],
    )
    .await;
    wait_service(&gw, "hello", "hello-00001").await;
    let tagged = "  traffic:\n    - revisionName: hello-00001\n      percent: 0\n      tag: old\n    - latestRevision: true\n      percent: 100\n";
    gw.write("hello.yaml", &service("hello", "two", "", tagged));
    wait_traffic(&gw, "hello", &[("hello-00001", 0), ("hello-00002", 100)]).await;
    wait_revision(gw.external_http, &host("hello"), &[], "hello-00002").await;
    wait_revision(gw.external_http, &host("old-hello"), &[], "hello-00001").await;
    wait_revision(
        gw.external_http,
        &host("hello"),
        &[("Knative-Serving-Tag", "old")],
        "hello-00001",
    )
    .await;
    let s = serving(&gw).await.expect("status");
    let old = s.routes[0]
        .traffic
        .iter()
        .find(|t| t.tag == "old")
        .expect("tag in status");
    assert_eq!(old.url, "http://old-hello.default.example.com");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_local_services_answer_only_on_the_internal_listener() {
    let local = service("private", "one", "", "").replace(
        "metadata:\n  name: private\n",
        "metadata:\n  name: private\n  labels:\n    networking.knative.dev/visibility: cluster-local\n",
    );
    let gw = Gateway::start_up("local", &[("private.yaml", local)]).await;
    wait_service(&gw, "private", "private-00001").await;
    wait_revision(
        gw.internal_http,
        "private.default.svc.cluster.local",
        &[],
        "private-00001",
    )
    .await;
    for h in [
        "private.default.svc.cluster.local",
        "private.default.example.com",
    ] {
        let r = get(gw.external_http, h, "/", &[]).await.expect("GET");
        assert_eq!(r.status, 404, "{h} on the external listener: {}", r.text());
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_traffic_keeps_the_previous_split_serving_and_status_says_why() {
    let gw = Gateway::start_up(
        "invalid",
        &[("hello.yaml", service("hello", "one", "", ""))],
    )
    .await;
    wait_service(&gw, "hello", "hello-00001").await;

    // Percentages summing to 90: rejected as Knative's webhook would, with file and field.
    let sum90 = "  traffic:\n    - latestRevision: true\n      percent: 90\n";
    gw.write("hello.yaml", &service("hello", "two", "", sum90));
    wait_for("the problem in /status", SETTLE, || async {
        let st = gw.status().await?;
        let p = st
            .problems
            .iter()
            .find(|p| p.file.ends_with("hello.yaml"))
            .ok_or_else(|| anyhow!("no problem listed: {:?}", st.problems))?;
        ensure!(p.field.as_deref() == Some("spec.traffic"), "{p:?}");
        ensure!(p.message.contains("100"), "{p:?}");
        anyhow::Ok(())
    })
    .await;
    let counts = sample(gw.external_http, &host("hello"), 20).await;
    assert_eq!(counts.get("hello-00001"), Some(&20), "{counts:?}");

    // An unknown revision: the Route says so, the previous KIngress keeps serving.
    let unknown = "  traffic:\n    - revisionName: hello-00042\n      percent: 100\n";
    gw.write("hello.yaml", &service("hello", "one", "", unknown));
    wait_for("the Route to name the missing revision", SETTLE, || async {
        let s = serving(&gw).await?;
        let r = &s.routes[0];
        ensure!(
            r.ready == "False" && r.message.contains("hello-00042"),
            "{r:?}"
        );
        anyhow::Ok(())
    })
    .await;
    let counts = sample(gw.external_http, &host("hello"), 20).await;
    assert_eq!(counts.get("hello-00001"), Some(&20), "{counts:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_app_is_restarted_and_shown() {
    let env = "            - {name: CRASH_AFTER, value: \"1\"}\n";
    let gw = Gateway::start_up("crash", &[("crash.yaml", service("crash", "one", env, ""))]).await;
    wait_service(&gw, "crash", "crash-00001").await;
    let r = gw.get(&host("crash"), "/").await.expect("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("the restart to show in status", SETTLE, || async {
        let s = serving(&gw).await?;
        let rev = &s.revisions[0];
        let i = rev
            .instances
            .first()
            .ok_or_else(|| anyhow!("no instance"))?;
        ensure!(i.restarts >= 1, "{rev:?}");
        ensure!(i.last_exit.contains('3'), "exit status shown: {rev:?}");
        anyhow::Ok(())
    })
    .await;
    // The restarted instance answers again (and then exits again).
    wait_for("the restarted instance to answer", SETTLE, || async {
        let r = gw.get(&host("crash"), "/").await?;
        ensure!(r.status == 200, "status {}: {}", r.status, r.text());
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_command_gets_a_clear_condition() {
    let image_only = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: image}\nspec:\n  template:\n    spec:\n      containers:\n        - image: ghcr.io/example/hello\n";
    let gw = Gateway::start_up("image", &[("image.yaml", image_only.to_string())]).await;
    wait_for("the Service to say why it cannot run", SETTLE, || async {
        let s = serving(&gw).await?;
        let svc = s.services.first().ok_or_else(|| anyhow!("not listed"))?;
        ensure!(svc.ready == "False", "{svc:?}");
        ensure!(svc.message.contains("runs commands, not images"), "{svc:?}");
        let rev = s.revisions.first().ok_or_else(|| anyhow!("no revision"))?;
        ensure!(rev.revision.reason == "ContainerMissing", "{rev:?}");
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_the_traffic_naming_them_survive_a_restart() {
    let gw = Gateway::start_up(
        "restart",
        &[("hello.yaml", service("hello", "one", "", ""))],
    )
    .await;
    wait_service(&gw, "hello", "hello-00001").await;
    // The file now holds only revision 2's template, yet its traffic names revision 1.
    let split = "  traffic:\n    - revisionName: hello-00001\n      percent: 50\n    - latestRevision: true\n      percent: 50\n";
    gw.write("hello.yaml", &service("hello", "two", "", split));
    wait_traffic(&gw, "hello", &[("hello-00001", 50), ("hello-00002", 50)]).await;

    let gw = gw.restart_up("restart").await;
    wait_traffic(&gw, "hello", &[("hello-00001", 50), ("hello-00002", 50)]).await;
    // Binomial(400, 50 %): standard deviation 10 requests; ±15 points is six of them.
    let counts = sample(gw.external_http, &host("hello"), 400).await;
    for rev in ["hello-00001", "hello-00002"] {
        let n = counts.get(rev).copied().unwrap_or(0);
        assert!(
            (140..=260).contains(&n),
            "50% of 400 within ±15 points: {counts:?}"
        );
    }
    let s = serving(&gw).await.expect("status");
    assert_eq!(
        s.revisions.len(),
        2,
        "no third revision for the same template"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_envoy_left_by_a_killed_sluice_are_stopped_on_the_next_start() {
    // Two revisions sharing the traffic, so both run when sluice is killed.
    let split = "  traffic:\n    - revisionName: hello-00001\n      percent: 50\n    - latestRevision: true\n      percent: 50\n";
    let gw = Gateway::start_up(
        "orphans",
        &[("hello.yaml", service("hello", "one", "", ""))],
    )
    .await;
    wait_service(&gw, "hello", "hello-00001").await;
    gw.write("hello.yaml", &service("hello", "two", "", split));
    wait_service(&gw, "hello", "hello-00002").await;
    wait_revision(gw.external_http, &host("hello"), &[], "hello-00002").await;
    let s = serving(&gw).await.expect("status");
    let old: Vec<String> = s
        .revisions
        .iter()
        .flat_map(|r| r.instances.iter().map(|i| i.addr.clone()))
        .collect();
    assert_eq!(old.len(), 2, "one instance per revision: {old:?}");
    let old_envoy = gw.external_http;

    let gw = gw.kill_and_restart_up("orphans").await;
    for addr in &old {
        assert!(
            std::net::TcpStream::connect(addr.as_str()).is_err(),
            "an instance of the killed sluice still listens on {addr}"
        );
    }
    assert!(
        std::net::TcpStream::connect(old_envoy).is_err(),
        "the Envoy of the killed sluice still listens on {old_envoy}"
    );
    assert!(gw.log().contains("stopped 3 process(es)"), "{}", gw.log());
    // Every Service back with the same revisions, each with exactly one instance.
    wait_service(&gw, "hello", "hello-00002").await;
    wait_revision(gw.external_http, &host("hello"), &[], "hello-00001").await;
    wait_revision(gw.external_http, &host("hello"), &[], "hello-00002").await;
    let s = serving(&gw).await.expect("status");
    let per_revision: Vec<(&str, usize)> = s
        .revisions
        .iter()
        .map(|r| (r.revision.name.as_str(), r.instances.len()))
        .collect();
    assert_eq!(
        per_revision,
        [("hello-00001", 1), ("hello-00002", 1)],
        "same revisions, no duplicate instances"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_concurrency_one_never_gets_two_requests_at_once() {
    // max-scale 1: the autoscaler would add instances for this load, and `/max-in-flight`
    // must reach the one that served it (tests/scale_e2e.rs checks several instances).
    let yaml = service("one", "one", "", "")
        .replace(
            "      containers:\n",
            "      containerConcurrency: 1\n      containers:\n",
        )
        .replace(
            "  template:\n    spec:\n",
            "  template:\n    metadata:\n      annotations:\n        autoscaling.knative.dev/max-scale: \"1\"\n    spec:\n",
        );
    let gw = Gateway::start_up("concurrency", &[("one.yaml", yaml)]).await;
    wait_service(&gw, "one", "one-00001").await;
    // Eight at once, each held 200 ms by the app: Envoy queues seven of them.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let addr = gw.external_http;
            tokio::spawn(async move { get(addr, &host("one"), "/?sleep=200", &[]).await })
        })
        .collect();
    for r in requests {
        let r = r.await.expect("task").expect("request through Envoy");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let max = gw.get(&host("one"), "/max-in-flight").await.expect("GET");
    assert_eq!(
        max.text().trim(),
        "1",
        "the instance saw more than one request at once"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_gc_collects_the_oldest_revision_beyond_the_maximum() {
    // Time limits off, at most one non-active Revision: the third template collects the first.
    let config_gc = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: config-gc, namespace: knative-serving}
data:
  retain-since-create-time: disabled
  retain-since-last-active-time: disabled
  min-non-active-revisions: "0"
  max-non-active-revisions: "1"
"#;
    let gw = Gateway::start_up(
        "gc",
        &[
            ("config-gc.yaml", config_gc.to_string()),
            ("gc.yaml", service("gc", "one", "", "")),
        ],
    )
    .await;
    wait_service(&gw, "gc", "gc-00001").await;
    gw.write("gc.yaml", &service("gc", "two", "", ""));
    wait_service(&gw, "gc", "gc-00002").await;
    wait_revision(gw.external_http, &host("gc"), &[], "gc-00002").await;
    let names = |s: &sluice::up::ServingView| -> Vec<String> {
        s.revisions
            .iter()
            .map(|r| r.revision.name.clone())
            .collect()
    };
    // One non-active Revision is within the maximum: kept.
    let s = serving(&gw).await.expect("status");
    assert_eq!(names(&s), ["gc-00001", "gc-00002"]);
    gw.write("gc.yaml", &service("gc", "three", "", ""));
    wait_service(&gw, "gc", "gc-00003").await;
    wait_revision(gw.external_http, &host("gc"), &[], "gc-00003").await;
    wait_for("gc-00001 collected", SETTLE, || async {
        let s = serving(&gw).await?;
        ensure!(names(&s) == ["gc-00002", "gc-00003"], "{:?}", names(&s));
        anyhow::Ok(())
    })
    .await;
    // The collected Revision is gone for good: a restart does not bring it back.
    let gw = gw.restart_up("gc").await;
    wait_service(&gw, "gc", "gc-00003").await;
    let s = serving(&gw).await.expect("status");
    assert_eq!(names(&s), ["gc-00002", "gc-00003"]);
    gw.stop().await;
}
