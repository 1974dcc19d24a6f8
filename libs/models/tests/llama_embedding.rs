//! The `minilm` embedder on the real all-MiniLM-L6-v2 GGUF, against the
//! vectors sentence-transformers computes for the same sentences
//! (tests/data/minilm_reference.json, made by make_minilm_reference.py).
//! Needs the model files: KEEL_MODELS_DIR, default `<repo>/.models`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::OnceLock;

use keel_models::{Embedder, LlamaEmbedder, LlamaEmbedderOptions, ModelsConfig};

use support::{models_dir, require_model_file};

fn embedder() -> &'static LlamaEmbedder {
    static EMBEDDER: OnceLock<LlamaEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = models_dir();
        let path = ModelsConfig::in_dir(dir.clone()).paths().minilm_gguf;
        require_model_file(&path, &dir);
        LlamaEmbedder::load(&LlamaEmbedderOptions::new("minilm", path)).unwrap()
    })
}

struct Reference {
    sentences: Vec<String>,
    token_counts: Vec<usize>,
    vectors: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; it is written by tests/data/make_minilm_reference.py",
            path.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sentences: Vec<String> = serde_json::from_value(json["sentences"].clone()).unwrap();
    let token_counts: Vec<usize> = serde_json::from_value(json["token_counts"].clone()).unwrap();
    let vectors: Vec<Vec<f32>> = serde_json::from_value(json["vectors"].clone()).unwrap();
    assert_eq!(sentences.len(), vectors.len());
    assert!(
        sentences.len() >= 20,
        "the reference needs at least 20 sentences"
    );
    Reference {
        sentences,
        token_counts,
        vectors,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm_a = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norm_b = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm_a * norm_b)
}

#[test]
fn vectors_match_sentence_transformers_for_every_sentence() {
    let reference = reference();
    let embedder = embedder();
    assert_eq!(embedder.dimension(), 384);
    let vectors = embedder.embed(&reference.sentences).unwrap();
    assert_eq!(vectors.len(), reference.sentences.len());
    let mut failures = Vec::new();
    let mut worst = 1.0_f32;
    for (index, sentence) in reference.sentences.iter().enumerate() {
        let similarity = cosine(&vectors[index], &reference.vectors[index]);
        worst = worst.min(similarity);
        if similarity < 0.999 {
            let ours = embedder.tokenize(sentence).len();
            failures.push(format!(
                "#{index} cosine {similarity:.6} (tokens: ours {ours}, reference {}): {sentence:?}",
                reference.token_counts.get(index).copied().unwrap_or(0)
            ));
        }
    }
    eprintln!("minilm: worst cosine to sentence-transformers {worst:.6}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vectors_are_unit_length_and_do_not_depend_on_the_batch() {
    let reference = reference();
    let embedder = embedder();
    let together = embedder.embed(&reference.sentences).unwrap();
    for (index, sentence) in reference.sentences.iter().enumerate().step_by(5) {
        let alone = embedder.embed(std::slice::from_ref(sentence)).unwrap();
        let norm = alone[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "#{index} has norm {norm}");
        let similarity = cosine(&alone[0], &together[index]);
        assert!(
            similarity > 0.99999,
            "#{index}: alone vs batched cosine {similarity}"
        );
    }
}

#[test]
fn long_inputs_are_cut_to_256_tokens_keeping_the_final_separator() {
    let embedder = embedder();
    let long_text = "retrieval augmented generation ".repeat(200);
    let tokens = embedder.tokenize(&long_text);
    assert_eq!(tokens.len(), 256);
    let short = embedder.tokenize("Hello world");
    // [CLS] hello world [SEP]
    assert_eq!(short.len(), 4);
    assert_eq!(tokens.first(), short.first());
    assert_eq!(tokens.last(), short.last());
}

#[test]
fn no_texts_give_no_vectors() {
    assert!(embedder().embed(&[]).unwrap().is_empty());
}

#[test]
fn word_token_counts_add_up_to_what_the_model_sees() {
    let reference = reference();
    let embedder = embedder();
    assert_eq!(embedder.special_tokens(), 2);
    assert_eq!(embedder.max_input_tokens(), Some(256));
    for (index, sentence) in reference.sentences.iter().enumerate() {
        let words = embedder.word_tokens(sentence);
        assert_eq!(words.len(), sentence.split_whitespace().count(), "#{index}");
        let total: u32 = words.iter().sum();
        // What the model sees is cut at its window; the counts are not.
        assert_eq!(
            (total as usize + embedder.special_tokens()).min(256),
            embedder.tokenize(sentence).len(),
            "#{index}: {sentence:?}"
        );
        if let Some(expected) = reference.token_counts.get(index) {
            assert_eq!(total as usize + 2, *expected, "#{index}: {sentence:?}");
        }
    }
    // Punctuation and sub-words are tokens of their own.
    let counts = embedder.word_tokens("json.dumps(obj) unbelievably");
    assert!(
        counts.len() == 2 && counts.iter().all(|count| *count >= 3),
        "{counts:?}"
    );
}
