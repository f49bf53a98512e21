//! One request through the activator: name the revision, count it, wait for
//! a slot, forward it to the chosen instance, stream the response back.
//!
//! Bodies stream in both directions (hyper `Incoming` passed through, never
//! collected). The slot and the concurrency count are held by the response
//! body until its last frame (or by the tunnel, for a websocket). Upstream
//! gets the request with hop-by-hop headers removed and
//! `K-Proxy-Request: activator` added; the Host header is kept. Each request runs in an
//! `activator` span continuing the caller's W3C trace (`crate::trace`).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::Instrument;

use crate::activator::{Activator, Entry};
use crate::body::{self, Body, Guarded, IdleTimeout};
use crate::error::{BoxError, Error, rescue};
use crate::revision::{
    NAMESPACE_HEADER, PROXY_HEADER, PROXY_HEADER_VALUE, REVISION_HEADER, RevisionKey,
};
use crate::throttler::Permit;

/// Everything a request holds while it is in flight.
struct InFlight {
    _permit: Permit,
    _count: Counted,
}

/// Counts a request in its revision's concurrency from creation to drop.
pub(crate) struct Counted(Arc<Entry>);

impl Counted {
    fn new(entry: Arc<Entry>) -> Self {
        entry.stats().request_in(Instant::now());
        Self(entry)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.stats().request_out(Instant::now());
    }
}

