//! The registry's SQL. Portable between SQLite and Postgres (sqlx `Any`):
//! `$n` placeholders, BIGINT/TEXT columns, no `RETURNING`.

use sqlx::AnyConnection;

/// The schema is the same on both backends (no BLOB/BYTEA column).
const SCHEMA_V1: &str = "
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    kind BIGINT NOT NULL,
    description TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    latest_version BIGINT NOT NULL
);
CREATE TABLE versions (
    model TEXT NOT NULL REFERENCES models (name),
    version BIGINT NOT NULL,
    spec_json TEXT NOT NULL,
    description TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);
CREATE TABLE alias_events (
    sequence BIGINT PRIMARY KEY,
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    previous_version BIGINT NOT NULL,
    new_version BIGINT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX alias_events_by_alias ON alias_events (model, alias, sequence);
CREATE TABLE registry_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO registry_counters (name, value) VALUES ('alias_event_sequence', 0)
";

/// Version lineage, and evaluation runs with their examples.
const SCHEMA_V2: &str = "
ALTER TABLE versions ADD COLUMN lineage_json TEXT NOT NULL DEFAULT '{}';
CREATE TABLE evaluation_runs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    dataset_digest TEXT NOT NULL,
    dataset_examples BIGINT NOT NULL,
    scorers_json TEXT NOT NULL,
    state BIGINT NOT NULL,
    summaries_json TEXT NOT NULL,
    example_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    actor TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);
CREATE INDEX evaluation_runs_by_version ON evaluation_runs (model, version, id);
CREATE INDEX evaluation_runs_by_dataset ON evaluation_runs (dataset_name, id);
CREATE TABLE evaluation_examples (
    run_id TEXT NOT NULL REFERENCES evaluation_runs (id),
    position BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    example_json TEXT NOT NULL,
    scores_json TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
)
";

/// Promotion gates, and the gate rules an alias move overrode.
const SCHEMA_V3: &str = "
ALTER TABLE alias_events ADD COLUMN overridden_gates_json TEXT NOT NULL DEFAULT '[]';
CREATE TABLE promotion_gates (
    model TEXT NOT NULL REFERENCES models (name),
    alias TEXT NOT NULL,
    gate_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (model, alias)
)
";

pub const MIGRATIONS: &[keel_store::Migration] = &[
    keel_store::Migration {
        version: 1,
        name: "registry schema",
        sqlite: SCHEMA_V1,
        postgres: SCHEMA_V1,
    },
    keel_store::Migration {
        version: 2,
        name: "lineage and evaluation runs",
        sqlite: SCHEMA_V2,
        postgres: SCHEMA_V2,
    },
    keel_store::Migration {
        version: 3,
        name: "promotion gates",
        sqlite: SCHEMA_V3,
        postgres: SCHEMA_V3,
    },
    keel_store::Migration {
        version: 4,
        name: "api keys",
        sqlite: crate::api_key_store::SCHEMA,
        postgres: crate::api_key_store::SCHEMA,
    },
];

/// name, kind, description, tags_json, created_at_ms, latest_version
pub type ModelRow = (String, i64, String, String, i64, i64);
/// model, version, spec_json, description, tags_json, created_at_ms, lineage_json
pub type VersionRow = (String, i64, String, String, String, i64, String);
/// model, alias, version
pub type AliasRow = (String, String, i64);
/// sequence, model, alias, previous_version, new_version, actor, reason,
/// at_ms, overridden_gates_json
pub type EventRow = (i64, String, String, i64, i64, String, String, i64, String);

const MODEL_COLUMNS: &str = "name, kind, description, tags_json, created_at_ms, latest_version";
const VERSION_COLUMNS: &str =
    "model, version, spec_json, description, tags_json, created_at_ms, lineage_json";
const EVENT_COLUMNS: &str = "sequence, model, alias, previous_version, new_version, actor, \
     reason, at_ms, overridden_gates_json";

