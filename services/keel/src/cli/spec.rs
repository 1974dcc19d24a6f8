//! Version spec files (`keel version create MODEL --file spec.yaml`): YAML
//! (`.yaml`, `.yml`) or TOML (`.toml`) holding either `prompt: {template}` or
//! `chain: {collection, top_k, filter, prompt, generator: {name, params}}`
//! (collection and top_k left out: a chain without retrieval),
//! plus `description`, `tags` and `lineage: {parent_version, datasets:
//! [{name, digest, examples}], evaluation_runs}`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use keel_proto::v1::{
    create_version_request, ChainSpec, CreateVersionRequest, DatasetSource, GenerationParams,
    GeneratorSpec, Lineage, PromptSpec,
};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spec file {path}: unsupported extension, expected .yaml, .yml or .toml")]
    Extension { path: PathBuf },
    #[error("spec file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("spec file {path}: exactly one of `prompt` and `chain` must be set, found {found}")]
    Shape { path: PathBuf, found: &'static str },
}

// Unknown keys are errors: a misspelt `top_k` must not silently become the
// server's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionSpecFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    prompt: Option<PromptSection>,
    chain: Option<ChainSection>,
    lineage: Option<LineageSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineageSection {
    #[serde(default)]
    parent_version: u32,
    #[serde(default)]
    datasets: Vec<DatasetSection>,
    #[serde(default)]
    evaluation_runs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetSection {
    name: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    examples: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptSection {
    template: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainSection {
    /// Both left out: a chain without retrieval.
    #[serde(default)]
    collection: String,
    #[serde(default)]
    top_k: u32,
    #[serde(default)]
    filter: serde_json::Map<String, serde_json::Value>,
    prompt: String,
    generator: GeneratorSection,
    /// `dense` (the default), `keyword` or `hybrid`.
    #[serde(default)]
    retrieval_mode: keel_types::SearchMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorSection {
    name: String,
    #[serde(default)]
    params: ParamsSection,
    /// OpenAI-compatible generators: the remote model to ask for instead
    /// of the configured one (e.g. a fine-tuned model).
    #[serde(default)]
    model: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsSection {
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    #[serde(default)]
    stop: Vec<String>,
    seed: Option<u64>,
}

/// Reads `path` and builds the request that creates a version of `model`.
pub async fn load_version_request(
    model: &str,
    path: &Path,
) -> Result<CreateVersionRequest, SpecError> {
    let contents = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    version_request(model, path, &contents)
}

/// Parses a spec file's `contents`; the extension of `path` picks the format.
pub fn version_request(
    model: &str,
    path: &Path,
    contents: &str,
) -> Result<CreateVersionRequest, SpecError> {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let parse_error = |message: String| SpecError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let file: VersionSpecFile = match extension.as_str() {
        "yaml" | "yml" => {
            serde_yaml::from_str(contents).map_err(|error| parse_error(error.to_string()))?
        }
        "toml" => toml::from_str(contents).map_err(|error| parse_error(error.to_string()))?,
        _ => {
            return Err(SpecError::Extension {
                path: path.to_path_buf(),
            })
        }
    };
    let spec = match (file.prompt, file.chain) {
        (Some(prompt), None) => create_version_request::Spec::Prompt(PromptSpec {
            template: prompt.template,
        }),
        (None, Some(chain)) => create_version_request::Spec::Chain(chain_spec(chain)),
        (Some(_), Some(_)) => {
            return Err(SpecError::Shape {
                path: path.to_path_buf(),
                found: "both",
            })
        }
        (None, None) => {
            return Err(SpecError::Shape {
                path: path.to_path_buf(),
                found: "neither",
            })
        }
    };
    Ok(CreateVersionRequest {
        model: model.to_string(),
        spec: Some(spec),
        description: file.description,
        tags: file.tags.into_iter().collect::<HashMap<_, _>>(),
        lineage: file.lineage.map(|lineage| Lineage {
            parent_version: lineage.parent_version,
            datasets: lineage
                .datasets
                .into_iter()
                .map(|dataset| DatasetSource {
                    name: dataset.name,
                    digest: dataset.digest,
                    examples: dataset.examples,
                })
                .collect(),
            evaluation_runs: lineage.evaluation_runs,
        }),
    })
}

fn chain_spec(chain: ChainSection) -> ChainSpec {
    let filter = if chain.filter.is_empty() {
        None
    } else {
        Some(keel_core::payload::json_to_struct(&chain.filter))
    };
    let params = chain.generator.params;
    ChainSpec {
        collection: chain.collection,
        top_k: chain.top_k,
        filter,
        prompt: chain.prompt,
        generator: Some(GeneratorSpec {
            name: chain.generator.name,
            params: Some(GenerationParams {
                temperature: params.temperature,
                top_p: params.top_p,
                max_tokens: params.max_tokens,
                stop: params.stop,
                seed: params.seed,
            }),
            model: chain.generator.model,
        }),
        fallbacks: Vec::new(),
        retrieval_mode: keel_proto::v1::SearchMode::from(chain.retrieval_mode) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN_YAML: &str = r#"
description: Support bot
tags:
  team: support
chain:
  collection: handbook
  top_k: 3
  filter:
    lang: en
    page: 2
  prompt: support-prompt@champion
  generator:
    name: extractive
    params:
      temperature: 0.5
      max_tokens: 120
      stop: ["END"]
"#;

    const CHAIN_TOML: &str = r#"
description = "Support bot"

[tags]
team = "support"

[chain]
collection = "handbook"
top_k = 3
prompt = "support-prompt@champion"

[chain.filter]
lang = "en"
page = 2

[chain.generator]
name = "extractive"

[chain.generator.params]
temperature = 0.5
max_tokens = 120
stop = ["END"]
"#;

    #[test]
    fn a_chain_may_leave_retrieval_out() {
        let yaml = "chain:\n  prompt: pass-through@champion\n  generator:\n    name: gpt4o\n";
        let request = version_request("gateway", Path::new("chain.yaml"), yaml).unwrap();
        let Some(create_version_request::Spec::Chain(chain)) = &request.spec else {
            panic!("expected a chain spec, got {:?}", request.spec);
        };
        assert_eq!((chain.collection.as_str(), chain.top_k), ("", 0));
        assert_eq!(chain.generator.as_ref().unwrap().name, "gpt4o");
    }

    #[test]
    fn yaml_and_toml_give_the_same_request() {
        let from_yaml =
            version_request("support-bot", Path::new("chain.yaml"), CHAIN_YAML).unwrap();
        let from_toml =
            version_request("support-bot", Path::new("chain.TOML"), CHAIN_TOML).unwrap();
        assert_eq!(from_yaml, from_toml);
        assert_eq!(from_yaml.model, "support-bot");
        assert_eq!(from_yaml.description, "Support bot");
        assert_eq!(
            from_yaml.tags.get("team").map(String::as_str),
            Some("support")
        );
        let Some(create_version_request::Spec::Chain(chain)) = &from_yaml.spec else {
            panic!("expected a chain spec, got {:?}", from_yaml.spec);
        };
        assert_eq!(chain.collection, "handbook");
        assert_eq!(chain.top_k, 3);
        assert_eq!(chain.prompt, "support-prompt@champion");
        let filter =
            keel_core::payload::struct_to_json("filter", chain.filter.as_ref().unwrap()).unwrap();
        assert_eq!(
            serde_json::Value::Object(filter),
            serde_json::json!({"lang": "en", "page": 2})
        );
        let generator = chain.generator.as_ref().unwrap();
        assert_eq!(generator.name, "extractive");
        let params = generator.params.as_ref().unwrap();
        assert_eq!(params.temperature, Some(0.5));
        assert_eq!(params.max_tokens, Some(120));
        assert_eq!(params.top_p, None);
        assert_eq!(params.stop, vec!["END".to_string()]);
    }

    #[test]
    fn lineage_reads_from_the_file() {
        let yaml = "prompt:\n  template: \"{{ question }}\"\nlineage:\n  parent_version: 2\n  \
                    datasets:\n    - name: feedback:eval:support\n      examples: 40\n  \
                    evaluation_runs: [0190b5a0-0000-7000-8000-000000000001]\n";
        let request = version_request("p", Path::new("p.yaml"), yaml).unwrap();
        let lineage = request.lineage.unwrap();
        assert_eq!(lineage.parent_version, 2);
        assert_eq!(lineage.datasets[0].name, "feedback:eval:support");
        assert_eq!(lineage.datasets[0].examples, 40);
        assert_eq!(
            lineage.evaluation_runs,
            ["0190b5a0-0000-7000-8000-000000000001"]
        );
        let plain = "prompt:\n  template: \"{{ question }}\"\n";
        assert_eq!(
            version_request("p", Path::new("p.yaml"), plain)
                .unwrap()
                .lineage,
            None
        );
    }

    #[test]
    fn prompt_specs_parse_in_both_formats() {
        let yaml = "prompt:\n  template: \"Q: {{ question }}\"\n";
        let toml = "[prompt]\ntemplate = \"Q: {{ question }}\"\n";
        let from_yaml = version_request("p", Path::new("p.yml"), yaml).unwrap();
        let from_toml = version_request("p", Path::new("p.toml"), toml).unwrap();
        assert_eq!(from_yaml, from_toml);
        assert_eq!(
            from_yaml.spec,
            Some(create_version_request::Spec::Prompt(PromptSpec {
                template: "Q: {{ question }}".to_string()
            }))
        );
        assert!(from_yaml.tags.is_empty());
    }

    #[test]
    fn the_sample_specs_parse() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/specs");
        for name in ["prompt.yaml", "chain.yaml"] {
            let path = samples.join(name);
            let contents = std::fs::read_to_string(&path).unwrap();
            let request = version_request("m", &path, &contents).unwrap();
            assert!(request.spec.is_some(), "{name}");
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        let misspelt = CHAIN_YAML.replace("top_k", "topk");
        let error = version_request("m", Path::new("c.yaml"), &misspelt)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("spec file c.yaml: "), "{error}");
        assert!(error.contains("topk"), "{error}");

        // top_k may be left out (a chain without retrieval: the registry
        // then wants no collection either); the prompt may not.
        let missing = CHAIN_TOML.replace("prompt = \"support-prompt@champion\"\n", "");
        let error = version_request("m", Path::new("c.toml"), &missing)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `prompt`"), "{error}");

        let wrong_type = CHAIN_TOML.replace("top_k = 3", "top_k = \"three\"");
        let error = version_request("m", Path::new("c.toml"), &wrong_type)
            .unwrap_err()
            .to_string();
        assert!(error.contains("top_k"), "{error}");

        let both = format!("{CHAIN_YAML}prompt:\n  template: x\n");
        let error = version_request("m", Path::new("c.yaml"), &both)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "spec file c.yaml: exactly one of `prompt` and `chain` must be set, found both"
        );

        let neither =
            version_request("m", Path::new("c.yaml"), "description: nothing\n").unwrap_err();
        assert!(
            matches!(
                neither,
                SpecError::Shape {
                    found: "neither",
                    ..
                }
            ),
            "{neither}"
        );

        let error = version_request("m", Path::new("c.json"), "{}")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "spec file c.json: unsupported extension, expected .yaml, .yml or .toml"
        );
    }

    #[tokio::test]
    async fn an_unreadable_file_names_its_path() {
        let error = load_version_request("m", Path::new("/nonexistent/spec.yaml"))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read spec file /nonexistent/spec.yaml: "),
            "{error}"
        );
    }
}
