//! `sluice logs REVISION`: a revision's log (every instance's stdout and stderr, and the
//! runtime's notes), from the state directory of a running or stopped `sluice up`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::runtime::logs;

/// `sluice logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The revision, e.g. hello-00001.
    #[arg(value_name = "REVISION")]
    pub revision: String,
    /// The revision's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Keep printing what is appended (like tail -f), until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// The state directory of `sluice up` (default: asked from the running one at --debug).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The debug HTTP address of the running `sluice up`.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub debug: SocketAddr,
}

/// Runs `sluice logs`.
pub async fn run(args: LogsArgs) -> Result<(), CliError> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => {
            let status = super::status::fetch(args.debug).await.map_err(|e| {
                CliError::Usage(format!(
                    "{e}\nWith sluice up stopped, pass --state-dir (default DIR/.sluice)"
                ))
            })?;
            let serving = status.serving.ok_or_else(|| {
                CliError::Usage(format!(
                    "the server at {} is `sluice gateway`, which runs no revisions; logs belong to `sluice up`",
                    args.debug
                ))
            })?;
            PathBuf::from(serving.state_dir)
        }
    };
    let path = logs::log_path(&state_dir, &args.namespace, &args.revision);
    let tail = match logs::tail(&path, args.tail).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            return Err(CliError::Usage(format!(
                "no log for revision {}/{} under {} (has it run? `sluice status` lists revisions)",
                args.namespace,
                args.revision,
                state_dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => logs::Tail {
            text: Vec::new(),
            end: 0,
        },
        Err(e) => return Err(CliError::Other(anyhow::anyhow!("{}: {e}", path.display()))),
    };
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::io::stdout();
    out.write_all(&tail.text)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    out.flush().await.map_err(|e| CliError::Other(e.into()))?;
    if args.follow {
        tokio::select! {
            r = logs::follow(&path, tail.end, &mut out) => r.map_err(|e| CliError::Other(e.into()))?,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}
