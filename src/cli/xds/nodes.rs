//! `sluice xds nodes`: one row per Envoy node, one column per resource type,
//! and the NACKs (with Envoy's error message) below the table.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::SystemTime;

use sluice_proto::xds::v1::{NodeStatus, TypeStatus, XdsMode};
use sluice_xds::resource::{push_rank, short_name};

use super::ago;
use crate::table::Table;

/// The nodes table followed by the NACK list.
pub(super) fn render(nodes: &[NodeStatus], now: SystemTime) -> String {
    let types: BTreeSet<(usize, &str)> = nodes
        .iter()
        .flat_map(|n| &n.types)
        .map(|t| (push_rank(&t.type_url), t.type_url.as_str()))
        .collect();
    let mut table = Table::new(
        ["NODE", "CLUSTER", "MODE", "CONNECTED", "ENVOY"]
            .into_iter()
            .map(String::from)
            .chain(types.iter().map(|(_, t)| short_name(t).to_uppercase())),
    );
    for n in nodes {
        let connected = if n.connected {
            format!("yes ({})", ago(n.connected_since.as_ref(), now))
        } else if n.disconnected_at.is_some() {
            format!("no (closed {} ago)", ago(n.disconnected_at.as_ref(), now))
        } else {
            "no".to_string()
        };
        // Several streams under one node id (replicas, or a reconnect): tell them apart.
        let shared = nodes.iter().filter(|m| m.node_id == n.node_id).count() > 1;
        let cells = [
            if shared {
                format!("{} #{}", n.node_id, n.stream)
            } else {
                n.node_id.clone()
            },
            or_dash(&n.cluster),
            mode(n.mode).to_string(),
            connected,
            envoy_version(&n.user_agent),
        ];
        let per_type = types
            .iter()
            .map(|(_, t)| match n.types.iter().find(|s| s.type_url == *t) {
                Some(s) => type_cell(s),
                None => "-".to_string(),
            });
        table.row(cells.into_iter().chain(per_type));
    }
    let mut out = table.render();
    out.push_str(&nacks(nodes, now));
    out
}

/// `v12 ACK`, `v13 NACK`, `v13 SENT` (no answer yet), `-` (nothing sent).
pub(super) fn type_cell(t: &TypeStatus) -> String {
    if let Some(n) = &t.last_nack {
        return format!("v{} NACK", n.version);
    }
    if !t.sent_version.is_empty() && t.sent_version != t.acked_version {
        return format!("v{} SENT", t.sent_version);
    }
    if !t.acked_version.is_empty() {
        return format!("v{} ACK", t.acked_version);
    }
    "-".to_string()
}

/// Every standing NACK, one paragraph each; empty when there is none.
pub(super) fn nacks(nodes: &[NodeStatus], now: SystemTime) -> String {
    let mut out = String::new();
    for n in nodes {
        let mut types: Vec<_> = n.types.iter().filter(|t| t.last_nack.is_some()).collect();
        types.sort_by_key(|t| push_rank(&t.type_url));
        for t in types {
            let Some(nack) = &t.last_nack else { continue };
            if out.is_empty() {
                out.push_str("\nNACKs:\n");
            }
            let _ = writeln!(
                out,
                "  {} {} v{} (nonce {}, {} ago):",
                n.node_id,
                short_name(&t.type_url),
                nack.version,
                nack.nonce,
                ago(nack.at.as_ref(), now)
            );
            for line in nack.error.trim().lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

pub(super) fn mode(m: i32) -> &'static str {
    match XdsMode::try_from(m) {
        Ok(XdsMode::Sotw) => "sotw",
        Ok(XdsMode::Delta) => "delta",
        _ => "-",
    }
}

/// The version part of Envoy's user agent (`envoy 1.31.2` → `1.31.2`); other
/// clients keep their name.
fn envoy_version(user_agent: &str) -> String {
    let ua = user_agent.trim();
    match ua.strip_prefix("envoy") {
        Some(v) if v.is_empty() || v.starts_with(' ') => or_dash(v.trim()),
        _ => or_dash(ua),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::google::protobuf::Timestamp;
    use sluice_proto::xds::v1::Nack;
    use sluice_xds::resource::{CLUSTER, LISTENER, ROUTE};

    use super::*;

    fn at(now: SystemTime, ago: u64) -> Option<Timestamp> {
        let t = now - Duration::from_secs(ago);
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        Some(Timestamp {
            seconds: d.as_secs() as i64,
            nanos: 0,
        })
    }

    fn acked(type_url: &str, v: &str) -> TypeStatus {
        TypeStatus {
            type_url: type_url.into(),
            sent_version: v.into(),
            acked_version: v.into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_has_a_column_per_type_and_nacks_below() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let nodes = vec![
            NodeStatus {
                node_id: "sluice-gateway".into(),
                cluster: "sluice".into(),
                user_agent: "envoy 1.31.2".into(),
                connected: true,
                mode: XdsMode::Delta as i32,
                connected_since: at(now, 192),
                types: vec![
                    acked(ROUTE, "13"),
                    acked(CLUSTER, "12"),
                    TypeStatus {
                        type_url: LISTENER.into(),
                        sent_version: "14".into(),
                        acked_version: "9".into(),
                        last_nack: Some(Nack {
                            version: "14".into(),
                            nonce: "2a".into(),
                            error: "listener 'x': bad address\nsecond line".into(),
                            at: at(now, 5),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            NodeStatus {
                node_id: "old".into(),
                user_agent: "".into(),
                connected: false,
                mode: XdsMode::Sotw as i32,
                types: vec![TypeStatus {
                    type_url: CLUSTER.into(),
                    sent_version: "3".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let out = render(&nodes, now);
        let expected = "\
NODE             CLUSTER   MODE    CONNECTED     ENVOY    CLUSTERS   LISTENERS   ROUTES
sluice-gateway   sluice    delta   yes (3m12s)   1.31.2   v12 ACK    v14 NACK    v13 ACK
old              -         sotw    no            -        v3 SENT    -           -

NACKs:
  sluice-gateway listeners v14 (nonce 2a, 5s ago):
    listener 'x': bad address
    second line
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn cells_say_what_the_node_holds() {
        assert_eq!(type_cell(&TypeStatus::default()), "-");
        assert_eq!(type_cell(&acked(CLUSTER, "7")), "v7 ACK");
        let mut t = acked(CLUSTER, "7");
        t.sent_version = "8".into();
        assert_eq!(type_cell(&t), "v8 SENT");
    }

    #[test]
    fn envoy_column_shows_the_version() {
        assert_eq!(envoy_version("envoy 1.31.2"), "1.31.2");
        assert_eq!(envoy_version(" "), "-");
        assert_eq!(envoy_version("grpc-go 1.60"), "grpc-go 1.60");
        assert_eq!(envoy_version("envoyish 2"), "envoyish 2");
    }
}
