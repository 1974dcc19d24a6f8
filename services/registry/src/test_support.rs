//! Test helpers: a fresh database on each backend.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [TestBackend; 2] = [TestBackend::Sqlite, TestBackend::Postgres];

/// A fresh, empty database; the SQLite file lives as long as this value.
pub struct TestDatabase {
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn test_database(backend: TestBackend) -> TestDatabase {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        TestBackend::Sqlite => keel_store::default_sqlite_url(dir.path(), "registry"),
        // Fails loudly: a registry test never skips Postgres silently.
        TestBackend::Postgres => keel_store::testing::fresh_postgres_database()
            .await
            .unwrap_or_else(|error| panic!("the test postgres must be reachable: {error}")),
    };
    TestDatabase { url, _dir: dir }
}

pub async fn open_store(database: &TestDatabase) -> keel_store::Store {
    keel_store::Store::open(&database.url, crate::store::MIGRATIONS)
        .await
        .unwrap()
}
