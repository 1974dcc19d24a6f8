//! keel-store: one database per service, SQLite (WAL, fsync on commit) by
//! default and Postgres when the URL says `postgres://`. The same queries run
//! on both through sqlx's `Any` driver, so write them portably: `$1`-style
//! placeholders, `BIGINT`/`TEXT`/`DOUBLE PRECISION` columns, integers for
//! booleans, and casts on aggregates (`CAST(SUM(x) AS BIGINT)`).

mod migrate;
mod pool;
pub mod testing;

pub use migrate::Migration;
pub use pool::{default_sqlite_url, Backend, Store, WriteTx};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unsupported database url `{0}`: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
}
