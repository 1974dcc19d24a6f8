//! Evaluation runs: a version's answers to a dataset, each example scored
//! by the scorers the run names, summarised (mean and 95% interval per
//! scorer) when the run is finished. Stored here so that they stay attached
//! to the version they judged, for comparisons, gates and lineage.

use std::collections::{BTreeMap, BTreeSet};

use keel_eval::Scorer;
use keel_types::{validate, FieldError, RequestId};
use serde::{Deserialize, Serialize};

use crate::aliases::MAX_ACTOR_BYTES;
use crate::error::Error;
use crate::evaluation_store::{self as store, ExampleRow, RunRow};
use crate::lineage::DatasetSource;
use crate::registry::{stored_u32, validate_tags, version_not_found, Page, Registry, Tags};
use crate::{aliases, pagination};

pub const MAX_SCORERS: usize = 32;
pub const MAX_EXAMPLES_PER_APPEND: usize = 1000;
pub const MAX_EXAMPLE_TEXT_BYTES: usize = 256 * 1024;
pub const MAX_SOURCES: usize = 256;
pub const MAX_ERROR_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Finished,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub scorer: String,
    pub count: u64,
    pub mean: f64,
    pub stddev: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRun {
    pub id: String,
    pub model: String,
    pub version: u32,
    pub endpoint: String,
    pub dataset: DatasetSource,
    pub scorers: Vec<String>,
    pub state: RunState,
    pub summaries: Vec<ScoreSummary>,
    pub example_count: u64,
    pub error_count: u64,
    pub actor: String,
    pub tags: Tags,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewEvaluationRun {
    pub model: String,
    pub version: u32,
    pub endpoint: String,
    pub dataset: DatasetSource,
    pub scorers: Vec<String>,
    pub actor: String,
    pub tags: Tags,
}

/// One example and its answer. Stored as JSON without `index` (the row's
/// position) and `scores` (their own column, read alone by the summary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluationExample {
    #[serde(skip)]
    pub index: u32,
    pub question: String,
    pub reference: String,
    pub answer: String,
    pub expected_sources: Vec<String>,
    pub retrieved_sources: Vec<String>,
    #[serde(skip)]
    pub scores: BTreeMap<String, f64>,
    pub request_id: String,
    pub latency_ms: f64,
    pub error: String,
}

impl Registry {
    pub async fn create_evaluation_run(
        &self,
        new_run: NewEvaluationRun,
    ) -> Result<EvaluationRun, Error> {
        validate::name("model", &new_run.model)?;
        if new_run.version == 0 {
            return Err(FieldError::new("version", "must be at least 1, got 0").into());
        }
        validate::name("endpoint", &new_run.endpoint)?;
        new_run.dataset.validate("dataset")?;
        validate_scorers(&new_run.scorers)?;
        validate::max_len("actor", &new_run.actor, MAX_ACTOR_BYTES)?;
        validate_tags(&new_run.tags)?;
        let actor = if new_run.actor.trim().is_empty() {
            aliases::ANONYMOUS_ACTOR.to_string()
        } else {
            new_run.actor.clone()
        };
        let row = RunRow {
            id: RequestId::generate().to_string(),
            model: new_run.model.clone(),
            version: i64::from(new_run.version),
            endpoint: new_run.endpoint,
            dataset_name: new_run.dataset.name,
            dataset_digest: new_run.dataset.digest,
            dataset_examples: i64::try_from(new_run.dataset.examples)
                .map_err(|_| FieldError::new("dataset.examples", "must be at most 2^63 - 1"))?,
            scorers_json: to_json("scorers", &new_run.scorers)?,
            state: store::STATE_RUNNING,
            summaries_json: "[]".to_string(),
            example_count: 0,
            error_count: 0,
            actor,
            tags_json: to_json("tags", &new_run.tags)?,
            created_at_ms: keel_core::time::now_ms(),
            finished_at_ms: 0,
        };
        let mut tx = self.store.begin_write().await?;
        let version = crate::store::get_version(tx.conn(), &row.model, row.version).await?;
        if version.is_none() {
            return Err(version_not_found(&row.model, row.version));
        }
        store::insert_run(tx.conn(), &row).await?;
        tx.commit().await?;
        tracing::info!(run = %row.id, model = %row.model, version = row.version, dataset = %row.dataset_name, "evaluation run created");
        run_from_row(row)
    }

