//! The same migration and write path on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

use keel_store::{Backend, Migration, Store};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "items",
    sqlite: "CREATE TABLE items (id TEXT PRIMARY KEY, body BLOB NOT NULL, n BIGINT NOT NULL)",
    postgres: "CREATE TABLE items (id TEXT PRIMARY KEY, body BYTEA NOT NULL, n BIGINT NOT NULL)",
}];

async fn write_then_reopen(url: &str, expected_backend: Backend) {
    let store = Store::open(url, MIGRATIONS).await.unwrap();
    assert_eq!(store.backend(), expected_backend);
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO items (id, body, n) VALUES ($1, $2, $3)")
        .bind("a")
        .bind(vec![1u8, 2, 3])
        .bind(7i64)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A transaction dropped without commit leaves nothing behind.
    let mut abandoned = store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO items (id, body, n) VALUES ($1, $2, $3)")
        .bind("b")
        .bind(vec![9u8])
        .bind(1i64)
        .execute(abandoned.conn())
        .await
        .unwrap();
    drop(abandoned);
    store.close().await;

    // Reopening runs no migration twice and finds the committed row only.
    let reopened = Store::open(url, MIGRATIONS).await.unwrap();
    let rows: Vec<(String, Vec<u8>, i64)> =
        sqlx::query_as("SELECT id, body, n FROM items ORDER BY id")
            .fetch_all(reopened.pool())
            .await
            .unwrap();
    assert_eq!(rows, vec![("a".to_string(), vec![1u8, 2, 3], 7)]);
    let applied: (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM keel_migrations")
        .fetch_one(reopened.pool())
        .await
        .unwrap();
    assert_eq!(applied.0, 1);
}

#[tokio::test]
async fn sqlite_write_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = keel_store::default_sqlite_url(dir.path(), "items");
    write_then_reopen(&url, Backend::Sqlite).await;
    let journal_mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(Store::open(&url, MIGRATIONS).await.unwrap().pool())
        .await
        .unwrap();
    assert_eq!(journal_mode.0, "wal");
}

#[tokio::test]
async fn postgres_write_survives_reopen() {
    let url = keel_store::testing::fresh_postgres_database()
        .await
        .unwrap();
    write_then_reopen(&url, Backend::Postgres).await;
}
