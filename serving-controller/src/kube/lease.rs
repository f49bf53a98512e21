//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` (the
//! package every Knative component uses), for the replicas of one Deployment that must not all
//! act at once: the serving controller, the autoscaler, the gateway's status writer.
//!
//! ```no_run
//! # async fn run(client: ::kube::Client) -> Result<(), sluice_serving::kube::lease::LeaseError> {
//! use sluice_serving::kube::lease::{LeaderElector, LeaseConfig};
//!
//! // Holder identity: the pod's name (from the downward API, read by the binary).
//! let config = LeaseConfig::new("knative-serving", "sluice-controller", "sluice-controller-7d9f-x2");
//! let elector = LeaderElector::new(client, config)?;
//! let mut leader = elector.subscribe(); // false until this replica holds the Lease
//! let election = tokio::spawn(elector.run(async { let _ = tokio::signal::ctrl_c().await; }));
//! while leader.changed().await.is_ok() {
//!     if *leader.borrow() { /* start writing */ } else { /* stop writing at once */ }
//! }
//! election.await.ok(); // the Lease was released (if held) before `run` returned
//! # Ok(())
//! # }
//! ```
//!
//! How it works (client-go's algorithm, same defaults as Knative: 15 s / 10 s / 2 s):
//! - **Acquire.** Every retry period (jittered up to ×2.2, as client-go) the candidate reads the
//!   Lease. Absent: it creates it holding it (a `409` means another replica was first). Held by
//!   another identity: it waits until the Lease has not changed for `leaseDurationSeconds`, as
//!   measured on *this* replica's monotonic clock since it last saw the record change (never the
//!   holder's timestamps: clocks may disagree). Free (expired, or released with an empty
//!   holder): it replaces the Lease with itself as holder, the write guarded by the
//!   `resourceVersion` it read, so of two candidates racing only one wins (the other gets `409`).
//! - **Renew.** The leader replaces the Lease (new `renewTime`) every retry period. When no renew
//!   has succeeded for the renew deadline — shorter than the lease duration, so it stops before
//!   anyone may take over — or it sees another holder, it reports `false` and becomes a
//!   candidate again.
//! - **Release.** When `shutdown` completes, a leader reports `false` first, then writes the
//!   Lease with an empty holder and `leaseDurationSeconds: 1`, so a successor takes over at its
//!   next retry instead of after a full lease duration.
//!
//! Failed API calls are logged and retried; they never end [`LeaderElector::run`]. Every API
//! call is bounded by the renew deadline, so a hung connection cannot keep a replica leading.
//! The calls it makes are [`LEASE_PERMISSIONS`] (`get`, `create`, `update` on `leases`, in the
//! Lease's namespace only).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use super::rbac::Permission;

/// Knative's (and client-go's usual) lease duration: how long a Lease that has not changed
/// stays valid for the other candidates.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Knative's renew deadline: how long a leader keeps leading without a successful renew.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Knative's retry period: how often candidates try to acquire and the leader renews.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// client-go's jitter factor for the acquire loop (and its floor for renew deadline ÷ retry
/// period).
const JITTER_FACTOR: f64 = 1.2;

/// The API access leader election needs, in the Lease's namespace (a Role, not a ClusterRole).
pub const LEASE_PERMISSIONS: &[Permission] = &[Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];

