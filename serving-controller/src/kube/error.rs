//! What can go wrong talking to the API server, and when to try again.

use std::time::Duration;

use ::kube::runtime::controller::Action;
use ::kube::runtime::watcher;

use crate::ingress::IngressKey;

/// An error of the Kubernetes source or status writer. Every variant names the object or the
/// watch it concerns.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A watch (list or watch call) failed. The watch retries by itself with an exponential
    /// backoff; the error is reported so that it can be logged and shown.
    #[error("watching {resource} failed: {source}")]
    Watch {
        /// The watched resource, e.g. `ingresses.networking.internal.knative.dev`.
        resource: &'static str,
        /// What kube-runtime reported.
        #[source]
        source: Box<watcher::Error>,
    },

    /// Fetching one object the gateway needs (a Secret a KIngress started to name) failed; it
    /// is tried again shortly.
    #[error("fetching {resource} {key} failed (trying again): {source}")]
    Fetch {
        /// The resource, e.g. `secrets`.
        resource: &'static str,
        /// Namespace and name of the object.
        key: IngressKey,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },

    /// A request about one KIngress (status patch, event) failed.
    #[error("{action} for KIngress {ingress} failed: {source}")]
    Api {
        /// What was attempted: `status patch`, `event`.
        action: &'static str,
        /// The KIngress.
        ingress: IngressKey,
        /// The client error (an API status such as 403 or 409, or a transport error).
        #[source]
        source: Box<::kube::Error>,
    },

    /// Refused to write to a KIngress of another ingress class (or none): Sluice never touches
    /// those. Reaching this is a bug in the caller.
    #[error(
        "KIngress {ingress} has ingress class {class:?}, not {expected:?}: not touching it",
        expected = crate::ingress::SLUICE_INGRESS_CLASS
    )]
    ForeignClass {
        /// The KIngress.
        ingress: IngressKey,
        /// Its `networking.knative.dev/ingress.class` annotation, if any.
        class: Option<String>,
    },

    /// The object lacks `metadata.name` or `metadata.namespace`, so no request can address it.
    #[error("KIngress without metadata.{field}: cannot address it in the API")]
    MissingMetadata {
        /// `name` or `namespace`.
        field: &'static str,
    },

    /// A KIngress of our class from the API server does not decode into the KIngress type (a
    /// field of the wrong type or an invalid value; unknown fields are ignored, as by Go's
    /// decoder).
    #[error("KIngress {ingress} does not decode: {field}: {source}")]
    Decode {
        /// The KIngress.
        ingress: IngressKey,
        /// Where: `spec.rules[0].http…`.
        field: String,
        /// serde's message.
        #[source]
        source: serde_json::Error,
    },

    /// A status or event body could not be encoded as JSON.
    #[error("encoding the {what} of KIngress {ingress} failed: {source}")]
    Encode {
        /// `status` or `event`.
        what: &'static str,
        /// The KIngress.
        ingress: IngressKey,
        /// serde's message.
        #[source]
        source: serde_json::Error,
    },
}

impl KubeError {
    /// The HTTP status code of an API error, if this is one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeError::Api { source, .. } => match &**source {
                ::kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }
}

/// First retry delay of [`error_policy`].
const BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest retry delay of [`error_policy`].
const MAX_DELAY: Duration = Duration::from_secs(60);

/// When to retry the work that failed with `error`, after `attempt` earlier failures of the same
/// work (0 for the first failure): controller-rs's `error_policy`, as an [`Action`].
///
/// - Nothing to gain from retrying the same request (a KIngress of another class, missing
///   metadata, an undecodable object, a 404 because the object is gone, a 400/422 the server
///   rejected): [`Action::await_change`] — the next watch event about the object brings new work.
/// - A write conflict (409): retry soon (1 s); the cache will have caught up.
/// - Forbidden (401/403), usually missing RBAC: retry slowly (60 s); the error is worth logging.
/// - Anything else (429, 5xx, transport, watch failures): exponential backoff from 0.5 s,
///   doubling per attempt, capped at 60 s.
pub fn error_policy(error: &KubeError, attempt: u32) -> Action {
    match error {
        KubeError::ForeignClass { .. }
        | KubeError::MissingMetadata { .. }
        | KubeError::Decode { .. }
        | KubeError::Encode { .. } => Action::await_change(),
        KubeError::Api { .. } => match error.status_code() {
            Some(404 | 400 | 422) => Action::await_change(),
            Some(409) => Action::requeue(Duration::from_secs(1)),
            Some(401 | 403) => Action::requeue(MAX_DELAY),
            _ => Action::requeue(backoff(attempt)),
        },
        KubeError::Watch { .. } | KubeError::Fetch { .. } => Action::requeue(backoff(attempt)),
    }
}

/// `BASE_DELAY × 2^attempt`, capped at `MAX_DELAY`.
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> KubeError {
        KubeError::Api {
            action: "status patch",
            ingress: IngressKey::new("ns", "name"),
            source: Box::new(::kube::Error::Api(Box::new(
                ::kube::core::Status::failure("boom", "Reason").with_code(code),
            ))),
        }
    }

    #[test]
    fn policy_by_cause() {
        assert_eq!(error_policy(&api_error(404), 3), Action::await_change());
        assert_eq!(error_policy(&api_error(422), 0), Action::await_change());
        assert_eq!(
            error_policy(&api_error(409), 5),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(error_policy(&api_error(403), 0), Action::requeue(MAX_DELAY));
        assert_eq!(
            error_policy(&api_error(503), 0),
            Action::requeue(Duration::from_millis(500))
        );
        assert_eq!(
            error_policy(&api_error(500), 2),
            Action::requeue(Duration::from_secs(2))
        );
        let foreign = KubeError::ForeignClass {
            ingress: IngressKey::new("ns", "name"),
            class: None,
        };
        assert_eq!(error_policy(&foreign, 0), Action::await_change());
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(7), MAX_DELAY);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn messages_name_the_object() {
        let e = KubeError::ForeignClass {
            ingress: IngressKey::new("ns", "web"),
            class: Some("kourier.ingress.networking.knative.dev".into()),
        };
        let msg = e.to_string();
        assert!(msg.contains("ns/web"), "{msg}");
        assert!(
            msg.contains("kourier.ingress.networking.knative.dev"),
            "{msg}"
        );
        assert!(
            msg.contains("sluice.ingress.networking.knative.dev"),
            "{msg}"
        );
    }
}
