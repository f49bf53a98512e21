//! Several controller replicas: only the Lease holder reconciles and writes.

use serde_json::json;

use crate::SERVING;
use crate::harness::{ready_slice, service, start_led};

#[tokio::test(start_paused = true)]
async fn a_standby_replica_watches_without_writing_and_takes_over_on_the_lease() {
    let (lead, leader) = tokio::sync::watch::channel(false);
    let running = start_led(
        vec![service("hello", "v1"), ready_slice("hello-00001")],
        Vec::new(),
        Some(leader),
    )
    .await;
    let api = &running.api;
    let writes = api.writes();
    assert!(writes.is_empty(), "a standby writes nothing: {writes:#?}");
    {
        let status = running.status.lock().unwrap();
        assert!(status.synced, "it watches all the same");
        assert!(!status.leader);
        assert_eq!(status.objects.get("services"), Some(&1));
    }

    // The Lease is this replica's: everything is reconciled, from warm caches.
    lead.send_replace(true);
    api.settled().await;
    assert!(
        api.get(&format!("{SERVING}/revisions/hello-00001"))
            .is_some()
    );
    assert!(running.status.lock().unwrap().leader);
    let service = api
        .get(&format!("{SERVING}/services/hello"))
        .expect("stored");
    assert_eq!(
        service["status"]["latestCreatedRevisionName"],
        "hello-00001"
    );

    // It loses the Lease: a user's edit is seen but not acted on.
    lead.send_replace(false);
    api.settled().await;
    let before = api.writes().len();
    let mut edited = service;
    edited["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "TARGET", "value": "v2"}]);
    edited.as_object_mut().expect("object").remove("status");
    api.user_apply(edited);
    api.settled().await;
    assert_eq!(api.writes().len(), before, "no write without the Lease");
    running.stop().await;
}
