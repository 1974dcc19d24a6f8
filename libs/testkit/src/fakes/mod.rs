//! Stand-ins for the services a service calls, one per file, each serving
//! real gRPC (or HTTP) on port 0 so the code under test uses its real
//! clients. Calls a fake does not script answer UNIMPLEMENTED.

pub mod monitoring;
pub mod openai;
pub mod registry;
pub mod slow_words;
pub mod vector_index;

pub use monitoring::FakeMonitoring;
pub use openai::FakeOpenAi;
pub use registry::{chain_spec, FakeRegistry};
pub use slow_words::SlowWords;
pub use vector_index::FakeVectorIndex;

use tonic::{Response, Status};

/// The answer of every call a fake does not script, so a test that
/// reaches one by mistake fails with a clear status instead of hanging.
fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}
