//! The one llama.cpp backend of the process: llama.cpp may be initialised
//! only once, and every model and context needs a reference to it.

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use crate::ModelError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process's llama.cpp backend, initialised on first use. llama.cpp's
/// own log lines go to `tracing` (target `llama-cpp-2`) instead of stderr.
pub(crate) fn backend() -> Result<&'static LlamaBackend, ModelError> {
    let initialised = BACKEND.get_or_init(|| {
        send_logs_to_tracing(LogOptions::default());
        LlamaBackend::init().map_err(|error| error.to_string())
    });
    initialised
        .as_ref()
        .map_err(|error| ModelError::Backend(format!("llama.cpp backend failed to start: {error}")))
}

/// Loads a GGUF model on the process's backend; `role` ("embedder",
/// "generator") and `name` say in the error which model failed.
pub(crate) fn load_model(role: &str, name: &str, path: &Path) -> Result<LlamaModel, ModelError> {
    LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default()).map_err(|error| {
        ModelError::Backend(format!(
            "cannot load {role} `{name}` from {}: {error}",
            path.display()
        ))
    })
}
