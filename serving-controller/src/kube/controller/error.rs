//! What can go wrong in the controller's I/O, naming the object and what to do.

use ::kube::runtime::watcher;

use crate::kube::runtime::RuntimeError;
use crate::serving::Key;

/// An error of the Kubernetes serving controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A watch (list or watch call) failed; it retries by itself with backoff.
    #[error(
        "watching {resource} failed: {source}{}",
        hint(watch_forbidden(source))
    )]
    Watch {
        /// The watched resource, e.g. `revisions.serving.knative.dev`.
        resource: &'static str,
        /// What kube-runtime reported.
        #[source]
        source: Box<watcher::Error>,
    },

    /// A write to the API server failed.
    #[error("{action} {kind} {key} failed: {source}{}", hint(is_forbidden(source)))]
    Api {
        /// What was attempted (`applying`, `creating`, `patching the status of`, `reading`).
        action: &'static str,
        /// The object's kind.
        kind: &'static str,
        /// The object.
        key: Key,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },

    /// Running a Revision failed (see [`RuntimeError`]).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),

    /// An object could not be encoded as JSON (a bug: every object here serializes).
    #[error("encoding {kind} {key} failed: {source}")]
    Encode {
        /// The object's kind.
        kind: &'static str,
        /// The object.
        key: Key,
        /// serde's message.
        #[source]
        source: serde_json::Error,
    },
}

impl ControllerError {
    /// Whether the same call may succeed later: transport errors, 409, 429 and 5xx (and a
    /// runtime error that says so). Not: invalid input, 400/404/422, RBAC denials.
    pub fn is_retryable(&self) -> bool {
        match self {
            ControllerError::Watch { .. } => true,
            ControllerError::Api { source, .. } => match &**source {
                ::kube::Error::Api(status) => {
                    status.code == 409 || status.code == 429 || status.code >= 500
                }
                _ => true,
            },
            ControllerError::Runtime(e) => e.is_retryable(),
            ControllerError::Encode { .. } => false,
        }
    }
}

fn watch_forbidden(source: &watcher::Error) -> bool {
    match source {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => is_forbidden(e),
        watcher::Error::WatchError(status) => status.code == 403,
        watcher::Error::NoResourceVersion => false,
    }
}

fn is_forbidden(source: &::kube::Error) -> bool {
    matches!(source, ::kube::Error::Api(s) if s.code == 403)
}

fn hint(forbidden: bool) -> &'static str {
    if forbidden {
        " (RBAC: the ServiceAccount needs the rules of deploy/full/200-rbac.yaml)"
    } else {
        ""
    }
}
