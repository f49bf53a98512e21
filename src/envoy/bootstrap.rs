//! The Envoy bootstrap: the template in `envoy/bootstrap.yaml` filled from [`BootstrapParams`].
//!
//! The bootstrap only tells Envoy who it is (node id and cluster), where Sluice's ADS server is
//! and where to serve its admin interface; every listener, route, cluster and secret then
//! arrives over ADS. Delta and state-of-the-world xDS differ only in `api_type`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde_yaml::{Mapping, Value};

/// The bootstrap template, embedded at build time.
const TEMPLATE: &str = include_str!("../../envoy/bootstrap.yaml");

/// Which ADS protocol variant Envoy speaks to Sluice (`--xds-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdsMode {
    /// Incremental xDS (`DELTA_GRPC`): only changed resources go over the wire. The default.
    #[default]
    Delta,
    /// State-of-the-world xDS (`GRPC`): every push carries the full set of a type.
    Sotw,
}

impl XdsMode {
    /// The value of `ads_config.api_type` in the Envoy bootstrap for this mode.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsMode::Delta => "DELTA_GRPC",
            XdsMode::Sotw => "GRPC",
        }
    }

    /// The command-line spelling: `delta` or `sotw`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdsMode::Delta => "delta",
            XdsMode::Sotw => "sotw",
        }
    }
}

impl fmt::Display for XdsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error from parsing an [`XdsMode`] that is neither `delta` nor `sotw`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown xDS mode {given:?}: expected `delta` (incremental, the default) or `sotw`")]
pub struct ParseXdsModeError {
    /// What was given.
    pub given: String,
}

impl FromStr for XdsMode {
    type Err = ParseXdsModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "delta" => Ok(XdsMode::Delta),
            "sotw" => Ok(XdsMode::Sotw),
            _ => Err(ParseXdsModeError {
                given: s.to_owned(),
            }),
        }
    }
}

/// What the bootstrap template is filled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapParams {
    /// Envoy's node id (`--node-id`); Sluice keeps one snapshot per node id.
    pub node_id: String,
    /// Envoy's node cluster.
    pub node_cluster: String,
    /// Sluice's gRPC (ADS) server address (`--xds`).
    pub xds: SocketAddr,
    /// Delta or state-of-the-world ADS (`--xds-mode`).
    pub mode: XdsMode,
    /// Where Envoy serves its admin interface (`--envoy-admin`); keep it on loopback.
    pub admin: SocketAddr,
    /// TLS (mutual, with a client certificate) to the xDS server, when it requires it.
    pub xds_tls: Option<XdsClientTls>,
    /// Control-plane endpoints (`host:port`, DNS names allowed) replacing `xds`: several
    /// replicas, or a Service name resolved by DNS (the cluster becomes `STRICT_DNS`). Envoy
    /// keeps one ADS stream, to one of them, and moves to another when it fails.
    pub xds_endpoints: Vec<(String, u16)>,
    /// A listener answering `GET /stats/prometheus` and `GET /ready` from the admin interface
    /// and nothing else (`--envoy-stats`), as Kourier's stats listener on port 9000: Prometheus
    /// scrapes Envoy there while the admin interface stays on loopback.
    pub stats: Option<SocketAddr>,
    /// Where Envoy streams its stats every second (`--metrics-sink`, HOST:PORT, DNS names
    /// allowed): Sluice's autoscaler, which sums each revision's concurrency over every gateway
    /// Envoy ([`metrics_sink`]).
    pub metrics_sink: Option<(String, u16)>,
}

/// How Envoy's ADS connection is secured (`sluice envoy bootstrap --xds-tls-…`): files Envoy
/// reads at start-up (in Kubernetes, a mounted Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsClientTls {
    /// Envoy's client certificate chain (PEM file).
    pub cert: String,
    /// Its private key (PEM file).
    pub key: String,
    /// The CA the xDS server's certificate must chain to (PEM file).
    pub ca: String,
    /// The server name sent as SNI and required among the server certificate's SANs; none:
    /// any certificate from the CA is accepted.
    pub server_name: Option<String>,
}

impl Default for BootstrapParams {
    fn default() -> Self {
        BootstrapParams {
            node_id: "sluice-gateway".to_owned(),
            node_cluster: "sluice".to_owned(),
            xds: SocketAddr::from(([127, 0, 0, 1], 18000)),
            mode: XdsMode::Delta,
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            xds_tls: None,
            xds_endpoints: Vec::new(),
            stats: None,
            metrics_sink: None,
        }
    }
}

