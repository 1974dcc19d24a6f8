//! The real model files: what `keel models fetch` put under
//! `KEEL_MODELS_DIR` (default `<repo>/.models`) matches the manifest, a
//! second fetch only verifies, and the converted MiniLM GGUF holds what
//! llama.cpp expects (shared/notes/minilm-gguf.md). These tests fail, never
//! skip, when the files are missing: fetch them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use keel_models::gguf_file::{read_gguf_header, GgufTensorType, GgufValue};
use keel_models::minilm_gguf::{convert_minilm_to_gguf, MINILM_GGUF_TENSOR_COUNT};
use keel_models::model_files::{
    check_models_present, fetch_models, sha256_file, FetchOptions, ModelPaths, MANIFEST,
    MODELS_DIR_ENV,
};
use support::models_dir;

/// The paths, or a failure that says how to get the files.
fn fetched_models() -> ModelPaths {
    let dir = models_dir();
    match check_models_present(&dir) {
        Ok(paths) => paths,
        Err(error) => panic!(
            "the real model files are needed: {error}\n\
             fetch them with `cargo run -p keel -- models fetch --dir {}` \
             (or set {MODELS_DIR_ENV} to a directory that has them)",
            dir.display()
        ),
    }
}

#[test]
fn a_second_fetch_only_verifies_the_files_in_place() {
    let paths = fetched_models();
    let mut options = FetchOptions::new(&paths.models_dir);
    options.show_progress = false;
    // No pip anywhere: a fetch that tried to download would fail.
    options.python = PathBuf::from("/nonexistent/python3");
    let report = fetch_models(&options).unwrap();
    assert!(!report.downloaded);
    assert!(report.written.is_empty(), "rewrote {:?}", report.written);
    assert_eq!(report.kept.len(), MANIFEST.len());
    for file in MANIFEST {
        let path = paths.models_dir.join(file.path);
        assert_eq!(sha256_file(&path).unwrap(), file.sha256, "{}", file.path);
    }
}

fn u32_value(header: &keel_models::gguf_file::GgufHeader, key: &str) -> u32 {
    match header.value(key) {
        Some(GgufValue::U32(value)) => *value,
        other => panic!("{key} is {other:?}, expected a u32"),
    }
}

