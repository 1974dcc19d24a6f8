//! The datasets of `keel improve`: the endpoint's EVAL export from
//! feedback, cut into the examples the challenger learns from and those
//! held out to evaluate it, each written to the work directory so the
//! lineage's digests name files that exist; and, for a fine-tuned
//! challenger, the SFT export without the held-out questions.

use std::path::{Path, PathBuf};

use keel_proto::v1 as pb;
use sha2::{Digest, Sha256};

use crate::cli::eval_dataset::{dataset_from_text, Dataset, Example};
use crate::cli::feedback::{export, export_request, DatasetKindArg};
use crate::cli::improve_fewshot::split;
use crate::cli::{CliError, ServiceUrls};

pub struct ImproveSets {
    /// The whole EVAL export.
    pub export: Dataset,
    /// What the challenger learns from: its few-shot examples, or the
    /// questions whose answers fine-tune it.
    pub training: Dataset,
    pub held_out: Dataset,
}

/// A training file as it was uploaded, for the lineage.
pub struct TrainingFile {
    pub path: PathBuf,
    pub source: pb::DatasetSource,
}

/// Exports the endpoint's EVAL set and cuts it: at most `training_count`
/// examples with a reference to learn from (never more than half of them),
/// written as the `training_part` (e.g. `few-shot`), the rest held out.
pub async fn eval_sets(
    urls: &ServiceUrls,
    endpoint: &str,
    dir: &Path,
    (training_part, training_count): (&str, usize),
) -> Result<ImproveSets, CliError> {
    std::fs::create_dir_all(dir).map_err(CliError::io(dir))?;
    let export_path = dir.join(format!("{endpoint}-eval.jsonl"));
    export(
        urls,
        export_request(DatasetKindArg::Eval, endpoint),
        &export_path,
    )
    .await?;
    let text = std::fs::read_to_string(&export_path).map_err(CliError::io(&export_path))?;
    if text.trim().is_empty() {
        return Err(CliError::Invalid(format!(
            "endpoint {endpoint} has no rated requests yet: nothing to learn from"
        )));
    }
    let exported = dataset_from_text(
        &export_path.display().to_string(),
        format!("feedback:eval:{endpoint}"),
        &text,
        None,
    )?;
    let parts = split(&exported.examples, training_count);
    if parts.few_shot.is_empty() {
        let references = exported
            .examples
            .iter()
            .filter(|example| example.reference.is_some())
            .count();
        return Err(CliError::Invalid(format!(
            "endpoint {endpoint} needs at least two liked answers or corrections (one to learn \
             from, one held out); it has {references}"
        )));
    }
    let training = write_examples(dir, endpoint, training_part, &parts.few_shot)?;
    let held_out = write_examples(dir, endpoint, "held-out", &parts.held_out)?;
    Ok(ImproveSets {
        export: exported,
        training,
        held_out,
    })
}

/// Writes `examples` as a dataset file `<endpoint>-<part>.jsonl` and reads
/// it back as the dataset evaluations and lineage name.
fn write_examples(
    dir: &Path,
    endpoint: &str,
    part: &str,
    examples: &[&Example],
) -> Result<Dataset, CliError> {
    let mut text = String::new();
    for example in examples {
        let line = serde_json::json!({
            "question": example.question,
            "reference": example.reference,
            "expected_sources": example.expected_sources,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("{endpoint}-{part}.jsonl"));
    std::fs::write(&path, &text).map_err(CliError::io(&path))?;
    let name = format!("keel-improve:{part}:{endpoint}");
    dataset_from_text(&path.display().to_string(), name, &text, None)
}

/// The SFT export of the endpoint without any line that mentions a
/// held-out question: a model must not be trained on what it is then
/// evaluated on.
pub async fn sft_training_file(
    urls: &ServiceUrls,
    endpoint: &str,
    dir: &Path,
    held_out: &Dataset,
) -> Result<TrainingFile, CliError> {
    let all_path = dir.join(format!("{endpoint}-sft-all.jsonl"));
    export(
        urls,
        export_request(DatasetKindArg::Sft, endpoint),
        &all_path,
    )
    .await?;
    let all = std::fs::read_to_string(&all_path).map_err(CliError::io(&all_path))?;
    let kept: Vec<&str> = all
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| {
            !held_out
                .examples
                .iter()
                .any(|example| mentions(line, &example.question))
        })
        .collect();
    if kept.is_empty() {
        return Err(CliError::Invalid(format!(
            "endpoint {endpoint}'s SFT export has no line left once the held-out questions \
             are taken out: nothing to fine-tune on"
        )));
    }
    let text = kept.join("\n") + "\n";
    let path = dir.join(format!("{endpoint}-sft.jsonl"));
    std::fs::write(&path, &text).map_err(CliError::io(&path))?;
    Ok(TrainingFile {
        path,
        source: pb::DatasetSource {
            name: format!("feedback:sft:{endpoint}"),
            digest: hex::encode(Sha256::digest(text.as_bytes())),
            examples: kept.len() as u64,
        },
    })
}

/// Whether a JSONL line's text holds `question` (as JSON escapes it).
fn mentions(line: &str, question: &str) -> bool {
    let escaped = serde_json::to_string(question.trim()).unwrap_or_default();
    let inner = escaped.trim_matches('"');
    !inner.is_empty() && line.contains(inner)
}

pub fn source(dataset: &Dataset) -> pb::DatasetSource {
    pb::DatasetSource {
        name: dataset.name.clone(),
        digest: dataset.digest.clone(),
        examples: dataset.examples.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_found_as_json_writes_it() {
        let line = r#"{"messages":[{"role":"user","content":"Q: Is it \"free\"?\nA:"}]}"#;
        assert!(mentions(line, "Is it \"free\"?"));
        assert!(!mentions(line, "Is it paid?"));
        assert!(!mentions(line, "  "));
    }
}
