//! Per-resource sync state of a node, shared by CSDS and the dump service.

use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Timestamp;

use crate::cache::Snapshot;
use crate::nodes::NodeState;
use crate::resource::Resource;

/// Whether a node holds a resource at the version the cache serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Not sent yet (not subscribed, or a push is pending).
    NotSent,
    /// Sent or an older version held; the current one is not ACKed yet.
    Sent,
    /// ACKed at the current version.
    Acked,
    /// The newest response of its type was rejected and this version is not held.
    Nacked,
}

/// Sync state of one resource of the node's group snapshot.
pub fn sync_state(node: &NodeState, r: &Resource) -> SyncState {
    let Some(t) = node.types.get(r.type_url()) else {
        return SyncState::NotSent;
    };
    if t.acked.get(r.name()).is_some_and(|(v, _)| v == r.version()) {
        return SyncState::Acked;
    }
    if t.rejected.contains_key(r.name()) {
        return SyncState::Nacked;
    }
    if t.last_nack.is_some() {
        return SyncState::Nacked;
    }
    let sent = t
        .sent
        .as_ref()
        .is_some_and(|s| s.names.iter().any(|n| n == r.name()));
    if sent || t.acked.contains_key(r.name()) {
        SyncState::Sent
    } else {
        SyncState::NotSent
    }
}

/// The resources of `snapshot` that concern a node: every resource of a type
/// it subscribed as a wildcard, and the subscribed names of other types. Types
/// the node never asked for are listed in full when `all_types` is set.
pub fn node_resources<'a>(
    node: &NodeState,
    snapshot: &'a Snapshot,
    type_filter: Option<&str>,
    all_types: bool,
) -> Vec<&'a Resource> {
    let mut out = Vec::new();
    for (type_url, ts) in &snapshot.types {
        if type_filter.is_some_and(|f| f != type_url) {
            continue;
        }
        match node.types.get(type_url) {
            Some(t) if !t.wildcard => {
                out.extend(
                    t.subscribed
                        .iter()
                        .filter_map(|n| ts.resources.get(n))
                        .map(|r| &**r),
                );
            }
            Some(_) => out.extend(ts.resources.values().map(|r| &**r)),
            None if all_types || type_filter.is_some() => {
                out.extend(ts.resources.values().map(|r| &**r))
            }
            None => {}
        }
    }
    out
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