/// Inserts a model unless one with that name exists; true when inserted.
pub async fn insert_model(conn: &mut AnyConnection, row: &ModelRow) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO models (name, kind, description, tags_json, created_at_ms, latest_version)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&row.0)
    .bind(row.1)
    .bind(&row.2)
    .bind(&row.3)
    .bind(row.4)
    .bind(row.5)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get_model(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<ModelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Models with a name after `after` (empty: from the start), by name.
pub async fn list_models(
    conn: &mut AnyConnection,
    after: &str,
    limit: i64,
) -> Result<Vec<ModelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE name > $1 ORDER BY name LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Reserves the next version number of `model`. The UPDATE takes the
/// model's row lock (Postgres) or runs under the single writer (SQLite), so
/// two concurrent creates never get the same number. None: no such model.
pub async fn next_version(
    conn: &mut AnyConnection,
    model: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE models SET latest_version = latest_version + 1 WHERE name = $1")
            .bind(model)
            .execute(&mut *conn)
            .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let row: (i64,) = sqlx::query_as("SELECT latest_version FROM models WHERE name = $1")
        .bind(model)
        .fetch_one(conn)
        .await?;
    Ok(Some(row.0))
}

pub async fn insert_version(conn: &mut AnyConnection, row: &VersionRow) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&row.0)
    .bind(row.1)
    .bind(&row.2)
    .bind(&row.3)
    .bind(&row.4)
    .bind(row.5)
    .bind(&row.6)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_version(
    conn: &mut AnyConnection,
    model: &str,
    version: i64,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE model = $1 AND version = $2"
    ))
    .bind(model)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Versions of `model` numbered above `after`, in order.
pub async fn list_versions(
    conn: &mut AnyConnection,
    model: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE model = $1 AND version > $2
         ORDER BY version LIMIT $3"
    ))
    .bind(model)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn get_alias(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
            .bind(model)
            .bind(alias)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(version,)| version))
}

/// The aliases of the models whose names lie in `first..=last`, by model
/// then alias (a page of models reads its aliases in one query).
pub async fn aliases_in_range(
    conn: &mut AnyConnection,
    first: &str,
    last: &str,
) -> Result<Vec<AliasRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT model, alias, version FROM aliases WHERE model >= $1 AND model <= $2
         ORDER BY model, alias",
    )
    .bind(first)
    .bind(last)
    .fetch_all(conn)
    .await
}

/// Every alias (of `model` when not empty), by model then alias.
pub async fn list_aliases(
    conn: &mut AnyConnection,
    model: &str,
) -> Result<Vec<AliasRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT model, alias, version FROM aliases WHERE ($1 = '' OR model = $1)
         ORDER BY model, alias",
    )
    .bind(model)
    .fetch_all(conn)
    .await
}