    /// Stores the examples whose index the run does not hold yet; returns
    /// how many were new.
    pub async fn append_evaluation_examples(
        &self,
        run_id: &str,
        examples: Vec<EvaluationExample>,
    ) -> Result<u64, Error> {
        RequestId::parse("run_id", run_id)?;
        if examples.is_empty() || examples.len() > MAX_EXAMPLES_PER_APPEND {
            return Err(FieldError::new(
                "examples",
                format!(
                    "must hold 1..={MAX_EXAMPLES_PER_APPEND} examples, got {}",
                    examples.len()
                ),
            )
            .into());
        }
        let mut indices = BTreeSet::new();
        for (position, example) in examples.iter().enumerate() {
            validate_example(&format!("examples[{position}]"), example)?;
            if !indices.insert(example.index) {
                return Err(FieldError::new(
                    format!("examples[{position}].index"),
                    format!("must be unique in the request, {} repeats", example.index),
                )
                .into());
            }
        }
        let mut tx = self.store.begin_write().await?;
        let run = self.running_run(tx.conn(), run_id).await?;
        let scorers: BTreeSet<&str> = run.scorers.iter().map(String::as_str).collect();
        let mut rows = Vec::with_capacity(examples.len());
        for (position, example) in examples.iter().enumerate() {
            for (scorer, value) in &example.scores {
                if !scorers.contains(scorer.as_str()) {
                    return Err(FieldError::new(
                        format!("examples[{position}].scores"),
                        format!("`{scorer}` is not one of the run's scorers"),
                    )
                    .into());
                }
                if !value.is_finite() {
                    return Err(FieldError::new(
                        format!("examples[{position}].scores"),
                        format!("`{scorer}` must be a finite number, got {value}"),
                    )
                    .into());
                }
            }
            let failed = i64::from(!example.error.is_empty());
            rows.push((
                i64::from(example.index),
                failed,
                to_json("examples", example)?,
                to_json("examples", &example.scores)?,
            ));
        }
        let backend = self.store.backend();
        let stored = store::insert_examples(tx.conn(), backend, run_id, &rows).await?;
        store::recount_examples(tx.conn(), run_id).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Computes the summaries and closes the run to further examples.
    /// Finishing a finished run returns it unchanged.
    pub async fn finish_evaluation_run(&self, run_id: &str) -> Result<EvaluationRun, Error> {
        RequestId::parse("run_id", run_id)?;
        let mut tx = self.store.begin_write().await?;
        if !store::lock_running_run(tx.conn(), run_id).await? {
            // Finished already (returned as it is), or not found.
            drop(tx);
            return self.get_evaluation_run(run_id).await;
        }
        let row = store::get_run(tx.conn(), run_id)
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        let run = run_from_row(row)?;
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for scores_json in store::all_scores(tx.conn(), run_id).await? {
            let scores: BTreeMap<String, f64> = from_json("example scores", &scores_json)?;
            for (scorer, value) in scores {
                values.entry(scorer).or_default().push(value);
            }
        }
        let summaries: Vec<ScoreSummary> = run
            .scorers
            .iter()
            .filter_map(|scorer| {
                let summary = keel_eval::summarise(values.get(scorer)?)?;
                // Scorer names were checked when the run was created.
                let range = Scorer::parse(scorer).map_or((f64::MIN, f64::MAX), Scorer::range);
                let interval = summary.interval.within(range);
                Some(ScoreSummary {
                    scorer: scorer.clone(),
                    count: summary.count,
                    mean: summary.mean,
                    stddev: summary.stddev,
                    ci_low: interval.low,
                    ci_high: interval.high,
                })
            })
            .collect();
        let summaries_json = to_json("summaries", &summaries)?;
        store::finish_run(
            tx.conn(),
            run_id,
            &summaries_json,
            keel_core::time::now_ms(),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(run = %run_id, examples = run.example_count, "evaluation run finished");
        self.get_evaluation_run(run_id).await
    }

    pub async fn get_evaluation_run(&self, run_id: &str) -> Result<EvaluationRun, Error> {
        RequestId::parse("run_id", run_id)?;
        let mut conn = self.store.pool().acquire().await?;
        let row = store::get_run(&mut conn, run_id)
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        run_from_row(row)
    }

    /// Newest first; empty `model`/`dataset` and version 0 match all.
    pub async fn list_evaluation_runs(
        &self,
        model: &str,
        version: u32,
        dataset: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<EvaluationRun>, Error> {
        if !model.is_empty() {
            validate::name("model", model)?;
        } else if version != 0 {
            return Err(FieldError::new("version", "needs `model`").into());
        }
        validate::max_len("dataset", dataset, crate::lineage::MAX_DATASET_NAME_BYTES)?;
        let limit = validate::page_size("page_size", page_size)?;
        let before = pagination::decode("page_token", page_token)?.unwrap_or_default();
        let mut conn = self.store.pool().acquire().await?;
        let rows = store::list_runs(
            &mut conn,
            model,
            i64::from(version),
            dataset,
            &before,
            i64::from(limit),
        )
        .await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => pagination::encode(&last.id),
            _ => String::new(),
        };
        let runs = rows
            .into_iter()
            .map(run_from_row)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items: runs,
            next_page_token,
        })
    }