/// Renders the Envoy bootstrap YAML for `params`.
///
/// String values are escaped for the template's double-quoted YAML scalars, so any node id or
/// cluster name yields valid YAML (Envoy itself may still reject odd names).
pub fn render(params: &BootstrapParams) -> String {
    let values: [(&str, String); 7] = [
        ("node_id", quoted_scalar(&params.node_id)),
        ("node_cluster", quoted_scalar(&params.node_cluster)),
        ("xds_host", params.xds.ip().to_string()),
        ("xds_port", params.xds.port().to_string()),
        ("admin_host", params.admin.ip().to_string()),
        ("admin_port", params.admin.port().to_string()),
        ("api_type", params.mode.api_type().to_owned()),
    ];
    let yaml = fill(TEMPLATE, &values);
    if params.xds_endpoints.is_empty()
        && params.stats.is_none()
        && params.xds_tls.is_none()
        && params.metrics_sink.is_none()
    {
        return yaml;
    }
    // The template is valid YAML whatever the values (they are escaped): edit it as a document.
    let Ok(mut doc) = serde_yaml::from_str::<Value>(&yaml) else {
        return yaml;
    };
    if !params.xds_endpoints.is_empty() {
        set_xds_endpoints(&mut doc, &params.xds_endpoints);
    }
    if let Some(stats) = params.stats {
        add_stats_listener(&mut doc, stats, params.admin);
    }
    if let Some((host, port)) = &params.metrics_sink {
        metrics_sink::add_metrics_sink(&mut doc, host, *port);
    }
    if let Some(tls) = &params.xds_tls {
        set_xds_tls(&mut doc, tls);
    }
    let Ok(body) = serde_yaml::to_string(&doc) else {
        return yaml;
    };
    let with = if params.xds_tls.is_some() {
        ", with mutual TLS to the xDS server"
    } else {
        ""
    };
    format!("# Sluice Envoy bootstrap (rendered by `sluice envoy bootstrap`{with}).\n{body}")
}

/// The stats listener's name, and the static cluster of the admin interface behind it.
pub const STATS_LISTENER: &str = "sluice_stats";
const STATS_ADMIN_CLUSTER: &str = "sluice_stats_admin";
/// The only paths the stats listener forwards to the admin interface.
pub const STATS_PATHS: [&str; 2] = ["/stats/prometheus", "/ready"];

/// The `sluice_xds` cluster (the template's first).
fn xds_cluster(doc: &mut Value) -> Option<&mut Mapping> {
    doc.get_mut("static_resources")?
        .get_mut("clusters")?
        .get_mut(0)?
        .as_mapping_mut()
}

/// Adds a static listener on `stats` that forwards [`STATS_PATHS`] (GET only) to the admin
/// interface and answers 404 to anything else.
fn add_stats_listener(doc: &mut Value, stats: SocketAddr, admin: SocketAddr) {
    let admin_ip = match admin.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "::1".to_string(),
        ip => ip.to_string(),
    };
    let routes: Vec<String> = STATS_PATHS
        .iter()
        .map(|path| {
            format!(
                r#"{{match: {{path: "{path}", headers: [{{name: ":method", string_match: {{exact: GET}}}}]}}, route: {{cluster: {STATS_ADMIN_CLUSTER}, timeout: 10s}}}}"#
            )
        })
        .collect();
    let listener = format!(
        r#"
name: {STATS_LISTENER}
address: {{socket_address: {{address: "{ip}", port_value: {port}}}}}
filter_chains:
  - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {STATS_LISTENER}
          route_config:
            virtual_hosts:
              - name: stats
                domains: ["*"]
                routes: [{routes}]
          http_filters:
            - name: envoy.filters.http.router
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        ip = stats.ip(),
        port = stats.port(),
        routes = routes.join(", "),
    );
    let cluster = format!(
        r#"
name: {STATS_ADMIN_CLUSTER}
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: {STATS_ADMIN_CLUSTER}
  endpoints:
    - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: "{admin_ip}", port_value: {port}}}}}}}
"#,
        port = admin.port(),
    );
    let (Ok(listener), Ok(cluster)) = (
        serde_yaml::from_str::<Value>(&listener),
        serde_yaml::from_str::<Value>(&cluster),
    ) else {
        return;
    };
    let Some(statics) = doc
        .get_mut("static_resources")
        .and_then(Value::as_mapping_mut)
    else {
        return;
    };
    statics.insert("listeners".into(), Value::Sequence(vec![listener]));
    if let Some(Value::Sequence(clusters)) = statics.get_mut("clusters") {
        clusters.push(cluster);
    }
}