#[test]
fn the_converted_minilm_holds_what_llama_cpp_expects() {
    let paths = fetched_models();
    let bytes = std::fs::read(&paths.minilm_gguf).unwrap();
    let header = read_gguf_header(&bytes).unwrap();

    assert_eq!(header.version, 3);
    assert_eq!(
        header.value("general.architecture"),
        Some(&GgufValue::String("bert".to_string()))
    );
    assert_eq!(u32_value(&header, "general.file_type"), 0);
    assert_eq!(u32_value(&header, "bert.block_count"), 6);
    assert_eq!(u32_value(&header, "bert.context_length"), 512);
    assert_eq!(u32_value(&header, "bert.embedding_length"), 384);
    assert_eq!(u32_value(&header, "bert.feed_forward_length"), 1536);
    assert_eq!(u32_value(&header, "bert.attention.head_count"), 12);
    assert_eq!(u32_value(&header, "bert.pooling_type"), 1);
    assert_eq!(
        header.value("bert.attention.layer_norm_epsilon"),
        Some(&GgufValue::F32(1e-12))
    );
    assert_eq!(
        header.value("bert.attention.causal"),
        Some(&GgufValue::Bool(false))
    );
    assert_eq!(
        header.value("tokenizer.ggml.model"),
        Some(&GgufValue::String("bert".to_string()))
    );
    assert_eq!(
        header.value("tokenizer.ggml.pre"),
        Some(&GgufValue::String("jina-v2-en".to_string()))
    );
    assert_eq!(u32_value(&header, "tokenizer.ggml.token_type_count"), 2);
    assert_eq!(u32_value(&header, "tokenizer.ggml.bos_token_id"), 101);
    assert_eq!(u32_value(&header, "tokenizer.ggml.eos_token_id"), 102);
    assert_eq!(u32_value(&header, "tokenizer.ggml.unknown_token_id"), 100);
    assert_eq!(u32_value(&header, "tokenizer.ggml.seperator_token_id"), 102);
    assert_eq!(u32_value(&header, "tokenizer.ggml.padding_token_id"), 0);
    assert_eq!(u32_value(&header, "tokenizer.ggml.mask_token_id"), 103);
    for key in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.normalizer.lowercase",
    ] {
        assert_eq!(header.value(key), Some(&GgufValue::Bool(true)), "{key}");
    }

    let Some(GgufValue::StringArray(tokens)) = header.value("tokenizer.ggml.tokens") else {
        panic!("tokenizer.ggml.tokens is not a string array");
    };
    assert_eq!(tokens.len(), 30522);
    assert_eq!(tokens[0], "[PAD]");
    assert_eq!(tokens[1], "\u{2581}[unused0]");
    assert_eq!(tokens[101], "[CLS]");
    let vocab = std::fs::read_to_string(paths.minilm_dir.join("vocab.txt")).unwrap();
    let vocab: Vec<&str> = vocab.lines().collect();
    let the = vocab.iter().position(|token| *token == "the").unwrap();
    assert_eq!(tokens[the], "\u{2581}the");
    let suffix = vocab.iter().position(|token| *token == "##ing").unwrap();
    assert_eq!(tokens[suffix], "ing");
    let Some(GgufValue::I32Array(token_types)) = header.value("tokenizer.ggml.token_type") else {
        panic!("tokenizer.ggml.token_type is not an i32 array");
    };
    let control: Vec<usize> = (0..token_types.len())
        .filter(|id| token_types[*id] == 3)
        .collect();
    assert_eq!(control, vec![0, 100, 101, 102, 103]);
    assert!(token_types.iter().all(|kind| *kind == 1 || *kind == 3));

    assert_eq!(header.tensors.len(), MINILM_GGUF_TENSOR_COUNT);
    let dims = |name: &str| header.tensor(name).unwrap().dims.clone();
    assert_eq!(dims("token_embd.weight"), vec![384, 30522]);
    assert_eq!(dims("position_embd.weight"), vec![384, 512]);
    assert_eq!(dims("token_types.weight"), vec![384, 2]);
    assert_eq!(dims("token_embd_norm.bias"), vec![384]);
    assert_eq!(dims("blk.0.attn_q.weight"), vec![384, 384]);
    assert_eq!(dims("blk.5.ffn_up.weight"), vec![384, 1536]);
    assert_eq!(dims("blk.5.ffn_up.bias"), vec![1536]);
    assert_eq!(dims("blk.5.ffn_down.weight"), vec![1536, 384]);
    assert_eq!(dims("blk.3.layer_output_norm.weight"), vec![384]);
    for tensor in &header.tensors {
        assert_eq!(tensor.tensor_type, GgufTensorType::F32, "{}", tensor.name);
        assert_eq!(tensor.offset % 32, 0, "{}", tensor.name);
    }

    // The file on disk is exactly what the converter writes today.
    let mut converted = Vec::new();
    convert_minilm_to_gguf(&paths.minilm_dir, &mut converted).unwrap();
    assert!(
        converted == bytes,
        "the converter's output changed: update the manifest"
    );
}

#[test]
fn the_committed_reference_vectors_are_well_formed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    let vectors = reference["vectors"].as_array().unwrap();
    let token_counts = reference["token_counts"].as_array().unwrap();
    assert!(sentences.len() >= 24, "{} sentences", sentences.len());
    assert_eq!(vectors.len(), sentences.len());
    assert_eq!(token_counts.len(), sentences.len());
    assert!(token_counts
        .iter()
        .any(|count| count.as_u64().unwrap() > 256));
    for vector in vectors {
        let values: Vec<f64> = vector
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap())
            .collect();
        assert_eq!(values.len(), 384);
        let norm = values.iter().map(|value| value * value).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    for key in [
        "sentence_transformers_version",
        "torch_version",
        "model_safetensors_sha256",
    ] {
        assert!(reference[key].is_string(), "{key}");
    }
}
