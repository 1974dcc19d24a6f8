//! all-MiniLM-L6-v2 (a BERT model in Hugging Face's safetensors layout) as a
//! GGUF file llama.cpp can run, written without PyTorch. What llama.cpp
//! expects — metadata keys and their types, the token list rewrite, the
//! tensor names — mirrors llama.cpp's own `convert_hf_to_gguf.py` for BERT;
//! `shared/notes/minilm-gguf.md` lists it and the measurements behind it.

use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::gguf_file::{write_gguf, GgufError, GgufTensor, GgufTensorType, GgufValue};

/// The converted file's name inside the MiniLM model directory.
pub const MINILM_GGUF_FILE_NAME: &str = "all-MiniLM-L6-v2.f32.gguf";

/// How many tensors the converted MiniLM-L6 holds: five for the
/// embeddings, sixteen per layer, the pooler dropped.
pub const MINILM_GGUF_TENSOR_COUNT: usize = 5 + 16 * 6;

/// GGUF's `general.file_type` for "all tensors are f32".
const FILE_TYPE_ALL_F32: u32 = 0;
/// llama.cpp's `LLAMA_POOLING_TYPE_MEAN`, what sentence-transformers uses.
const POOLING_TYPE_MEAN: u32 = 1;
/// llama.cpp's token types: `LLAMA_TOKEN_TYPE_NORMAL` and `_CONTROL`.
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
/// The tokens `convert_hf_to_gguf.py` marks as control: the tokenizer's
/// added special tokens.
const CONTROL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// llama.cpp's WordPiece tokenizer marks word starts with U+2581, as
/// SentencePiece does, instead of marking continuations with `##`.
const WORD_START: char = '\u{2581}';
/// Hugging Face tensors the GGUF does not carry: llama.cpp pools itself,
/// and `position_ids` is a constant buffer some exports include.
const DROPPED_TENSORS: [&str; 3] = [
    "pooler.dense.weight",
    "pooler.dense.bias",
    "embeddings.position_ids",
];

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a bert config this converter handles: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path} is not a vocabulary this converter handles: {reason}")]
    Vocab { path: PathBuf, reason: String },
    #[error("{path} is not a bert safetensors file this converter handles: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// The fields of the Hugging Face `config.json` the GGUF metadata needs.
#[derive(Debug, Deserialize)]
struct BertConfig {
    model_type: String,
    hidden_size: u32,
    num_hidden_layers: u32,
    intermediate_size: u32,
    num_attention_heads: u32,
    max_position_embeddings: u32,
    layer_norm_eps: f64,
    vocab_size: usize,
    type_vocab_size: u32,
}

/// Converts the model in `model_dir` (config.json, vocab.txt,
/// model.safetensors) and writes the GGUF to `out`; returns the bytes
/// written. The same input always gives the same bytes.
pub fn convert_minilm_to_gguf(model_dir: &Path, out: &mut impl Write) -> Result<u64, ConvertError> {
    let config_path = model_dir.join("config.json");
    let config = read_config(&config_path)?;
    let vocab_path = model_dir.join("vocab.txt");
    let vocab = read_vocab(&vocab_path, config.vocab_size)?;
    let weights_path = model_dir.join("model.safetensors");
    let weight_bytes = std::fs::read(&weights_path).map_err(|source| ConvertError::Read {
        path: weights_path.clone(),
        source,
    })?;
    let weights =
        SafeTensors::deserialize(&weight_bytes).map_err(|error| ConvertError::Weights {
            path: weights_path.clone(),
            reason: error.to_string(),
        })?;
    let tensors =
        gguf_tensors(&weights, config.num_hidden_layers, vocab.len()).map_err(|reason| {
            ConvertError::Weights {
                path: weights_path.clone(),
                reason,
            }
        })?;
    let metadata = gguf_metadata(&config, &vocab).map_err(|reason| ConvertError::Vocab {
        path: vocab_path.clone(),
        reason,
    })?;
    let written = write_gguf(out, &metadata, &tensors)?;
    Ok(written)
}

