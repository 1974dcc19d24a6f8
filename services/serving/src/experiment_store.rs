//! Experiments in serving's database. What an experiment was started with
//! and its latest figures are JSON columns, always read and written whole;
//! the challenger's share has a column of its own because every query of
//! the endpoint reads it. A partial unique index keeps one running
//! experiment per endpoint, also across serving replicas.

use keel_store::Store;
use sqlx::Row;
use uuid::Uuid;

use crate::error::Error;
use crate::experiment::{Assessment, Experiment, ExperimentSpec, ExperimentState};

pub const CREATE_TABLE: &str = "CREATE TABLE experiments (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        name TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        state TEXT NOT NULL,
        challenger_share_ppm BIGINT NOT NULL,
        assessment_json TEXT NOT NULL,
        stop_reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        stopped_at_ms BIGINT NOT NULL,
        refreshed_at_ms BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX experiments_one_running ON experiments (endpoint)
        WHERE state = 'running';
    CREATE INDEX experiments_by_endpoint ON experiments (endpoint, started_at_ms)";

const SELECT_COLUMNS: &str = "SELECT id, endpoint, name, spec_json, state, assessment_json, \
     stop_reason, actor, started_at_ms, stopped_at_ms, refreshed_at_ms FROM experiments";

/// What a query needs of the endpoint's running experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningArms {
    pub id: Uuid,
    pub spec: ExperimentSpec,
    pub challenger_share: f64,
}

/// The share as parts per million: integers read the same on every backend.
fn share_ppm(share: f64) -> i64 {
    (share.clamp(0.0, 1.0) * 1e6).round() as i64
}

fn corrupt(id: &str, detail: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored experiment `{id}` is corrupt: {detail}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value)
        .map_err(|error| Error::Internal(format!("cannot encode an experiment: {error}")))
}

fn experiment_from_row(row: &sqlx::any::AnyRow) -> Result<Experiment, Error> {
    let id: String = row.try_get("id")?;
    let spec_json: String = row.try_get("spec_json")?;
    let assessment_json: String = row.try_get("assessment_json")?;
    let state: String = row.try_get("state")?;
    Ok(Experiment {
        id: Uuid::parse_str(&id).map_err(|error| corrupt(&id, error))?,
        endpoint: row.try_get("endpoint")?,
        name: row.try_get("name")?,
        spec: serde_json::from_str(&spec_json).map_err(|error| corrupt(&id, error))?,
        state: ExperimentState::parse(&state)
            .ok_or_else(|| corrupt(&id, format!("state `{state}`")))?,
        assessment: serde_json::from_str(&assessment_json).map_err(|error| corrupt(&id, error))?,
        stop_reason: row.try_get("stop_reason")?,
        actor: row.try_get("actor")?,
        started_at_ms: row.try_get("started_at_ms")?,
        stopped_at_ms: row.try_get("stopped_at_ms")?,
        refreshed_at_ms: row.try_get("refreshed_at_ms")?,
    })
}

/// Returns false when the endpoint has a running experiment already.
pub async fn insert(store: &Store, experiment: &Experiment) -> Result<bool, Error> {
    let mut tx = store.begin_write().await?;
    let result = sqlx::query(
        "INSERT INTO experiments (id, endpoint, name, spec_json, state, challenger_share_ppm,
             assessment_json, stop_reason, actor, started_at_ms, stopped_at_ms, refreshed_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
    )
    .bind(experiment.id.to_string())
    .bind(&experiment.endpoint)
    .bind(&experiment.name)
    .bind(to_json(&experiment.spec)?)
    .bind(experiment.state.as_str())
    .bind(share_ppm(experiment.assessment.challenger_share))
    .bind(to_json(&experiment.assessment)?)
    .bind(&experiment.stop_reason)
    .bind(&experiment.actor)
    .bind(experiment.started_at_ms)
    .bind(experiment.stopped_at_ms)
    .bind(experiment.refreshed_at_ms)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get(store: &Store, id: Uuid) -> Result<Option<Experiment>, Error> {
    let row = sqlx::query(&format!("{SELECT_COLUMNS} WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(experiment_from_row).transpose()
}

/// Newest first; `endpoint` empty: every endpoint.
pub async fn list(
    store: &Store,
    endpoint: &str,
    running_only: bool,
) -> Result<Vec<Experiment>, Error> {
    let rows = sqlx::query(&format!(
        "{SELECT_COLUMNS} WHERE ($1 = '' OR endpoint = $1) AND ($2 = 0 OR state = 'running')
         ORDER BY started_at_ms DESC, id"
    ))
    .bind(endpoint)
    .bind(i64::from(running_only))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(experiment_from_row).collect()
}

/// The endpoint's running experiment, as a query needs it.
pub async fn running_arms(store: &Store, endpoint: &str) -> Result<Option<RunningArms>, Error> {
    let row = sqlx::query(
        "SELECT id, spec_json, challenger_share_ppm FROM experiments
         WHERE endpoint = $1 AND state = 'running'",
    )
    .bind(endpoint)
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let spec_json: String = row.try_get("spec_json")?;
    let share_ppm: i64 = row.try_get("challenger_share_ppm")?;
    Ok(Some(RunningArms {
        id: Uuid::parse_str(&id).map_err(|error| corrupt(&id, error))?,
        spec: serde_json::from_str(&spec_json).map_err(|error| corrupt(&id, error))?,
        challenger_share: share_ppm as f64 / 1e6,
    }))
}

/// Stores fresh figures of a running experiment; false when it is no
/// longer running.
pub async fn save_assessment(
    store: &Store,
    id: Uuid,
    assessment: &Assessment,
    refreshed_at_ms: i64,
) -> Result<bool, Error> {
    let mut tx = store.begin_write().await?;
    let result = sqlx::query(
        "UPDATE experiments SET assessment_json = $1, challenger_share_ppm = $2,
             refreshed_at_ms = $3
         WHERE id = $4 AND state = 'running'",
    )
    .bind(to_json(assessment)?)
    .bind(share_ppm(assessment.challenger_share))
    .bind(refreshed_at_ms)
    .bind(id.to_string())
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

/// Ends a running experiment in `state`. Only one caller wins: false when
/// it was no longer running (another replica, or a stop, came first).
pub async fn finish(
    store: &Store,
    id: Uuid,
    state: ExperimentState,
    stop_reason: &str,
    stopped_at_ms: i64,
) -> Result<bool, Error> {
    let mut tx = store.begin_write().await?;
    let result = sqlx::query(
        "UPDATE experiments SET state = $1, stop_reason = $2, stopped_at_ms = $3
         WHERE id = $4 AND state = 'running'",
    )
    .bind(state.as_str())
    .bind(stop_reason)
    .bind(stopped_at_ms)
    .bind(id.to_string())
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

/// Adds what was done after an experiment ended (an alias moved, or why
/// not) to its stop reason.
pub async fn append_stop_reason(store: &Store, id: Uuid, addition: &str) -> Result<(), Error> {
    let mut tx = store.begin_write().await?;
    sqlx::query("UPDATE experiments SET stop_reason = stop_reason || $1 WHERE id = $2")
        .bind(addition)
        .bind(id.to_string())
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}
