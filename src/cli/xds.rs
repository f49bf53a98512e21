//! `sluice xds nodes|dump|watch`: a client of the snapshot debug service
//! (`sluice.xds.v1.SnapshotDebug`) that shares the xDS port with ADS and CSDS.
//!
//! - `nodes`: every Envoy that connected, with per-type sent/ACK/NACK state;
//! - `dump`: the snapshot one node is served, as a table or as full Envoy
//!   resources in JSON/YAML;
//! - `watch`: pushes, ACKs, NACKs, connects and disconnects as they happen.

mod dump;
mod nodes;
mod watch;

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use envoy_types::pb::google::protobuf::Timestamp;
use sluice_proto::xds::v1::snapshot_debug_client::SnapshotDebugClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::CliError;

/// Default address of the xDS gRPC server (as `sluice gateway`/`sluice up`).
pub const DEFAULT_XDS: &str = "127.0.0.1:18000";

/// How long to try to open the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a `nodes`/`dump` answer may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// `sluice xds …`
#[derive(Debug, Args)]
pub struct XdsArgs {
    #[command(subcommand)]
    command: XdsCommand,
}

#[derive(Debug, Subcommand)]
enum XdsCommand {
    /// List the Envoy nodes the control plane knows, with what each ACKed or NACKed.
    Nodes(NodesArgs),
    /// Show the snapshot a node is served: every resource, its version and ACK state.
    Dump(DumpArgs),
    /// Print pushes, ACKs, NACKs, connects and disconnects as they happen (Ctrl-C stops).
    Watch(WatchArgs),
}

/// The server to ask; the same flags on every subcommand.
#[derive(Debug, Args)]
struct Server {
    /// Address of Sluice's xDS gRPC server (HOST:PORT).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_XDS)]
    xds: String,
    /// Connect over TLS, trusting this CA (PEM file) for the server's certificate.
    #[arg(long, value_name = "PATH")]
    xds_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM file) for a server that requires mutual TLS; needs
    /// --xds-tls-key and --xds-tls-ca.
    #[arg(long, value_name = "PATH", requires_all = ["xds_tls_key", "xds_tls_ca"])]
    xds_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --xds-tls-cert (PEM file).
    #[arg(long, value_name = "PATH", requires = "xds_tls_cert")]
    xds_tls_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: the host of --xds).
    #[arg(long, value_name = "NAME", requires = "xds_tls_ca")]
    xds_tls_server_name: Option<String>,
}

impl Server {
    /// The TLS settings of the connection, files read now; none for plain text.
    fn tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, CliError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let Some(ca) = &self.xds_tls_ca else {
            return Ok(None);
        };
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| CliError::Usage(format!("{flag} {}: {e}", p.display())))
        };
        let host = self
            .xds
            .rsplit_once(':')
            .map_or(self.xds.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("--xds-tls-ca", ca)?))
            .domain_name(self.xds_tls_server_name.as_deref().unwrap_or(host));
        if let (Some(cert), Some(key)) = (&self.xds_tls_cert, &self.xds_tls_key) {
            cfg = cfg.identity(Identity::from_pem(
                read("--xds-tls-cert", cert)?,
                read("--xds-tls-key", key)?,
            ));
        }
        Ok(Some(cfg))
    }
}

#[derive(Debug, Args)]
struct NodesArgs {
    #[command(flatten)]
    server: Server,
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    server: Server,
    /// Node id (default: the only node).
    #[arg(long, value_name = "N")]
    node: Option<String>,
    /// Only resources of this type (default: all).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<ResourceType>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FORMAT",
        default_value = "table"
    )]
    output: Output,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    server: Server,
    /// Only events of this node (default: all nodes).
    #[arg(long, value_name = "N")]
    node: Option<String>,
}

/// Resource types by their short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ResourceType {
    Clusters,
    Routes,
    Listeners,
    Endpoints,
    Secrets,
    ScopedRoutes,
}

impl ResourceType {
    /// The name the debug service takes.
    fn as_str(self) -> &'static str {
        match self {
            ResourceType::Clusters => "clusters",
            ResourceType::Routes => "routes",
            ResourceType::Listeners => "listeners",
            ResourceType::Endpoints => "endpoints",
            ResourceType::Secrets => "secrets",
            ResourceType::ScopedRoutes => "scoped-routes",
        }
    }
}

/// `dump` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// Runs `sluice xds …`.
pub async fn run(args: XdsArgs) -> Result<(), CliError> {
    match args.command {
        XdsCommand::Nodes(a) => {
            let mut client = connect(&a.server).await?;
            let addr = a.server.xds;
            let mut req = tonic::Request::new(Default::default());
            req.set_timeout(RPC_TIMEOUT);
            let nodes = client
                .list_nodes(req)
                .await
                .map_err(|s| rpc_error(&addr, s))?
                .into_inner()
                .nodes;
            if nodes.is_empty() {
                eprintln!("no Envoy has connected to the xDS server at {addr} yet");
                return Ok(());
            }
            print(&nodes::render(&nodes, SystemTime::now()))
        }
        XdsCommand::Dump(a) => {
            let mut client = connect(&a.server).await?;
            let addr = a.server.xds;
            let mut req = tonic::Request::new(sluice_proto::xds::v1::GetSnapshotRequest {
                node_id: a.node.unwrap_or_default(),
                r#type: a.kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
                ..Default::default()
            });
            req.set_timeout(RPC_TIMEOUT);
            let snapshot = client
                .get_snapshot(req)
                .await
                .map_err(|s| rpc_error(&addr, s))?
                .into_inner();
            let text = match a.output {
                Output::Table => dump::table(&snapshot, SystemTime::now()),
                Output::Json => dump::json(&snapshot)?,
                Output::Yaml => dump::yaml(&snapshot)?,
            };
            print(&text)
        }
        XdsCommand::Watch(a) => {
            let client = connect(&a.server).await?;
            watch::run(client, &a.server.xds, a.node.unwrap_or_default()).await
        }
    }
}

