//! Regenerates `proto/envoy.fds.bin`: the Envoy descriptor set used for gRPC
//! reflection and for rendering resources as JSON/YAML. Compiles, with protox,
//! the `.proto` sources that ship inside the `envoy-types` crate, so the
//! descriptors match the Rust types exactly.
//!
//! Run through `scripts/gen-envoy-descriptors.sh`, which finds the
//! `envoy-types` source directory with `cargo metadata`:
//! `cargo run -p sluice-proto --example gen_envoy_descriptors -- ENVOY_TYPES_DIR OUT`.

/// The Envoy APIs Sluice serves or renders (imports are followed).
const FILES: &[&str] = &[
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/status/v3/csds.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/route/v3/scoped_route.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/service/metrics/v3/metrics_service.proto",
    "envoy/service/load_stats/v3/lrs.proto",
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/filters/http/lua/v3/lua.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/service/auth/v3/external_auth.proto",
];

/// Include roots inside `envoy-types/proto/`.
const ROOTS: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec",
    "opentelemetry-proto",
    "client_model",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: gen_envoy_descriptors ENVOY_TYPES_DIR OUT_FILE".into());
    };
    let includes: Vec<String> = ROOTS.iter().map(|r| format!("{dir}/proto/{r}")).collect();
    // Encoded by the compiler itself, not through `prost_types`: that keeps custom options
    // such as `udpa.annotations.sensitive`, which the redaction of key material reads.
    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(FILES)?;
    let files = compiler.descriptor_pool().files().count();
    let bytes = compiler.encode_file_descriptor_set();
    std::fs::write(&out, &bytes)?;
    println!("{out}: {files} files, {} bytes", bytes.len());
    Ok(())
}
