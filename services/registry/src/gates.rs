//! Promotion gates: what a version must show — a description, tags, a
//! finished evaluation run on a named dataset, minimum scores, no
//! regression beyond a margin against the version the alias points at now —
//! before an alias may point at it. `set_alias` asks [`failed_rules`].

use std::collections::BTreeMap;

use keel_eval::Scorer;
use keel_types::model_ref::validate_alias;
use keel_types::{validate, FieldError};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::error::Error;
use crate::evaluation_store;
use crate::evaluations::{run_from_row, EvaluationRun};
use crate::gate_store::{self, GateRow};
use crate::lineage::MAX_DATASET_NAME_BYTES;
use crate::registry::{model_not_found, validate_tags, Registry, Tags};
use crate::store;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionGate {
    #[serde(skip)]
    pub model: String,
    #[serde(skip)]
    pub alias: String,
    pub require_description: bool,
    pub required_tags: Tags,
    pub evaluation_dataset: String,
    pub min_scores: BTreeMap<String, f64>,
    pub max_scores: BTreeMap<String, f64>,
    pub max_regression: BTreeMap<String, f64>,
    #[serde(skip)]
    pub updated_at_ms: i64,
}

impl Registry {
    /// Sets (or replaces) the gate of `gate.alias`.
    pub async fn set_promotion_gate(&self, gate: PromotionGate) -> Result<PromotionGate, Error> {
        validate_gate(&gate)?;
        let gate = PromotionGate {
            updated_at_ms: keel_core::time::now_ms(),
            ..gate
        };
        let gate_json = serde_json::to_string(&gate)
            .map_err(|error| Error::Corrupt(format!("cannot encode gate: {error}")))?;
        let mut tx = self.store.begin_write().await?;
        if store::get_model(tx.conn(), &gate.model).await?.is_none() {
            return Err(model_not_found(&gate.model));
        }
        let row: GateRow = (
            gate.model.clone(),
            gate.alias.clone(),
            gate_json,
            gate.updated_at_ms,
        );
        gate_store::upsert_gate(tx.conn(), &row).await?;
        tx.commit().await?;
        tracing::info!(model = %gate.model, alias = %gate.alias, "promotion gate set");
        Ok(gate)
    }

    pub async fn delete_promotion_gate(&self, model: &str, alias: &str) -> Result<(), Error> {
        validate::name("model", model)?;
        validate_alias("alias", alias)?;
        let mut tx = self.store.begin_write().await?;
        if !gate_store::delete_gate(tx.conn(), model, alias).await? {
            return Err(Error::NotFound(format!(
                "alias `{alias}` of model `{model}` has no promotion gate"
            )));
        }
        tx.commit().await?;
        tracing::info!(model = %model, alias = %alias, "promotion gate deleted");
        Ok(())
    }

    pub async fn list_promotion_gates(&self, model: &str) -> Result<Vec<PromotionGate>, Error> {
        validate::name("model", model)?;
        let mut conn = self.store.pool().acquire().await?;
        if store::get_model(&mut conn, model).await?.is_none() {
            return Err(model_not_found(model));
        }
        let rows = gate_store::list_gates(&mut conn, model).await?;
        rows.into_iter().map(gate_from_row).collect()
    }
}

