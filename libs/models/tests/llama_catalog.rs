//! `ModelCatalog::load` with the real model files: the local models join
//! the built-in ones under their agreed names. Needs KEEL_MODELS_DIR
//! (default `<repo>/.models`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_models::{ignore_deltas, ChatMessage, GenerationParams, GenerationRequest, ModelCatalog};
use keel_models::{ModelsConfig, Role};

use support::models_dir;

#[test]
fn the_catalog_serves_minilm_and_smollm2_from_the_models_dir() {
    let config = ModelsConfig::in_dir(models_dir());
    let catalog = ModelCatalog::load(&config).unwrap_or_else(|error| {
        panic!(
            "{error} (these tests need the real models; fetch them with \
             `cargo run -p keel -- models fetch --dir {}`)",
            config.dir.display()
        )
    });
    assert_eq!(catalog.embedder_names(), vec!["hashing", "minilm"]);
    assert_eq!(catalog.generator_names(), vec!["extractive", "smollm2"]);

    let embedder = catalog.embedder("minilm").unwrap();
    assert_eq!(embedder.dimension(), 384);
    let vectors = embedder
        .embed(&["refunds within 30 days".to_string()])
        .unwrap();
    assert_eq!(vectors[0].len(), 384);

    let generator = catalog.generator("smollm2").unwrap();
    let request = GenerationRequest {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "What is the capital of France?".to_string(),
        }],
        question: "What is the capital of France?".to_string(),
        passages: Vec::new(),
        params: GenerationParams {
            temperature: Some(0.0),
            max_tokens: Some(32),
            ..GenerationParams::default()
        },
    };
    let generation = generator.generate(&request, &mut ignore_deltas).unwrap();
    assert_eq!(generation.text, "The capital of France is Paris.");
}
