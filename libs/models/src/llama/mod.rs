//! llama.cpp in process, through `llama-cpp-2`: the `minilm` sentence
//! embedder and the `smollm2` chat model, at llama.cpp's own CPU speed.
//! Models are loaded once; each llama.cpp context lives on a thread of its
//! own and is reused across requests.

mod backend;
mod cpu;
mod embedder;
mod generator;
mod sampling;
mod stream;
mod workers;

pub use embedder::{LlamaEmbedder, LlamaEmbedderOptions};
pub use generator::{LlamaGenerator, LlamaGeneratorOptions};
