//! The serving section of `/status` under `sluice up`: Services, Revisions with their
//! instances, and Routes with their traffic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sluice_serving::serving::Key;

use super::controller::{Controller, IngressReport, RevisionRow, RouteRow, ServiceRow};
use crate::autoscale::ScalingView;
use crate::gateway::{GatewayStatus, ServingStatusFn};
use crate::runtime::ProcessRuntime;

/// What `sluice up` adds to `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingView {
    /// The state directory (created revisions, `logs/`).
    pub state_dir: String,
    /// Knative Services.
    pub services: Vec<ServiceRow>,
    /// Revisions with their instances.
    pub revisions: Vec<RevisionView>,
    /// Routes with their traffic.
    pub routes: Vec<RouteRow>,
}

/// A Revision and its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionView {
    /// The Revision.
    #[serde(flatten)]
    pub revision: RevisionRow,
    /// Its instances (including crashed and stopping ones).
    pub instances: Vec<InstanceView>,
    /// The autoscaler's view (absent for a Revision it does not scale: a stopped one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingView>,
}

/// One instance of a Revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// `<revision>-<index>`.
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// starting, ready, unready, crashed (restart in N ms), stopping.
    pub state: String,
    /// Whether it gets traffic.
    pub ready: bool,
    /// Restarts after exits.
    pub restarts: u32,
    /// How the last unexpected exit ended, or the last start error.
    pub last_exit: String,
    /// A reserved instance (`knative.aliyun.com/reserve-instance`) rather than a standard one.
    #[serde(default)]
    pub reserved: bool,
    /// Its process (the leader of its process group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its CPU niceness (reserved instances run at a lower priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
}

/// The serving section of `/status`, computed when asked.
pub(super) fn status_fn(
    controller: Arc<Mutex<Controller>>,
    runtime: ProcessRuntime,
    state_dir: PathBuf,
    scaling: Arc<Mutex<BTreeMap<Key, ScalingView>>>,
) -> ServingStatusFn {
    Arc::new(move |gateway: &GatewayStatus| {
        let by_key: std::collections::HashMap<(&str, &str), &crate::gateway::IngressStatusView> =
            gateway
                .ingresses
                .iter()
                .map(|i| ((i.namespace.as_str(), i.name.as_str()), i))
                .collect();
        let report = |key: &Key| {
            by_key
                .get(&(key.namespace.as_str(), key.name.as_str()))
                .map(|i| IngressReport {
                    ready: i.ready.clone(),
                    reason: i.reason.clone(),
                    message: i.message.clone(),
                    generation: i.generation,
                })
        };
        let (services, routes, revisions) = {
            let c = controller.lock().unwrap_or_else(|e| e.into_inner());
            c.view(report)
        };
        let revisions = revisions
            .into_iter()
            .map(|revision| {
                let rk = sluice_autoscaler::RevisionKey::new(&revision.namespace, &revision.name);
                let instances = runtime
                    .instances(&rk)
                    .into_iter()
                    .map(|i| InstanceView {
                        name: i.name.clone(),
                        addr: i.addr.to_string(),
                        state: i.state.to_string(),
                        ready: i.ready,
                        restarts: i.restarts,
                        last_exit: match (&i.last_error, &i.last_exit) {
                            (Some(e), _) => e.clone(),
                            (None, Some(exit)) => exit.to_string(),
                            (None, None) => String::new(),
                        },
                        reserved: i.reserved,
                        pid: i.pid,
                        nice: i.pid.and_then(super::usage::niceness),
                    })
                    .collect();
                let scaling = scaling
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&Key::new(&revision.namespace, &revision.name))
                    .cloned();
                RevisionView {
                    revision,
                    instances,
                    scaling,
                }
            })
            .collect();
        ServingView {
            state_dir: state_dir.display().to_string(),
            services,
            revisions,
            routes,
        }
    })
}
