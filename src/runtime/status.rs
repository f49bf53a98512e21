//! What the runtime reports about instances, and the board the instance tasks write it to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Serialize, Serializer};
use sluice_autoscaler::RevisionKey;
use tokio::sync::{broadcast, watch};

/// How many changes a slow subscriber may fall behind before it sees `Lagged`.
const CHANGES_CAPACITY: usize = 1024;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstanceState {
    /// The process is starting (or was just restarted) and has not passed its readiness probe.
    Starting,
    /// The process passes its readiness probe: it gets traffic.
    Ready,
    /// The process was ready but has failed its readiness probe several times in a row.
    Unready,
    /// The process exited (or could not be started) and is restarted after a backoff.
    Crashed {
        /// The backoff before the next start.
        #[serde(rename = "restart_in_ms", serialize_with = "millis")]
        restart_in: Duration,
    },
    /// The instance was asked to stop: SIGTERM sent, SIGKILL after the grace period.
    Stopping,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceState::Starting => f.write_str("starting"),
            InstanceState::Ready => f.write_str("ready"),
            InstanceState::Unready => f.write_str("unready"),
            InstanceState::Crashed { restart_in } => {
                write!(f, "crashed (restart in {} ms)", restart_in.as_millis())
            }
            InstanceState::Stopping => f.write_str("stopping"),
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn opt_millis<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// The exit code, when the process exited on its own.
    pub code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<i32>,
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(name) => write!(f, "killed by signal {signal} ({name})"),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// One instance of a revision, as [`super::ProcessRuntime::instances`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// The instance's number within its revision (0, 1, …; never reused while the runtime runs).
    pub index: u32,
    /// `<revision>-<index>`: the prefix of its lines in the revision's log.
    pub name: String,
    /// Where the instance listens (`127.0.0.1:PORT`); a restart picks a new port.
    pub addr: SocketAddr,
    /// Whether it passes its readiness probe and so should get traffic.
    pub ready: bool,
    /// Where it is in its life.
    pub state: InstanceState,
    /// The running process, `None` between a crash and the restart.
    pub pid: Option<u32>,
    /// How many times the process was restarted after exiting (or failing to start).
    pub restarts: u32,
    /// How the last unexpected exit ended.
    pub last_exit: Option<ExitInfo>,
    /// The last error starting the process (e.g. the program was not found).
    pub last_error: Option<String>,
    /// A reserved instance (see [`super::ReservedSpec`]) rather than a standard one.
    pub reserved: bool,
    /// How long the current process took from spawn to its first passed readiness probe.
    #[serde(rename = "start_time_ms", serialize_with = "opt_millis")]
    pub start_time: Option<Duration>,
}

/// A change to one revision's instances (started, ready, crashed, stopped, …), as sent to
/// [`super::ProcessRuntime::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeChange {
    /// The revision whose instances changed.
    pub revision: RevisionKey,
    /// Its ready addresses after the change, sorted: what EDS should serve.
    pub ready: Vec<SocketAddr>,
}

