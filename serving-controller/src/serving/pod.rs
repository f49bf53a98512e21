//! `RevisionSpec` (Go inlines a Kubernetes `PodSpec`) and its `Container`.
//!
//! Knative accepts only part of a PodSpec (`pkg/apis/serving/fieldmask.go`): the fields it
//! allows are typed here; PodSpec / Container fields Kubernetes knows but Knative disallows by
//! default (feature-flagged or forbidden, e.g. `nodeSelector`, `stdin`) are kept as raw values
//! so validation can answer Knative's `must not set the field(s)`; anything else is an unknown
//! field, rejected at decode. Nested Kubernetes types (env, probes, resources, …) come from
//! k8s-openapi, which decodes them leniently.

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext, Probe,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The port an app listens on when its container declares none.
pub const DEFAULT_USER_PORT: i32 = 8080;

/// `spec.template.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionSpec {
    /// The containers (exactly one: multi-container is off by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Maximum in-flight requests per instance; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Maximum duration of a request, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Maximum wait for the first response byte, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Maximum time a request may stay open without bytes flowing, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// PodSpec `serviceAccountName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// PodSpec `volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// PodSpec `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// PodSpec `enableServiceLinks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// PodSpec `automountServiceAccountToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// PodSpec `securityContext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// PodSpec `affinity` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
    /// PodSpec `nodeSelector` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Value>,
    /// PodSpec `tolerations` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Value>,
    /// PodSpec `initContainers` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Value>,
    /// PodSpec `hostAliases` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_aliases: Option<Value>,
    /// PodSpec `runtimeClassName` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<Value>,
    /// PodSpec `priorityClassName` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<Value>,
    /// PodSpec `schedulerName` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<Value>,
    /// PodSpec `dnsPolicy` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<Value>,
    /// PodSpec `dnsConfig` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<Value>,
    /// PodSpec `topologySpreadConstraints` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Value>,
    /// PodSpec `shareProcessNamespace` (feature-flagged: disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_process_namespace: Option<Value>,
    /// PodSpec `hostNetwork` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<Value>,
    /// PodSpec `hostPID` (disallowed).
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<Value>,
    /// PodSpec `hostIPC` (disallowed).
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<Value>,
    /// PodSpec `nodeName` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<Value>,
    /// PodSpec `restartPolicy` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Value>,
    /// PodSpec `terminationGracePeriodSeconds` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<Value>,
    /// PodSpec `hostname` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Value>,
    /// PodSpec `subdomain` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<Value>,
}

fn positive_seconds(v: Option<i64>) -> Option<std::time::Duration> {
    v.and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
}

impl RevisionSpec {
    /// The PodSpec fields set here that Knative disallows by default, sorted.
    pub fn disallowed_fields(&self) -> Vec<&'static str> {
        let fields: [(&'static str, bool); 20] = [
            ("affinity", self.affinity.is_some()),
            ("dnsConfig", self.dns_config.is_some()),
            ("dnsPolicy", self.dns_policy.is_some()),
            ("hostAliases", self.host_aliases.is_some()),
            ("hostIPC", self.host_ipc.is_some()),
            ("hostNetwork", self.host_network.is_some()),
            ("hostPID", self.host_pid.is_some()),
            ("hostname", self.hostname.is_some()),
            ("initContainers", self.init_containers.is_some()),
            ("nodeName", self.node_name.is_some()),
            ("nodeSelector", self.node_selector.is_some()),
            ("priorityClassName", self.priority_class_name.is_some()),
            ("restartPolicy", self.restart_policy.is_some()),
            ("runtimeClassName", self.runtime_class_name.is_some()),
            ("schedulerName", self.scheduler_name.is_some()),
            (
                "shareProcessNamespace",
                self.share_process_namespace.is_some(),
            ),
            ("subdomain", self.subdomain.is_some()),
            (
                "terminationGracePeriodSeconds",
                self.termination_grace_period_seconds.is_some(),
            ),
            ("tolerations", self.tolerations.is_some()),
            (
                "topologySpreadConstraints",
                self.topology_spread_constraints.is_some(),
            ),
        ];
        fields.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }

    /// The serving container: the one with a port (with sidecars, exactly one has), else the
    /// first.
    pub fn container(&self) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| !c.ports.is_empty())
            .or(self.containers.first())
    }

    /// Index of the serving container in `containers`.
    pub fn serving_index(&self) -> usize {
        self.containers
            .iter()
            .position(|c| !c.ports.is_empty())
            .unwrap_or(0)
    }

    /// The port the app listens on: the serving container's first port, else 8080.
    pub fn user_port(&self) -> i32 {
        self.serving_port()
            .map(|p| p.container_port)
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_USER_PORT)
    }

    /// `responseStartTimeoutSeconds` as a duration (unset or 0: none).
    pub fn response_start_timeout(&self) -> Option<std::time::Duration> {
        positive_seconds(self.response_start_timeout_seconds)
    }

    /// `idleTimeoutSeconds` as a duration (unset or 0: none).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        positive_seconds(self.idle_timeout_seconds)
    }

    /// Whether the app speaks h2c: its port is named `h2c` (Knative's content negotiation).
    pub fn is_h2c(&self) -> bool {
        self.serving_port()
            .and_then(|p| p.name.as_deref())
            .is_some_and(|n| n == "h2c")
    }

    fn serving_port(&self) -> Option<&ContainerPort> {
        self.containers.iter().find_map(|c| c.ports.first())
    }
}

/// `spec.template.spec.containers[]`: the Container fields Knative's `ContainerMask` allows,
/// plus the disallowed ones as raw values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Container name (defaulted to `user-container`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Image reference (Kubernetes runtime).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Entrypoint (what the standalone runtime runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment from ConfigMaps / Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// At most one port: the one the app serves on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Startup probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// Resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Image pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Termination message path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    /// Termination message policy (`File` or `FallbackToLogsOnError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    /// Volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// `lifecycle` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    /// `stdin` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Value>,
    /// `stdinOnce` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_once: Option<Value>,
    /// `tty` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Value>,
    /// `volumeDevices` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_devices: Option<Value>,
    /// `resizePolicy` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_policy: Option<Value>,
    /// `restartPolicy` (disallowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Value>,
}

impl Container {
    /// The Container fields set here that Knative disallows.
    pub fn disallowed_fields(&self) -> Vec<&'static str> {
        [
            ("lifecycle", self.lifecycle.is_some()),
            ("resizePolicy", self.resize_policy.is_some()),
            ("restartPolicy", self.restart_policy.is_some()),
            ("stdin", self.stdin.is_some()),
            ("stdinOnce", self.stdin_once.is_some()),
            ("tty", self.tty.is_some()),
            ("volumeDevices", self.volume_devices.is_some()),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect()
    }
}
