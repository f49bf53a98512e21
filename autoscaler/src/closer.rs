//! Ending every open stream of a service at once: a replica that stops deciding (it lost its
//! Lease) closes the streams its clients (Envoys' stats, activators' reports) have open, so
//! they reconnect — through their Service, which routes only to the ready replica — to the one
//! that decides now.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

/// Shared by a service's handlers; clone it freely.
#[derive(Debug, Clone)]
pub struct StreamCloser(Arc<watch::Sender<u64>>);

impl Default for StreamCloser {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl StreamCloser {
    /// Ends every stream open now (`UNAVAILABLE`); later streams are not affected.
    pub fn close_all(&self) {
        self.0.send_modify(|e| *e += 1);
    }

    /// For one stream: completes with the status to end it with once [`Self::close_all`] is
    /// called after this.
    pub fn closed(&self) -> impl std::future::Future<Output = Status> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.changed().await;
            Status::unavailable("this autoscaler replica no longer decides; reconnect")
        }
    }
}