fn read_config(path: &Path) -> Result<BertConfig, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config: BertConfig = serde_json::from_str(&text).map_err(|error| ConvertError::Config {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    if config.model_type != "bert" {
        return Err(ConvertError::Config {
            path: path.to_path_buf(),
            reason: format!("model_type is `{}`, not `bert`", config.model_type),
        });
    }
    Ok(config)
}

/// vocab.txt: one token per line, the line number is the token id.
fn read_vocab(path: &Path, expected_size: usize) -> Result<Vec<String>, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let vocab: Vec<String> = text.lines().map(str::to_string).collect();
    if vocab.len() != expected_size {
        return Err(ConvertError::Vocab {
            path: path.to_path_buf(),
            reason: format!(
                "{} tokens, config.json says vocab_size {expected_size}",
                vocab.len()
            ),
        });
    }
    Ok(vocab)
}

/// A vocab.txt token as llama.cpp's WordPiece tokenizer stores it: control
/// tokens unchanged, `##piece` continuations as `piece`, everything else
/// (`[unused0]` included) with a leading U+2581 — `phantom()` in today's
/// `convert_hf_to_gguf.py` (older versions also kept `[unusedN]` as is).
fn gguf_token(token: &str) -> String {
    if is_control_token(token) {
        return token.to_string();
    }
    if let Some(continuation) = token.strip_prefix("##") {
        return continuation.to_string();
    }
    format!("{WORD_START}{token}")
}

fn is_control_token(token: &str) -> bool {
    CONTROL_TOKENS.contains(&token)
}

fn token_id(vocab: &[String], token: &str) -> Result<u32, String> {
    let position = vocab
        .iter()
        .position(|candidate| candidate == token)
        .ok_or_else(|| format!("special token {token} is missing"))?;
    u32::try_from(position).map_err(|_| format!("token id of {token} does not fit in u32"))
}

fn gguf_metadata(
    config: &BertConfig,
    vocab: &[String],
) -> Result<Vec<(String, GgufValue)>, String> {
    let tokens: Vec<String> = vocab.iter().map(|token| gguf_token(token)).collect();
    let token_types: Vec<i32> = vocab
        .iter()
        .map(|token| {
            if is_control_token(token) {
                TOKEN_TYPE_CONTROL
            } else {
                TOKEN_TYPE_NORMAL
            }
        })
        .collect();
    let cls = token_id(vocab, "[CLS]")?;
    let sep = token_id(vocab, "[SEP]")?;
    let unknown = token_id(vocab, "[UNK]")?;
    let padding = token_id(vocab, "[PAD]")?;
    let mask = token_id(vocab, "[MASK]")?;
    let entries = vec![
        (
            "general.architecture",
            GgufValue::String("bert".to_string()),
        ),
        ("general.file_type", GgufValue::U32(FILE_TYPE_ALL_F32)),
        ("bert.block_count", GgufValue::U32(config.num_hidden_layers)),
        (
            "bert.context_length",
            GgufValue::U32(config.max_position_embeddings),
        ),
        ("bert.embedding_length", GgufValue::U32(config.hidden_size)),
        (
            "bert.feed_forward_length",
            GgufValue::U32(config.intermediate_size),
        ),
        (
            "bert.attention.head_count",
            GgufValue::U32(config.num_attention_heads),
        ),
        // GGUF stores the epsilon as f32, as llama.cpp's converter does.
        (
            "bert.attention.layer_norm_epsilon",
            GgufValue::F32(config.layer_norm_eps as f32),
        ),
        ("bert.attention.causal", GgufValue::Bool(false)),
        ("bert.pooling_type", GgufValue::U32(POOLING_TYPE_MEAN)),
        (
            "tokenizer.ggml.model",
            GgufValue::String("bert".to_string()),
        ),
        (
            "tokenizer.ggml.pre",
            GgufValue::String("jina-v2-en".to_string()),
        ),
        ("tokenizer.ggml.tokens", GgufValue::StringArray(tokens)),
        (
            "tokenizer.ggml.token_type",
            GgufValue::I32Array(token_types),
        ),
        (
            "tokenizer.ggml.token_type_count",
            GgufValue::U32(config.type_vocab_size),
        ),
        ("tokenizer.ggml.bos_token_id", GgufValue::U32(cls)),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(sep)),
        ("tokenizer.ggml.unknown_token_id", GgufValue::U32(unknown)),
        // Upstream's spelling: llama.cpp reads exactly this key.
        ("tokenizer.ggml.seperator_token_id", GgufValue::U32(sep)),
        ("tokenizer.ggml.padding_token_id", GgufValue::U32(padding)),
        ("tokenizer.ggml.mask_token_id", GgufValue::U32(mask)),
        ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
        ("tokenizer.ggml.add_eos_token", GgufValue::Bool(true)),
        ("tokenizer.ggml.normalizer.lowercase", GgufValue::Bool(true)),
    ];
    Ok(entries
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect())
}

