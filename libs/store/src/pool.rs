use std::path::Path;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::migrate::{run_migrations, Migration};
use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Backend::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres);
        }
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// `sqlite://<data_dir>/<service>.db`, the default database of a service.
pub fn default_sqlite_url(data_dir: &Path, service: &str) -> String {
    format!(
        "sqlite://{}",
        data_dir.join(format!("{service}.db")).display()
    )
}

const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A service's database: a pool plus the knowledge of which backend it is.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time and answers SQLITE_BUSY, without
    /// waiting, to a deferred transaction that tries to upgrade to a write
    /// while another writes; serialising writers in process avoids that.
    sqlite_write_lock: Arc<Mutex<()>>,
}

impl Store {
    /// Opens (creating when missing) the database at `url` and applies the
    /// migrations that have not run yet.
    pub async fn open(url: &str, migrations: &[Migration]) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let connect_url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options: AnyConnectOptions = connect_url.parse()?;
        let max_connections = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // A stopped database answers UNAVAILABLE within seconds rather
            // than holding each call for sqlx's default 30 s.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |connection, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        configure_sqlite(connection).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store {
            pool,
            backend,
            sqlite_write_lock: Arc::new(Mutex::new(())),
        };
        run_migrations(&store, migrations).await?;
        Ok(store)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. Commit it with [`WriteTx::commit`]; once
    /// that returns, the write is durable.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.sqlite_write_lock.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let transaction = self.pool.begin().await?;
        Ok(WriteTx {
            transaction,
            _sqlite_write_guard: guard,
        })
    }

    /// One round trip to the database: `Ok` while it answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A write transaction; dropped without commit, it rolls back.
pub struct WriteTx {
    transaction: Transaction<'static, sqlx::Any>,
    _sqlite_write_guard: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.transaction
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }
}

fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let without_scheme = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path_part = without_scheme.split('?').next().unwrap_or_default();
    if path_part.is_empty() || path_part == ":memory:" {
        return Ok(url.to_string());
    }
    if let Some(parent) = Path::new(path_part).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::DataDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
    }
    if url.contains("mode=") {
        return Ok(url.to_string());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}mode=rwc"))
}

async fn configure_sqlite(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL
    // at every commit, so an acknowledged write survives a power cut.
    connection.execute("PRAGMA journal_mode = WAL").await?;
    connection.execute("PRAGMA synchronous = FULL").await?;
    connection.execute("PRAGMA busy_timeout = 5000").await?;
    connection.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode_and_parent_dir() {
        let dir = std::env::temp_dir().join(format!("keel-store-{}", uuid::Uuid::new_v4()));
        let url = default_sqlite_url(&dir, "registry");
        let prepared = prepare_sqlite_url(&url).unwrap();
        assert!(prepared.ends_with("registry.db?mode=rwc"), "{prepared}");
        assert!(dir.is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_scheme_is_rejected() {
        assert!(matches!(
            Backend::from_url("mysql://x"),
            Err(StoreError::UnsupportedUrl(_))
        ));
        assert_eq!(
            Backend::from_url("postgres://h/db").unwrap(),
            Backend::Postgres
        );
    }
}
