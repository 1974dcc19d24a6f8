//! Compiles `proto/keel/v1/*.proto` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

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
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    Ok(())
}
