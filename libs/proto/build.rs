//! Compiles `proto/keel/v1/*.proto` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

/// The OTLP trace files vendored under `proto/opentelemetry`: described for
/// reflection only, because the `opentelemetry-proto` crate already
/// generates their Rust types.
const OTLP_FILES: [&str; 4] = [
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/trace/v1/trace.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "keel/v1/common.proto",
        "keel/v1/registry.proto",
        "keel/v1/vector_index.proto",
        "keel/v1/serving.proto",
        "keel/v1/monitoring.proto",
        "keel/v1/feedback.proto",
    ];
    let file_descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // For server reflection; compile_fds does not write the set itself.
    std::fs::write(
        out_dir.join("keel_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(file_descriptors)?;
    let otlp_descriptors = protox::compile(OTLP_FILES, [&proto_root])?;
    std::fs::write(
        out_dir.join("otlp_descriptor.bin"),
        otlp_descriptors.encode_to_vec(),
    )?;
    for file in files.iter().chain(OTLP_FILES.iter()) {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    Ok(())
}
