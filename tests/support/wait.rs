//! Bounded polling: tests wait for a condition with a deadline instead of sleeping.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_for`] retries.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The outcome of one polling attempt: `Some`/`Ok` ends the wait, `None`/`Err` retries.
pub trait Attempt {
    /// The value produced by a successful attempt.
    type Output;

    /// `Ok(value)` when the attempt succeeded, otherwise a description of why not (kept for the
    /// panic message if the wait times out).
    fn into_outcome(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;

    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "condition not met yet (None)".to_owned())
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Output = T;

    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Calls `f` every [`POLL_INTERVAL`] until it returns `Some`/`Ok`, and returns that value.
///
/// Each attempt is itself bounded by the time left, so a hanging attempt (say, a request that
/// never gets an answer) cannot stretch the wait past `timeout`.
///
/// # Panics
/// When `timeout` passes without success, with `what`, the number of attempts and the last
/// failure in the message.
pub async fn wait_for<F, Fut, R>(what: &str, timeout: Duration, mut f: F) -> R::Output
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Attempt,
{
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, f()).await {
            Ok(outcome) => match outcome.into_outcome() {
                Ok(value) => return value,
                Err(why) => why,
            },
            Err(_) => format!("attempt {attempts} still running at the deadline"),
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            panic!("timed out after {timeout:?} ({attempts} attempts) waiting for {what}: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
