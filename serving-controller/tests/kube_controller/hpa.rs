//! The HPA class on a cluster: a HorizontalPodAutoscaler per Revision, as autoscaler-hpa.

use serde_json::json;

use crate::harness::{ready_slice, service, start, the_apply};
use crate::{DEPLOYMENTS, SERVING};

#[tokio::test(start_paused = true)]
async fn an_hpa_class_revision_gets_its_horizontal_pod_autoscaler() {
    let mut svc = service("hello", "v1");
    svc["spec"]["template"]["metadata"] = json!({"annotations": {
        "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "cpu",
        "autoscaling.knative.dev/target": "60",
        "autoscaling.knative.dev/max-scale": "5"
    }});
    let running = start(vec![svc, ready_slice("hello-00001")]).await;
    let api = &running.api;
    let writes = api.writes();
    let path = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hello-00001";
    let hpa = &the_apply(&writes, path).body;
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello-00001-deployment"})
    );
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}})
    );
    let uid = api
        .get(&format!("{SERVING}/revisions/hello-00001"))
        .expect("stored")["metadata"]["uid"]
        .clone();
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["uid"], uid);
    // After the Deployment: the HPA scales what exists.
    let order = |p: &str| {
        writes
            .iter()
            .position(|w| w.path == p)
            .unwrap_or_else(|| panic!("{p} written"))
    };
    assert!(order(&format!("{DEPLOYMENTS}/hello-00001-deployment")) < order(path));
    // Once: later reconciles leave it.
    let applies = writes.iter().filter(|w| w.path == path).count();
    assert_eq!(applies, 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_kpa_revision_gets_none() {
    let running = start(vec![service("hello", "v1"), ready_slice("hello-00001")]).await;
    assert!(
        running
            .api
            .writes()
            .iter()
            .all(|w| !w.path.contains("horizontalpodautoscalers"))
    );
    running.stop().await;
}