/// Hugging Face name → GGUF name, in the order the GGUF lists them.
fn tensor_name_pairs(block_count: u32) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("embeddings.word_embeddings.weight", "token_embd.weight"),
        (
            "embeddings.position_embeddings.weight",
            "position_embd.weight",
        ),
        (
            "embeddings.token_type_embeddings.weight",
            "token_types.weight",
        ),
        ("embeddings.LayerNorm.weight", "token_embd_norm.weight"),
        ("embeddings.LayerNorm.bias", "token_embd_norm.bias"),
    ]
    .into_iter()
    .map(|(hf, gguf)| (hf.to_string(), gguf.to_string()))
    .collect();
    let layer_parts = [
        ("attention.self.query", "attn_q"),
        ("attention.self.key", "attn_k"),
        ("attention.self.value", "attn_v"),
        ("attention.output.dense", "attn_output"),
        ("attention.output.LayerNorm", "attn_output_norm"),
        ("intermediate.dense", "ffn_up"),
        ("output.dense", "ffn_down"),
        ("output.LayerNorm", "layer_output_norm"),
    ];
    for block in 0..block_count {
        for (hf_part, gguf_part) in layer_parts {
            for parameter in ["weight", "bias"] {
                pairs.push((
                    format!("encoder.layer.{block}.{hf_part}.{parameter}"),
                    format!("blk.{block}.{gguf_part}.{parameter}"),
                ));
            }
        }
    }
    pairs
}

