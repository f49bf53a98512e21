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
            "cannot reach the debug server at {debug}: {e} — is `sluice gateway` running? Use --debug ADDR to point elsewhere"
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
