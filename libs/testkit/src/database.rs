//! The two databases every service runs on, fresh for each test, so a
//! test runs the same code on SQLite and on Postgres.

use keel_store::{Migration, Store};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file in a temporary directory.
    Sqlite,
    /// A new database on the test Postgres server.
    Postgres,
}

/// Both backends, for `for backend in BACKENDS { ... }`.
pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// A fresh, empty database. The SQLite file lives in a temporary directory
/// as long as this value, so a test can restart a server on the same data.
pub struct TestDatabase {
    /// The URL a service's `database_url` takes.
    pub url: String,
    /// Which backend it is, for a failure message that says where it failed.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh database on `backend`. Postgres must be reachable (see
    /// `keel_store::testing`): a test never skips it silently.
    pub async fn fresh(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }

    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().unwrap();
        TestDatabase {
            url: keel_store::default_sqlite_url(dir.path(), "test"),
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    /// A new database with a unique name on the test Postgres server.
    pub async fn postgres() -> TestDatabase {
        let url = keel_store::testing::fresh_postgres_database()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "the test postgres must be reachable at {} (KEEL_TEST_POSTGRES_URL): {error}",
                    keel_store::testing::test_postgres_url()
                )
            });
        TestDatabase {
            url,
            backend: Backend::Postgres,
            _dir: None,
        }
    }

    /// Opens the database with a service's migrations, for tests of a
    /// service's store below its API.
    pub async fn open(&self, migrations: &[Migration]) -> Store {
        Store::open(&self.url, migrations).await.unwrap()
    }
}

/// The Redis the scale-out tests share: `KEEL_TEST_REDIS_URL`, or the one
/// on this machine and in CI. Tests keep apart by the prefix of their keys.
pub fn test_redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}
