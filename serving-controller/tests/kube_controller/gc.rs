//! Revision garbage collection on a cluster: routing states on the Revisions, `config-gc`.

use http::Method;
use serde_json::json;

use crate::SERVING;
use crate::harness::{ready_slice, service, start, writes_to};

#[tokio::test(start_paused = true)]
async fn revisions_no_longer_routed_are_labelled_reserve_and_collected_beyond_the_maximum() {
    let config_gc = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-gc", "namespace": "knative-serving"},
        "data": {"min-non-active-revisions": "0", "max-non-active-revisions": "1",
            "retain-since-create-time": "disabled", "retain-since-last-active-time": "disabled"}
    });
    let running = start(vec![
        config_gc,
        service("hello", "v1"),
        ready_slice("hello-00001"),
        ready_slice("hello-00002"),
        ready_slice("hello-00003"),
    ])
    .await;
    let api = &running.api;
    let revision = |n: u32| api.get(&format!("{SERVING}/revisions/hello-0000{n}"));
    let state = |n: u32| {
        revision(n).map(|r| {
            (
                r["metadata"]["labels"]["serving.knative.dev/routingState"].clone(),
                r["metadata"]["annotations"]["serving.knative.dev/routingStateModified"]
                    .is_string(),
            )
        })
    };
    assert_eq!(state(1), Some((json!("active"), true)));

    // v2: 00002 takes the traffic, 00001 goes to reserve; one non-active Revision is allowed.
    api.user_apply(service("hello", "v2"));
    api.settled().await;
    assert_eq!(state(2), Some((json!("active"), true)));
    assert_eq!(state(1), Some((json!("reserve"), true)));

    // v3: two non-active Revisions, one more than the maximum: the older one is deleted.
    let before = api.writes().len();
    api.user_apply(service("hello", "v3"));
    api.settled().await;
    let writes = api.writes()[before..].to_vec();
    let deletes = writes_to(
        &writes,
        Method::DELETE,
        &format!("{SERVING}/revisions/hello-00001"),
    );
    assert_eq!(deletes.len(), 1, "{writes:#?}");
    assert!(revision(1).is_none());
    assert!(
        writes.iter().any(|w| w.path.ends_with("/events")
            && w.body["reason"] == "Collected"
            && w.body["regarding"]["name"] == "hello"),
        "a Collected event on the Configuration"
    );
    assert_eq!(state(2), Some((json!("reserve"), true)));
    assert_eq!(state(3), Some((json!("active"), true)));
    // The labels are merge patches of those two keys only.
    let label = writes_to(
        &writes,
        Method::PATCH,
        &format!("{SERVING}/revisions/hello-00002"),
    );
    assert_eq!(
        label[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        label[0].body["metadata"]["labels"],
        json!({"serving.knative.dev/routingState": "reserve"})
    );
    assert!(revision(2).expect("kept")["spec"]["containers"].is_array());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_defaults_keep_twenty_non_active_revisions() {
    let running = start(vec![
        service("hello", "v1"),
        ready_slice("hello-00001"),
        ready_slice("hello-00002"),
        ready_slice("hello-00003"),
    ])
    .await;
    let api = &running.api;
    for target in ["v2", "v3"] {
        api.user_apply(service("hello", target));
        api.settled().await;
    }
    let deletes = api
        .writes()
        .into_iter()
        .filter(|w| w.method == Method::DELETE)
        .count();
    assert_eq!(deletes, 0);
    for n in 1..=3 {
        assert!(
            api.get(&format!("{SERVING}/revisions/hello-0000{n}"))
                .is_some()
        );
    }
    running.stop().await;
}
