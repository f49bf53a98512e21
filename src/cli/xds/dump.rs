//! `sluice xds dump`: the snapshot a node is served, as a table (type, name,
//! version, generation, ACK state) or as a document of full Envoy resources
//! in JSON or YAML.

use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::anyhow;
use envoy_types::pb::google::protobuf::Any;
use serde::Serialize;
use sluice_proto::xds::v1::{AckState, GetSnapshotResponse, SnapshotResource};
use sluice_xds::resource::{push_rank, short_name};

use super::CliError;
use super::nodes::{mode, nacks};
use crate::table::Table;

/// The table, a summary line, and the node's NACKs.
pub(super) fn table(s: &GetSnapshotResponse, now: SystemTime) -> String {
    let resources = sorted(&s.resources);
    let mut t = Table::new(["TYPE", "NAME", "VERSION", "GEN", "STATE"]);
    for r in &resources {
        t.row([
            short_name(&r.type_url).to_string(),
            r.name.clone(),
            r.version.clone(),
            r.generation.to_string(),
            state(r.ack_state).to_string(),
        ]);
    }
    let mut out = if t.is_empty() {
        String::new()
    } else {
        t.render()
    };
    let _ = writeln!(out, "{}", summary(s));
    out.push_str(&certificates(&resources, now));
    if let Some(n) = &s.node {
        out.push_str(&nacks(std::slice::from_ref(n), now));
    }
    out
}

/// `node gw (delta, connected), group gw, generation 14: 3 resources: 2 ACKED, 1 NACKED`.
fn summary(s: &GetSnapshotResponse) -> String {
    let mut line = match &s.node {
        Some(n) => format!(
            "node {} ({}, {}), group {}, ",
            n.node_id,
            mode(n.mode),
            if n.connected {
                "connected"
            } else {
                "disconnected"
            },
            n.group
        ),
        None => String::new(),
    };
    let _ = write!(
        line,
        "generation {}: {} resource{}",
        s.generation,
        s.resources.len(),
        if s.resources.len() == 1 { "" } else { "s" }
    );
    let counts: Vec<String> = ["ACKED", "SENT", "NOT_SENT", "NACKED"]
        .into_iter()
        .filter_map(|label| {
            let n = s
                .resources
                .iter()
                .filter(|r| state(r.ack_state) == label)
                .count();
            (n > 0).then(|| format!("{n} {label}"))
        })
        .collect();
    if !counts.is_empty() {
        let _ = write!(line, ": {}", counts.join(", "));
    }
    line
}

/// The certificates TLS secrets carry (the keys themselves are never sent to debug clients),
/// one paragraph per secret; empty when there is none.
fn certificates(resources: &[&SnapshotResource], now: SystemTime) -> String {
    let mut out = String::new();
    for r in resources
        .iter()
        .filter(|r| !r.certificates.is_empty() || r.redacted)
    {
        if out.is_empty() {
            out.push_str("\nSecrets (key material is [redacted]: it goes to Envoy only):\n");
        }
        let _ = writeln!(
            out,
            "  {} {}{}",
            short_name(&r.type_url),
            r.name,
            if r.redacted { "  [key redacted]" } else { "" }
        );
        for c in &r.certificates {
            if !c.error.is_empty() {
                let _ = writeln!(out, "    certificate: {}", c.error);
                continue;
            }
            let _ = writeln!(out, "    subject {}", c.subject);
            if !c.sans.is_empty() {
                let _ = writeln!(out, "      SANs {}", c.sans.join(", "));
            }
            let _ = writeln!(out, "      issuer {}", c.issuer);
            let _ = writeln!(
                out,
                "      valid {} to {}{}  serial {}",
                day(c.not_before.as_ref()),
                day(c.not_after.as_ref()),
                expiry(c.not_after.as_ref(), now),
                c.serial
            );
        }
    }
    out
}

/// `2026-12-07` (UTC) from a protobuf timestamp.
fn day(t: Option<&envoy_types::pb::google::protobuf::Timestamp>) -> String {
    let Some(t) = t else {
        return "?".to_string();
    };
    let days = t.seconds.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ` (expired)` or ` (expires in N days)`.
fn expiry(t: Option<&envoy_types::pb::google::protobuf::Timestamp>, now: SystemTime) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if t.seconds <= now {
        " (EXPIRED)".to_string()
    } else {
        format!(" (expires in {} days)", (t.seconds - now) / 86_400)
    }
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn state(s: i32) -> &'static str {
    match AckState::try_from(s) {
        Ok(AckState::Acked) => "ACKED",
        Ok(AckState::Sent) => "SENT",
        Ok(AckState::NotSent) => "NOT_SENT",
        Ok(AckState::Nacked) => "NACKED",
        _ => "UNKNOWN",
    }
}

