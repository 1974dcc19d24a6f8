//! The SQL of evaluation runs and their examples (tables in `store.rs`'s
//! schema). Portable between SQLite and Postgres like the rest.

use keel_store::Backend;
use keel_store::{rows_per_statement, values_placeholders};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

pub const STATE_RUNNING: i64 = 1;
pub const STATE_FINISHED: i64 = 2;

/// One `evaluation_runs` row, column for column.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub model: String,
    pub version: i64,
    pub endpoint: String,
    pub dataset_name: String,
    pub dataset_digest: String,
    pub dataset_examples: i64,
    pub scorers_json: String,
    pub state: i64,
    pub summaries_json: String,
    pub example_count: i64,
    pub error_count: i64,
    pub actor: String,
    pub tags_json: String,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
}

impl<'r> FromRow<'r, AnyRow> for RunRow {
    fn from_row(row: &'r AnyRow) -> Result<RunRow, sqlx::Error> {
        Ok(RunRow {
            id: row.try_get("id")?,
            model: row.try_get("model")?,
            version: row.try_get("version")?,
            endpoint: row.try_get("endpoint")?,
            dataset_name: row.try_get("dataset_name")?,
            dataset_digest: row.try_get("dataset_digest")?,
            dataset_examples: row.try_get("dataset_examples")?,
            scorers_json: row.try_get("scorers_json")?,
            state: row.try_get("state")?,
            summaries_json: row.try_get("summaries_json")?,
            example_count: row.try_get("example_count")?,
            error_count: row.try_get("error_count")?,
            actor: row.try_get("actor")?,
            tags_json: row.try_get("tags_json")?,
            created_at_ms: row.try_get("created_at_ms")?,
            finished_at_ms: row.try_get("finished_at_ms")?,
        })
    }
}

const RUN_COLUMNS: &str = "id, model, version, endpoint, dataset_name, dataset_digest, \
     dataset_examples, scorers_json, state, summaries_json, example_count, error_count, \
     actor, tags_json, created_at_ms, finished_at_ms";

/// position, failed (0/1), example_json, scores_json
pub type ExampleRow = (i64, i64, String, String);

pub async fn insert_run(conn: &mut AnyConnection, row: &RunRow) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO evaluation_runs ({RUN_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(&row.id)
    .bind(&row.model)
    .bind(row.version)
    .bind(&row.endpoint)
    .bind(&row.dataset_name)
    .bind(&row.dataset_digest)
    .bind(row.dataset_examples)
    .bind(&row.scorers_json)
    .bind(row.state)
    .bind(&row.summaries_json)
    .bind(row.example_count)
    .bind(row.error_count)
    .bind(&row.actor)
    .bind(&row.tags_json)
    .bind(row.created_at_ms)
    .bind(row.finished_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_run(conn: &mut AnyConnection, id: &str) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM evaluation_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Takes the run's row lock (Postgres) while it is running: appends and
/// the finish of one run are serialised, so none lands after the finish.
/// False when the run is not running (or does not exist).
pub async fn lock_running_run(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE evaluation_runs SET example_count = example_count WHERE id = $1 AND state = $2",
    )
    .bind(id)
    .bind(STATE_RUNNING)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Inserts the examples whose position the run does not hold yet; returns
/// how many were new.
pub async fn insert_examples(
    conn: &mut AnyConnection,
    backend: Backend,
    run_id: &str,
    rows: &[ExampleRow],
) -> Result<u64, sqlx::Error> {
    let mut inserted = 0;
    for chunk in rows.chunks(rows_per_statement(backend)) {
        let sql = format!(
            "INSERT INTO evaluation_examples (run_id, position, failed, example_json, scores_json)
             VALUES {} ON CONFLICT (run_id, position) DO NOTHING",
            values_placeholders(backend, chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(run_id)
                .bind(row.0)
                .bind(row.1)
                .bind(&row.2)
                .bind(&row.3);
        }
        inserted += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}

/// Sets the run's counts from the examples it holds.
pub async fn recount_examples(conn: &mut AnyConnection, run_id: &str) -> Result<(), sqlx::Error> {
    // SUM of a BIGINT is NUMERIC on Postgres, which the Any driver cannot
    // decode: cast back.
    let (examples, failed): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(failed), 0) AS BIGINT)
         FROM evaluation_examples WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE evaluation_runs SET example_count = $1, error_count = $2 WHERE id = $3")
        .bind(examples)
        .bind(failed)
        .bind(run_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The scores of every example of the run, by position.
pub async fn all_scores(
    conn: &mut AnyConnection,
    run_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT scores_json FROM evaluation_examples WHERE run_id = $1 ORDER BY position",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(scores,)| scores).collect())
}

pub async fn finish_run(
    conn: &mut AnyConnection,
    run_id: &str,
    summaries_json: &str,
    finished_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE evaluation_runs SET state = $1, summaries_json = $2, finished_at_ms = $3
         WHERE id = $4",
    )
    .bind(STATE_FINISHED)
    .bind(summaries_json)
    .bind(finished_at_ms)
    .bind(run_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs newest first (ids are UUIDv7), before `before_id` when not empty;
/// empty filters match all.
pub async fn list_runs(
    conn: &mut AnyConnection,
    model: &str,
    version: i64,
    dataset: &str,
    before_id: &str,
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM evaluation_runs
         WHERE ($1 = '' OR model = $1) AND ($2 = 0 OR version = $2)
           AND ($3 = '' OR dataset_name = $3) AND ($4 = '' OR id < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(model)
    .bind(version)
    .bind(dataset)
    .bind(before_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The newest finished run of `model/version` on the dataset `dataset`.
pub async fn latest_finished_run(
    conn: &mut AnyConnection,
    model: &str,
    version: i64,
    dataset: &str,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM evaluation_runs
         WHERE model = $1 AND version = $2 AND dataset_name = $3 AND state = $4
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(model)
    .bind(version)
    .bind(dataset)
    .bind(STATE_FINISHED)
    .fetch_optional(conn)
    .await
}

/// Examples of the run after position `after`, by position.
pub async fn list_examples(
    conn: &mut AnyConnection,
    run_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ExampleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, failed, example_json, scores_json FROM evaluation_examples
         WHERE run_id = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Which of `ids` exist, for checking a version's lineage.
pub async fn existing_run_ids(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut found = Vec::new();
    for id in ids {
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM evaluation_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        found.extend(row.map(|(id,)| id));
    }
    Ok(found)
}
