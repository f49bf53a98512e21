//! Ending every open stream of a service at once: a replica that stops deciding (it lost its
//! Lease) closes the streams its clients (Envoys' stats, activators' reports) have open, so
//! they reconnect — through their Service, which routes only to the ready replica — to the one
//! that decides now.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

/// Shared by a service's handlers; clone it freely.
#[derive(Debug, Clone)]
pub struct StreamCloser(Arc<watch::Sender<State>>);

#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Bumped by each [`StreamCloser::close_all`].
    epoch: u64,
    /// New streams are ended at once (this replica does not decide).
    refusing: bool,
}

impl Default for StreamCloser {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(State::default())))
    }
}

impl StreamCloser {
    /// Ends every stream open now (`UNAVAILABLE`), and every stream opened later until
    /// [`Self::accept`]: a client that reconnects to this replica again (its Service may still
    /// route to it until its readiness probe fails) is sent on until it reaches the one that
    /// decides.
    pub fn close_all(&self) {
        self.0.send_modify(|s| {
            s.epoch += 1;
            s.refusing = true;
        });
    }

    /// Takes streams again (this replica decides now).
    pub fn accept(&self) {
        self.0
            .send_if_modified(|s| std::mem::replace(&mut s.refusing, false));
    }

    /// For one stream: completes with the status to end it with — at once while refusing,
    /// else once [`Self::close_all`] is called after this.
    pub fn closed(&self) -> impl std::future::Future<Output = Status> + Send + 'static {
        let mut rx = self.0.subscribe();
        let start = *rx.borrow_and_update();
        async move {
            if !start.refusing {
                let _ = rx.wait_for(|s| s.epoch != start.epoch).await;
            }
            Status::unavailable("this autoscaler replica does not decide; reconnect")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn ends_within(f: impl std::future::Future<Output = Status>, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), f)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_replica_that_stops_deciding_ends_open_and_new_streams_until_it_decides_again() {
        let closer = StreamCloser::default();
        let open = closer.closed();
        let open_too = closer.closed();
        assert!(!ends_within(open_too, 20).await, "a decider keeps streams");
        closer.close_all();
        assert!(ends_within(open, 20).await, "an open stream ends");
        assert!(
            ends_within(closer.closed(), 20).await,
            "a stream opened meanwhile ends at once"
        );
        closer.accept();
        assert!(!ends_within(closer.closed(), 20).await, "deciding again");
    }
}
