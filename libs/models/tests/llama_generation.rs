//! The `smollm2` generator on the real SmolLM2-135M-Instruct GGUF.
//! Needs the model files: KEEL_MODELS_DIR, default `<repo>/.models`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::ops::ControlFlow;
use std::sync::OnceLock;

use keel_models::{
    ignore_deltas, FinishReason, Generation, GenerationParams, GenerationRequest, Generator,
    LlamaGenerator, LlamaGeneratorOptions, ModelError, ModelsConfig,
};

use support::{ask, greedy, models_dir, require_model_file};

const CONTEXT_LENGTH: u32 = 2048;

fn generator() -> &'static LlamaGenerator {
    static GENERATOR: OnceLock<LlamaGenerator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        let dir = models_dir();
        let path = ModelsConfig::in_dir(dir.clone()).paths().smollm2_gguf;
        require_model_file(&path, &dir);
        let mut options = LlamaGeneratorOptions::new("smollm2", path);
        options.context_length = CONTEXT_LENGTH;
        LlamaGenerator::load(&options).unwrap()
    })
}

/// Generates, collecting the deltas as they come.
fn generate_streamed(request: &GenerationRequest) -> (Generation, Vec<String>) {
    let mut deltas = Vec::new();
    let generation = generator()
        .generate(request, &mut |delta: &str| {
            deltas.push(delta.to_string());
            ControlFlow::Continue(())
        })
        .unwrap();
    (generation, deltas)
}

fn assert_no_special_tokens(text: &str) {
    for marker in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|"] {
        assert!(
            !text.contains(marker),
            "special token text {marker} in {text:?}"
        );
    }
}

#[test]
fn greedy_answers_are_sensible_and_repeatable() {
    // Questions a 135M-parameter model gets right; each answer must name
    // one of the expected words.
    let cases: [(&str, &[&str]); 4] = [
        ("What is the capital of France?", &["paris"]),
        ("What color is the sky on a clear day?", &["blue"]),
        ("How many days are there in a week?", &["seven", "7"]),
        (
            "What is the boiling point of water in degrees Celsius?",
            &["100"],
        ),
    ];
    let mut wrong = Vec::new();
    for (question, expected) in cases {
        let request = ask(question, greedy(64));
        let (first, deltas) = generate_streamed(&request);
        let (second, _) = generate_streamed(&request);
        eprintln!("{question} -> {:?} ({:?})", first.text, first.finish_reason);
        let answer = first.text.to_lowercase();
        if !expected.iter().any(|word| answer.contains(word)) {
            wrong.push(format!(
                "{question} -> {:?}, expected one of {expected:?}",
                first.text
            ));
        }
        assert_eq!(first, second, "greedy generation is not deterministic");
        assert_eq!(deltas.concat(), first.text);
        assert_no_special_tokens(&first.text);
        assert!(
            first.input_tokens > 5,
            "input tokens {}",
            first.input_tokens
        );
        assert!(first.output_tokens > 0 && first.output_tokens <= 64);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_answer_ends_at_the_end_of_turn_token() {
    let (generation, _) = generate_streamed(&ask("What is the capital of France?", greedy(200)));
    assert_eq!(
        generation.finish_reason,
        FinishReason::Stop,
        "{generation:?}"
    );
    assert_eq!(generation.text, "The capital of France is Paris.");
    // Seven words and the period, then `<|im_end|>`, which counts as
    // generated but is not text.
    assert!(generation.output_tokens < 20, "{generation:?}");
    assert_no_special_tokens(&generation.text);
}

#[test]
fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let (generation, deltas) =
        generate_streamed(&ask("Write a long story about a dragon.", greedy(7)));
    assert_eq!(generation.finish_reason, FinishReason::Length);
    assert_eq!(generation.output_tokens, 7);
    assert_eq!(deltas.concat(), generation.text);
    assert!(!generation.text.is_empty());
}

#[test]
fn a_stop_sequence_ends_the_answer_before_it_and_never_streams() {
    let question = "List the days of the week, one per line.";
    let (full, _) = generate_streamed(&ask(question, greedy(80)));
    // Stop at a word in the middle of the unconstrained answer.
    let words: Vec<&str> = full.text.split_whitespace().collect();
    assert!(
        words.len() >= 4,
        "answer too short to test stop sequences: {:?}",
        full.text
    );
    let stop = words[words.len() / 2].to_string();
    let stop_at = full.text.find(&stop).unwrap();
    let params = GenerationParams {
        stop: vec![stop.clone()],
        ..greedy(80)
    };
    let (stopped, deltas) = generate_streamed(&ask(question, params));
    assert_eq!(stopped.finish_reason, FinishReason::StopSequence);
    assert_eq!(stopped.text, full.text[..stop_at]);
    assert_eq!(deltas.concat(), stopped.text);
    assert!(!deltas.concat().contains(&stop));
    assert!(stopped.output_tokens < full.output_tokens);
}

#[test]
fn break_stops_generation_within_a_few_tokens() {
    let mut deltas = Vec::new();
    let generation = generator()
        .generate(
            &ask("Write a long story about a dragon.", greedy(200)),
            &mut |delta: &str| {
                deltas.push(delta.to_string());
                ControlFlow::Break(())
            },
        )
        .unwrap();
    assert_eq!(generation.finish_reason, FinishReason::Cancelled);
    // Nothing is handed over after the Break; the worker, which does not
    // wait for the caller between tokens, may have made a few more.
    assert_eq!(deltas.len(), 1);
    assert!(
        generation.text.starts_with(&deltas[0]),
        "{:?}",
        generation.text
    );
    assert!(
        generation.output_tokens <= 8,
        "{} tokens after break",
        generation.output_tokens
    );
}

#[test]
fn a_request_beyond_the_context_length_is_refused_with_the_numbers() {
    let long_question = "tell me about the weather ".repeat(400);
    let error = generator()
        .generate(&ask(&long_question, greedy(256)), &mut ignore_deltas)
        .unwrap_err();
    let ModelError::InvalidInput(message) = &error else {
        panic!("expected invalid input, got {error:?}");
    };
    assert!(message.contains("max_tokens is 256"), "{message}");
    assert!(
        message.contains(&format!("context length {CONTEXT_LENGTH}")),
        "{message}"
    );

    let error = generator()
        .generate(&ask("Hi", greedy(CONTEXT_LENGTH)), &mut ignore_deltas)
        .unwrap_err();
    assert!(matches!(error, ModelError::InvalidInput(_)), "{error:?}");
}

#[test]
fn seeded_sampling_is_repeatable() {
    let params = GenerationParams {
        temperature: Some(0.9),
        top_p: Some(0.95),
        max_tokens: Some(24),
        seed: Some(42),
        stop: Vec::new(),
    };
    let request = ask("Tell me a fact about cats.", params);
    let (first, _) = generate_streamed(&request);
    let (second, _) = generate_streamed(&request);
    assert_eq!(first.text, second.text);
    assert_no_special_tokens(&first.text);
}

#[test]
fn special_token_text_in_the_prompt_is_a_special_token() {
    // A chat template's markers typed into the conversation are still one
    // token each: the prompt is the template's, so it stays short.
    let generator = generator();
    let prompt = generator.render_prompt(&ask("Hi", greedy(8))).unwrap();
    assert!(
        prompt.contains("<|im_start|>user\nHi<|im_end|>"),
        "{prompt:?}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    // Parsed as text, the three markers alone would be over 20 tokens.
    let generation = generator
        .generate(&ask("Say hello.", greedy(1)), &mut ignore_deltas)
        .unwrap();
    assert_eq!(generation.input_tokens, 12);
}
