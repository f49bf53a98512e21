//! `sluice xds watch`: one line per xDS event, as it happens, until Ctrl-C or
//! until the server goes away.

use std::time::Duration;

use anyhow::anyhow;
use sluice_proto::xds::v1::snapshot_debug_client::SnapshotDebugClient;
use sluice_proto::xds::v1::{WatchRequest, XdsEvent, xds_event::Kind};
use sluice_xds::resource::short_name;
use tonic::Code;
use tonic::transport::Channel;

use super::nodes::mode;
use super::{CliError, print, rpc_error};
use crate::table;

/// Resource names shown in a push line before the rest is counted.
const NAMES_SHOWN: usize = 5;

/// Streams events to stdout until Ctrl-C (success) or the server ends the
/// stream (an error naming the address).
pub(super) async fn run(
    client: SnapshotDebugClient<Channel>,
    addr: &str,
    node: String,
) -> Result<(), CliError> {
    let subscribe = |mut client: SnapshotDebugClient<Channel>| {
        let node_id = node.clone();
        async move { client.watch(WatchRequest { node_id }).await }
    };
    let mut events = subscribe(client.clone())
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    eprintln!(
        "watching xDS events at {addr}{} (Ctrl-C to stop)",
        if node.is_empty() {
            String::new()
        } else {
            format!(" for node {node}")
        }
    );
    let mut node_width = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = events.message() => next,
        };
        match next {
            Ok(Some(e)) => {
                node_width = node_width.max(e.node_id.chars().count());
                print(&line(&e, node_width))?;
            }
            Ok(None) => {
                return Err(CliError::Other(anyhow!(
                    "the xDS server at {addr} ended the event stream (shutting down?)"
                )));
            }
            // The server drops watchers that fall behind; pick up again.
            Err(s) if s.code() == Code::ResourceExhausted => {
                eprintln!("sluice: {}; resubscribing", s.message());
                events = subscribe(client.clone())
                    .await
                    .map_err(|s| rpc_error(addr, s))?
                    .into_inner();
            }
            // The connection broke (server killed, network gone).
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) =>
            {
                return Err(CliError::Other(anyhow!(
                    "lost the xDS server at {addr}: {}",
                    s.message()
                )));
            }
            Err(s) => return Err(rpc_error(addr, s)),
        }
    }
}

/// One event as a line: time (UTC), node, kind, type, then what the kind has
/// to say (version, nonce, resources, size, latency, error).
pub(super) fn line(e: &XdsEvent, node_width: usize) -> String {
    let kind = Kind::try_from(e.kind).unwrap_or(Kind::Unspecified);
    let label = match kind {
        Kind::Connect => "CONNECT",
        Kind::Disconnect => "DISCONNECT",
        Kind::Push => "PUSH",
        Kind::Ack => "ACK",
        Kind::Nack => "NACK",
        Kind::Unspecified => "?",
    };
    let time =
        e.at.as_ref()
            .map(|t| clock(t.seconds, t.nanos))
            .unwrap_or_else(|| "-".repeat(12));
    let mut fields = Vec::new();
    match kind {
        Kind::Connect | Kind::Disconnect => {
            fields.push(mode(e.mode).to_string());
            if !e.detail.is_empty() {
                fields.push(one_line(&e.detail));
            }
        }
        Kind::Push | Kind::Ack | Kind::Nack | Kind::Unspecified => {
            fields.push(format!("{:<9}", short_name(&e.type_url)));
            fields.push(format!("v{}", e.version));
            fields.push(format!("nonce={}", e.nonce));
            if kind == Kind::Push {
                fields.push(resources(&e.resources));
                fields.push(table::bytes(e.bytes));
            } else if e.latency_us > 0 || kind != Kind::Unspecified {
                fields.push(table::latency(Duration::from_micros(e.latency_us)));
            }
            if kind == Kind::Nack {
                fields.push(format!("error: {}", one_line(&e.detail)));
            }
        }
    }
    let text = format!(
        "{time}  {:<node_width$}  {label:<10}  {}",
        e.node_id,
        fields.join("  ")
    );
    format!("{}\n", text.trim_end())
}

/// `3 resources: a, b, -c` — removals keep their `-`; long lists are cut.
fn resources(names: &[String]) -> String {
    let count = match names.len() {
        1 => "1 resource".to_string(),
        n => format!("{n} resources"),
    };
    if names.is_empty() {
        return count;
    }
    let mut shown = names
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        shown.push_str(&format!(", … (+{})", names.len() - NAMES_SHOWN));
    }
    format!("{count}: {shown}")
}

/// Envoy error messages can span lines; a watch line must not.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `HH:MM:SS.mmm` (UTC) of a Unix timestamp.
fn clock(seconds: i64, nanos: i32) -> String {
    let s = seconds.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        nanos.max(0) / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Timestamp;
    use sluice_proto::xds::v1::XdsMode;
    use sluice_xds::resource::{CLUSTER, LISTENER};

    use super::*;

    fn event(kind: Kind) -> XdsEvent {
        XdsEvent {
            kind: kind as i32,
            // 2023-11-14T22:13:20.250Z
            at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            node_id: "gw".into(),
            mode: XdsMode::Delta as i32,
            ..Default::default()
        }
    }

    #[test]
    fn push_line_truncates_long_name_lists() {
        let mut e = event(Kind::Push);
        e.type_url = CLUSTER.into();
        e.version = "12".into();
        e.nonce = "1f".into();
        e.resources = (1..=7)
            .map(|i| format!("c{i}"))
            .chain(["-old".to_string()])
            .collect();
        e.bytes = 1536;
        assert_eq!(
            line(&e, 4),
            "22:13:20.250  gw    PUSH        clusters   v12  nonce=1f  \
             8 resources: c1, c2, c3, c4, c5, … (+3)  1.5KiB\n"
        );
    }

    #[test]
    fn nack_line_carries_latency_and_the_error_on_one_line() {
        let mut e = event(Kind::Nack);
        e.type_url = LISTENER.into();
        e.version = "14".into();
        e.nonce = "2a".into();
        e.latency_us = 3_240;
        e.detail = "Error adding listener:\n  bad address".into();
        assert_eq!(
            line(&e, 2),
            "22:13:20.250  gw  NACK        listeners  v14  nonce=2a  3.2ms  \
             error: Error adding listener: bad address\n"
        );
    }

    #[test]
    fn connect_and_disconnect_show_the_mode_and_reason() {
        assert_eq!(
            line(&event(Kind::Connect), 2),
            "22:13:20.250  gw  CONNECT     delta\n"
        );
        let mut e = event(Kind::Disconnect);
        e.detail = "stream closed by client".into();
        assert_eq!(
            line(&e, 2),
            "22:13:20.250  gw  DISCONNECT  delta  stream closed by client\n"
        );
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0, 0), "00:00:00.000");
        assert_eq!(clock(86_399, 999_999_999), "23:59:59.999");
    }
}
