//! The per-Route placeholder Services: `{route}.{ns}.svc.cluster.local` resolves in the cluster.

use http::Method;
use serde_json::{Value, json};

use crate::harness::{ready_slice, service, start, the_apply, writes_to};
use crate::{CORE_SERVICES, KINGRESS};

/// `service("hello", target)` with a tag `v1` on Revision 00001 besides the latest.
fn tagged_service(target: &str) -> Value {
    let mut s = service("hello", target);
    s["spec"]["traffic"] = json!([
        {"latestRevision": true, "percent": 100},
        {"revisionName": "hello-00001", "tag": "v1", "percent": 0}
    ]);
    s
}

#[tokio::test(start_paused = true)]
async fn each_route_and_tag_gets_an_external_name_service_to_the_internal_gateway() {
    let running = start(vec![tagged_service("v1"), ready_slice("hello-00001")]).await;
    let api = &running.api;
    let writes = api.writes();

    for name in ["hello", "v1-hello"] {
        let body = &the_apply(&writes, &format!("{CORE_SERVICES}/{name}")).body;
        assert_eq!(body["kind"], "Service");
        assert_eq!(
            body["spec"],
            json!({"type": "ExternalName",
                "externalName": "sluice-internal.knative-serving.svc.cluster.local",
                "sessionAffinity": "None",
                "ports": [{"name": "http", "port": 80, "targetPort": 80}]}),
            "{name}"
        );
        assert_eq!(
            body["metadata"]["labels"]["serving.knative.dev/route"],
            "hello"
        );
        let route_uid = api
            .get("/apis/serving.knative.dev/v1/namespaces/default/routes/hello")
            .expect("Route stored")["metadata"]["uid"]
            .clone();
        assert_eq!(
            body["metadata"]["ownerReferences"],
            json!([{"apiVersion": "serving.knative.dev/v1", "kind": "Route", "name": "hello",
                "uid": route_uid, "controller": true, "blockOwnerDeletion": true}])
        );
    }

    // The gateway names its internal Service in the KIngress status: the placeholders follow.
    let before = api.writes().len();
    let ingress_path = format!("{KINGRESS}/hello");
    let generation = api.get(&ingress_path).expect("stored")["metadata"]["generation"].clone();
    api.set_status(
        &ingress_path,
        json!({"observedGeneration": generation,
            "privateLoadBalancer": {"ingress": [
                {"domainInternal": "gw-internal.sluice-system.svc.cluster.local"}]},
            "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    api.settled().await;
    let writes = api.writes()[before..].to_vec();
    for name in ["hello", "v1-hello"] {
        let body = &the_apply(&writes, &format!("{CORE_SERVICES}/{name}")).body;
        assert_eq!(
            body["spec"]["externalName"],
            "gw-internal.sluice-system.svc.cluster.local"
        );
    }

    // The tag is removed: its Service is deleted, the Route's stays.
    let before = api.writes().len();
    let mut untagged = service("hello", "v1");
    untagged["metadata"]["generation"] = json!(2);
    api.user_apply(untagged);
    api.settled().await;
    let writes = api.writes()[before..].to_vec();
    let deletes = writes_to(
        &writes,
        Method::DELETE,
        &format!("{CORE_SERVICES}/v1-hello"),
    );
    assert_eq!(deletes.len(), 1, "{writes:#?}");
    assert!(api.get(&format!("{CORE_SERVICES}/v1-hello")).is_none());
    assert!(api.get(&format!("{CORE_SERVICES}/hello")).is_some());
    running.stop().await;
}
