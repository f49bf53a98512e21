//! Why a Revision's pods do not come up, as Knative's revision reconciler tells it
//! (`pkg/reconciler/revision/reconcile_resources.go`), from the Revision's Deployment and pods.
//!
//! Looked at only while the Deployment wants pods and none is available (a Revision with a ready
//! endpoint is Ready whatever its other pods do). Then, from the first pod (by name):
//! - it cannot be scheduled (`PodScheduled=False`): `ResourcesAvailable=False` with the
//!   scheduler's reason and message (e.g. `Unschedulable`, "0/3 nodes are available: …");
//! - a container terminated (its `lastState.terminated`): `ContainerHealthy=False`, reason
//!   `ExitCode<N>`, message `Container failed with: <termination message>` ("container exited
//!   with no error" when it left none);
//! - a container waiting (`ImagePullBackOff`, `CrashLoopBackOff`, …) once the Deployment's
//!   progress deadline passed (`Progressing=False`, `ProgressDeadlineExceeded`, set by
//!   Kubernetes after `config-deployment`'s `progress-deadline`, 600 s by default):
//!   `ResourcesAvailable=False` with the kubelet's reason and message.
//!
//! Without such a pod, a Deployment past its deadline gives `ResourcesAvailable=False`,
//! `ProgressDeadlineExceeded`. `Ready=False` carries the same reason and message, and so do the
//! Configuration's and Service's `Ready` (their usual propagation).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// `ContainerHealthy`: the user container does not keep running.
pub const CONTAINER_HEALTHY: &str = "ContainerHealthy";
/// `ResourcesAvailable`: the pods cannot be had.
pub const RESOURCES_AVAILABLE: &str = "ResourcesAvailable";
/// Reason of a Deployment past its progress deadline (Kubernetes').
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// A failed Revision condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// [`CONTAINER_HEALTHY`] or [`RESOURCES_AVAILABLE`].
    pub condition: &'static str,
    /// CamelCase reason (`ExitCode1`, `ImagePullBackOff`, …).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl Unhealthy {
    fn new(condition: &'static str, reason: &str, message: &str) -> Self {
        Self {
            condition,
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }
}

/// Whether Kubernetes gave up on the Deployment's progress.
fn timed_out(deployment: &Deployment) -> bool {
    deployment
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
        })
}

/// Why the Revision behind `deployment` has no available pod, if the pods tell; `pods` are
/// its pods in any order.
pub fn revision_health(deployment: &Deployment, pods: &[&Pod]) -> Option<Unhealthy> {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if wanted == 0 || available > 0 {
        return None;
    }
    let timed_out = timed_out(deployment);
    let first = pods.iter().min_by_key(|p| p.metadata.name.as_deref());
    if let Some(status) = first.and_then(|p| p.status.as_ref()) {
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            return Some(Unhealthy::new(
                RESOURCES_AVAILABLE,
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_deref().unwrap_or_default(),
            ));
        }
        for container in status.container_statuses.iter().flatten() {
            if let Some(t) = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
            {
                let said = t.message.as_deref().unwrap_or_default().trim();
                let said = if said.is_empty() {
                    "container exited with no error"
                } else {
                    said
                };
                return Some(Unhealthy::new(
                    CONTAINER_HEALTHY,
                    &format!("ExitCode{}", t.exit_code),
                    &format!("Container failed with: {said}"),
                ));
            }
            if let Some(w) = container.state.as_ref().and_then(|s| s.waiting.as_ref())
                && timed_out
            {
                return Some(Unhealthy::new(
                    RESOURCES_AVAILABLE,
                    w.reason.as_deref().unwrap_or("Waiting"),
                    w.message.as_deref().unwrap_or_default(),
                ));
            }
        }
    }
    timed_out.then(|| {
        Unhealthy::new(
            RESOURCES_AVAILABLE,
            PROGRESS_DEADLINE_EXCEEDED,
            "Initial scale was never achieved",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, available: i32, timed_out: bool) -> Deployment {
        let conditions = if timed_out {
            json!([{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded"}])
        } else {
            json!([{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}])
        };
        serde_json::from_value(json!({
            "metadata": {"name": "hello-00001-deployment"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"availableReplicas": available, "conditions": conditions}
        }))
        .expect("a Deployment")
    }

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": status}))
            .expect("a Pod")
    }

    fn crashing(code: i32, message: &str) -> Pod {
        pod(
            "hello-00001-deployment-abc",
            json!({"containerStatuses": [{
                "name": "user-container", "image": "x", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": code, "message": message}}
            }]}),
        )
    }

    #[test]
    fn an_exiting_container_is_container_healthy_false_with_its_exit_code() {
        let p = crashing(1, "panic: no DATABASE_URL\n");
        let got = revision_health(&deployment(1, 0, false), &[&p]).expect("unhealthy");
        assert_eq!(
            got,
            Unhealthy::new(
                CONTAINER_HEALTHY,
                "ExitCode1",
                "Container failed with: panic: no DATABASE_URL"
            )
        );
        let quiet = crashing(0, "");
        assert_eq!(
            revision_health(&deployment(1, 0, false), &[&quiet])
                .expect("unhealthy")
                .message,
            "Container failed with: container exited with no error"
        );
    }

    #[test]
    fn a_waiting_container_counts_only_past_the_progress_deadline() {
        let p = pod(
            "hello-00001-deployment-abc",
            json!({"containerStatuses": [{
                "name": "user-container", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"ghcr.io/nope\""}}
            }]}),
        );
        assert_eq!(revision_health(&deployment(1, 0, false), &[&p]), None);
        assert_eq!(
            revision_health(&deployment(1, 0, true), &[&p]),
            Some(Unhealthy::new(
                RESOURCES_AVAILABLE,
                "ImagePullBackOff",
                "Back-off pulling image \"ghcr.io/nope\""
            ))
        );
    }

    #[test]
    fn unschedulable_pods_and_a_deadline_without_pods_are_resources_unavailable() {
        let p = pod(
            "hello-00001-deployment-abc",
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
        );
        let got = revision_health(&deployment(1, 0, false), &[&p]).expect("unhealthy");
        assert_eq!(
            (got.condition, got.reason.as_str()),
            (RESOURCES_AVAILABLE, "Unschedulable")
        );
        let got = revision_health(&deployment(1, 0, true), &[]).expect("unhealthy");
        assert_eq!(got.reason, PROGRESS_DEADLINE_EXCEEDED);
    }

    #[test]
    fn healthy_or_scaled_to_zero_says_nothing() {
        let p = crashing(1, "boom");
        assert_eq!(revision_health(&deployment(2, 1, false), &[&p]), None);
        assert_eq!(revision_health(&deployment(0, 0, true), &[&p]), None);
    }
}
