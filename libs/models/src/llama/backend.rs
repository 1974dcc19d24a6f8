//! The one llama.cpp backend of the process: llama.cpp may be initialised
//! only once, and every model and context needs a reference to it.

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use crate::ModelError;

/// `LLAMA_FLASH_ATTN_TYPE_DISABLED`. llama.cpp's default, AUTO, turns
/// flash attention on for the CPU, where on this 2-core x86 machine it cut
/// SmolLM2's decode from 75 to 49 tokens/s and prefill from 200 to 174 at an
/// 800-token prompt (llama-cpp-python, which defaults to off, measured
/// both ways). llama-cpp-2 does not re-export the constant.
pub(crate) const FLASH_ATTENTION_DISABLED: i32 = 0;

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