/// Replaces the `sluice_xds` cluster's endpoints by `endpoints`, resolved by DNS
/// (`STRICT_DNS`, every address of every name) when any is a name.
fn set_xds_endpoints(doc: &mut Value, endpoints: &[(String, u16)]) {
    let by_name = endpoints
        .iter()
        .any(|(h, _)| h.parse::<std::net::IpAddr>().is_err());
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(host, port)| {
            let mut sa = Mapping::new();
            sa.insert("address".into(), host.as_str().into());
            sa.insert("port_value".into(), (*port as u64).into());
            let mut address = Mapping::new();
            address.insert("socket_address".into(), Value::Mapping(sa));
            let mut endpoint = Mapping::new();
            endpoint.insert("address".into(), Value::Mapping(address));
            let mut lb = Mapping::new();
            lb.insert("endpoint".into(), Value::Mapping(endpoint));
            Value::Mapping(lb)
        })
        .collect();
    let Some(cluster) = xds_cluster(doc) else {
        return;
    };
    if by_name {
        cluster.insert("type".into(), "STRICT_DNS".into());
    }
    if let Some(eps) = cluster
        .get_mut("load_assignment")
        .and_then(|l| l.get_mut("endpoints"))
        .and_then(|e| e.get_mut(0))
        .and_then(Value::as_mapping_mut)
    {
        eps.insert("lb_endpoints".into(), Value::Sequence(lb_endpoints));
    }
}

/// Puts a TLS transport socket on the `sluice_xds` cluster: Envoy presents its client
/// certificate and checks the server's against the CA (and its SAN against the server name,
/// when given). HTTP/2 is negotiated by ALPN, as gRPC over TLS requires.
fn set_xds_tls(doc: &mut Value, tls: &XdsClientTls) {
    let file = |path: &str| {
        let mut m = Mapping::new();
        m.insert("filename".into(), path.into());
        Value::Mapping(m)
    };
    let mut cert = Mapping::new();
    cert.insert("certificate_chain".into(), file(&tls.cert));
    cert.insert("private_key".into(), file(&tls.key));
    let mut validation = Mapping::new();
    validation.insert("trusted_ca".into(), file(&tls.ca));
    if let Some(name) = &tls.server_name {
        let mut san = Mapping::new();
        san.insert("san_type".into(), "DNS".into());
        let mut matcher = Mapping::new();
        matcher.insert("exact".into(), name.as_str().into());
        san.insert("matcher".into(), Value::Mapping(matcher));
        validation.insert(
            "match_typed_subject_alt_names".into(),
            Value::Sequence(vec![Value::Mapping(san)]),
        );
    }
    let mut common = Mapping::new();
    common.insert("alpn_protocols".into(), Value::Sequence(vec!["h2".into()]));
    common.insert(
        "tls_certificates".into(),
        Value::Sequence(vec![Value::Mapping(cert)]),
    );
    common.insert("validation_context".into(), Value::Mapping(validation));
    let mut ctx = Mapping::new();
    ctx.insert(
        "@type".into(),
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext".into(),
    );
    ctx.insert("common_tls_context".into(), Value::Mapping(common));
    if let Some(name) = &tls.server_name {
        ctx.insert("sni".into(), name.as_str().into());
    }
    let mut socket = Mapping::new();
    socket.insert("name".into(), "envoy.transport_sockets.tls".into());
    socket.insert("typed_config".into(), Value::Mapping(ctx));
    if let Some(cluster) = xds_cluster(doc) {
        cluster.insert("transport_socket".into(), Value::Mapping(socket));
    }
}

/// Replaces every `{{name}}` in `template` by its value; unknown placeholders are left as is.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match values.iter().find(|(key, _)| *key == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Escapes `value` for use inside a double-quoted YAML scalar (without the quotes).
///
/// JSON string escapes are a subset of YAML's double-quoted escapes, so JSON's encoder does it.
fn quoted_scalar(value: &str) -> String {
    let json = serde_json::Value::String(value.to_owned()).to_string();
    json[1..json.len() - 1].to_owned()
}

pub mod metrics_sink;

#[cfg(test)]
mod tests;
