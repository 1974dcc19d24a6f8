//! keel-store: one database per service, SQLite (WAL, fsync on commit) by
//! default and Postgres when the URL says `postgres://`. The same queries run
//! on both through sqlx's `Any` driver, so write them portably: `$1`-style
//! placeholders, `BIGINT`/`TEXT`/`DOUBLE PRECISION` columns, integers for
//! booleans, and casts on aggregates (`CAST(SUM(x) AS BIGINT)`).

mod migrate;
mod placeholders;
mod pool;
pub mod testing;

pub use migrate::Migration;
pub use placeholders::{rows_per_statement, values_placeholders};
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

impl StoreError {
    /// The database did not answer (see [`is_unreachable`]): a dependency
    /// down, which callers see as UNAVAILABLE, not a bug.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Database(error) => is_unreachable(error),
            _ => false,
        }
    }
}

/// Whether `error` says the database could not be reached: the connection
/// failed or broke (I/O, TLS), or no connection came free in time, or the
/// pool is closing. Every service maps these to UNAVAILABLE.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_outage_is_unreachable() {
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(is_unreachable(&sqlx::Error::PoolClosed));
        assert!(is_unreachable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unreachable(&sqlx::Error::RowNotFound));
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unreachable());
        assert!(!StoreError::UnsupportedUrl("mysql://x".to_string()).is_unreachable());
    }
}