/// The rules of the alias's gate that moving it to `version` fails, each
/// said in a sentence; empty when the alias has no gate or all pass.
/// `current` is the version the alias points at now (0: none).
pub(crate) async fn failed_rules(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
    version: i64,
    current: i64,
) -> Result<Vec<String>, Error> {
    let Some(row) = gate_store::get_gate(conn, model, alias).await? else {
        return Ok(Vec::new());
    };
    let gate = gate_from_row(row)?;
    let mut failed = Vec::new();
    let version_row = store::get_version(conn, model, version)
        .await?
        .ok_or_else(|| crate::registry::version_not_found(model, version))?;
    let model_row = store::get_model(conn, model)
        .await?
        .ok_or_else(|| model_not_found(model))?;
    let (_, _, _, description, version_tags_json, _, _) = version_row;
    if gate.require_description && description.trim().is_empty() {
        failed.push(format!("version {version} has no description"));
    }
    let version_tags: Tags = parse_tags(&version_tags_json)?;
    let model_tags: Tags = parse_tags(&model_row.3)?;
    for (key, required) in &gate.required_tags {
        let value = version_tags.get(key).or_else(|| model_tags.get(key));
        match value {
            None => failed.push(format!("tag `{key}` is missing")),
            Some(value) if !required.is_empty() && value != required => failed.push(format!(
                "tag `{key}` is {value:?}, the gate requires {required:?}"
            )),
            Some(_) => {}
        }
    }
    if gate.evaluation_dataset.is_empty() {
        return Ok(failed);
    }
    let dataset = gate.evaluation_dataset.as_str();
    let Some(run) = latest_run(conn, model, version, dataset).await? else {
        failed.push(format!(
            "version {version} has no finished evaluation run on dataset `{dataset}`"
        ));
        return Ok(failed);
    };
    for (scorer, minimum) in &gate.min_scores {
        match mean_of(&run, scorer) {
            Some(mean) if mean >= *minimum => {}
            Some(mean) => failed.push(format!(
                "{scorer} is {mean:.4} in run {}, the gate requires at least {minimum}",
                run.id
            )),
            None => failed.push(format!("run {} has no {scorer} score", run.id)),
        }
    }
    for (scorer, maximum) in &gate.max_scores {
        match mean_of(&run, scorer) {
            Some(mean) if mean <= *maximum => {}
            Some(mean) => failed.push(format!(
                "{scorer} is {mean:.4} in run {}, the gate allows at most {maximum}",
                run.id
            )),
            None => failed.push(format!("run {} has no {scorer} score", run.id)),
        }
    }
    if gate.max_regression.is_empty() || current == 0 || current == version {
        return Ok(failed);
    }
    let Some(baseline) = latest_run(conn, model, current, dataset).await? else {
        failed.push(format!(
            "version {current}, which @{alias} points at now, has no finished evaluation run \
             on dataset `{dataset}` to compare with"
        ));
        return Ok(failed);
    };
    if baseline.dataset.digest != run.dataset.digest {
        failed.push(format!(
            "runs {} and {} scored different files of dataset `{dataset}` (sha256 {} and {})",
            baseline.id, run.id, baseline.dataset.digest, run.dataset.digest
        ));
        return Ok(failed);
    }
    for (scorer, margin) in &gate.max_regression {
        let (Some(mean), Some(baseline_mean)) = (mean_of(&run, scorer), mean_of(&baseline, scorer))
        else {
            failed.push(format!(
                "runs {} and {} do not both have a {scorer} score",
                baseline.id, run.id
            ));
            continue;
        };
        let higher_is_better = Scorer::parse(scorer).is_ok_and(Scorer::higher_is_better);
        let regression = if higher_is_better {
            baseline_mean - mean
        } else {
            mean - baseline_mean
        };
        if regression > *margin {
            failed.push(format!(
                "{scorer} is {mean:.4} against {baseline_mean:.4} for version {current}: worse by \
                 {regression:.4}, the gate allows {margin}"
            ));
        }
    }
    Ok(failed)
}

async fn latest_run(
    conn: &mut AnyConnection,
    model: &str,
    version: i64,
    dataset: &str,
) -> Result<Option<EvaluationRun>, Error> {
    let row = evaluation_store::latest_finished_run(conn, model, version, dataset).await?;
    row.map(run_from_row).transpose()
}

fn mean_of(run: &EvaluationRun, scorer: &str) -> Option<f64> {
    run.summaries
        .iter()
        .find(|summary| summary.scorer == scorer)
        .map(|summary| summary.mean)
}

fn validate_gate(gate: &PromotionGate) -> Result<(), FieldError> {
    validate::name("gate.model", &gate.model)?;
    validate_alias("gate.alias", &gate.alias)?;
    validate_tags(&gate.required_tags)
        .map_err(|error| FieldError::new("gate.required_tags", error.rule))?;
    validate::max_len(
        "gate.evaluation_dataset",
        &gate.evaluation_dataset,
        MAX_DATASET_NAME_BYTES,
    )?;
    for (field, scores) in [
        ("gate.min_scores", &gate.min_scores),
        ("gate.max_scores", &gate.max_scores),
        ("gate.max_regression", &gate.max_regression),
    ] {
        if !scores.is_empty() && gate.evaluation_dataset.is_empty() {
            return Err(FieldError::new(
                field,
                "needs `gate.evaluation_dataset`: the scores are read from its run",
            ));
        }
        for (scorer, value) in scores {
            Scorer::parse(scorer).map_err(|rule| FieldError::new(field, rule))?;
            if !value.is_finite() {
                return Err(FieldError::new(
                    field,
                    format!("`{scorer}` must be a finite number, got {value}"),
                ));
            }
        }
    }
    if let Some((scorer, margin)) = gate
        .max_regression
        .iter()
        .find(|(_, margin)| **margin < 0.0)
    {
        return Err(FieldError::new(
            "gate.max_regression",
            format!("`{scorer}` must be at least 0, got {margin}"),
        ));
    }
    Ok(())
}

fn parse_tags(json: &str) -> Result<Tags, Error> {
    serde_json::from_str(json).map_err(|error| Error::Corrupt(format!("stored tags: {error}")))
}

fn gate_from_row(row: GateRow) -> Result<PromotionGate, Error> {
    let (model, alias, gate_json, updated_at_ms) = row;
    let gate: PromotionGate = serde_json::from_str(&gate_json)
        .map_err(|error| Error::Corrupt(format!("stored gate of `{model}@{alias}`: {error}")))?;
    Ok(PromotionGate {
        model,
        alias,
        updated_at_ms,
        ..gate
    })
}
