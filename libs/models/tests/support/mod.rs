//! Shared by the real-model test binaries: where the model files are, and
//! the requests they send.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use keel_models::{ChatMessage, GenerationParams, GenerationRequest, Role};

/// `KEEL_MODELS_DIR`, default `<repo>/.models` (what `scripts/test` fetches).
pub fn models_dir() -> PathBuf {
    match std::env::var_os(keel_models::model_files::MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.models"),
    }
}

/// Fails the test, saying how to fetch the models, when `path` is missing:
/// a real-model test must never pass by skipping.
pub fn require_model_file(path: &Path, dir: &Path) {
    assert!(
        path.is_file(),
        "{} is missing: these tests need the real models; fetch them with \
         `cargo run -p keel -- models fetch --dir {}` (or point KEEL_MODELS_DIR at a models directory)",
        path.display(),
        dir.display()
    );
}

/// A one-message chat asking `question`.
pub fn ask(question: &str, params: GenerationParams) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage {
            role: Role::User,
            content: question.to_string(),
        }],
        question: question.to_string(),
        passages: Vec::new(),
        params,
    }
}

/// Greedy decoding (temperature 0) of at most `max_tokens`.
pub fn greedy(max_tokens: u32) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..GenerationParams::default()
    }
}
