//! Compiles Sluice's own protos with protox (no system `protoc`) and writes the
//! descriptor set that gRPC reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "sluice/xds/v1/debug.proto",
        "sluice/autoscaler/v1/stats.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("sluice_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .extern_path(
            ".google.protobuf.Any",
            "::envoy_types::pb::google::protobuf::Any",
        )
        .extern_path(
            ".google.protobuf.Timestamp",
            "::envoy_types::pb::google::protobuf::Timestamp",
        )
        .compile_fds(fds)?;
    Ok(())
}
