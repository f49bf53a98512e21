//! The edge the autoscaler's decisions leave through: runtimes (the process
//! runtime of `sluice up`, the Kubernetes scale subresource) implement
//! [`Scaler`].

use std::future::Future;

pub use sluice_proto::RevisionKey;

/// A scale request the runtime could not carry out.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The runtime does not know the revision (deleted, or not yet created).
    #[error("revision {revision} not found")]
    NotFound {
        /// The revision asked for.
        revision: RevisionKey,
    },
    /// The runtime refused the count (e.g. a quota or a bound it enforces).
    #[error("revision {revision}: scale to {desired} rejected: {reason}")]
    Rejected {
        /// The revision asked for.
        revision: RevisionKey,
        /// The count asked for.
        desired: u32,
        /// Why.
        reason: String,
    },
    /// Applying the count failed (process spawn, API call, …); retry later.
    #[error("revision {revision}: scale to {desired} failed: {source}")]
    Failed {
        /// The revision asked for.
        revision: RevisionKey,
        /// The count asked for.
        desired: u32,
        /// The runtime's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Sets the number of instances a revision should run.
///
/// Implementations make the count the *desired* state and return once it is
/// recorded (a Deployment's replicas patched, processes started or asked to
/// stop); readiness is reported separately. Calls for one revision are not
/// made concurrently by the autoscaler; calls for different revisions may be.
pub trait Scaler {
    /// Scales `revision` to `desired` instances.
    fn scale(
        &self,
        revision: &RevisionKey,
        desired: u32,
    ) -> impl Future<Output = Result<(), ScaleError>> + Send;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// What a runtime looks like: records desired counts per revision.
    #[derive(Default)]
    struct Recording {
        scales: Mutex<BTreeMap<RevisionKey, u32>>,
    }

    impl Scaler for Recording {
        async fn scale(&self, revision: &RevisionKey, desired: u32) -> Result<(), ScaleError> {
            if revision.name.is_empty() {
                return Err(ScaleError::NotFound {
                    revision: revision.clone(),
                });
            }
            let mut scales = self.scales.lock().map_err(|e| ScaleError::Failed {
                revision: revision.clone(),
                desired,
                source: e.to_string().into(),
            })?;
            scales.insert(revision.clone(), desired);
            Ok(())
        }
    }

    fn assert_send<T: Send>(_: T) {}

    #[tokio::test]
    async fn a_runtime_implements_the_trait_with_async_fn() {
        let runtime = Recording::default();
        let key = RevisionKey::new("default", "hello-00001");
        // The future is Send, so the autoscaler can drive it from any task.
        assert_send(runtime.scale(&key, 0));
        runtime.scale(&key, 3).await.unwrap();
        assert_eq!(runtime.scales.lock().unwrap().get(&key), Some(&3));
        let missing = RevisionKey::new("default", "");
        let err = runtime.scale(&missing, 1).await.unwrap_err();
        assert_eq!(err.to_string(), "revision default/ not found");
    }

    #[test]
    fn errors_name_the_revision_and_count() {
        let revision = RevisionKey::new("ns", "rev-00002");
        assert_eq!(revision.to_string(), "ns/rev-00002");
        let e = ScaleError::Failed {
            revision: revision.clone(),
            desired: 4,
            source: "spawn: no such file".into(),
        };
        assert_eq!(
            e.to_string(),
            "revision ns/rev-00002: scale to 4 failed: spawn: no such file"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = ScaleError::Rejected {
            revision,
            desired: 9,
            reason: "max 5".into(),
        };
        assert_eq!(
            e.to_string(),
            "revision ns/rev-00002: scale to 9 rejected: max 5"
        );
    }
}
