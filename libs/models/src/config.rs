//! Where the local model files live and how the local models run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model_files::{models_dir, ModelPaths};
use crate::OpenAiConfig;

/// The catalog name of the local sentence embedder.
pub const MINILM_EMBEDDER_NAME: &str = "minilm";
/// The catalog name of the local chat model.
pub const SMOLLM2_GENERATOR_NAME: &str = "smollm2";

/// The `[models]` section of Keel's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Where `keel models fetch` put the files; empty means the default,
    /// `<data_dir>/models` (or `KEEL_MODELS_DIR`), filled in by
    /// [`ModelsConfig::with_default_dir`] once the data dir is known.
    pub dir: PathBuf,
    /// Fail when a local model's files are missing (the default: a silent
    /// fallback to the built-in stand-ins would hide a broken set-up). When
    /// false, a missing model is left out of the catalog with a warning.
    pub require_local_models: bool,
    /// CPU threads each model uses per request.
    pub threads: u32,
    /// Tokens of prompt plus answer a generation may hold.
    pub generator_context_length: u32,
    /// Generations in progress at once, each with its own llama.cpp
    /// context; they take turns on the CPU.
    pub generator_contexts: usize,
    /// `max_tokens` when a request does not set it.
    pub generator_max_tokens: u32,
    /// Tokens per embedding call (see `LlamaEmbedderOptions::batch_tokens`).
    pub embedder_batch_tokens: usize,
    /// Longest embedder input in tokens; longer inputs are cut.
    pub embedder_max_sequence_tokens: usize,
    /// Remote OpenAI-compatible generators, by the name chain specs use:
    /// `[models.openai.gpt4o]` with `base_url`, `model`, `api_key_env`, ...
    pub openai: BTreeMap<String, OpenAiConfig>,
}

impl Default for ModelsConfig {
    fn default() -> ModelsConfig {
        ModelsConfig::in_dir(PathBuf::new())
    }
}

impl ModelsConfig {
    /// The defaults for a data directory: models in `<data_dir>/models`,
    /// unless `KEEL_MODELS_DIR` names another directory.
    pub fn for_data_dir(data_dir: &Path) -> ModelsConfig {
        ModelsConfig::in_dir(models_dir(data_dir))
    }

    /// The defaults with the models in `dir`, whatever the environment says.
    pub fn in_dir(dir: PathBuf) -> ModelsConfig {
        ModelsConfig {
            dir,
            require_local_models: true,
            threads: 2,
            generator_context_length: 2048,
            generator_contexts: 1,
            generator_max_tokens: 256,
            embedder_batch_tokens: 512,
            embedder_max_sequence_tokens: 256,
            openai: BTreeMap::new(),
        }
    }

    /// Fills an empty `dir` with the default for `data_dir`.
    pub fn with_default_dir(mut self, data_dir: &Path) -> ModelsConfig {
        if self.dir.as_os_str().is_empty() {
            self.dir = models_dir(data_dir);
        }
        self
    }

    /// Where each model's files are, in the layout `keel models fetch` writes.
    pub fn paths(&self) -> ModelPaths {
        ModelPaths::new(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_sit_in_the_agreed_layout() {
        let config = ModelsConfig::in_dir(PathBuf::from("/m"));
        assert_eq!(
            config.paths().minilm_gguf,
            PathBuf::from("/m/minilm/all-MiniLM-L6-v2.f32.gguf")
        );
        assert_eq!(
            config.paths().smollm2_gguf,
            PathBuf::from("/m/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(config.threads, 2);
        assert!(config.require_local_models);
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults() {
        let config: ModelsConfig = serde_json::from_str(r#"{"dir": "/x", "threads": 4}"#).unwrap();
        assert_eq!(config.dir, PathBuf::from("/x"));
        assert_eq!(config.threads, 4);
        assert_eq!(config.generator_context_length, 2048);
        assert_eq!(config.embedder_batch_tokens, 512);
        assert!(config.openai.is_empty());
    }

    #[test]
    fn remote_generators_are_named_sections_with_defaults_filled_in() {
        let config: ModelsConfig = toml::from_str(
            r#"
            [openai.gpt4o]
            base_url = "https://api.openai.com/v1"
            model = "gpt-4o-mini"
            api_key_env = "OPENAI_API_KEY"

            [openai.local_vllm]
            base_url = "http://127.0.0.1:8000/v1"
            model = "Qwen/Qwen2.5-7B-Instruct"
            max_retries = 5
            "#,
        )
        .unwrap();
        let names: Vec<&str> = config.openai.keys().map(String::as_str).collect();
        assert_eq!(names, ["gpt4o", "local_vllm"]);
        assert_eq!(config.openai["gpt4o"].api_key_env, "OPENAI_API_KEY");
        assert_eq!(config.openai["gpt4o"].max_retries, 2);
        assert_eq!(config.openai["local_vllm"].max_retries, 5);
        assert_eq!(config.threads, 2);
    }
}