impl Activator {
    /// Serves one request: the response from the revision's instance, or the
    /// [`rescue`] response for why there is none.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let arrival = Instant::now();
        let span = crate::trace::request_span(req.headers());
        let resp = match self.forward(req, arrival).instrument(span).await {
            Ok(resp) => resp,
            Err(err) => {
                match &err {
                    Error::Upstream { .. } | Error::Timeout { .. } => {
                        tracing::warn!(error = %err, kind = err.kind(), "request failed")
                    }
                    _ => tracing::debug!(error = %err, kind = err.kind(), "request refused"),
                }
                self.inner.metrics.failure(err.kind());
                rescue(&err).map(body::full)
            }
        };
        let seconds = arrival.elapsed().as_secs_f64();
        self.inner.metrics.response(resp.status().as_u16(), seconds);
        resp
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        arrival: Instant,
    ) -> Result<Response<Body>, Error> {
        let key = revision_of(req.headers())?;
        let entry = self
            .entry(&key)
            .ok_or_else(|| Error::UnknownRevision(key.clone()))?;
        let config = entry.config.clone();
        let counted = Counted::new(entry);
        let upgrade = wants_upgrade(&req);
        if upgrade {
            // Each tunnel holds two connections and a slot for as long as it lives.
            let open = self.inner.tunnels.receiver_count();
            if open >= self.inner.config.max_tunnels {
                return Err(Error::TooManyTunnels {
                    revision: key,
                    open,
                });
            }
        }
        let permit = self.inner.throttler.acquire(&key, config.timeout).await?;
        let addr = permit.addr();

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut upstream_req = upstream_request(req, &key, addr, client_upgrade.is_some())?;
        crate::trace::inject(&tracing::Span::current(), upstream_req.headers_mut());
        // Websockets are HTTP/1.1 upgrades whatever the revision's protocol.
        let client = if config.h2c && client_upgrade.is_none() {
            &self.inner.h2c
        } else {
            &self.inner.http1
        };
        // The response must start within the Revision's timeout (counted from arrival), its
        // response-start timeout and its idle timeout (both counted from now), whichever
        // ends first.
        let forwarded = Instant::now();
        let (deadline, timeout) = [
            Some((arrival, config.timeout)),
            config.response_start_timeout.map(|t| (forwarded, t)),
            config.idle_timeout.map(|t| (forwarded, t)),
        ]
        .into_iter()
        .flatten()
        .map(|(from, t)| (crate::revision::deadline(from, t), t))
        .min_by_key(|(d, _)| *d)
        .unwrap_or((
            crate::revision::deadline(arrival, config.timeout),
            config.timeout,
        ));
        let mut resp = match tokio::time::timeout_at(deadline, client.request(upstream_req)).await {
            Err(_) => {
                return Err(Error::Timeout {
                    revision: key,
                    addr,
                    timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(Error::Upstream {
                    revision: key,
                    addr,
                    source: Box::new(e),
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let in_flight = InFlight {
            _permit: permit,
            _count: counted,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            self.spawn_tunnel(key, client_upgrade, upstream_upgrade, in_flight);
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, body::empty()));
        }

        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let incoming = match config.idle_timeout {
            Some(idle) => body::boxed(IdleTimeout::new(incoming, idle)),
            None => body::boxed(incoming),
        };
        Ok(Response::from_parts(
            parts,
            Body::new(Guarded::new(incoming, in_flight)),
        ))
    }

    /// Copies bytes both ways between the client's and the instance's
    /// upgraded connections until either closes (or the drain grace ends).
    fn spawn_tunnel(
        &self,
        key: RevisionKey,
        client: OnUpgrade,
        upstream: OnUpgrade,
        in_flight: InFlight,
    ) {
        let tracked = self.inner.tunnels.subscribe();
        let mut hard_stop = self.inner.hard_stop.subscribe();
        tokio::spawn(async move {
            let _tracked = tracked;
            let _in_flight = in_flight;
            let copy = async {
                let (client, upstream) = tokio::try_join!(client, upstream)?;
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                // Ends when either side closes; a reset is an ordinary end here.
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                Ok::<_, BoxError>(())
            };
            tokio::select! {
                res = copy => if let Err(e) = res {
                    tracing::debug!(revision = %key, error = %e, "upgrade failed");
                },
                () = async { let _ = hard_stop.wait_for(|stop| *stop).await; } => {
                    tracing::debug!(revision = %key, "tunnel closed by shutdown");
                }
            }
        });
    }
}

/// The revision a request names, from the last value of each header (as
/// upstream's `LastHeaderValue`).
fn revision_of(headers: &HeaderMap) -> Result<RevisionKey, Error> {
    let last = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (last(NAMESPACE_HEADER), last(REVISION_HEADER)) {
        (Some(ns), Some(name)) => Ok(RevisionKey::new(ns, name)),
        _ => Err(Error::MissingRevision),
    }
}

/// An HTTP/1.1 request asking to switch protocols (websocket).
fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the `Connection` header names. An
/// upgrade keeps `Connection: upgrade` and `Upgrade`. `TE: trailers` stays
/// (gRPC needs it); other `TE` values go.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let trailers_only = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.remove(header::TE);
    }
}

/// The request as sent to `addr`: absolute URI to the instance, original Host
/// kept (or taken from the URI an h2 client sent), hop-by-hop headers
/// removed, `K-Proxy-Request: activator` set.
fn upstream_request(
    req: Request<Incoming>,
    key: &RevisionKey,
    addr: std::net::SocketAddr,
    upgrade: bool,
) -> Result<Request<Body>, Error> {
    let (mut parts, incoming) = req.into_parts();
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .map_err(|e| Error::Upstream {
            revision: key.clone(),
            addr,
            source: Box::new(e),
        })?;
    // The client picks the protocol (HTTP/1.1 or h2) from its own settings.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    parts.headers.insert(
        HeaderName::from_static(PROXY_HEADER),
        HeaderValue::from_static(PROXY_HEADER_VALUE),
    );
    Ok(Request::from_parts(parts, body::boxed(incoming)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn revision_comes_from_the_last_header_values() {
        let h = headers(&[
            ("Knative-Serving-Namespace", "other"),
            ("Knative-Serving-Namespace", "default"),
            ("Knative-Serving-Revision", "hello-00001"),
        ]);
        assert_eq!(
            revision_of(&h).unwrap(),
            RevisionKey::new("default", "hello-00001")
        );
        for missing in [
            headers(&[("Knative-Serving-Revision", "hello-00001")]),
            headers(&[("Knative-Serving-Namespace", "default")]),
            headers(&[
                ("Knative-Serving-Namespace", "default"),
                ("Knative-Serving-Revision", " "),
            ]),
        ] {
            assert!(matches!(revision_of(&missing), Err(Error::MissingRevision)));
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn te_trailers_and_upgrade_headers_survive_where_needed() {
        let mut h = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");

        let mut h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "abc");
    }

    #[test]
    fn upgrade_detection_needs_both_headers_on_http11() {
        let mut req = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(wants_upgrade(&req));
        *req.version_mut() = Version::HTTP_2;
        assert!(!wants_upgrade(&req));
        let req = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!wants_upgrade(&req));
    }
}
