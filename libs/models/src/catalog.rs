use std::collections::BTreeMap;
use std::sync::Arc;

use std::path::Path;

use tracing::{info, warn};

use crate::config::{MINILM_EMBEDDER_NAME, SMOLLM2_GENERATOR_NAME};
use crate::extractive_generator::EXTRACTIVE_GENERATOR_NAME;
use crate::hashing_embedder::HASHING_EMBEDDER_NAME;
use crate::llama::{LlamaEmbedder, LlamaEmbedderOptions, LlamaGenerator, LlamaGeneratorOptions};
use crate::{
    ExtractiveGenerator, HashingEmbedder, ModelError, ModelsConfig, OpenAiGenerator,
    SharedEmbedder, SharedGenerator,
};

/// The embedders and generators a process can use, by name.
#[derive(Clone, Default)]
pub struct ModelCatalog {
    embedders: BTreeMap<String, SharedEmbedder>,
    generators: BTreeMap<String, SharedGenerator>,
}

/// The dimension of the built-in hashing embedder: the same as MiniLM's, so
/// a collection can move between them without changing shape.
pub const HASHING_EMBEDDER_DIMENSION: usize = 384;

impl ModelCatalog {
    pub fn empty() -> ModelCatalog {
        ModelCatalog::default()
    }

    /// The models that need no files: `hashing` and `extractive`.
    pub fn builtin() -> ModelCatalog {
        let mut catalog = ModelCatalog::empty();
        catalog.add_embedder(
            HASHING_EMBEDDER_NAME,
            Arc::new(HashingEmbedder::new(HASHING_EMBEDDER_DIMENSION)),
        );
        catalog.add_generator(EXTRACTIVE_GENERATOR_NAME, Arc::new(ExtractiveGenerator));
        catalog
    }

    /// The built-in models plus the local ones: `minilm` and `smollm2`,
    /// loaded from `config.dir`, plus the remote generators of
    /// `config.openai` under their configured names. A missing file is an
    /// error that says how to get it, unless `config.require_local_models`
    /// is off (then the model is left out, with a warning). Blocking:
    /// loading reads the files.
    pub fn load(config: &ModelsConfig) -> Result<ModelCatalog, ModelError> {
        let mut catalog = ModelCatalog::builtin();
        let paths = config.paths();
        let minilm_path = paths.minilm_gguf;
        if model_file_present(MINILM_EMBEDDER_NAME, &minilm_path, config)? {
            let mut options = LlamaEmbedderOptions::new(MINILM_EMBEDDER_NAME, minilm_path);
            options.threads = config.threads;
            options.batch_tokens = config.embedder_batch_tokens;
            options.max_sequence_tokens = config.embedder_max_sequence_tokens;
            catalog.add_embedder(
                MINILM_EMBEDDER_NAME,
                Arc::new(LlamaEmbedder::load(&options)?),
            );
        }
        let smollm2_path = paths.smollm2_gguf;
        if model_file_present(SMOLLM2_GENERATOR_NAME, &smollm2_path, config)? {
            let mut options = LlamaGeneratorOptions::new(SMOLLM2_GENERATOR_NAME, smollm2_path);
            options.threads = config.threads;
            options.context_length = config.generator_context_length;
            options.contexts = config.generator_contexts;
            options.default_max_tokens = config.generator_max_tokens;
            catalog.add_generator(
                SMOLLM2_GENERATOR_NAME,
                Arc::new(LlamaGenerator::load(&options)?),
            );
        }
        catalog.add_remote_generators(config)?;
        Ok(catalog)
    }

    /// Adds `config.openai`'s generators; a name already in the catalog is
    /// refused, so a remote model never silently replaces a local one.
    fn add_remote_generators(&mut self, config: &ModelsConfig) -> Result<(), ModelError> {
        for (name, remote) in &config.openai {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid_name {
                return Err(ModelError::Backend(format!(
                    "models.openai.{name:?}: a generator name is 1 to 64 of [A-Za-z0-9_.-]"
                )));
            }
            if self.generators.contains_key(name) {
                return Err(ModelError::Backend(format!(
                    "models.openai.{name}: `{name}` is already a built-in or local generator"
                )));
            }
            let generator = OpenAiGenerator::new(remote.clone())
                .map_err(|error| ModelError::Backend(format!("models.openai.{name}: {error}")))?
                .named(name);
            info!(
                generator = %name,
                base_url = %remote.base_url,
                model = %remote.model,
                "remote OpenAI-compatible generator configured"
            );
            self.add_generator(name, Arc::new(generator));
        }
        Ok(())
    }

    pub fn add_embedder(&mut self, name: &str, embedder: SharedEmbedder) {
        self.embedders.insert(name.to_string(), embedder);
    }

    pub fn add_generator(&mut self, name: &str, generator: SharedGenerator) {
        self.generators.insert(name.to_string(), generator);
    }

