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
