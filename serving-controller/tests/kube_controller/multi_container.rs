//! Multi-container templates (`config-features` `multi-container`, enabled by default as
//! upstream): the container with the port serves, the others run beside it.

use serde_json::{Value, json};

use crate::harness::{condition, ready_slice, service, start};
use crate::{DEPLOYMENTS, SERVING};

fn with_sidecar() -> Value {
    let mut s = service("hello", "v1");
    s["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "log-shipper", "image": "ghcr.io/example/shipper:1",
            "env": [{"name": "LEVEL", "value": "info"}]},
        {"image": "ghcr.io/knative/helloworld-go:latest", "ports": [{"containerPort": 9000}]}
    ]);
    s
}

#[tokio::test(start_paused = true)]
async fn the_container_with_the_port_serves_and_the_sidecar_runs_beside_it() {
    let running = start(vec![with_sidecar(), ready_slice("hello-00001")]).await;
    let api = &running.api;
    let deployment = api
        .get(&format!("{DEPLOYMENTS}/hello-00001-deployment"))
        .unwrap_or_else(|| {
            panic!(
                "applied: {:#}",
                api.get(&format!("{SERVING}/services/hello"))
                    .unwrap_or_default()["status"]
            )
        });
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 2);
    let sidecar = &containers[0];
    assert_eq!(sidecar["name"], "log-shipper");
    assert_eq!(sidecar["image"], "ghcr.io/example/shipper:1");
    assert_eq!(
        sidecar["env"],
        json!([{"name": "LEVEL", "value": "info"}]),
        "PORT and K_* are the serving container's"
    );
    assert!(sidecar.get("ports").is_none());
    let serving = &containers[1];
    assert_eq!(serving["name"], "user-container-1");
    assert_eq!(
        serving["ports"],
        json!([{"name": "user-port", "containerPort": 9000, "protocol": "TCP"}])
    );
    assert!(
        serving["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "PORT" && e["value"] == "9000")
    );
    let revision = api
        .get(&format!("{SERVING}/revisions/hello-00001"))
        .expect("stored");
    assert_eq!(condition(&revision, "Ready")["status"], "True");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn turned_off_or_without_a_port_the_template_is_refused_naming_why() {
    let features = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-features", "namespace": "knative-serving"},
        "data": {"multi-container": "disabled"}});
    let running = start(vec![features, with_sidecar()]).await;
    let svc = running
        .api
        .get(&format!("{SERVING}/services/hello"))
        .expect("stored");
    let ready = condition(&svc, "Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("multi-container is off, but found 2 containers")),
        "{ready}"
    );
    running.stop().await;

    let mut no_port = with_sidecar();
    no_port["spec"]["template"]["spec"]["containers"][1]
        .as_object_mut()
        .expect("container")
        .remove("ports");
    let running = start(vec![no_port]).await;
    let svc = running
        .api
        .get(&format!("{SERVING}/services/hello"))
        .expect("stored");
    let message = condition(&svc, "Ready")["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("spec.template.spec.containers.ports")),
        "{message}"
    );
    running.stop().await;
}