    pub async fn list_evaluation_examples(
        &self,
        run_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<EvaluationExample>, Error> {
        RequestId::parse("run_id", run_id)?;
        let limit = validate::page_size("page_size", page_size)?;
        // Indices start at 0: the first page starts after -1.
        let after = match page_token {
            "" => -1,
            token => pagination::decode_number("page_token", token)?,
        };
        let mut conn = self.store.pool().acquire().await?;
        if store::get_run(&mut conn, run_id).await?.is_none() {
            return Err(run_not_found(run_id));
        }
        let rows = store::list_examples(&mut conn, run_id, after, i64::from(limit)).await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => pagination::encode(&last.0.to_string()),
            _ => String::new(),
        };
        let examples = rows
            .into_iter()
            .map(example_from_row)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items: examples,
            next_page_token,
        })
    }

    /// The run, locked for this transaction when it is running; NOT_FOUND
    /// or FAILED_PRECONDITION (finished) otherwise.
    async fn running_run(
        &self,
        conn: &mut sqlx::AnyConnection,
        run_id: &str,
    ) -> Result<EvaluationRun, Error> {
        let locked = store::lock_running_run(conn, run_id).await?;
        let row = store::get_run(conn, run_id)
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        if !locked {
            return Err(Error::FailedPrecondition(format!(
                "evaluation run `{run_id}` is finished; its examples can no longer change"
            )));
        }
        run_from_row(row)
    }
}

fn validate_scorers(scorers: &[String]) -> Result<(), FieldError> {
    if scorers.is_empty() || scorers.len() > MAX_SCORERS {
        return Err(FieldError::new(
            "scorers",
            format!("must name 1..={MAX_SCORERS} scorers, got {}", scorers.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, name) in scorers.iter().enumerate() {
        let field = format!("scorers[{index}]");
        Scorer::parse(name).map_err(|rule| FieldError::new(&field, rule))?;
        if !seen.insert(name) {
            return Err(FieldError::new(field, format!("`{name}` is named twice")));
        }
    }
    Ok(())
}

fn validate_example(field: &str, example: &EvaluationExample) -> Result<(), FieldError> {
    for (name, text) in [
        ("question", &example.question),
        ("reference", &example.reference),
        ("answer", &example.answer),
    ] {
        validate::max_len(&format!("{field}.{name}"), text, MAX_EXAMPLE_TEXT_BYTES)?;
    }
    validate::not_empty(&format!("{field}.question"), &example.question)?;
    for (name, sources) in [
        ("expected_sources", &example.expected_sources),
        ("retrieved_sources", &example.retrieved_sources),
    ] {
        if sources.len() > MAX_SOURCES {
            return Err(FieldError::new(
                format!("{field}.{name}"),
                format!("must hold at most {MAX_SOURCES} ids, got {}", sources.len()),
            ));
        }
        for source in sources {
            validate::max_len(&format!("{field}.{name}"), source, validate::MAX_ID_BYTES)?;
        }
    }
    if !example.request_id.is_empty() {
        RequestId::parse(&format!("{field}.request_id"), &example.request_id)?;
    }
    if !example.latency_ms.is_finite() || example.latency_ms < 0.0 {
        return Err(FieldError::new(
            format!("{field}.latency_ms"),
            format!("must be a finite number ≥ 0, got {}", example.latency_ms),
        ));
    }
    validate::max_len(&format!("{field}.error"), &example.error, MAX_ERROR_BYTES)?;
    if !example.error.is_empty() && !example.scores.is_empty() {
        return Err(FieldError::new(
            format!("{field}.scores"),
            "must be empty when the example failed (error is set)",
        ));
    }
    Ok(())
}

fn run_not_found(run_id: &str) -> Error {
    Error::NotFound(format!("evaluation run `{run_id}` not found"))
}

fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, Error> {
    serde_json::to_string(value)
        .map_err(|error| Error::Corrupt(format!("cannot encode {what}: {error}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|error| Error::Corrupt(format!("stored {what}: {error}")))
}

pub(crate) fn run_from_row(row: RunRow) -> Result<EvaluationRun, Error> {
    let state = match row.state {
        store::STATE_RUNNING => RunState::Running,
        store::STATE_FINISHED => RunState::Finished,
        other => return Err(Error::Corrupt(format!("stored run state {other}"))),
    };
    Ok(EvaluationRun {
        version: stored_u32("run version", row.version)?,
        dataset: DatasetSource {
            examples: u64::try_from(row.dataset_examples).unwrap_or_default(),
            name: row.dataset_name,
            digest: row.dataset_digest,
        },
        scorers: from_json("run scorers", &row.scorers_json)?,
        state,
        summaries: from_json("run summaries", &row.summaries_json)?,
        example_count: u64::try_from(row.example_count).unwrap_or_default(),
        error_count: u64::try_from(row.error_count).unwrap_or_default(),
        tags: from_json("run tags", &row.tags_json)?,
        id: row.id,
        model: row.model,
        endpoint: row.endpoint,
        actor: row.actor,
        created_at_ms: row.created_at_ms,
        finished_at_ms: row.finished_at_ms,
    })
}

fn example_from_row(row: ExampleRow) -> Result<EvaluationExample, Error> {
    let (position, _failed, example_json, scores_json) = row;
    let mut example: EvaluationExample = from_json("example", &example_json)?;
    example.index = stored_u32("example index", position)?;
    example.scores = from_json("example scores", &scores_json)?;
    Ok(example)
}
