//! `sluice status`: what a running gateway serves, from its debug server's
//! `/status`: KIngresses with readiness and reason, input problems (file,
//! object, field), and each Envoy node's ACK/NACK state.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod autoscaling;

use super::CliError;
use crate::gateway::GatewayStatus;
use crate::table::Table;

/// `sluice status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The debug HTTP address of `sluice gateway` / `sluice up`.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
    /// Print the raw JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Fetches `/status` from a running gateway.
pub async fn fetch(debug: SocketAddr) -> Result<GatewayStatus, CliError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{debug}/status");
    let unreachable = |e: String| {
        CliError::Other(anyhow::anyhow!(
            "cannot reach the debug server at {debug}: {e} — is `sluice up` or `sluice gateway` running? Use --debug ADDR to point elsewhere"
        ))
    };
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(
            uri.parse()
                .map_err(|e| CliError::Usage(format!("--debug {debug}: {e}")))?,
        ),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        CliError::Other(anyhow::anyhow!(
            "{debug}/status is not a gateway status document: {e}"
        ))
    })
}

/// Renders the status as tables.
pub fn render(s: &GatewayStatus) -> String {
    let mut out = String::new();
    if let Some(serving) = &s.serving {
        out.push_str(&render_serving(serving));
        out.push('\n');
    }
    let mut t = Table::new(["KINGRESS", "READY", "REASON", "HOSTS", "MESSAGE"]);
    for i in &s.ingresses {
        t.row([
            format!("{}/{}", i.namespace, i.name),
            i.ready.clone(),
            i.reason.clone(),
            i.hosts.join(","),
            i.message.clone(),
        ]);
    }
    if t.is_empty() {
        out.push_str("No KIngress of class sluice.ingress.networking.knative.dev.\n");
    } else {
        out.push_str(&t.render());
    }
    if !s.problems.is_empty() {
        out.push_str("\nProblems (the last good configuration keeps serving):\n");
        let mut t = Table::new(["FILE", "OBJECT", "FIELD", "MESSAGE"]);
        for p in &s.problems {
            t.row([
                p.file.clone(),
                p.object.clone().unwrap_or_default(),
                p.field.clone().unwrap_or_default(),
                p.message.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    let mut t = Table::new(["ENVOY NODE", "CONNECTED", "MODE", "ACK STATE"]);
    for n in &s.nodes {
        t.row([
            n.id.clone(),
            if n.connected { "yes" } else { "no" }.to_string(),
            n.mode.clone(),
            n.types
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    if t.is_empty() {
        out.push_str("No Envoy has connected yet.\n");
    } else {
        out.push_str(&t.render());
    }
    if !s.gateway_pods.is_empty() {
        out.push('\n');
        let mut t = Table::new(["GATEWAY POD", "READY", "PROBLEM"]);
        for p in &s.gateway_pods {
            t.row([
                p.address.clone(),
                if p.ready { "yes" } else { "no" }.to_string(),
                p.problem.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if let Some(c) = &s.config {
        out.push('\n');
        out.push_str(&render_config(c));
    }
    out
}

/// `config-kourier` in force: every key, then a refusal, notes and problems if any.
fn render_config(c: &crate::gateway::state::ConfigStatus) -> String {
    let mut out = String::new();
    out.push_str(if c.present {
        "config-kourier (knative-serving/config-kourier) in force:\n"
    } else {
        "config-kourier: no ConfigMap, Kourier's defaults in force:\n"
    });
    let mut t = Table::new(["KEY", "VALUE"]);
    for (k, v) in &c.values {
        t.row([k.clone(), v.replace('\n', "\\n")]);
    }
    out.push_str(&t.render());
    if let Some(e) = &c.error {
        out.push_str(&format!(
            "REFUSED: {e} (the previous configuration keeps serving)\n"
        ));
    }
    for n in &c.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    for p in &c.problems {
        out.push_str(&format!("not in effect: {p}\n"));
    }
    out
}

/// The `sluice up` tables: Services, Revisions (with instances), Routes (with traffic).
fn render_serving(s: &crate::up::ServingView) -> String {
    let mut out = String::new();
    let mut t = Table::new(["SERVICE", "URL", "LATEST", "READY", "REASON", "MESSAGE"]);
    for svc in &s.services {
        t.row([
            format!("{}/{}", svc.namespace, svc.name),
            svc.url.clone(),
            svc.latest_ready.clone(),
            svc.ready.clone(),
            svc.reason.clone(),
            svc.message.clone(),
        ]);
    }
    if t.is_empty() {
        out.push_str("No Knative Service.\n");
    } else {
        out.push_str(&t.render());
    }
    out.push('\n');
    let mut t = Table::new([
        "REVISION",
        "CONFIG",
        "INSTANCES",
        "READY",
        "SCALING",
        "RESTARTS",
        "REASON",
        "MESSAGE",
    ]);
    for r in &s.revisions {
        let rev = &r.revision;
        let restarts: u32 = r.instances.iter().map(|i| i.restarts).sum();
        let crashed = r
            .instances
            .iter()
            .find(|i| i.state.starts_with("crashed"))
            .map(|i| format!("{} {}: {}", i.name, i.state, i.last_exit));
        let (want, scaling) = match &r.scaling {
            Some(s) => (
                s.desired,
                format!(
                    "{}, {} via {}{}",
                    s.reason,
                    s.observed,
                    s.path,
                    if s.panic { ", panic" } else { "" }
                ),
            ),
            None => (rev.desired, "-".to_string()),
        };
        t.row([
            format!("{}/{}", rev.namespace, rev.name),
            rev.configuration.clone(),
            autoscaling::instances_cell(r, want),
            rev.ready.clone(),
            scaling,
            restarts.to_string(),
            rev.reason.clone(),
            crashed.unwrap_or_else(|| rev.message.clone()),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render());
        out.push('\n');
    }
    let steps = autoscaling::table(s);
    if !steps.is_empty() {
        out.push_str("Autoscaling (reactive → forecast → window → bounds → clamped):\n");
        out.push_str(&steps);
        out.push('\n');
    }
    let mut t = Table::new(["ROUTE", "TRAFFIC", "READY", "REASON", "MESSAGE"]);
    for r in &s.routes {
        let traffic = r
            .traffic
            .iter()
            .map(|t| {
                let mut s = format!("{}% {}", t.percent, t.revision);
                if t.latest {
                    s.push_str(" (latest)");
                }
                if !t.tag.is_empty() {
                    s.push_str(&format!(" tag {} {}", t.tag, t.url));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ");
        t.row([
            format!("{}/{}", r.namespace, r.name),
            traffic,
            r.ready.clone(),
            r.reason.clone(),
            r.message.clone(),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render());
    }
    out
}

/// Runs `sluice status`.
pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let s = fetch(args.debug).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        print!("{}", render(&s));
    }
    Ok(())
}
