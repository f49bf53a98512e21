//! Leader election for the `--kube` commands that must not all act at once (`sluice gateway`'s
//! status writer, `sluice controller`, `sluice autoscaler`): their `--lease NAMESPACE/NAME` and
//! `--instance` flags turned into a running [`LeaderElector`], and its hand-over on shutdown.

use sluice_serving::kube::lease::{LeaderElector, LeaseConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::CliError;

/// A running election; [`Election::release`] hands the Lease over at once.
#[derive(Debug)]
pub struct Election {
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// This replica's holder identity.
    pub instance: String,
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts electing on `lease` (`NAMESPACE/NAME`, from `--lease`) as `instance` (`--instance`,
    /// else `$POD_NAME`, else the host name).
    pub fn start(
        client: ::kube::Client,
        lease: &str,
        instance: Option<String>,
    ) -> Result<Self, CliError> {
        let (namespace, name) = crate::gateway::ha::parse_service(lease)
            .map_err(|e| CliError::Usage(format!("--lease: {e}")))?;
        let instance = crate::gateway::kube::instance_name(instance, |k| std::env::var(k).ok());
        let elector = LeaderElector::new(client, LeaseConfig::new(namespace, name, &instance))
            .map_err(|e| CliError::Usage(format!("--lease: {e}")))?;
        let leader = elector.subscribe();
        let (release, released) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = released.await;
        }));
        Ok(Self {
            leader,
            instance,
            release,
            task,
        })
    }

    /// Releases the Lease (if held) so a successor need not wait a full lease duration, and
    /// waits (at most 5 s) for that write.
    pub async fn release(self) {
        let _ = self.release.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
