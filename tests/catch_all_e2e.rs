//! A KIngress rule without hosts, through a real Envoy: as in Kourier it catches every host no
//! other rule serves, on the listeners of its visibility, and the backend sees the client's
//! Host. Known hosts keep their own routes (an unknown path of a known host is still 404), the
//! catch-all is proven Ready by a probe through Envoy, and a second catch-all loses to the
//! first (DomainConflict), as two of Kourier's do.

mod support;

use serde_json::{Value, json};
use support::BackendOptions;
use support::gateway::{Gateway, backend_objects, kingress, simple_kingress, split, yaml};

/// A KIngress with one host-less rule of `visibility` to `service`, created at `created`.
fn catch_all(name: &str, visibility: &str, service: &str, created: &str) -> Value {
    let mut v = kingress(
        name,
        json!([{"visibility": visibility,
                "http": {"paths": [{"splits": [split(service, 100)]}]}}]),
    );
    v["metadata"]["creationTimestamp"] = json!(created);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_without_hosts_catches_every_other_host_and_keeps_the_clients_host() {
    let known = support::start(BackendOptions::new("known")).await;
    let any = support::start(BackendOptions::new("any")).await;
    // A known host serving one path only: its other paths stay 404.
    let mut only_api = simple_kingress("known", "known.example.com", "known");
    only_api["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/api");
    let gw = Gateway::start(
        "catch-all",
        &[
            ("svc-known.yaml", backend_objects("known", known.addr)),
            ("svc-any.yaml", backend_objects("any", any.addr)),
            ("known.yaml", yaml(&only_api)),
            (
                "any.yaml",
                yaml(&catch_all(
                    "any",
                    "ExternalIP",
                    "any",
                    "2024-06-01T00:00:00Z",
                )),
            ),
        ],
    )
    .await;
    gw.wait_ready("known").await;
    let st = gw.wait_ready("any").await;
    assert_eq!(st.hosts, ["*"], "{st:?}");

    // Every host nobody serves, with a port, in capitals: the catch-all, with the Host as sent.
    for (addr, listener) in [
        (gw.external_http, "external"),
        (gw.internal_http, "internal"),
    ] {
        for host in [
            "anything.example.com",
            "other.test:8080",
            "MiXeD.Example.COM",
        ] {
            let r = support::get(addr, host, "/hello", &[]).await.unwrap();
            assert_eq!(r.status, 200, "{listener} {host}: {}", r.text());
            assert_eq!(r.backend(), Some("any"), "{listener} {host}");
            let echo = r.json();
            assert_eq!(
                echo["host"].as_str(),
                Some(host.to_lowercase().as_str()),
                "{listener}: the backend sees the client's Host"
            );
        }
    }
    // The known host keeps its route; its unknown path is its own 404, not the catch-all.
    let r = gw.get("known.example.com", "/api/x").await.unwrap();
    assert_eq!((r.status.as_u16(), r.backend()), (200, Some("known")));
    let r = gw.get("known.example.com", "/elsewhere").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        any.requests(),
        6,
        "only the six catch-all requests reached it"
    );

    // A second catch-all on the same listeners loses to the older one.
    gw.write(
        "late.yaml",
        &yaml(&catch_all(
            "late",
            "ExternalIP",
            "known",
            "2025-01-01T00:00:00Z",
        )),
    );
    let st = gw
        .wait_ingress("late", "Ready=False", |i| i.ready == "False")
        .await;
    assert_eq!(st.reason, "DomainConflict", "{st:?}");
    let r = gw.get("nobody.example.com", "/").await.unwrap();
    assert_eq!(r.backend(), Some("any"));

    // Removed: an unknown host is Envoy's 404 again.
    gw.remove("any.yaml");
    gw.wait_ready("late").await;
    gw.remove("late.yaml");
    support::wait_for("unknown hosts 404", support::gateway::SETTLE, || async {
        let r = gw.get("nobody.example.com", "/").await.ok()?;
        (r.status == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_local_catch_all_is_not_served_on_the_external_listener() {
    let any = support::start(BackendOptions::new("any")).await;
    let gw = Gateway::start(
        "catch-all-local",
        &[
            ("svc-any.yaml", backend_objects("any", any.addr)),
            (
                "any.yaml",
                yaml(&catch_all(
                    "any",
                    "ClusterLocal",
                    "any",
                    "2024-06-01T00:00:00Z",
                )),
            ),
        ],
    )
    .await;
    gw.wait_ready("any").await;
    let r = support::get(gw.internal_http, "svc.ns.svc.cluster.local", "/", &[])
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.backend()), (200, Some("any")));
    let r = gw.get("svc.ns.svc.cluster.local", "/").await.unwrap();
    assert_eq!(r.status, 404, "not on the external listener");
}
