use sqlx::Executor;

use crate::{Backend, Store, StoreError};

/// One schema change, written once per backend (the DDL differs: BLOB vs
/// BYTEA, for instance). Versions start at 1 and only ever grow.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub(crate) async fn run_migrations(
    store: &Store,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    store
        .pool()
        .execute(
            "CREATE TABLE IF NOT EXISTS keel_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at_ms BIGINT NOT NULL
            )",
        )
        .await?;
    for migration in migrations {
        let mut tx = store.begin_write().await?;
        let applied: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM keel_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(tx.conn())
                .await?;
        if applied.is_some() {
            continue;
        }
        let sql = match store.backend() {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        // Each statement on its own: the Any driver does not run several
        // statements of one string on every backend.
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.conn()
                .execute(statement)
                .await
                .map_err(|source| StoreError::Migration {
                    version: migration.version,
                    name: migration.name,
                    source,
                })?;
        }
        let applied_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO keel_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(applied_at_ms)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
    }
    Ok(())
}
