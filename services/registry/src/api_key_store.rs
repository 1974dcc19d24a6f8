//! API keys in the registry's database: the secret's SHA-256, never the
//! secret; scopes as a JSON list.

use sqlx::{AnyConnection, Row};

use crate::api_keys::ApiKey;
use crate::error::Error;

pub const SCHEMA: &str = "CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
)";

const SELECT_COLUMNS: &str = "SELECT id, name, scopes_json, secret_sha256, created_at_ms, \
     expires_at_ms, revoked_at_ms, created_by FROM api_keys";

/// A stored key and its secret's hash.
pub struct StoredKey {
    pub key: ApiKey,
    pub secret_sha256: String,
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<StoredKey, Error> {
    let id: String = row.try_get("id")?;
    let scopes_json: String = row.try_get("scopes_json")?;
    let scopes = serde_json::from_str(&scopes_json)
        .map_err(|error| Error::Corrupt(format!("scopes of api key {id}: {error}")))?;
    Ok(StoredKey {
        key: ApiKey {
            name: row.try_get("name")?,
            scopes,
            created_at_ms: row.try_get("created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            revoked_at_ms: row.try_get("revoked_at_ms")?,
            created_by: row.try_get("created_by")?,
            id,
        },
        secret_sha256: row.try_get("secret_sha256")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, stored: &StoredKey) -> Result<(), Error> {
    let key = &stored.key;
    let scopes_json = serde_json::to_string(&key.scopes)
        .map_err(|error| Error::Corrupt(format!("cannot encode scopes: {error}")))?;
    sqlx::query(
        "INSERT INTO api_keys (id, name, scopes_json, secret_sha256, created_at_ms,
             expires_at_ms, revoked_at_ms, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(&key.name)
    .bind(scopes_json)
    .bind(&stored.secret_sha256)
    .bind(key.created_at_ms)
    .bind(key.expires_at_ms)
    .bind(key.revoked_at_ms)
    .bind(&key.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<StoredKey>, Error> {
    let row = sqlx::query(&format!("{SELECT_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

/// Newest first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<StoredKey>, Error> {
    let rows = sqlx::query(&format!("{SELECT_COLUMNS} ORDER BY created_at_ms DESC, id"))
        .fetch_all(conn)
        .await?;
    rows.iter().map(key_from_row).collect()
}

/// Marks the key revoked at `at_ms` unless it already is; false when it was.
pub async fn revoke(conn: &mut AnyConnection, id: &str, at_ms: i64) -> Result<bool, Error> {
    let result =
        sqlx::query("UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms = 0")
            .bind(at_ms)
            .bind(id)
            .execute(conn)
            .await?;
    Ok(result.rows_affected() == 1)
}
