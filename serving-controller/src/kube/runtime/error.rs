//! What can go wrong running a Revision on Kubernetes, naming the object and what to do.

use crate::serving::Key;

/// The step of the runtime that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The server-side apply of a Revision's object.
    Apply,
    /// The delete of a Revision's object.
    Delete,
    /// The patch of a Deployment's `scale` subresource.
    Scale,
    /// Reading a Revision's EndpointSlices back.
    ReadBack,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Apply => "applying",
            Step::Delete => "deleting",
            Step::Scale => "scaling",
            Step::ReadBack => "listing",
        })
    }
}

/// An error of the Kubernetes runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Revision (or the key asked for) lacks what is needed to address or own its objects;
    /// no request was made.
    #[error("Revision {revision} has no metadata.{field}: {}", missing_hint(.field))]
    MissingMetadata {
        /// The Revision, as far as it is known.
        revision: Key,
        /// `namespace`, `name` or `uid`.
        field: &'static str,
    },

    /// The Revision's spec cannot be run as a Deployment; no request was made.
    #[error(
        "Revision {revision} cannot run: {problem}; admission should have rejected it: fix spec.template of its Configuration or Service"
    )]
    UnsupportedSpec {
        /// The Revision.
        revision: Key,
        /// What is wrong, naming the field.
        problem: String,
    },

    /// A request to the API server failed.
    #[error("{step} {kind} {namespace}/{name} failed: {source}{}", api_hint(*.step, .source))]
    Api {
        /// What was attempted.
        step: Step,
        /// The object's kind, e.g. `Deployment`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The client error (an API status such as 403 or 422, or a transport error).
        #[source]
        source: Box<::kube::Error>,
    },
}

impl RuntimeError {
    pub(crate) fn api(
        step: Step,
        kind: &'static str,
        namespace: &str,
        name: &str,
        source: ::kube::Error,
    ) -> Self {
        RuntimeError::Api {
            step,
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }
    }

    /// The HTTP status code of an API error, if this is one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            RuntimeError::Api { source, .. } => match &**source {
                ::kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether trying the same call again later may succeed: transport errors, 409, 429 and
    /// 5xx. Not: invalid input, 400/404/422, or RBAC denials (401/403) until someone acts.
    pub fn is_retryable(&self) -> bool {
        match self {
            RuntimeError::Api { .. } => match self.status_code() {
                Some(code) => code == 409 || code == 429 || code >= 500,
                None => true,
            },
            RuntimeError::MissingMetadata { .. } | RuntimeError::UnsupportedSpec { .. } => false,
        }
    }
}

fn missing_hint(field: &str) -> &'static str {
    match field {
        "uid" => {
            "the runtime runs only Revisions read from the API server (the Deployment's owner reference needs the Revision's uid)"
        }
        _ => "cannot address its objects in the API",
    }
}

/// What to do about an API error, by status code (empty when there is nothing specific).
fn api_hint(step: Step, error: &::kube::Error) -> &'static str {
    let ::kube::Error::Api(status) = error else {
        return "; the API server was not reached or its answer was unreadable: check the connection and retry";
    };
    match (status.code, step) {
        (401, _) => {
            "; the credentials were rejected: check the kubeconfig or the ServiceAccount token"
        }
        (403, _) => {
            "; the controller's ServiceAccount lacks this permission: apply deploy/full/200-rbac.yaml (ClusterRole sluice-controller-runtime)"
        }
        (404, Step::Scale) => "; the Deployment does not exist: apply the Revision first",
        (404, _) => "; does the namespace exist?",
        (409, _) => "; a conflicting write: retry",
        (422, _) => "; the API server rejected the object as invalid: check the Revision's spec",
        (429, _) | (500..=599, _) => "; the API server is overloaded or failing: retry later",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(step: Step, code: u16) -> RuntimeError {
        RuntimeError::api(
            step,
            "Deployment",
            "default",
            "hello-00001-deployment",
            ::kube::Error::Api(Box::new(
                ::kube::core::Status::failure("denied", "Forbidden").with_code(code),
            )),
        )
    }

    #[test]
    fn api_errors_name_the_object_and_what_to_do() {
        let e = api_error(Step::Apply, 403);
        let msg = e.to_string();
        assert!(
            msg.starts_with("applying Deployment default/hello-00001-deployment failed: "),
            "{msg}"
        );
        assert!(msg.contains("200-rbac.yaml"), "{msg}");
        assert_eq!(e.status_code(), Some(403));
        assert!(!e.is_retryable());

        let msg = api_error(Step::Scale, 404).to_string();
        assert!(msg.contains("apply the Revision first"), "{msg}");
        assert!(api_error(Step::Scale, 503).is_retryable());
        assert!(api_error(Step::Apply, 409).is_retryable());
        assert!(!api_error(Step::Apply, 422).is_retryable());
    }

    #[test]
    fn missing_uid_says_where_revisions_must_come_from() {
        let e = RuntimeError::MissingMetadata {
            revision: Key::new("default", "hello-00001"),
            field: "uid",
        };
        let msg = e.to_string();
        assert!(msg.contains("default/hello-00001"), "{msg}");
        assert!(msg.contains("metadata.uid"), "{msg}");
        assert!(msg.contains("API server"), "{msg}");
        assert!(!e.is_retryable());
    }
}
