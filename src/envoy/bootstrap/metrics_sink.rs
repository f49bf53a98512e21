//! `--metrics-sink HOST:PORT`: Envoy streams its stats every second to Sluice's autoscaler
//! (Envoy's MetricsService sink, served by
//! [`sluice_autoscaler::envoy_sink::EnvoySink`]), which sums each revision's in-flight requests
//! over every gateway Envoy: concurrency on the direct path without a queue-proxy.
//!
//! The sink sends every stat the bootstrap's `stats_matcher` keeps (a sink cannot be filtered
//! on its own), batched [`BATCH_SIZE`] families per message; histograms as histograms only.
//! The flush interval (1 s, Envoy's default is 5 s) also paces Envoy's other sinks.

use serde_yaml::Value;

/// The static cluster carrying the stream.
pub const METRICS_CLUSTER: &str = "sluice_metrics";
/// Families per message (well under gRPC's 4 MiB with Sluice's stat names).
pub const BATCH_SIZE: u32 = 5000;

/// Adds the sink, its cluster and a 1 s flush interval to the bootstrap `doc`.
pub(super) fn add_metrics_sink(doc: &mut Value, host: &str, port: u16) {
    let by_name = host.parse::<std::net::IpAddr>().is_err();
    let cluster = format!(
        r#"
name: {METRICS_CLUSTER}
type: {kind}
connect_timeout: 1s
load_assignment:
  cluster_name: {METRICS_CLUSTER}
  endpoints:
    - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: "{host}", port_value: {port}}}}}}}
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options: {{}}
"#,
        kind = if by_name { "STRICT_DNS" } else { "STATIC" },
        host = host.escape_default(),
    );
    let sink = format!(
        r#"
name: envoy.stat_sinks.metrics_service
typed_config:
  "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
  transport_api_version: V3
  batch_size: {BATCH_SIZE}
  histogram_emit_mode: HISTOGRAM
  grpc_service:
    envoy_grpc:
      cluster_name: {METRICS_CLUSTER}
      retry_policy:
        retry_back_off: {{base_interval: 0.5s, max_interval: 5s}}
"#
    );
    let (Ok(cluster), Ok(sink)) = (
        serde_yaml::from_str::<Value>(&cluster),
        serde_yaml::from_str::<Value>(&sink),
    ) else {
        return;
    };
    let Some(root) = doc.as_mapping_mut() else {
        return;
    };
    root.insert("stats_flush_interval".into(), "1s".into());
    root.insert("stats_sinks".into(), Value::Sequence(vec![sink]));
    if let Some(Value::Sequence(clusters)) = root
        .get_mut("static_resources")
        .and_then(|s| s.get_mut("clusters"))
    {
        clusters.push(cluster);
    }
}