pub async fn upsert_alias(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
    version: i64,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO aliases (model, alias, version, updated_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (model, alias) DO UPDATE
         SET version = excluded.version, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(model)
    .bind(alias)
    .bind(version)
    .bind(at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_alias(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM aliases WHERE model = $1 AND alias = $2")
        .bind(model)
        .bind(alias)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Reserves the next audit sequence number. The UPDATE holds the counter's
/// row lock until commit, which serialises alias moves across replicas on
/// Postgres: sequences are handed out, and committed, in order.
pub async fn next_event_sequence(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "UPDATE registry_counters SET value = value + 1 WHERE name = 'alias_event_sequence'",
    )
    .execute(&mut *conn)
    .await?;
    let row: (i64,) =
        sqlx::query_as("SELECT value FROM registry_counters WHERE name = 'alias_event_sequence'")
            .fetch_one(conn)
            .await?;
    Ok(row.0)
}

/// Announces a move to the other replicas: on Postgres a `NOTIFY`, which
/// is delivered when (and only if) the transaction commits; on SQLite there
/// are no other replicas.
pub async fn announce_event(
    conn: &mut AnyConnection,
    backend: keel_store::Backend,
    sequence: i64,
) -> Result<(), sqlx::Error> {
    if backend == keel_store::Backend::Postgres {
        // Selected through COUNT: sqlx's Any driver cannot decode `void`.
        let _: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pg_notify($1, $2)")
            .bind(crate::alias_feed::NOTIFY_CHANNEL)
            .bind(sequence.to_string())
            .fetch_one(conn)
            .await?;
    }
    Ok(())
}

/// The sequence of the latest audit event, 0 when there is none.
pub async fn last_event_sequence(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(sequence) FROM alias_events")
        .fetch_one(conn)
        .await?;
    Ok(row.0.unwrap_or(0))
}

pub async fn insert_event(conn: &mut AnyConnection, row: &EventRow) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO alias_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(row.0)
    .bind(&row.1)
    .bind(&row.2)
    .bind(row.3)
    .bind(row.4)
    .bind(&row.5)
    .bind(&row.6)
    .bind(row.7)
    .bind(&row.8)
    .execute(conn)
    .await?;
    Ok(())
}

/// The latest audit event of one alias.
pub async fn last_event(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM alias_events WHERE model = $1 AND alias = $2
         ORDER BY sequence DESC LIMIT 1"
    ))
    .bind(model)
    .bind(alias)
    .fetch_optional(conn)
    .await
}