/// Which Lease, who this replica is, and the timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name (one per set of replicas that elect a leader).
    pub name: String,
    /// This replica's holder identity: its pod name (unique among the candidates).
    pub identity: String,
    /// How long a Lease that has not changed stays valid (written as `leaseDurationSeconds`,
    /// whole seconds, rounded up).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renew. Shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews. `renew_deadline` must be
    /// more than 1.2 × this.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The Lease `namespace/name` for `identity`, with Knative's timings
    /// ([`DEFAULT_LEASE_DURATION`], [`DEFAULT_RENEW_DEADLINE`], [`DEFAULT_RETRY_PERIOD`]).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks what client-go checks: names set, lease duration > renew deadline > 1.2 × retry
    /// period, and a lease duration the Lease can carry (1 s to `i32::MAX` s).
    pub fn validate(&self) -> Result<(), LeaseError> {
        let invalid = |field: &'static str, value: String, reason: &'static str| {
            Err(LeaseError::InvalidConfig {
                field,
                value,
                reason,
            })
        };
        for (field, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.trim().is_empty() {
                return invalid(field, value.clone(), "must not be empty");
            }
        }
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        if self.lease_duration < Duration::from_secs(1)
            || self.lease_duration > Duration::from_secs(i32::MAX as u64)
        {
            return invalid(
                "lease duration",
                secs(self.lease_duration),
                "must be between 1 s and 2^31-1 s",
            );
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid(
                "renew deadline",
                secs(self.renew_deadline),
                "must be shorter than the lease duration",
            );
        }
        if self.retry_period.is_zero()
            || self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64()
        {
            return invalid(
                "retry period",
                secs(self.retry_period),
                "must be above zero and the renew deadline more than 1.2 times it",
            );
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// What can be wrong before an election starts. (Failures during one are retried, not
/// returned.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// A setting of [`LeaseConfig`] cannot work.
    #[error("leader election: invalid {field} {value:?}: {reason}")]
    InvalidConfig {
        /// The setting (`identity`, `renew deadline`, …).
        field: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
}

/// The outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease (created, taken over or renewed).
    Held,
    /// Another identity holds a valid Lease.
    HeldBy(String),
    /// Another writer changed the Lease between our read and our write (`409`).
    Conflict,
}

/// One replica's side of a leader election. See the module docs.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    /// The Lease as last read or written, and when (our clock) its spec last changed.
    observed: Option<(Lease, Instant)>,
    jitter: RandomState,
    attempts: u64,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for `config` (checked: [`LeaseConfig::validate`]); nothing is requested until
    /// [`run`](Self::run).
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaseError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leader: watch::channel(false).0,
            observed: None,
            jitter: RandomState::new(),
            attempts: 0,
        })
    }

    /// Whether this replica leads: `false` until it holds the Lease, `false` again from the
    /// moment it may no longer act as leader. Receivers stay valid after `run` returns (the
    /// value is then `false`).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Campaigns, leads, and campaigns again after losing the Lease, until `shutdown`
    /// completes; then reports `false` and, if leading, releases the Lease.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (namespace, name) = (self.config.namespace.clone(), self.config.name.clone());
        let identity = self.config.identity.clone();
        loop {
            // Candidate: try now, then every (jittered) retry period.
            loop {
                let limit = self.config.renew_deadline;
                let attempt = tokio::select! {
                    () = &mut shutdown => return,
                    attempt = self.attempt(limit) => attempt,
                };
                match attempt {
                    Some(Attempt::Held) => break,
                    Some(Attempt::HeldBy(holder)) => {
                        tracing::debug!(lease = %format!("{namespace}/{name}"), %holder, "Lease held by another replica");
                    }
                    Some(Attempt::Conflict) | None => {}
                }
                let wait = self.jittered_retry();
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            tracing::info!(lease = %format!("{namespace}/{name}"), %identity, "became leader");
            self.leader.send_replace(true);
            let mut renewed = Instant::now();
            // Leader: renew every retry period until the renew deadline passes without success.
            let lost = loop {
                let retry = self.config.retry_period;
                let left = self.config.renew_deadline.saturating_sub(renewed.elapsed());
                let attempt = tokio::select! {
                    () = &mut shutdown => None,
                    attempt = async {
                        tokio::time::sleep(retry).await;
                        self.attempt(left.saturating_sub(retry)).await
                    } => Some(attempt),
                };
                let Some(attempt) = attempt else {
                    self.leader.send_replace(false);
                    self.release().await;
                    return;
                };
                match attempt {
                    Some(Attempt::Held) => renewed = Instant::now(),
                    Some(Attempt::HeldBy(holder)) => break format!("{holder} holds it"),
                    Some(Attempt::Conflict) | None => {}
                }
                if renewed.elapsed() >= self.config.renew_deadline {
                    break format!(
                        "no renew succeeded for {:?} (the renew deadline)",
                        self.config.renew_deadline
                    );
                }
            };
            self.leader.send_replace(false);
            tracing::warn!(lease = %format!("{namespace}/{name}"), %identity, reason = %lost, "lost leadership; campaigning again");
        }
    }

    /// One attempt, bounded by `limit`; `None` when it failed or timed out.
    async fn attempt(&mut self, limit: Duration) -> Option<Attempt> {
        let deadline = limit;
        match tokio::time::timeout(deadline, self.try_acquire_or_renew()).await {
            Ok(Ok(attempt)) => Some(attempt),
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.config.name, %error, "leader election: API call failed");
                None
            }
            Err(_) => {
                tracing::warn!(lease = %self.config.name, ?deadline, "leader election: API call timed out");
                None
            }
        }
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, ::kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created);
                    Ok(Attempt::Held)
                }
                Err(::kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
                Err(error) => Err(error),
            };
        };
        self.observe(lease.clone());
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        if !holder.is_empty() && !mine && self.still_valid(&spec) {
            return Ok(Attempt::HeldBy(holder));
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: if mine {
                spec.lease_transitions
            } else {
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1))
            },
            ..spec
        });
        // `metadata.resourceVersion` is the one read: the API server refuses the replace (409)
        // if anyone wrote the Lease since.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(replaced) => {
                self.observe(replaced);
                Ok(Attempt::Held)
            }
            Err(::kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(error) => Err(error),
        }
    }

    /// Records the Lease; its observation time moves only when its spec changed.
    fn observe(&mut self, lease: Lease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| seen.spec != lease.spec);
        let at = match &self.observed {
            Some((_, at)) if !changed => *at,
            _ => Instant::now(),
        };
        self.observed = Some((lease, at));
    }

    /// Whether a Lease held by another identity is still valid: it changed less than its
    /// `leaseDurationSeconds` ago, on our clock.
    fn still_valid(&self, spec: &LeaseSpec) -> bool {
        let Some((_, at)) = &self.observed else {
            return true;
        };
        let seconds = spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        at.elapsed() < seconds
    }

    /// Gives the Lease up (empty holder, `leaseDurationSeconds: 1`), guarded by the last
    /// resourceVersion seen: if someone wrote it since, it is not ours to release.
    async fn release(&mut self) {
        let Some((mut lease, _)) = self.observed.clone() else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..spec
        });
        let params = PostParams::default();
        let release = self.api.replace(&self.config.name, &params, &lease);
        match tokio::time::timeout(self.config.renew_deadline, release).await {
            Ok(Ok(_)) => tracing::info!(lease = %self.config.name, "Lease released"),
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.config.name, %error, "releasing the Lease failed; it expires by itself");
            }
            Err(_) => {
                tracing::warn!(lease = %self.config.name, "releasing the Lease timed out; it expires by itself");
            }
        }
    }

    /// The retry period stretched by a random factor in [1, 2.2), as client-go's `JitterUntil`.
    fn jittered_retry(&mut self) -> Duration {
        self.attempts = self.attempts.wrapping_add(1);
        let random = self.jitter.hash_one(self.attempts) as f64 / u64::MAX as f64;
        self.config
            .retry_period
            .mul_f64(1.0 + JITTER_FACTOR * random.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_timings_are_the_defaults_and_valid() {
        let config = LeaseConfig::new("knative-serving", "sluice-controller", "pod-a");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert_eq!(config.retry_period, Duration::from_secs(2));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.lease_duration_seconds(), 15);
    }

    #[test]
    fn invalid_settings_are_named() {
        let base = LeaseConfig::new("knative-serving", "sluice-controller", "pod-a");
        let field = |c: LeaseConfig| match c.validate() {
            Err(LeaseError::InvalidConfig { field, .. }) => field,
            Ok(()) => "valid",
        };
        assert_eq!(
            field(LeaseConfig {
                identity: " ".into(),
                ..base.clone()
            }),
            "identity"
        );
        assert_eq!(
            field(LeaseConfig {
                renew_deadline: Duration::from_secs(15),
                ..base.clone()
            }),
            "renew deadline"
        );
        assert_eq!(
            field(LeaseConfig {
                retry_period: Duration::from_secs(9),
                ..base.clone()
            }),
            "retry period"
        );
        assert_eq!(
            field(LeaseConfig {
                lease_duration: Duration::from_millis(500),
                renew_deadline: Duration::from_millis(400),
                retry_period: Duration::from_millis(100),
                ..base.clone()
            }),
            "lease duration"
        );
        let message = LeaseConfig {
            name: String::new(),
            ..base
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "leader election: invalid name \"\": must not be empty"
        );
    }

    #[test]
    fn lease_duration_is_written_in_whole_seconds_rounded_up() {
        let config = LeaseConfig {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            ..LeaseConfig::new("ns", "l", "me")
        };
        assert_eq!(config.lease_duration_seconds(), 3);
    }
}
