//! Logging and tracing set-up: `RUST_LOG`-style filtering to stderr, plus OTLP
//! trace export (and the W3C trace-context propagator the activator uses to continue
//! Envoy's traces) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the OTLP pipeline alive; flushes spans when dropped.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Logging for servers: `info` by default (`RUST_LOG` overrides), and OTLP
/// export of spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init_server() -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let mut telemetry = Telemetry::default();
    let otel = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("sluice")
                            .build(),
                    )
                    .build();
                use opentelemetry::trace::TracerProvider as _;
                let tracer = provider.tracer("sluice");
                // W3C trace context in and out of the activator (its spans join Envoy's traces).
                opentelemetry::global::set_text_map_propagator(
                    opentelemetry_sdk::propagation::TraceContextPropagator::new(),
                );
                telemetry.provider = Some(provider);
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(EnvFilter::new("info")),
                )
            }
            Err(e) => {
                eprintln!("sluice: OTLP export disabled: {e}");
                None
            }
        }
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    telemetry
}

/// Logging for short CLI commands: warnings only unless `RUST_LOG` says more.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}