/// Audit events after `after_sequence`, oldest first; an empty `model` or
/// `alias` matches every one.
pub async fn list_events(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM alias_events
         WHERE sequence > $1 AND ($2 = '' OR model = $2) AND ($3 = '' OR alias = $3)
         ORDER BY sequence LIMIT $4"
    ))
    .bind(after_sequence)
    .bind(model)
    .bind(alias)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_testkit::{TestDatabase, BACKENDS};

    fn model_row(name: &str) -> ModelRow {
        (
            name.to_string(),
            2,
            String::new(),
            "{}".to_string(),
            1000,
            0,
        )
    }

    fn version_row(model: &str, version: i64) -> VersionRow {
        (
            model.to_string(),
            version,
            "{}".to_string(),
            String::new(),
            "{}".to_string(),
            2000,
            "{}".to_string(),
        )
    }

    fn event_row(sequence: i64, model: &str, alias: &str, previous: i64, new: i64) -> EventRow {
        (
            sequence,
            model.into(),
            alias.into(),
            previous,
            new,
            "ci".into(),
            String::new(),
            3000,
            "[]".into(),
        )
    }

    #[tokio::test]
    async fn queries_behave_the_same_on_both_backends() {
        for backend in BACKENDS {
            let database = TestDatabase::fresh(backend).await;
            let store = database.open(MIGRATIONS).await;
            // Opening again applies nothing twice.
            let reopened = database.open(MIGRATIONS).await;
            reopened.close().await;

            let mut tx = store.begin_write().await.unwrap();
            assert!(
                insert_model(tx.conn(), &model_row("b-model"))
                    .await
                    .unwrap(),
                "{backend:?}"
            );
            assert!(insert_model(tx.conn(), &model_row("a-model"))
                .await
                .unwrap());
            assert!(
                !insert_model(tx.conn(), &model_row("a-model"))
                    .await
                    .unwrap(),
                "{backend:?}"
            );
            assert_eq!(next_version(tx.conn(), "a-model").await.unwrap(), Some(1));
            insert_version(tx.conn(), &version_row("a-model", 1))
                .await
                .unwrap();
            assert_eq!(next_version(tx.conn(), "a-model").await.unwrap(), Some(2));
            insert_version(tx.conn(), &version_row("a-model", 2))
                .await
                .unwrap();
            assert_eq!(next_version(tx.conn(), "missing").await.unwrap(), None);
            tx.commit().await.unwrap();

            let mut conn = store.pool().acquire().await.unwrap();
            let names: Vec<String> = list_models(&mut conn, "", 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.0)
                .collect();
            assert_eq!(names, ["a-model", "b-model"], "{backend:?}");
            let after_first = list_models(&mut conn, "a-model", 10).await.unwrap();
            assert_eq!(after_first.len(), 1);
            assert_eq!(after_first[0].0, "b-model");
            assert_eq!(get_model(&mut conn, "a-model").await.unwrap().unwrap().5, 2);
            let versions: Vec<i64> = list_versions(&mut conn, "a-model", 1, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.1)
                .collect();
            assert_eq!(versions, [2]);
            assert!(get_version(&mut conn, "a-model", 3)
                .await
                .unwrap()
                .is_none());
            drop(conn);

            let mut tx = store.begin_write().await.unwrap();
            assert_eq!(next_event_sequence(tx.conn()).await.unwrap(), 1);
            upsert_alias(tx.conn(), "a-model", "champion", 1, 10)
                .await
                .unwrap();
            insert_event(tx.conn(), &event_row(1, "a-model", "champion", 0, 1))
                .await
                .unwrap();
            assert_eq!(next_event_sequence(tx.conn()).await.unwrap(), 2);
            upsert_alias(tx.conn(), "a-model", "champion", 2, 11)
                .await
                .unwrap();
            insert_event(tx.conn(), &event_row(2, "a-model", "champion", 1, 2))
                .await
                .unwrap();
            assert_eq!(next_event_sequence(tx.conn()).await.unwrap(), 3);
            upsert_alias(tx.conn(), "a-model", "canary", 1, 12)
                .await
                .unwrap();
            insert_event(tx.conn(), &event_row(3, "a-model", "canary", 0, 1))
                .await
                .unwrap();
            assert_eq!(next_event_sequence(tx.conn()).await.unwrap(), 4);
            assert!(delete_alias(tx.conn(), "a-model", "canary").await.unwrap());
            assert!(!delete_alias(tx.conn(), "a-model", "canary").await.unwrap());
            insert_event(tx.conn(), &event_row(4, "a-model", "canary", 1, 0))
                .await
                .unwrap();
            tx.commit().await.unwrap();

            // A rolled-back reservation leaves the counter where it was.
            let mut tx = store.begin_write().await.unwrap();
            assert_eq!(next_event_sequence(tx.conn()).await.unwrap(), 5);
            drop(tx);

            let mut conn = store.pool().acquire().await.unwrap();
            assert_eq!(
                get_alias(&mut conn, "a-model", "champion").await.unwrap(),
                Some(2),
                "{backend:?}"
            );
            assert_eq!(
                get_alias(&mut conn, "a-model", "canary").await.unwrap(),
                None
            );
            let aliases = list_aliases(&mut conn, "").await.unwrap();
            assert_eq!(
                aliases,
                [("a-model".to_string(), "champion".to_string(), 2)]
            );
            assert_eq!(
                aliases_in_range(&mut conn, "a-model", "a-model")
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert!(aliases_in_range(&mut conn, "b-model", "z")
                .await
                .unwrap()
                .is_empty());
            assert!(list_aliases(&mut conn, "b-model").await.unwrap().is_empty());

            let all: Vec<i64> = list_events(&mut conn, "", "", 0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.0)
                .collect();
            assert_eq!(all, [1, 2, 3, 4], "{backend:?}");
            let champion: Vec<i64> = list_events(&mut conn, "a-model", "champion", 0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.0)
                .collect();
            assert_eq!(champion, [1, 2]);
            let paged: Vec<i64> = list_events(&mut conn, "a-model", "", 1, 2)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.0)
                .collect();
            assert_eq!(paged, [2, 3]);
            assert!(list_events(&mut conn, "b-model", "", 0, 10)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(
                last_event(&mut conn, "a-model", "canary")
                    .await
                    .unwrap()
                    .unwrap()
                    .4,
                0
            );
            drop(conn);

            let mut tx = store.begin_write().await.unwrap();
            assert_eq!(
                next_event_sequence(tx.conn()).await.unwrap(),
                5,
                "{backend:?}"
            );
            drop(tx);
            store.close().await;
        }
    }
}
