//! W3C trace context through the activator.
//!
//! Each request gets a span (`activator`) whose parent is the caller's `traceparent` — Envoy's
//! span when the gateway traces (`config-kourier`'s `tracing-*` keys) — and goes upstream with
//! the activator's span as its parent: one trace from Envoy through the activator to the app.
//! The spans leave the process only when the binary exports them (it installs
//! `tracing-opentelemetry` and the W3C propagator when `OTEL_EXPORTER_OTLP_ENDPOINT` is set);
//! otherwise nothing is extracted or injected, and the caller's own `traceparent` passes
//! through untouched.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The span of one request, child of the trace context its headers carry (if any).
pub(crate) fn request_span(headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("activator", otel.kind = "server");
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records this span: nothing to link then.
        let _ = span.set_parent(parent);
    }
    span
}

/// Makes `span` the parent of the upstream request (W3C `traceparent`, `tracestate`), when it
/// is recorded; else leaves the headers as they came.
pub(crate) fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeadersMut(headers))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_an_exporter_the_callers_context_passes_untouched() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(PARENT));
        let span = request_span(&headers);
        inject(&span, &mut headers);
        assert_eq!(headers["traceparent"], PARENT);
    }

    #[test]
    fn the_upstream_request_is_a_child_of_the_activator_span_in_the_callers_trace() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(PARENT));
            let span = request_span(&headers);
            inject(&span, &mut headers);
            let sent = headers["traceparent"].to_str().unwrap().to_string();
            let parts: Vec<&str> = sent.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(
                parts[2], "00f067aa0ba902b7",
                "the activator's span is the parent"
            );
            assert_eq!(
                span.context().span().span_context().span_id().to_string(),
                parts[2]
            );
        });
    }
}
