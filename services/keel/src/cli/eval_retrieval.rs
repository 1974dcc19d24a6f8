//! `keel eval retrieval`: how well a collection finds the passages that
//! answer a set of questions, per search mode — hit@k, MRR and recall@k —
//! as a table, and as JSON for tooling.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use keel_core::channel::ServiceChannel;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{SearchMode, SearchRequest};
use keel_types::SearchMode as Mode;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::cli::error::rpc;
use crate::cli::retrieval_metrics::{ModeRank, ModeScores, QuestionRanks};
use crate::cli::scroll::{for_each_point, payload_equals};
use crate::cli::sections::collapse_whitespace;
use crate::cli::{ingest, output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct RetrievalArgs {
    #[arg(long)]
    pub collection: String,
    /// JSONL, one question per line: {"question", "source", "evidence"?}
    #[arg(long)]
    pub questions: PathBuf,
    /// Passages retrieved per question
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub k: u32,
    /// Also write the report as JSON to this file (`-` for standard output,
    /// instead of the table)
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One line of the questions file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Question {
    pub question: String,
    /// The `source` payload of the document that answers it (what
    /// `keel ingest` writes: the path relative to the ingested directory).
    pub source: String,
    /// A pattern (case-insensitive, on whitespace-collapsed text) that the
    /// answering passage contains; without it any passage of the source
    /// counts.
    #[serde(default)]
    pub evidence: Option<String>,
}

/// What `keel eval retrieval` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    pub collection: String,
    pub k: usize,
    pub questions: usize,
    /// Per mode, in the order dense, keyword, hybrid.
    pub modes: Vec<ModeScores>,
    pub per_question: Vec<QuestionRanks>,
}

pub const MODES: [Mode; 3] = [Mode::Dense, Mode::Keyword, Mode::Hybrid];

/// `keel eval retrieval`: the report as a table, and as JSON when asked.
pub async fn run(urls: &ServiceUrls, args: RetrievalArgs) -> Result<(), CliError> {
    let questions = read_questions(&args.questions)?;
    let report = evaluate_retrieval(urls, &args.collection, &questions, args.k as usize).await?;
    output::json_or(args.json.as_deref(), &report, output::retrieval_report)
}

pub fn read_questions(path: &Path) -> Result<Vec<Question>, CliError> {
    let text = std::fs::read_to_string(path).map_err(CliError::io(path))?;
    let mut questions = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let question: Question = serde_json::from_str(line).map_err(|error| {
            CliError::Invalid(format!("{}:{}: {error}", path.display(), number + 1))
        })?;
        if question.question.trim().is_empty() || question.source.trim().is_empty() {
            return Err(CliError::Invalid(format!(
                "{}:{}: `question` and `source` must not be empty",
                path.display(),
                number + 1
            )));
        }
        questions.push(question);
    }
    if questions.is_empty() {
        return Err(CliError::Invalid(format!(
            "{}: no questions",
            path.display()
        )));
    }
    Ok(questions)
}

/// Searches `collection` for every question in each mode and scores the
/// rankings against the passages that answer it.
pub async fn evaluate_retrieval(
    urls: &ServiceUrls,
    collection: &str,
    questions: &[Question],
    k: usize,
) -> Result<RetrievalReport, CliError> {
    let mut client = urls.vector_index().await?;
    let mut answering = AnsweringPassages::default();
    let progress = output::progress_bar((questions.len() * MODES.len()) as u64, "searches");
    let mut per_question = Vec::with_capacity(questions.len());
    for question in questions {
        let evidence = evidence_pattern(question)?;
        let relevant = answering
            .of(&mut client, collection, &question.source, evidence.as_ref())
            .await?;
        let mut modes = BTreeMap::new();
        for mode in MODES {
            let found = search(&mut client, collection, &question.question, mode, k).await?;
            modes.insert(mode.as_str().to_string(), ModeRank::of(&found, &relevant));
            progress.inc(1);
        }
        per_question.push(QuestionRanks {
            question: question.question.clone(),
            source: question.source.clone(),
            relevant_passages: relevant.len(),
            modes,
        });
    }
    progress.finish_and_clear();
    let modes = MODES
        .iter()
        .map(|mode| ModeScores::of(mode.as_str(), &per_question, k))
        .collect();
    Ok(RetrievalReport {
        collection: collection.to_string(),
        k,
        questions: questions.len(),
        modes,
        per_question,
    })
}

fn evidence_pattern(question: &Question) -> Result<Option<Regex>, CliError> {
    question
        .evidence
        .as_deref()
        .map(|pattern| {
            RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|error| {
                    CliError::Invalid(format!(
                        "evidence of {:?} is not a valid pattern: {error}",
                        question.question
                    ))
                })
        })
        .transpose()
}

/// The ids of the passages of one source, read once per source and
/// filtered per question by its evidence.
#[derive(Default)]
struct AnsweringPassages {
    by_source: HashMap<String, Vec<(String, String)>>,
}

impl AnsweringPassages {
    async fn of(
        &mut self,
        client: &mut VectorIndexServiceClient<ServiceChannel>,
        collection: &str,
        source: &str,
        evidence: Option<&Regex>,
    ) -> Result<BTreeSet<String>, CliError> {
        if !self.by_source.contains_key(source) {
            let passages = passages_of(client, collection, source).await?;
            self.by_source.insert(source.to_string(), passages);
        }
        let passages = self
            .by_source
            .get(source)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(passages
            .iter()
            .filter(|(_, text)| evidence.is_none_or(|pattern| pattern.is_match(text)))
            .map(|(id, _)| id.clone())
            .collect())
    }
}

/// Every passage whose payload `source` is `source`: id and text with its
/// whitespace collapsed.
async fn passages_of(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    source: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let mut passages = Vec::new();
    let filter = payload_equals(ingest::SOURCE, source);
    for_each_point(client, collection, Some(filter), false, |point| {
        passages.push((point.id, collapse_whitespace(&point.text)));
        Ok(())
    })
    .await?;
    Ok(passages)
}

/// The ids a search in `mode` ranks first, best first.
async fn search(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    question: &str,
    mode: Mode,
    k: usize,
) -> Result<Vec<String>, CliError> {
    let mode: SearchMode = mode.into();
    let found = client
        .search(SearchRequest {
            collection: collection.to_string(),
            text: question.to_string(),
            top_k: k as u32,
            mode: mode as i32,
            ..SearchRequest::default()
        })
        .await
        .map_err(rpc("vector-index Search"))?
        .into_inner();
    Ok(found.points.into_iter().map(|point| point.id).collect())
}
