//! What a version holds: a prompt template or a RAG chain. These are the
//! registry's own types, stored as JSON; the wire types stay in `api.rs`.

use keel_types::{validate, FieldError, GenerationParams, ModelRef, SearchMode};
use serde::{Deserialize, Serialize};

pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
pub const MAX_TOP_K: u32 = 1000;
pub const MAX_FALLBACKS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chain,
    Prompt,
}

impl ModelKind {
    /// The stored (and wire) number of the kind.
    pub fn code(self) -> i64 {
        match self {
            ModelKind::Chain => 1,
            ModelKind::Prompt => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<ModelKind> {
        match code {
            1 => Some(ModelKind::Chain),
            2 => Some(ModelKind::Prompt),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ModelKind::Chain => "CHAIN",
            ModelKind::Prompt => "PROMPT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VersionSpec {
    Prompt(PromptSpec),
    Chain(ChainSpec),
}

impl VersionSpec {
    /// The kind of model this spec belongs to.
    pub fn kind(&self) -> ModelKind {
        match self {
            VersionSpec::Prompt(_) => ModelKind::Prompt,
            VersionSpec::Chain(_) => ModelKind::Chain,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSpec {
    pub template: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainSpec {
    pub collection: String,
    pub top_k: u32,
    /// Equality filter on payload keys, as a JSON object.
    pub filter: serde_json::Map<String, serde_json::Value>,
    /// "model@alias" or "model/version" of a PROMPT model.
    pub prompt: String,
    pub generator: GeneratorSpec,
    /// Tried in order when the generator before is unavailable; versions
    /// stored before fallbacks existed read as none.
    #[serde(default)]
    pub fallbacks: Vec<GeneratorSpec>,
    /// How retrieval searches; versions stored before modes existed read
    /// as dense.
    #[serde(default)]
    pub retrieval_mode: SearchMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSpec {
    pub name: String,
    pub params: GenerationParams,
    /// The remote model asked for instead of the configured one; empty:
    /// the configured one. Versions stored before it existed read as empty.
    #[serde(default)]
    pub model: String,
}

/// Checks the template's size and that minijinja parses it. Parsing a large
/// template takes milliseconds, so call this from a blocking thread.
pub fn validate_prompt(spec: &PromptSpec) -> Result<(), FieldError> {
    let field = "prompt.template";
    validate::not_empty(field, &spec.template)?;
    validate::max_len(field, &spec.template, MAX_TEMPLATE_BYTES)?;
    let environment = minijinja::Environment::new();
    if let Err(error) = environment.template_from_str(&spec.template) {
        return Err(FieldError::new(
            field,
            format!("must be a valid minijinja template: {error}"),
        ));
    }
    Ok(())
}

/// Checks everything in a chain spec that needs no database; returns the
/// parsed prompt reference, whose target the caller checks.
pub fn validate_chain(spec: &ChainSpec) -> Result<ModelRef, FieldError> {
    validate_retrieval(spec)?;
    let prompt = ModelRef::parse("chain.prompt", &spec.prompt)?;
    validate_generator("chain.generator", &spec.generator)?;
    if spec.fallbacks.len() > MAX_FALLBACKS {
        return Err(FieldError::new(
            "chain.fallbacks",
            format!(
                "must hold at most {MAX_FALLBACKS} generators, got {}",
                spec.fallbacks.len()
            ),
        ));
    }
    for (index, fallback) in spec.fallbacks.iter().enumerate() {
        validate_generator(&format!("chain.fallbacks[{index}]"), fallback)?;
    }
    for key in spec.filter.keys() {
        if key.is_empty() {
            return Err(FieldError::new("chain.filter", "keys must not be empty"));
        }
    }
    Ok(prompt)
}

/// A chain retrieves from its collection, or (no collection, `top_k` 0)
/// not at all: the generator answers from the prompt alone, as a gateway
/// route to a model does.
fn validate_retrieval(spec: &ChainSpec) -> Result<(), FieldError> {
    if spec.collection.is_empty() {
        if spec.top_k != 0 {
            return Err(FieldError::new(
                "chain.top_k",
                format!(
                    "must be 0 when chain.collection is empty (a chain without retrieval), got {}",
                    spec.top_k
                ),
            ));
        }
        if !spec.filter.is_empty() {
            return Err(FieldError::new(
                "chain.filter",
                "must be empty when chain.collection is empty (a chain without retrieval)",
            ));
        }
        return Ok(());
    }
    validate::name("chain.collection", &spec.collection)?;
    validate::in_range(
        "chain.top_k",
        u64::from(spec.top_k),
        1,
        u64::from(MAX_TOP_K),
    )
}

/// `field` is where the generator sits: `chain.generator` or
/// `chain.fallbacks[i]`.
fn validate_generator(field: &str, generator: &GeneratorSpec) -> Result<(), FieldError> {
    let name_field = format!("{field}.name");
    validate::not_empty(&name_field, &generator.name)?;
    validate::max_len(&name_field, &generator.name, validate::MAX_NAME_LEN)?;
    validate::max_len(
        &format!("{field}.model"),
        &generator.model,
        validate::MAX_ID_BYTES,
    )?;
    generator.params.validate(&format!("{field}.params"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ChainSpec {
        ChainSpec {
            collection: "docs".to_string(),
            top_k: 5,
            filter: serde_json::Map::new(),
            prompt: "support-prompt@champion".to_string(),
            generator: GeneratorSpec {
                name: "extractive".to_string(),
                params: GenerationParams::default(),
                model: String::new(),
            },
            fallbacks: Vec::new(),
            retrieval_mode: SearchMode::Dense,
        }
    }

    fn generator(name: &str) -> GeneratorSpec {
        GeneratorSpec {
            name: name.to_string(),
            params: GenerationParams::default(),
            model: String::new(),
        }
    }

    #[test]
    fn templates_must_parse() {
        let good = PromptSpec {
            template: "{% for c in contexts %}{{ c.text }}{% endfor %} Q: {{ question }}"
                .to_string(),
        };
        assert!(validate_prompt(&good).is_ok());
        let unclosed = PromptSpec {
            template: "{% for c in contexts %}{{ c.text }}".to_string(),
        };
        let error = validate_prompt(&unclosed).unwrap_err();
        assert_eq!(error.field, "prompt.template");
        assert!(
            error.rule.starts_with("must be a valid minijinja template"),
            "{error}"
        );
        let empty = PromptSpec {
            template: " ".to_string(),
        };
        assert_eq!(
            validate_prompt(&empty).unwrap_err().field,
            "prompt.template"
        );
        let huge = PromptSpec {
            template: "x".repeat(MAX_TEMPLATE_BYTES + 1),
        };
        assert_eq!(validate_prompt(&huge).unwrap_err().field, "prompt.template");
    }

    #[test]
    fn chain_rules_name_their_field() {
        let reference = validate_chain(&chain()).unwrap();
        assert_eq!(reference.to_string(), "support-prompt@champion");

        type Mutation = Box<dyn Fn(&mut ChainSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "chain.collection",
                Box::new(|c| c.collection = "bad name".into()),
            ),
            ("chain.top_k", Box::new(|c| c.top_k = 0)),
            ("chain.top_k", Box::new(|c| c.collection = String::new())),
            (
                "chain.filter",
                Box::new(|c| {
                    c.collection = String::new();
                    c.top_k = 0;
                    c.filter.insert("lang".into(), "en".into());
                }),
            ),
            ("chain.top_k", Box::new(|c| c.top_k = 1001)),
            (
                "chain.prompt",
                Box::new(|c| c.prompt = "no-selector".into()),
            ),
            (
                "chain.generator.name",
                Box::new(|c| c.generator.name = String::new()),
            ),
            (
                "chain.generator.params.temperature",
                Box::new(|c| c.generator.params.temperature = Some(2.5)),
            ),
            (
                "chain.generator.params.temperature",
                Box::new(|c| c.generator.params.temperature = Some(f32::NAN)),
            ),
            (
                "chain.generator.params.top_p",
                Box::new(|c| c.generator.params.top_p = Some(0.0)),
            ),
            (
                "chain.generator.params.max_tokens",
                Box::new(|c| c.generator.params.max_tokens = Some(40000)),
            ),
            (
                "chain.fallbacks",
                Box::new(|c| c.fallbacks = vec![generator("openai"); 5]),
            ),
            (
                "chain.fallbacks[1].name",
                Box::new(|c| c.fallbacks = vec![generator("openai"), generator("")]),
            ),
            (
                "chain.fallbacks[0].params.top_p",
                Box::new(|c| {
                    let mut fallback = generator("openai");
                    fallback.params.top_p = Some(1.5);
                    c.fallbacks = vec![fallback];
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut spec = chain();
            mutate(&mut spec);
            let error = validate_chain(&spec).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn a_chain_without_collection_and_top_k_skips_retrieval() {
        let mut spec = chain();
        spec.collection = String::new();
        spec.top_k = 0;
        assert!(validate_chain(&spec).is_ok());
        spec.top_k = 3;
        let error = validate_chain(&spec).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("must be 0 when chain.collection is empty"),
            "{error}"
        );
    }

    #[test]
    fn four_fallbacks_are_fine() {
        let mut spec = chain();
        spec.fallbacks = vec![generator("openai"); MAX_FALLBACKS];
        assert!(validate_chain(&spec).is_ok());
    }

    #[test]
    fn a_chain_stored_before_fallbacks_reads_with_none() {
        let stored = r#"{"type":"chain","collection":"docs","top_k":5,"filter":{},
            "prompt":"p@champion","generator":{"name":"extractive","params":{}}}"#;
        let VersionSpec::Chain(spec) = serde_json::from_str::<VersionSpec>(stored).unwrap() else {
            panic!("not a chain");
        };
        assert!(spec.fallbacks.is_empty());
        assert_eq!(spec.generator.name, "extractive");
    }

    #[test]
    fn spec_json_round_trips() {
        let mut spec = chain();
        spec.fallbacks = vec![generator("openai")];
        spec.generator.params.temperature = Some(0.2);
        spec.filter.insert("lang".into(), serde_json::json!("en"));
        let stored = serde_json::to_string(&VersionSpec::Chain(spec.clone())).unwrap();
        let back: VersionSpec = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, VersionSpec::Chain(spec));
    }
}
