//! Helpers for tests that run the same code on SQLite and on Postgres.

use sqlx::{Connection, Executor, PgConnection};

use crate::StoreError;

/// The Postgres every dev and CI machine runs (trust auth); override with
/// `KEEL_TEST_POSTGRES_URL`.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn test_postgres_url() -> String {
    std::env::var("KEEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_string())
}

/// Creates an empty database with a unique name on the test server and
/// returns its URL, so every test starts from nothing.
pub async fn fresh_postgres_database() -> Result<String, StoreError> {
    let server_url = test_postgres_url();
    let mut connection = PgConnection::connect(&server_url).await?;
    let name = format!("keel_test_{}", uuid::Uuid::new_v4().simple());
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    connection.close().await?;
    let base = match server_url.rfind('/') {
        Some(index) if index > "postgres://".len() => &server_url[..index],
        _ => server_url.as_str(),
    };
    Ok(format!("{base}/{name}"))
}
