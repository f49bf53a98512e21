//! The gateway's `/status` document (read by `sluice status`).

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_xds::Nodes;

use super::Shared;

/// One KIngress in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IngressStatusView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `True`, `False` or `Unknown`.
    pub ready: String,
    /// Condition reason.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Hosts.
    pub hosts: Vec<String>,
    /// Probe hash being served.
    pub hash: String,
    /// `metadata.generation` of the KIngress as last read (`sluice up` stamps each version it
    /// generates, to tell whether this status is about its current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The `/status` document of a gateway.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GatewayStatus {
    /// Every KIngress of our class.
    pub ingresses: Vec<IngressStatusView>,
    /// Input problems (file, object, field, message).
    pub problems: Vec<ProblemView>,
    /// Envoy nodes.
    pub nodes: Vec<NodeView>,
    /// With `--gateway-pods`: each gateway Envoy pod and whether the last probes through it
    /// answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_pods: Vec<GatewayPodView>,
    /// `config-kourier` in force, and how it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<super::state::ConfigStatus>,
    /// Under `sluice up`: Knative Services, Revisions and Routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::up::ServingView>,
}

/// An input problem in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProblemView {
    /// File.
    pub file: String,
    /// Object.
    pub object: Option<String>,
    /// Field.
    pub field: Option<String>,
    /// Message.
    pub message: String,
}

/// A gateway pod in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GatewayPodView {
    /// Its address (from the gateway Service's EndpointSlices).
    pub address: String,
    /// Whether the last probes through it answered.
    pub ready: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub problem: String,
}

/// A node (one Envoy's ADS stream) in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// The stream's id (several Envoys may share a node id).
    #[serde(default)]
    pub stream: u64,
    /// Whether it is one of the gateway's own Envoys (node id `--node-id`): only those count
    /// for readiness.
    #[serde(default)]
    pub gateway: bool,
    /// Connected now.
    pub connected: bool,
    /// sotw / delta.
    pub mode: String,
    /// Per type: last ACKed version, or the NACK message.
    pub types: BTreeMap<String, String>,
}

/// The `/status` document for the current state.
pub(crate) fn status_of(s: &Shared, nodes: &Nodes, node_id: &str) -> GatewayStatus {
    let ingresses = s
        .state
        .ingresses()
        .iter()
        .map(|(k, st)| {
            let proven =
                st.served_hash.is_some() && s.readiness.proven.get(k) == st.served_hash.as_ref();
            let (ready, reason, message) = match (&st.error, proven) {
                (Some(e), _) => (
                    "False".to_string(),
                    st.reason.clone().unwrap_or_default(),
                    if st.served_hash.is_some() {
                        format!("{e} (the previous configuration keeps serving)")
                    } else {
                        e.clone()
                    },
                ),
                (None, true) => ("True".into(), String::new(), String::new()),
                (None, false) => (
                    "Unknown".into(),
                    "Uninitialized".into(),
                    s.readiness
                        .waiting
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| "waiting for Envoy".into()),
                ),
            };
            IngressStatusView {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                ready,
                reason,
                message,
                hosts: st.hosts.iter().map(|(h, _)| h.clone()).collect(),
                hash: st.served_hash.clone().unwrap_or_default(),
                generation: st.ingress.metadata.generation,
            }
        })
        .collect();
    let problems = s
        .problems
        .iter()
        .map(|p| ProblemView {
            file: p.file.display().to_string(),
            object: p.object.clone(),
            field: p.field.clone(),
            message: p.message.clone(),
        })
        .collect();
    let nodes = nodes.inspect(|all| {
        all.into_iter()
            .map(|n| NodeView {
                id: n.node.id.clone(),
                stream: n.stream,
                gateway: n.id() == node_id,
                connected: n.connected,
                mode: n.mode.as_str().to_string(),
                types: n
                    .types
                    .iter()
                    .map(|(t, st)| {
                        let v = match (&st.last_nack, &st.acked_version) {
                            (Some(nack), _) => format!("NACK {}: {}", nack.version, nack.error),
                            (None, Some(v)) => format!("ACK {v}"),
                            (None, None) => "pending".into(),
                        };
                        (sluice_xds::resource::short_name(t).to_string(), v)
                    })
                    .collect(),
            })
            .collect()
    });
    GatewayStatus {
        ingresses,
        problems,
        nodes,
        gateway_pods: s
            .readiness
            .pods
            .iter()
            .map(|(ip, problem)| GatewayPodView {
                address: ip.to_string(),
                ready: problem.is_none(),
                problem: problem.clone().unwrap_or_default(),
            })
            .collect(),
        config: Some(s.state.config_status()),
        serving: None,
    }
}