/// The shared record of every instance, written by the instance tasks.
#[derive(Debug)]
pub(super) struct Board {
    instances: Mutex<BTreeMap<RevisionKey, BTreeMap<u32, InstanceStatus>>>,
    ports: Mutex<BTreeSet<u16>>,
    changes: broadcast::Sender<RuntimeChange>,
    version: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Board {
    pub fn new() -> Self {
        Board {
            instances: Mutex::default(),
            ports: Mutex::default(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            version: watch::channel(0).0,
        }
    }

    /// Records a new instance (or replaces one) and announces it.
    pub fn insert(&self, revision: &RevisionKey, status: InstanceStatus) {
        let ready = {
            let mut all = lock(&self.instances);
            let instances = all.entry(revision.clone()).or_default();
            instances.insert(status.index, status);
            ready_of(instances)
        };
        self.announce(revision, ready);
    }

    /// Changes an instance's status (`ready` follows `state`); announces it when something
    /// changed.
    pub fn update(&self, revision: &RevisionKey, index: u32, f: impl FnOnce(&mut InstanceStatus)) {
        let ready = {
            let mut all = lock(&self.instances);
            let Some(instances) = all.get_mut(revision) else {
                return;
            };
            let Some(status) = instances.get_mut(&index) else {
                return;
            };
            let before = status.clone();
            f(status);
            // Stopping is final: a late probe result must not put the instance back in service.
            if before.state == InstanceState::Stopping {
                status.state = InstanceState::Stopping;
            }
            status.ready = status.state == InstanceState::Ready;
            if *status == before {
                return;
            }
            ready_of(instances)
        };
        self.announce(revision, ready);
    }

    /// Forgets an instance whose process is gone and announces it.
    pub fn remove(&self, revision: &RevisionKey, index: u32) {
        let ready = {
            let mut all = lock(&self.instances);
            let Some(instances) = all.get_mut(revision) else {
                return;
            };
            if instances.remove(&index).is_none() {
                return;
            }
            let ready = ready_of(instances);
            if instances.is_empty() {
                all.remove(revision);
            }
            ready
        };
        self.announce(revision, ready);
    }

    /// The revision's instances, by index.
    pub fn instances(&self, revision: &RevisionKey) -> Vec<InstanceStatus> {
        lock(&self.instances)
            .get(revision)
            .map(|i| i.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The revision's ready addresses, sorted.
    pub fn ready_addrs(&self, revision: &RevisionKey) -> Vec<SocketAddr> {
        lock(&self.instances)
            .get(revision)
            .map(ready_of)
            .unwrap_or_default()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeChange> {
        self.changes.subscribe()
    }

    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn announce(&self, revision: &RevisionKey, ready: Vec<SocketAddr>) {
        // No subscribers is fine: the change is in the board either way.
        let _ = self.changes.send(RuntimeChange {
            revision: revision.clone(),
            ready,
        });
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A free loopback port no other instance of this runtime holds.
    ///
    /// The port is found by binding `127.0.0.1:0` and closing the socket again, so another
    /// program may take it before the instance binds it. Such an instance fails to start (or
    /// never becomes ready); it is restarted on a fresh port.
    pub fn reserve_port(&self) -> std::io::Result<u16> {
        let mut ports = lock(&self.ports);
        let mut last_err = None;
        for _ in 0..32 {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(addr) if ports.insert(addr.port()) => return Ok(addr.port()),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "no free loopback port found after 32 tries",
            )
        }))
    }

    /// Gives a port back once its instance's process is gone.
    pub fn release_port(&self, port: u16) {
        lock(&self.ports).remove(&port);
    }
}

fn ready_of(instances: &BTreeMap<u32, InstanceStatus>) -> Vec<SocketAddr> {
    let mut ready: Vec<SocketAddr> = instances
        .values()
        .filter(|s| s.ready)
        .map(|s| s.addr)
        .collect();
    ready.sort();
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(index: u32, port: u16) -> InstanceStatus {
        InstanceStatus {
            index,
            name: format!("r-{index}"),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            ready: false,
            state: InstanceState::Starting,
            pid: Some(1),
            restarts: 0,
            last_exit: None,
            last_error: None,
            reserved: false,
            start_time: None,
        }
    }

    #[test]
    fn changes_are_announced_with_the_ready_set() {
        let board = Board::new();
        let key = RevisionKey::new("ns", "r");
        let mut changes = board.subscribe();
        board.insert(&key, status(0, 2000));
        board.insert(&key, status(1, 1000));
        assert_eq!(changes.try_recv().unwrap().ready, vec![]);
        assert_eq!(changes.try_recv().unwrap().ready, vec![]);

        board.update(&key, 0, |s| s.state = InstanceState::Ready);
        board.update(&key, 1, |s| s.state = InstanceState::Ready);
        let change = changes.try_recv().unwrap();
        assert_eq!(change.revision, key);
        assert_eq!(change.ready.len(), 1);
        let both = changes.try_recv().unwrap().ready;
        assert_eq!(both, board.ready_addrs(&key));
        assert_eq!(both[0].port(), 1000, "sorted");

        // No change, no announcement.
        board.update(&key, 1, |s| s.state = InstanceState::Ready);
        assert!(changes.try_recv().is_err());

        board.remove(&key, 0);
        board.remove(&key, 1);
        assert_eq!(changes.try_recv().unwrap().ready.len(), 1);
        assert_eq!(changes.try_recv().unwrap().ready, vec![]);
        assert!(lock(&board.instances).is_empty());
        // Unknown instances are ignored.
        board.update(&key, 7, |s| s.restarts = 9);
        board.remove(&key, 7);
        assert!(changes.try_recv().is_err());
    }

    #[test]
    fn reserved_ports_are_distinct_until_released() {
        let board = Board::new();
        let a = board.reserve_port().unwrap();
        let b = board.reserve_port().unwrap();
        assert_ne!(a, b);
        board.release_port(a);
        assert!(!lock(&board.ports).contains(&a));
    }

    #[test]
    fn exits_read_well() {
        let code = ExitInfo {
            code: Some(3),
            signal: None,
        };
        assert_eq!(code.to_string(), "exit code 3");
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");
        let state = InstanceState::Crashed {
            restart_in: Duration::from_millis(400),
        };
        assert_eq!(state.to_string(), "crashed (restart in 400 ms)");
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!({"kind": "crashed", "restart_in_ms": 400})
        );
    }
}