/// Opens a channel to the debug service, failing fast with a message that
/// names the address and the flag that changes it.
async fn connect(server: &Server) -> Result<SnapshotDebugClient<Channel>, CliError> {
    let addr = server.xds.as_str();
    let tls = server.tls()?;
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| {
            CliError::Usage(format!(
                "--xds {addr:?} is not an address (want HOST:PORT): {e}"
            ))
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Usage(format!("--xds-tls-*: {e}")))?;
    }
    let channel =
        match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), endpoint.connect())
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(addr, &cause(&e))),
            Err(_) => {
                return Err(unreachable(
                    addr,
                    &format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                ));
            }
        };
    Ok(SnapshotDebugClient::new(channel).max_decoding_message_size(usize::MAX))
}

fn unreachable(addr: &str, why: &str) -> CliError {
    CliError::Other(anyhow!(
        "cannot reach the xDS server at {addr}: {why} — is `sluice gateway` or `sluice up` running? \
         Use --xds ADDR to point elsewhere"
    ))
}

/// The most telling part of a transport error: the I/O error underneath
/// ("connection refused"), else the innermost message.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(e);
    let mut last = e.to_string();
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => {
                    format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())
                }
                _ => io.to_string(),
            };
        }
        last = err.to_string();
        current = err.source();
    }
    if last.contains("timed out") {
        format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())
    } else {
        last
    }
}

/// Maps a failed call to a message for the user.
fn rpc_error(addr: &str, status: tonic::Status) -> CliError {
    let msg = status.message();
    match status.code() {
        // "several nodes are known; pick one with --node", "unknown type".
        Code::InvalidArgument => CliError::Usage(msg.to_string()),
        Code::NotFound => CliError::Other(anyhow!("{msg}")),
        Code::Unavailable => unreachable(addr, msg),
        Code::Unimplemented => CliError::Other(anyhow!(
            "the server at {addr} does not offer Sluice's snapshot debug service \
             (sluice.xds.v1.SnapshotDebug) — is it a Sluice xDS server? Use --xds ADDR to point elsewhere"
        )),
        Code::DeadlineExceeded => CliError::Other(anyhow!(
            "the xDS server at {addr} did not answer within {}s",
            RPC_TIMEOUT.as_secs()
        )),
        code => CliError::Other(anyhow!("the xDS server at {addr} answered {code:?}: {msg}")),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Other(anyhow!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// A protobuf timestamp as a `SystemTime` (the epoch when unset or negative).
fn system_time(ts: Option<&Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// How long ago `ts` was, as `3m12s` (`-` when unknown).
fn ago(ts: Option<&Timestamp>, now: SystemTime) -> String {
    match system_time(ts) {
        Some(t) => crate::table::age(now.duration_since(t).unwrap_or_default()),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        xds: XdsArgs,
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from(["sluice", "dump"]).unwrap();
        let XdsCommand::Dump(d) = cli.xds.command else {
            panic!("not dump")
        };
        assert_eq!(d.server.xds, DEFAULT_XDS);
        assert_eq!(d.output, Output::Table);
        assert_eq!((d.node, d.kind), (None, None));

        let cli = Cli::try_parse_from([
            "sluice",
            "dump",
            "--xds",
            "10.0.0.1:1",
            "--node",
            "gw",
            "--type",
            "routes",
            "-o",
            "yaml",
        ])
        .unwrap();
        let XdsCommand::Dump(d) = cli.xds.command else {
            panic!("not dump")
        };
        assert_eq!(d.server.xds, "10.0.0.1:1");
        assert_eq!(d.node.as_deref(), Some("gw"));
        assert_eq!(d.kind, Some(ResourceType::Routes));
        assert_eq!(d.output, Output::Yaml);

        for sub in ["nodes", "watch"] {
            assert!(
                Cli::try_parse_from(["sluice", sub, "--xds", "h:1"]).is_ok(),
                "{sub}"
            );
        }
        assert!(Cli::try_parse_from(["sluice", "dump", "--type", "widgets"]).is_err());
    }

    fn plain(addr: &str) -> Server {
        Server {
            xds: addr.to_string(),
            xds_tls_ca: None,
            xds_tls_cert: None,
            xds_tls_key: None,
            xds_tls_server_name: None,
        }
    }

    #[tokio::test]
    async fn unreachable_server_names_the_address_and_the_flag() {
        // A port that was just free: nothing listens there.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let err = connect(&plain(&addr)).await.unwrap_err().to_string();
        assert!(err.contains(&addr), "{err}");
        assert!(err.contains("connection refused"), "{err}");
        assert!(err.contains("--xds ADDR"), "{err}");
    }

    #[test]
    fn bad_address_is_a_usage_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(connect(&plain("not an address"))).unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err}");
    }
}