    pub fn embedder(&self, name: &str) -> Result<SharedEmbedder, ModelError> {
        self.embedders
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::UnknownEmbedder(name.to_string()))
    }

    pub fn generator(&self, name: &str) -> Result<SharedGenerator, ModelError> {
        self.generators
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::UnknownGenerator(name.to_string()))
    }

    /// `name`, asking its server for `model` instead of the configured one
    /// when `model` is not empty; a generator of a local model refuses.
    pub fn generator_for(&self, name: &str, model: &str) -> Result<SharedGenerator, ModelError> {
        let generator = self.generator(name)?;
        if model.is_empty() {
            return Ok(generator);
        }
        generator.with_model(model).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "generator `{name}` runs a local model: it cannot be asked for model `{model}`"
            ))
        })
    }

    pub fn embedder_names(&self) -> Vec<String> {
        self.embedders.keys().cloned().collect()
    }

    pub fn generator_names(&self) -> Vec<String> {
        self.generators.keys().cloned().collect()
    }
}

/// Whether a local model's file is there; when it is not and the config
/// requires local models, the error tells the user how to fetch it.
fn model_file_present(model: &str, path: &Path, config: &ModelsConfig) -> Result<bool, ModelError> {
    if path.is_file() {
        return Ok(true);
    }
    if config.require_local_models {
        return Err(ModelError::Backend(format!(
            "model `{model}` needs {}, which does not exist: run `keel models fetch` \
             (or set KEEL_MODELS_DIR to a directory that holds the models)",
            path.display()
        )));
    }
    warn!(model, path = %path.display(), "model file missing, model not loaded");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_file_says_how_to_fetch_it() {
        let config = ModelsConfig::in_dir(std::path::PathBuf::from("/nonexistent/keel-models"));
        let Err(error) = ModelCatalog::load(&config) else {
            panic!("loading from an empty directory succeeded");
        };
        let message = error.to_string();
        assert!(message.contains("keel models fetch"), "{message}");
        assert!(
            message.contains("/nonexistent/keel-models/minilm/all-MiniLM-L6-v2.f32.gguf"),
            "{message}"
        );
    }

    #[test]
    fn without_required_local_models_the_builtins_remain() {
        let mut config = ModelsConfig::in_dir(std::path::PathBuf::from("/nonexistent/keel-models"));
        config.require_local_models = false;
        let catalog = ModelCatalog::load(&config).unwrap();
        assert_eq!(catalog.embedder_names(), vec!["hashing".to_string()]);
        assert_eq!(catalog.generator_names(), vec!["extractive".to_string()]);
    }

    fn without_local_models() -> ModelsConfig {
        let mut config = ModelsConfig::in_dir(std::path::PathBuf::from("/nonexistent/keel-models"));
        config.require_local_models = false;
        config
    }

    fn remote(model: &str) -> crate::OpenAiConfig {
        crate::OpenAiConfig {
            model: model.to_string(),
            ..crate::OpenAiConfig::default()
        }
    }

    #[test]
    fn remote_generators_join_under_their_configured_names() {
        let mut config = without_local_models();
        config
            .openai
            .insert("gpt4o".to_string(), remote("gpt-4o-mini"));
        config.openai.insert("vllm".to_string(), remote("qwen"));
        let catalog = ModelCatalog::load(&config).unwrap();
        assert_eq!(catalog.generator_names(), ["extractive", "gpt4o", "vllm"]);
        assert_eq!(catalog.generator("gpt4o").unwrap().name(), "gpt4o");
        assert_eq!(catalog.generator("vllm").unwrap().name(), "vllm");
    }

    #[test]
    fn a_remote_generator_cannot_take_a_local_name_or_a_bad_one() {
        for (name, expected) in [
            ("extractive", "already a built-in or local generator"),
            ("has space", "1 to 64 of"),
            ("", "1 to 64 of"),
        ] {
            let mut config = without_local_models();
            config.openai.insert(name.to_string(), remote("m"));
            let Err(error) = ModelCatalog::load(&config) else {
                panic!("{name:?} was accepted");
            };
            assert!(error.to_string().contains(expected), "{name:?}: {error}");
        }
    }

    #[test]
    fn a_remote_generator_with_a_bad_config_names_its_section() {
        let mut config = without_local_models();
        let mut bad = remote("m");
        bad.base_url = "ftp://example.com".to_string();
        config.openai.insert("gpt4o".to_string(), bad);
        let Err(error) = ModelCatalog::load(&config) else {
            panic!("a bad base_url was accepted");
        };
        let message = error.to_string();
        assert!(message.contains("models.openai.gpt4o"), "{message}");
        assert!(message.contains("base_url"), "{message}");
    }

    #[test]
    fn only_a_remote_generator_can_be_asked_for_another_model() {
        let mut config = without_local_models();
        config
            .openai
            .insert("gpt4o".to_string(), remote("gpt-4o-mini"));
        let catalog = ModelCatalog::load(&config).unwrap();
        let tuned = catalog
            .generator_for("gpt4o", "ft:gpt-4o-mini:acme")
            .unwrap();
        assert_eq!(tuned.name(), "gpt4o");
        assert_eq!(tuned.provider(), "openai");
        assert!(catalog.generator_for("extractive", "").is_ok());
        let Err(error) = catalog.generator_for("extractive", "ft:x") else {
            panic!("a local generator took a remote model");
        };
        assert!(error.to_string().contains("runs a local model"), "{error}");
        assert!(catalog.generator_for("nope", "").is_err());
    }
}
