//! `ModelCatalog::load` with the real model files: the local models join
//! the built-in ones under their agreed names, and they can compute at the
//! same time. Needs KEEL_MODELS_DIR (default `<repo>/.models`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_models::{ignore_deltas, ModelCatalog, ModelsConfig};

use support::{ask, greedy, models_dir};

fn load_catalog() -> ModelCatalog {
    let config = ModelsConfig::in_dir(models_dir());
    ModelCatalog::load(&config).unwrap_or_else(|error| {
        panic!(
            "{error} (these tests need the real models; fetch them with \
             `cargo run -p keel -- models fetch --dir {}`)",
            config.dir.display()
        )
    })
}

#[test]
fn the_catalog_serves_minilm_and_smollm2_from_the_models_dir() {
    let catalog = load_catalog();
    assert_eq!(catalog.embedder_names(), vec!["hashing", "minilm"]);
    assert_eq!(catalog.generator_names(), vec!["extractive", "smollm2"]);

    let embedder = catalog.embedder("minilm").unwrap();
    assert_eq!(embedder.dimension(), 384);
    let vectors = embedder
        .embed(&["refunds within 30 days".to_string()])
        .unwrap();
    assert_eq!(vectors[0].len(), 384);

    let generator = catalog.generator("smollm2").unwrap();
    let request = ask("What is the capital of France?", greedy(32));
    let generation = generator.generate(&request, &mut ignore_deltas).unwrap();
    assert_eq!(generation.text, "The capital of France is Paris.");
}

/// The two models take turns on the CPU (one llama.cpp call at a time);
/// an ingest during a chat must change neither the answer nor the vectors.
#[test]
fn models_computing_at_once_answer_as_they_do_alone() {
    let catalog = load_catalog();
    let embedder = catalog.embedder("minilm").unwrap();
    let generator = catalog.generator("smollm2").unwrap();
    let sentences: Vec<String> = (0..64)
        .map(|index| format!("Refund request {index} was approved within 30 days."))
        .collect();
    // Over 512 tokens: the prompt is read in many llama.cpp calls, and the
    // embedder gets turns in between.
    let context = "Keel keeps every request and its trace, and feedback joins them. ".repeat(50);
    let request = ask(
        &format!("{context}\nWhat is the capital of France?"),
        greedy(24),
    );

    let vectors_alone = embedder.embed(&sentences).unwrap();
    let answer_alone = generator.generate(&request, &mut ignore_deltas).unwrap();
    assert!(
        answer_alone.input_tokens > 512,
        "the prompt has only {} tokens",
        answer_alone.input_tokens
    );
    assert!(!answer_alone.text.is_empty());

    let (answer_together, passes) = std::thread::scope(|scope| {
        let ingest = scope.spawn(|| {
            (0..3)
                .map(|_| embedder.embed(&sentences).unwrap())
                .collect::<Vec<_>>()
        });
        let answer = generator.generate(&request, &mut ignore_deltas).unwrap();
        (answer, ingest.join().unwrap())
    });
    assert_eq!(answer_together, answer_alone);
    for vectors in passes {
        assert_eq!(vectors, vectors_alone);
    }
}
