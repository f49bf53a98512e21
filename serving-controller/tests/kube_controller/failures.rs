//! A Revision whose pods do not come up says why, with upstream's conditions, up to its Service.

use serde_json::{Value, json};

use crate::harness::{condition, conditions, ready_slice, service, start};
use crate::{DEPLOYMENTS, SERVING};

fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hello-00001-deployment-7d9f-abcde", "namespace": "default",
            "labels": {"serving.knative.dev/revision": "hello-00001"}},
        "spec": {"containers": [{"name": "user-container", "image": "x"}]},
        "status": status
    })
}

fn container(state: Value, last: Value) -> Value {
    json!({"phase": "Running", "containerStatuses": [{
        "name": "user-container", "image": "x", "imageID": "", "ready": false,
        "restartCount": 4, "state": state, "lastState": last}]})
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_and_a_stuck_pull_fail_the_revision_with_upstreams_reasons() {
    let running = start(vec![service("hello", "v1")]).await;
    let api = &running.api;
    let revision_path = format!("{SERVING}/revisions/hello-00001");
    let revision = api.get(&revision_path).expect("Revision created");
    assert_eq!(conditions(&revision), ["Ready=Unknown Deploying"]);

    // The kubelet restarts a container that exits with 1: ContainerHealthy=False ExitCode1.
    let deployment = format!("{DEPLOYMENTS}/hello-00001-deployment");
    api.set_status(
        &deployment,
        json!({"replicas": 1, "unavailableReplicas": 1, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}),
    );
    api.user_apply(pod(container(
        json!({"waiting": {"reason": "CrashLoopBackOff"}}),
        json!({"terminated": {"exitCode": 1, "reason": "Error",
            "message": "panic: DATABASE_URL is not set"}}),
    )));
    api.settled().await;
    let revision = api.get(&revision_path).expect("stored");
    assert_eq!(
        conditions(&revision),
        ["ContainerHealthy=False ExitCode1", "Ready=False ExitCode1"]
    );
    assert_eq!(
        condition(&revision, "Ready")["message"],
        "Container failed with: panic: DATABASE_URL is not set"
    );
    // `kubectl describe revision` shows it as a Warning Event.
    let events: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.path == "/apis/events.k8s.io/v1/namespaces/default/events")
        .map(|w| w.body)
        .collect();
    let failed = events
        .iter()
        .find(|e| e["reason"] == "ExitCode1")
        .unwrap_or_else(|| panic!("a Warning event: {events:#?}"));
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["regarding"]["kind"], "Revision", "{failed:#}");
    assert_eq!(failed["regarding"]["name"], "hello-00001");
    assert_eq!(
        failed["note"],
        "Container failed with: panic: DATABASE_URL is not set"
    );
    let created = events
        .iter()
        .find(|e| e["reason"] == "Created")
        .expect("a Created event on the Configuration");
    assert_eq!(created["regarding"]["kind"], "Configuration");
    assert_eq!(created["note"], "Created Revision \"hello-00001\"");
    for path in [
        format!("{SERVING}/configurations/hello"),
        format!("{SERVING}/services/hello"),
    ] {
        let object = api.get(&path).expect("stored");
        let ready = condition(&object, "Ready");
        assert_eq!(ready["status"], "False", "{path}: {object:#}");
        assert!(
            ready["message"]
                .as_str()
                .is_some_and(|m| m.contains("Container failed with: panic: DATABASE_URL")),
            "{path}: {ready}"
        );
    }

    // A new pod whose image cannot be pulled: nothing is said before the progress deadline…
    let waiting = pod(container(
        json!({"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"ghcr.io/nope:1\""}}),
        json!({}),
    ));
    api.user_apply(waiting);
    api.settled().await;
    let revision = api.get(&revision_path).expect("stored");
    assert_eq!(conditions(&revision), ["Ready=Unknown Deploying"]);
    // … and once Kubernetes gives up on the Deployment, ResourcesAvailable=False with the reason.
    api.set_status(
        &deployment,
        json!({"replicas": 1, "unavailableReplicas": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet has timed out progressing."}]}),
    );
    api.settled().await;
    let revision = api.get(&revision_path).expect("stored");
    assert_eq!(
        conditions(&revision),
        [
            "Ready=False ImagePullBackOff",
            "ResourcesAvailable=False ImagePullBackOff"
        ]
    );
    assert_eq!(
        condition(&revision, "ResourcesAvailable")["message"],
        "Back-off pulling image \"ghcr.io/nope:1\""
    );

    // The image is fixed and a pod becomes ready: Ready=True, the failure gone.
    api.user_apply(ready_slice("hello-00001"));
    api.settled().await;
    let revision = api.get(&revision_path).expect("stored");
    assert_eq!(conditions(&revision), ["Ready=True"]);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn config_autoscaler_and_config_deployment_shape_new_deployments() {
    let config_map = |name: &str, data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "knative-serving"}, "data": data})
    };
    let running = start(vec![
        config_map("config-autoscaler", json!({"initial-scale": "3"})),
        config_map("config-deployment", json!({"progress-deadline": "2m"})),
        service("hello", "v1"),
    ])
    .await;
    let deployment = running
        .api
        .get(&format!("{DEPLOYMENTS}/hello-00001-deployment"))
        .expect("applied");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 120);
    assert!(running.status.lock().unwrap().problems.is_empty());
    running.stop().await;
}
