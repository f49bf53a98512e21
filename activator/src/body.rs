//! Bodies on the proxy path: streamed frame by frame, never collected, and
//! holding the request's slot until the last frame is out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::error::BoxError;

/// The body type of every request the activator forwards and every response
/// it returns.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete, small body (error reasons).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body with compatible frames (e.g. `hyper::body::Incoming`).
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body that keeps `G` alive until it has yielded its last frame, failed,
/// or been dropped: the in-flight slot and the concurrency count of a request
/// last as long as its response streams.
pub struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G> Guarded<G> {
    /// Wraps `inner`, holding `guard` until it ends.
    pub fn new(inner: Body, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G: Unpin> HttpBody for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.guard = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails once its instance has sent nothing for `idle` (Knative's
/// `idleTimeoutSeconds`): the client sees the stream cut instead of hanging.
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(crate::revision::deadline(
            tokio::time::Instant::now(),
            idle,
        )));
        Self { inner, idle, timer }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = crate::revision::deadline(tokio::time::Instant::now(), this.idle);
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "no response bytes for {:?} (idleTimeoutSeconds)",
                    this.idle
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::StreamBody;

    use super::*;

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn guard_lives_until_the_last_frame() {
        let released = Arc::new(AtomicBool::new(false));
        let frames = futures::stream::iter(
            ["a", "b"].map(|s| Ok::<_, BoxError>(Frame::data(Bytes::from(s)))),
        );
        let mut body = Guarded::new(boxed(StreamBody::new(frames)), Flag(Arc::clone(&released)));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert!(!released.load(Ordering::SeqCst), "still streaming");
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        assert!(body.frame().await.is_none());
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn guard_released_with_a_known_length_body_or_on_drop() {
        let released = Arc::new(AtomicBool::new(false));
        let mut body = Guarded::new(full("done"), Flag(Arc::clone(&released)));
        body.frame().await.unwrap().unwrap();
        assert!(
            released.load(Ordering::SeqCst),
            "end of stream known after the frame"
        );

        let released = Arc::new(AtomicBool::new(false));
        let body = Guarded::new(full("x"), Flag(Arc::clone(&released)));
        drop(body);
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_is_cut_after_its_idle_timeout() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        let mut body = IdleTimeout::new(StreamBody::new(rx), std::time::Duration::from_secs(2));
        tx.unbounded_send(Ok(Frame::data(Bytes::from("a"))))
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // 1.5 s pauses are within the limit, each frame restarting the clock.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        tx.unbounded_send(Ok(Frame::data(Bytes::from("b"))))
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("idleTimeoutSeconds"), "{err}");
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));
    }
}
