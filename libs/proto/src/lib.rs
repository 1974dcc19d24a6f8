//! keel-proto: the code generated from `proto/keel/v1`. Nothing hand-written
//! lives here; conversions belong to the services' `api.rs`.

#![allow(clippy::all, clippy::pedantic)]

pub mod keel {
    pub mod v1 {
        tonic::include_proto!("keel.v1");
    }
}

pub use keel::v1;

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keel_descriptor");

/// The encoded file descriptor set of the OTLP trace collector service
/// (`opentelemetry.proto.collector.trace.v1.TraceService` and the messages
/// it uses), for server reflection on the port that serves it. Descriptors
/// only: the Rust types come from the `opentelemetry-proto` crate.
pub const OTLP_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("otlp_descriptor");
