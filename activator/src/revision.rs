//! What the activator knows about a revision: its key and its data-path
//! settings.

use std::time::Duration;

/// Header naming the revision a request is for (set by the gateway's split).
pub const REVISION_HEADER: &str = "knative-serving-revision";
/// Header naming the revision's namespace (set by the gateway's split).
pub const NAMESPACE_HEADER: &str = "knative-serving-namespace";
/// Header the activator adds to every request it forwards, valued
/// [`PROXY_HEADER_VALUE`], so other measurements can tell them apart.
pub const PROXY_HEADER: &str = "k-proxy-request";
/// Value of [`PROXY_HEADER`].
pub const PROXY_HEADER_VALUE: &str = "activator";

pub use sluice_proto::RevisionKey;

/// Knative's default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A revision's data-path settings, from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionConfig {
    /// `containerConcurrency`: the most requests one instance serves at once;
    /// 0 = unlimited.
    pub container_concurrency: u32,
    /// `timeoutSeconds`: how long a request may take, from its arrival at the
    /// activator, until the response starts. Time spent waiting for capacity
    /// counts: a request still waiting when it runs out gets 503, one whose
    /// instance has not answered by then gets 504.
    pub timeout: Duration,
    /// `responseStartTimeoutSeconds`: how long the instance may take, from the moment the
    /// request is forwarded to it, to start its response (504 after). `None`: only
    /// `timeout` applies.
    pub response_start_timeout: Option<Duration>,
    /// `idleTimeoutSeconds`: the longest the instance may send nothing, while its response
    /// is due (504 after) and between the frames of its response body (the stream is cut).
    /// Tunnels (websockets) are not cut. `None`: no idle limit.
    pub idle_timeout: Option<Duration>,
    /// The revision speaks HTTP/2 without TLS (port named `h2c`/`http2`):
    /// forward with h2 prior knowledge (gRPC needs this).
    pub h2c: bool,
}

impl Default for RevisionConfig {
    fn default() -> Self {
        Self {
            container_concurrency: 0,
            timeout: DEFAULT_TIMEOUT,
            response_start_timeout: None,
            idle_timeout: None,
            h2c: false,
        }
    }
}

/// `start + timeout`, saturating: a timeout too long for the clock (a configuration error, or
/// a hostile one) waits a century instead of panicking.
pub fn deadline(start: tokio::time::Instant, timeout: std::time::Duration) -> tokio::time::Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(timeout.min(CENTURY))
        .or_else(|| start.checked_add(std::time::Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(start)
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn huge_timeouts_saturate() {
        let now = tokio::time::Instant::now();
        assert!(deadline(now, std::time::Duration::MAX) > now);
        assert_eq!(
            deadline(now, std::time::Duration::from_secs(30)),
            now + std::time::Duration::from_secs(30)
        );
    }
}