/// The GGUF tensors, borrowing the safetensors data: GGUF lists dims
/// innermost first, so the shape is reversed and the row-major bytes stay.
fn gguf_tensors<'data>(
    weights: &SafeTensors<'data>,
    block_count: u32,
    vocab_size: usize,
) -> Result<Vec<GgufTensor<'data>>, String> {
    let pairs = tensor_name_pairs(block_count);
    for name in weights.names() {
        let known = pairs.iter().any(|(hf, _)| hf == name) || DROPPED_TENSORS.contains(&name);
        if !known {
            return Err(format!("unexpected tensor `{name}`"));
        }
    }
    let mut tensors = Vec::new();
    for (hf_name, gguf_name) in pairs {
        let view = weights
            .tensor(&hf_name)
            .map_err(|_| format!("tensor `{hf_name}` is missing"))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{hf_name}` is {:?}, only F32 weights are converted",
                view.dtype()
            ));
        }
        let dims: Vec<u64> = view.shape().iter().rev().map(|dim| *dim as u64).collect();
        if gguf_name == "token_embd.weight" && view.shape().first() != Some(&vocab_size) {
            return Err(format!(
                "token embeddings have shape {:?}, the vocabulary has {vocab_size} tokens",
                view.shape()
            ));
        }
        tensors.push(GgufTensor {
            name: gguf_name,
            dims,
            tensor_type: GgufTensorType::F32,
            data: view.data(),
        });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf_file::read_gguf_header;

    #[test]
    fn tokens_are_rewritten_as_llama_cpp_wordpiece_expects() {
        assert_eq!(gguf_token("[CLS]"), "[CLS]");
        assert_eq!(gguf_token("[unused7]"), "\u{2581}[unused7]");
        assert_eq!(gguf_token("##ing"), "ing");
        assert_eq!(gguf_token("hello"), "\u{2581}hello");
        assert_eq!(gguf_token("["), "\u{2581}[");
        assert_eq!(gguf_token("#"), "\u{2581}#");
        assert_eq!(gguf_token("##"), "");
    }

    #[test]
    fn the_name_table_has_sixteen_tensors_per_layer_and_renames_as_upstream() {
        let pairs = tensor_name_pairs(6);
        assert_eq!(pairs.len(), MINILM_GGUF_TENSOR_COUNT);
        assert_eq!(MINILM_GGUF_TENSOR_COUNT, 101);
        let lookup = |hf: &str| {
            pairs
                .iter()
                .find(|(candidate, _)| candidate == hf)
                .map(|(_, gguf)| gguf.clone())
        };
        assert_eq!(
            lookup("encoder.layer.5.attention.output.LayerNorm.bias").as_deref(),
            Some("blk.5.attn_output_norm.bias")
        );
        assert_eq!(
            lookup("encoder.layer.0.output.dense.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            lookup("embeddings.token_type_embeddings.weight").as_deref(),
            Some("token_types.weight")
        );
        assert_eq!(lookup("pooler.dense.weight"), None);
    }

    /// A safetensors file by hand: u64 header length, JSON header, data.
    fn safetensors_bytes(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, shape) in tensors {
            let start = data.len();
            let count: usize = shape.iter().product();
            for index in 0..count {
                // Distinct values per tensor and position, to catch mix-ups.
                let value = (start / 4 + index) as f32 * 0.5;
                data.extend_from_slice(&value.to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let header_text = serde_json::Value::Object(header).to_string();
        let mut bytes = (header_text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header_text.as_bytes());
        bytes.extend_from_slice(&data);
        bytes
    }

    /// A two-layer BERT with hidden size 4 and a 7-token vocabulary.
    fn write_tiny_bert(dir: &Path, extra_tensor: Option<&str>) {
        let hidden = 4;
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##s"];
        std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
        let config = serde_json::json!({
            "model_type": "bert", "hidden_size": hidden, "num_hidden_layers": 2,
            "intermediate_size": 8, "num_attention_heads": 2, "max_position_embeddings": 16,
            "layer_norm_eps": 1e-12, "vocab_size": vocab.len(), "type_vocab_size": 2
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut tensors = Vec::new();
        for (hf, _) in tensor_name_pairs(2) {
            let shape = if hf == "embeddings.word_embeddings.weight" {
                vec![vocab.len(), hidden]
            } else if hf == "embeddings.position_embeddings.weight" {
                vec![16, hidden]
            } else if hf == "embeddings.token_type_embeddings.weight" {
                vec![2, hidden]
            } else if hf.ends_with("intermediate.dense.weight") {
                vec![8, hidden]
            } else if hf.ends_with("intermediate.dense.bias") {
                vec![8]
            } else if hf.ends_with("output.dense.weight") && !hf.contains("attention") {
                vec![hidden, 8]
            } else if hf.ends_with(".weight") && !hf.contains("LayerNorm") {
                vec![hidden, hidden]
            } else {
                vec![hidden]
            };
            tensors.push((hf, shape));
        }
        tensors.push(("pooler.dense.weight".to_string(), vec![hidden, hidden]));
        if let Some(name) = extra_tensor {
            tensors.push((name.to_string(), vec![1]));
        }
        std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&tensors)).unwrap();
    }

    #[test]
    fn a_tiny_bert_converts_to_the_metadata_and_tensors_llama_cpp_expects() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), None);
        let mut bytes = Vec::new();
        let written = convert_minilm_to_gguf(dir.path(), &mut bytes).unwrap();
        assert_eq!(written, bytes.len() as u64);

        let header = read_gguf_header(&bytes).unwrap();
        assert_eq!(header.tensors.len(), 5 + 16 * 2);
        assert_eq!(header.value("bert.block_count"), Some(&GgufValue::U32(2)));
        assert_eq!(
            header.value("bert.embedding_length"),
            Some(&GgufValue::U32(4))
        );
        assert_eq!(
            header.value("bert.feed_forward_length"),
            Some(&GgufValue::U32(8))
        );
        assert_eq!(
            header.value("bert.context_length"),
            Some(&GgufValue::U32(16))
        );
        assert_eq!(header.value("bert.pooling_type"), Some(&GgufValue::U32(1)));
        assert_eq!(
            header.value("bert.attention.causal"),
            Some(&GgufValue::Bool(false))
        );
        assert_eq!(
            header.value("bert.attention.layer_norm_epsilon"),
            Some(&GgufValue::F32(1e-12))
        );
        assert_eq!(
            header.value("tokenizer.ggml.tokens"),
            Some(&GgufValue::StringArray(
                [
                    "[PAD]",
                    "[UNK]",
                    "[CLS]",
                    "[SEP]",
                    "[MASK]",
                    "\u{2581}hello",
                    "s"
                ]
                .map(str::to_string)
                .to_vec()
            ))
        );
        assert_eq!(
            header.value("tokenizer.ggml.token_type"),
            Some(&GgufValue::I32Array(vec![3, 3, 3, 3, 3, 1, 1]))
        );
        assert_eq!(
            header.value("tokenizer.ggml.bos_token_id"),
            Some(&GgufValue::U32(2))
        );
        assert_eq!(
            header.value("tokenizer.ggml.seperator_token_id"),
            Some(&GgufValue::U32(3))
        );
        assert_eq!(
            header.value("tokenizer.ggml.mask_token_id"),
            Some(&GgufValue::U32(4))
        );
        assert!(header.tensor("pooler.dense.weight").is_none());

        // HF [out, in] = [8, 4] is GGUF [4, 8]; the bytes are unchanged.
        let up = header.tensor("blk.1.ffn_up.weight").unwrap();
        assert_eq!(up.dims, vec![4, 8]);
        assert_eq!(header.tensor("token_embd.weight").unwrap().dims, vec![4, 7]);
        assert_eq!(header.tensor("blk.0.attn_q.bias").unwrap().dims, vec![4]);

        let weights_bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let weights = SafeTensors::deserialize(&weights_bytes).unwrap();
        let source = weights
            .tensor("encoder.layer.1.intermediate.dense.weight")
            .unwrap();
        let start = (header.data_offset + up.offset) as usize;
        assert_eq!(&bytes[start..start + source.data().len()], source.data());
    }

    #[test]
    fn conversion_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), None);
        let mut first = Vec::new();
        convert_minilm_to_gguf(dir.path(), &mut first).unwrap();
        let mut second = Vec::new();
        convert_minilm_to_gguf(dir.path(), &mut second).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn an_unknown_tensor_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), Some("cls.predictions.bias"));
        let error = convert_minilm_to_gguf(dir.path(), &mut Vec::new()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("unexpected tensor `cls.predictions.bias`"),
            "{message}"
        );
    }

    #[test]
    fn a_vocabulary_that_disagrees_with_the_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), None);
        std::fs::write(dir.path().join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
        let error = convert_minilm_to_gguf(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("2 tokens, config.json says vocab_size 7"),
            "{error}"
        );
    }
}