/// Resources in push order (secrets, clusters, endpoints, listeners, routes),
/// then by name.
fn sorted(resources: &[SnapshotResource]) -> Vec<&SnapshotResource> {
    let mut v: Vec<_> = resources.iter().collect();
    v.sort_by(|a, b| (push_rank(&a.type_url), &a.name).cmp(&(push_rank(&b.type_url), &b.name)));
    v
}

/// The dump document (`-o json` / `-o yaml`).
#[derive(Debug, Serialize)]
struct Document {
    node: String,
    generation: u64,
    resources: Vec<Entry>,
}

#[derive(Debug, Serialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    version: String,
    generation: u64,
    state: &'static str,
    resource: serde_json::Value,
    /// Whether key material was replaced by `[redacted]`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
    /// What a TLS secret's certificates say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    certificates: Vec<serde_json::Value>,
}

/// `-o json`: pretty JSON, one document.
pub(super) fn json(s: &GetSnapshotResponse) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(&document(s)?)
        .map_err(|e| CliError::Other(anyhow!("cannot render JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// `-o yaml`.
pub(super) fn yaml(s: &GetSnapshotResponse) -> Result<String, CliError> {
    serde_yaml::to_string(&document(s)?)
        .map_err(|e| CliError::Other(anyhow!("cannot render YAML: {e}")))
}

fn document(s: &GetSnapshotResponse) -> Result<Document, CliError> {
    let to_json = envoy_json()?;
    let resources = sorted(&s.resources)
        .into_iter()
        .map(|r| Entry {
            kind: short_name(&r.type_url).to_string(),
            name: r.name.clone(),
            version: r.version.clone(),
            generation: r.generation,
            state: state(r.ack_state),
            resource: match &r.resource {
                Some(any) => to_json(any).unwrap_or_else(|e| {
                    eprintln!("sluice: {} {:?}: {e}", short_name(&r.type_url), r.name);
                    serde_json::json!({ "@type": any.type_url, "error": e })
                }),
                None => serde_json::Value::Null,
            },
            redacted: r.redacted,
            certificates: r
                .certificates
                .iter()
                .map(|c| {
                    if !c.error.is_empty() {
                        return serde_json::json!({ "error": c.error });
                    }
                    serde_json::json!({
                        "subject": c.subject,
                        "sans": c.sans,
                        "issuer": c.issuer,
                        "notBefore": day(c.not_before.as_ref()),
                        "notAfter": day(c.not_after.as_ref()),
                        "serial": c.serial,
                    })
                })
                .collect(),
        })
        .collect();
    Ok(Document {
        node: s
            .node
            .as_ref()
            .map(|n| n.node_id.clone())
            .unwrap_or_default(),
        generation: s.generation,
        resources,
    })
}

/// A function rendering an encoded Envoy resource as its canonical protobuf
/// JSON, through the descriptor pool of `sluice-proto` (Envoy's and Sluice's
/// types), so nested `Any` fields (an HTTP connection manager's
/// `typed_config`, TLS contexts) expand too.
fn envoy_json() -> Result<impl Fn(&Any) -> Result<serde_json::Value, String>, CliError> {
    let pool = sluice_proto::descriptor_pool()
        .map_err(|e| CliError::Other(anyhow!("Envoy's protobuf descriptors do not load: {e}")))?;
    Ok(move |any: &Any| {
        let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
        let desc = pool
            .get_message_by_name(name)
            .ok_or_else(|| format!("type {name} is not in Sluice's descriptor set"))?;
        // An empty message of that type, then the bytes merged in: the same as
        // `prost_reflect::DynamicMessage::decode(desc, bytes)`. prost-reflect
        // is not a direct dependency of this package, so the empty message is
        // made through its serde seed (`MessageDescriptor: DeserializeSeed`).
        let mut message = serde::de::DeserializeSeed::deserialize(desc, serde_json::json!({}))
            .map_err(|e| format!("cannot make an empty {name}: {e}"))?;
        prost::Message::merge(&mut message, any.value.as_slice())
            .map_err(|e| format!("does not decode as {name}: {e}"))?;
        serde_json::to_value(&message).map_err(|e| format!("cannot render {name} as JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    };
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    use prost::{Message, Name};
    use sluice_proto::xds::v1::{NodeStatus, XdsMode};
    use sluice_xds::resource::{CLUSTER, LISTENER};

    use super::*;

    fn any<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "default/hello-00001:80".into(),
            connect_timeout: Some(PbDuration {
                seconds: 5,
                nanos: 0,
            }),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(3)),
            ..Default::default()
        }
    }

    fn listener() -> Listener {
        let hcm = HttpConnectionManager {
            stat_prefix: "external".into(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "external".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        Listener {
            name: "external-http".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn snapshot() -> GetSnapshotResponse {
        let c = cluster();
        let l = listener();
        GetSnapshotResponse {
            node: Some(NodeStatus {
                node_id: "sluice-gateway".into(),
                group: "gw".into(),
                connected: true,
                mode: XdsMode::Delta as i32,
                ..Default::default()
            }),
            generation: 14,
            resources: vec![
                SnapshotResource {
                    type_url: LISTENER.into(),
                    name: l.name.clone(),
                    version: "00000000000000aa".into(),
                    generation: 14,
                    ack_state: AckState::Sent as i32,
                    resource: Some(any(&l)),
                    ..Default::default()
                },
                SnapshotResource {
                    type_url: CLUSTER.into(),
                    name: c.name.clone(),
                    version: "2f1c0b9e4d3a8877".into(),
                    generation: 3,
                    ack_state: AckState::Acked as i32,
                    resource: Some(any(&c)),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn cluster_renders_as_canonical_json() {
        let to_json = envoy_json().unwrap();
        let v = to_json(&any(&cluster())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "default/hello-00001:80",
                "type": "EDS",
                "connectTimeout": "5s",
            })
        );
    }

    #[test]
    fn json_document_has_the_agreed_shape_and_expands_nested_any() {
        let text = json(&snapshot()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(doc["node"], "sluice-gateway");
        assert_eq!(doc["generation"], 14);
        let rs = doc["resources"].as_array().unwrap();
        // Clusters before listeners (push order).
        assert_eq!(rs[0]["type"], "clusters");
        assert_eq!(rs[0]["name"], "default/hello-00001:80");
        assert_eq!(rs[0]["version"], "2f1c0b9e4d3a8877");
        assert_eq!(rs[0]["generation"], 3);
        assert_eq!(rs[0]["state"], "ACKED");
        assert_eq!(rs[0]["resource"]["connectTimeout"], "5s");
        assert_eq!(rs[1]["state"], "SENT");
        let hcm = &rs[1]["resource"]["filterChains"][0]["filters"][0]["typedConfig"];
        assert_eq!(
            hcm["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        assert_eq!(hcm["statPrefix"], "external");
        assert_eq!(hcm["rds"]["routeConfigName"], "external");
    }

    #[test]
    fn yaml_document_parses_back_to_the_json_one() {
        let s = snapshot();
        let from_yaml: serde_json::Value =
            serde_yaml::from_str(&yaml(&s).unwrap()).expect("valid YAML");
        let from_json: serde_json::Value = serde_json::from_str(&json(&s).unwrap()).unwrap();
        assert_eq!(from_yaml, from_json);
    }

    #[test]
    fn undecodable_resource_is_reported_not_fatal() {
        let mut s = snapshot();
        s.resources[1].resource = Some(Any {
            type_url: CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        });
        let doc: serde_json::Value = serde_json::from_str(&json(&s).unwrap()).unwrap();
        let r = &doc["resources"][0]["resource"];
        assert_eq!(r["@type"], CLUSTER);
        assert!(
            r["error"].as_str().unwrap().contains("does not decode"),
            "{r}"
        );
    }

    #[test]
    fn table_lists_resources_in_push_order_with_a_summary() {
        let out = table(&snapshot(), SystemTime::now());
        let expected = "\
TYPE        NAME                     VERSION            GEN   STATE
clusters    default/hello-00001:80   2f1c0b9e4d3a8877   3     ACKED
listeners   external-http            00000000000000aa   14    SENT
node sluice-gateway (delta, connected), group gw, generation 14: 2 resources: 1 ACKED, 1 SENT
";
        assert_eq!(out, expected, "\n{out}");
    }
}
