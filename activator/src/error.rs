//! Why a request failed in the activator, and the one place that turns a cause
//! into what the client sees (linkerd's `ServerRescue`): a status and a short
//! plain-text reason.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::revision::RevisionKey;

/// A boxed error from the HTTP stack.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Which wait queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueScope {
    /// The revision's own queue.
    Revision,
    /// The bound over all revisions.
    Global,
}

/// Why the activator could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carries no `Knative-Serving-Revision` /
    /// `Knative-Serving-Namespace` headers (or they are not valid text).
    #[error("request names no revision (Knative-Serving-Revision/-Namespace headers)")]
    MissingRevision,
    /// The revision is not registered with the activator.
    #[error("unknown revision {0}")]
    UnknownRevision(RevisionKey),
    /// The revision was removed while the request waited for capacity.
    #[error("revision {0} was removed")]
    RevisionRemoved(RevisionKey),
    /// A wait queue was at its bound: load shed without waiting.
    #[error("queue full for revision {revision} ({scope:?} bound {bound})")]
    QueueFull {
        /// The revision asked for.
        revision: RevisionKey,
        /// Which queue.
        scope: QueueScope,
        /// Its bound.
        bound: usize,
    },
    /// No instance had a free slot before the request's time ran out.
    #[error("no capacity for revision {revision} within {waited:?}")]
    NoCapacity {
        /// The revision asked for.
        revision: RevisionKey,
        /// How long the request waited.
        waited: Duration,
    },
    /// Too many websocket tunnels are open already: load shed.
    #[error("revision {revision}: {open} websocket tunnels open, the activator's cap")]
    TooManyTunnels {
        /// The revision asked for.
        revision: RevisionKey,
        /// Tunnels open.
        open: usize,
    },
    /// The instance did not start responding before the revision's timeout.
    #[error("revision {revision}: {addr} did not respond within {timeout:?}")]
    Timeout {
        /// The revision asked for.
        revision: RevisionKey,
        /// The instance the request went to.
        addr: SocketAddr,
        /// The revision's timeout.
        timeout: Duration,
    },
    /// Forwarding to the instance failed (connect, protocol, reset).
    #[error("revision {revision}: upstream {addr} failed: {source}")]
    Upstream {
        /// The revision asked for.
        revision: RevisionKey,
        /// The instance the request went to.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A short stable name, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingRevision => "missing_revision",
            Self::UnknownRevision(_) => "unknown_revision",
            Self::RevisionRemoved(_) => "revision_removed",
            Self::QueueFull { .. } => "queue_full",
            Self::NoCapacity { .. } => "no_capacity",
            Self::TooManyTunnels { .. } => "too_many_tunnels",
            Self::Timeout { .. } => "timeout",
            Self::Upstream { .. } => "upstream",
        }
    }
}

/// The response a client gets for `err`: unknown revision 404, load shed
/// (queue full, no capacity in time, revision removed) 503, timeout 504,
/// upstream failure 502; the body is one short line saying why. Internal
/// addresses are not shown; upstream failures show their root cause only.
pub fn rescue(err: &Error) -> Response<Bytes> {
    let (status, reason) = match err {
        Error::MissingRevision => (
            StatusCode::NOT_FOUND,
            "no revision named: Knative-Serving-Revision and Knative-Serving-Namespace headers required"
                .to_owned(),
        ),
        Error::UnknownRevision(rev) => (StatusCode::NOT_FOUND, format!("unknown revision {rev}")),
        Error::RevisionRemoved(rev) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("revision {rev} was removed"),
        ),
        Error::QueueFull { revision, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("overloaded: queue full for revision {revision}"),
        ),
        Error::TooManyTunnels { revision, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("overloaded: too many websocket connections open (revision {revision})"),
        ),
        Error::NoCapacity { revision, waited } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no capacity for revision {revision} within {}",
                seconds(*waited)
            ),
        ),
        Error::Timeout {
            revision, timeout, ..
        } => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "revision {revision} did not respond within {}",
                seconds(*timeout)
            ),
        ),
        Error::Upstream {
            revision, source, ..
        } => (
            StatusCode::BAD_GATEWAY,
            format!(
                "upstream of revision {revision} failed: {}",
                root_cause(source.as_ref())
            ),
        ),
    };
    let mut resp = Response::new(Bytes::from(reason + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// The innermost error's message: hyper wraps an `ECONNREFUSED` in two
/// layers ("client error (Connect)" → "tcp connect error" → "Connection
/// refused"); the client needs only the last.
fn root_cause(mut err: &(dyn StdError + 'static)) -> String {
    while let Some(next) = err.source() {
        err = next;
    }
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RevisionKey {
        RevisionKey::new("default", "hello-00001")
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    fn body(r: &Response<Bytes>) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    #[test]
    fn each_cause_has_its_status_and_a_short_reason() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let cases = [
            (
                Error::MissingRevision,
                404,
                "no revision named: Knative-Serving-Revision and Knative-Serving-Namespace headers required\n",
            ),
            (
                Error::UnknownRevision(key()),
                404,
                "unknown revision default/hello-00001\n",
            ),
            (
                Error::RevisionRemoved(key()),
                503,
                "revision default/hello-00001 was removed\n",
            ),
            (
                Error::QueueFull {
                    revision: key(),
                    scope: QueueScope::Global,
                    bound: 10,
                },
                503,
                "overloaded: queue full for revision default/hello-00001\n",
            ),
            (
                Error::NoCapacity {
                    revision: key(),
                    waited: Duration::from_millis(1500),
                },
                503,
                "no capacity for revision default/hello-00001 within 1.500s\n",
            ),
            (
                Error::Timeout {
                    revision: key(),
                    addr: addr(),
                    timeout: Duration::from_secs(30),
                },
                504,
                "revision default/hello-00001 did not respond within 30s\n",
            ),
            (
                Error::Upstream {
                    revision: key(),
                    addr: addr(),
                    source: Box::new(Outer(refused)),
                },
                502,
                "upstream of revision default/hello-00001 failed: Connection refused\n",
            ),
        ];
        for (err, status, text) in cases {
            let resp = rescue(&err);
            assert_eq!(resp.status().as_u16(), status, "{err}");
            assert_eq!(body(&resp), text);
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            assert!(!body(&resp).contains("127.0.0.1"), "no internal addresses");
            assert!(!err.kind().is_empty());
        }
    }
}
