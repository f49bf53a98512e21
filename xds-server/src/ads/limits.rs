//! What one ADS client may make the server hold. Every client is untrusted: a request for a type
//! the server does not serve ends the stream before any state is kept, the names a client may
//! subscribe to or claim to hold are bounded by what the server serves plus a margin, and the
//! responses awaiting an answer are bounded per type.

use std::collections::HashMap;

use tonic::Status;

use super::stream::Common;
use crate::resource::{SNAPSHOT_TYPES, short_name};

/// Names beyond what the server serves that a client may subscribe to, or say it holds, per
/// type. A real Envoy names only what it was sent (plus names that went away moments ago).
pub(crate) const EXTRA_NAMES: usize = 10_000;

/// Responses of one type sent and not answered yet. Envoy answers each in order; a client that
/// falls this far behind loses ACK tracking for the oldest (its late answers count as stale).
pub(crate) const MAX_PENDING: usize = 64;

impl<Resp> Common<Resp> {
    /// Refuses a type this server does not serve (the six xDS types, and any other type the
    /// node's snapshot holds), before anything is kept for it.
    pub fn check_type(&self, type_url: &str) -> Result<(), Status> {
        if type_url.is_empty() {
            return Err(Status::invalid_argument(
                "a discovery request without type_url on an ADS stream",
            ));
        }
        if SNAPSHOT_TYPES.contains(&type_url) || self.shared.cache.has_type(&self.group, type_url) {
            return Ok(());
        }
        Err(Status::unimplemented(format!(
            "type {:?} is not served here (served: {})",
            truncate(type_url, 200),
            SNAPSHOT_TYPES
                .iter()
                .map(|t| short_name(t))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Refuses a client naming (subscribing to, or holding) `count` resources of `type_url`
    /// when the server serves far fewer.
    pub fn check_names(&self, type_url: &str, count: usize, what: &str) -> Result<(), Status> {
        let served = self.shared.cache.type_len(&self.group, type_url);
        if count <= served + EXTRA_NAMES {
            return Ok(());
        }
        Err(Status::resource_exhausted(format!(
            "{what} {count} {} resources; this server serves {served} (at most {EXTRA_NAMES} more are accepted)",
            short_name(type_url)
        )))
    }
}

/// Drops the oldest pending responses beyond [`MAX_PENDING`].
pub(crate) fn bound_pending<P>(
    pending: &mut HashMap<String, P>,
    at: impl Fn(&P) -> tokio::time::Instant,
) {
    while pending.len() > MAX_PENDING {
        let Some(oldest) = pending
            .iter()
            .min_by_key(|(_, p)| at(p))
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        pending.remove(&oldest);
    }
}

/// At most `max` bytes of an untrusted string (on a character boundary), marked when cut.
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len()).into()
}
