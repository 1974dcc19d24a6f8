//! The durable copy of collections and points. The in-memory graphs are
//! rebuilt from here at start-up, in insertion (`seq`) order.

use keel_store::{Migration, Store, StoreError, WriteTx};
use sqlx::Row;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "collections and points",
        sqlite: "CREATE TABLE collections (
            name TEXT PRIMARY KEY,
            dimension BIGINT NOT NULL,
            metric TEXT NOT NULL,
            embedder TEXT NOT NULL,
            hnsw_m BIGINT NOT NULL,
            hnsw_ef_construction BIGINT NOT NULL,
            hnsw_ef_search BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL
        );
        CREATE TABLE points (
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            vector BLOB NOT NULL,
            text TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (collection, id)
        );
        CREATE INDEX points_by_seq ON points (collection, seq)",
        postgres: "CREATE TABLE collections (
            name TEXT PRIMARY KEY,
            dimension BIGINT NOT NULL,
            metric TEXT NOT NULL,
            embedder TEXT NOT NULL,
            hnsw_m BIGINT NOT NULL,
            hnsw_ef_construction BIGINT NOT NULL,
            hnsw_ef_search BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL
        );
        CREATE TABLE points (
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            vector BYTEA NOT NULL,
            text TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (collection, id)
        );
        CREATE INDEX points_by_seq ON points (collection, seq)",
    },
    Migration {
        version: 2,
        name: "indexed payload keys",
        sqlite: "ALTER TABLE collections ADD COLUMN indexed_keys TEXT NOT NULL DEFAULT '[]'",
        postgres: "ALTER TABLE collections ADD COLUMN indexed_keys TEXT NOT NULL DEFAULT '[]'",
    },
];

/// A collection row.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRow {
    pub name: String,
    pub dimension: i64,
    pub metric: String,
    /// Empty: no embedder.
    pub embedder: String,
    pub hnsw_m: i64,
    pub hnsw_ef_construction: i64,
    pub hnsw_ef_search: i64,
    /// A JSON array of the payload keys the collection indexes.
    pub indexed_keys: String,
    pub created_at_ms: i64,
}

/// A point row; `vector` is little-endian f32 bytes, `payload` a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    pub id: String,
    pub seq: i64,
    pub vector: Vec<u8>,
    pub text: String,
    pub payload: String,
}

/// Inserts the collection; false when one with that name exists.
pub async fn insert_collection(tx: &mut WriteTx, row: &CollectionRow) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO collections
            (name, dimension, metric, embedder, hnsw_m, hnsw_ef_construction, hnsw_ef_search, indexed_keys, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&row.name)
    .bind(row.dimension)
    .bind(&row.metric)
    .bind(&row.embedder)
    .bind(row.hnsw_m)
    .bind(row.hnsw_ef_construction)
    .bind(row.hnsw_ef_search)
    .bind(&row.indexed_keys)
    .bind(row.created_at_ms)
    .execute(tx.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes the collection and its points; false when it did not exist.
pub async fn delete_collection(tx: &mut WriteTx, name: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM points WHERE collection = $1")
        .bind(name)
        .execute(tx.conn())
        .await?;
    let result = sqlx::query("DELETE FROM collections WHERE name = $1")
        .bind(name)
        .execute(tx.conn())
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Every collection, by name.
pub async fn list_collections(store: &Store) -> Result<Vec<CollectionRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, dimension, metric, embedder, hnsw_m, hnsw_ef_construction, hnsw_ef_search,
                indexed_keys, created_at_ms
         FROM collections ORDER BY name",
    )
    .fetch_all(store.pool())
    .await?;
    let mut collections = Vec::with_capacity(rows.len());
    for row in rows {
        collections.push(CollectionRow {
            name: row.try_get("name")?,
            dimension: row.try_get("dimension")?,
            metric: row.try_get("metric")?,
            embedder: row.try_get("embedder")?,
            hnsw_m: row.try_get("hnsw_m")?,
            hnsw_ef_construction: row.try_get("hnsw_ef_construction")?,
            hnsw_ef_search: row.try_get("hnsw_ef_search")?,
            indexed_keys: row.try_get("indexed_keys")?,
            created_at_ms: row.try_get("created_at_ms")?,
        });
    }
    Ok(collections)
}

/// The points of a collection in insertion order. With
/// `vectors_after_seq`, only the rows written after that seq carry their
/// vector (the others' is left empty): a snapshot holds those.
pub async fn load_points(
    store: &Store,
    collection: &str,
    vectors_after_seq: Option<i64>,
) -> Result<Vec<PointRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, seq, CASE WHEN seq > $2 THEN vector END AS vector, text, payload
         FROM points WHERE collection = $1 ORDER BY seq",
    )
    .bind(collection)
    .bind(vectors_after_seq.unwrap_or(i64::MIN))
    .fetch_all(store.pool())
    .await?;
    let mut points = Vec::with_capacity(rows.len());
    for row in rows {
        let vector: Option<Vec<u8>> = row.try_get("vector")?;
        points.push(PointRow {
            id: row.try_get("id")?,
            seq: row.try_get("seq")?,
            vector: vector.unwrap_or_default(),
            text: row.try_get("text")?,
            payload: row.try_get("payload")?,
        });
    }
    Ok(points)
}

/// The highest insertion sequence used so far (0 when there are no points).
pub async fn max_seq(store: &Store) -> Result<i64, StoreError> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT CAST(MAX(seq) AS BIGINT) FROM points")
        .fetch_one(store.pool())
        .await?;
    Ok(row.0.unwrap_or(0))
}

/// Rows per INSERT statement: 6 parameters each stays far below every
/// backend's parameter limit.
const UPSERT_CHUNK_ROWS: usize = 100;

/// Inserts the points, replacing those with the same ids. The ids of one
/// call must be distinct (Postgres rejects a row updated twice by one
/// statement).
pub async fn upsert_points(
    tx: &mut WriteTx,
    collection: &str,
    points: &[PointRow],
) -> Result<(), StoreError> {
    for chunk in points.chunks(UPSERT_CHUNK_ROWS) {
        let mut sql =
            String::from("INSERT INTO points (collection, id, seq, vector, text, payload) VALUES ");
        for row_index in 0..chunk.len() {
            if row_index > 0 {
                sql.push_str(", ");
            }
            let base = row_index * 6;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5,
                base + 6
            ));
        }
        sql.push_str(
            " ON CONFLICT (collection, id) DO UPDATE SET
                seq = excluded.seq, vector = excluded.vector, text = excluded.text, payload = excluded.payload",
        );
        let mut query = sqlx::query(&sql);
        for point in chunk {
            query = query
                .bind(collection)
                .bind(&point.id)
                .bind(point.seq)
                .bind(&point.vector)
                .bind(&point.text)
                .bind(&point.payload);
        }
        query.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Deletes the points with these ids; returns how many existed.
pub async fn delete_points(
    tx: &mut WriteTx,
    collection: &str,
    ids: &[String],
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for id in ids {
        let result = sqlx::query("DELETE FROM points WHERE collection = $1 AND id = $2")
            .bind(collection)
            .bind(id)
            .execute(tx.conn())
            .await?;
        deleted += result.rows_affected();
    }
    Ok(deleted)
}

pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// `None` when the byte count is not a multiple of 4.
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let vector = chunks
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Some(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let url = keel_store::default_sqlite_url(dir.path(), "vector-index");
        Store::open(&url, MIGRATIONS).await.unwrap()
    }

    async fn postgres_store() -> Store {
        let url = keel_store::testing::fresh_postgres_database().await.expect(
            "the test Postgres must be reachable at KEEL_TEST_POSTGRES_URL or 127.0.0.1:5432",
        );
        Store::open(&url, MIGRATIONS).await.unwrap()
    }

    fn collection_row(name: &str) -> CollectionRow {
        CollectionRow {
            name: name.to_string(),
            dimension: 3,
            metric: "cosine".to_string(),
            embedder: String::new(),
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            indexed_keys: "[\"lang\"]".to_string(),
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn point_row(id: &str, seq: i64, vector: &[f32]) -> PointRow {
        PointRow {
            id: id.to_string(),
            seq,
            vector: encode_vector(vector),
            text: format!("text {id}"),
            payload: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    async fn round_trip(store: Store) {
        let mut tx = store.begin_write().await.unwrap();
        assert!(insert_collection(&mut tx, &collection_row("docs"))
            .await
            .unwrap());
        assert!(!insert_collection(&mut tx, &collection_row("docs"))
            .await
            .unwrap());
        assert!(insert_collection(&mut tx, &collection_row("alpha"))
            .await
            .unwrap());
        tx.commit().await.unwrap();
        let names: Vec<String> = list_collections(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.name)
            .collect();
        assert_eq!(names, vec!["alpha", "docs"]);
        assert_eq!(
            list_collections(&store).await.unwrap()[1],
            collection_row("docs")
        );

        // 150 rows cross a chunk boundary.
        let rows: Vec<PointRow> = (0..150)
            .map(|n| {
                point_row(
                    &format!("p{n}"),
                    n + 1,
                    &[n as f32, -1.5, f32::MIN_POSITIVE],
                )
            })
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        upsert_points(&mut tx, "docs", &rows).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(max_seq(&store).await.unwrap(), 150);

        // Replacing p0 moves it to the end of the insertion order.
        let mut tx = store.begin_write().await.unwrap();
        upsert_points(&mut tx, "docs", &[point_row("p0", 151, &[9.0, 9.0, 9.0])])
            .await
            .unwrap();
        let deleted = delete_points(&mut tx, "docs", &["p1".to_string(), "missing".to_string()])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        tx.commit().await.unwrap();

        let loaded = load_points(&store, "docs", None).await.unwrap();
        assert_eq!(loaded.len(), 149);
        assert_eq!(loaded[0], rows[2]);
        let last = loaded.last().unwrap();
        assert_eq!(last.id, "p0");
        assert_eq!(decode_vector(&last.vector).unwrap(), vec![9.0, 9.0, 9.0]);
        assert_eq!(
            decode_vector(&loaded[0].vector).unwrap(),
            vec![2.0, -1.5, f32::MIN_POSITIVE]
        );
        // After a snapshot covering seq 149, only the later rows bring
        // their vectors.
        let after_snapshot = load_points(&store, "docs", Some(149)).await.unwrap();
        let with_vectors: Vec<(&str, i64)> = after_snapshot
            .iter()
            .filter(|row| !row.vector.is_empty())
            .map(|row| (row.id.as_str(), row.seq))
            .collect();
        assert_eq!(with_vectors, vec![("p149", 150), ("p0", 151)]);
        assert_eq!(after_snapshot.len(), 149);
        assert_eq!(after_snapshot[0].payload, rows[2].payload);

        // An uncommitted write is not visible.
        let mut tx = store.begin_write().await.unwrap();
        upsert_points(&mut tx, "alpha", &[point_row("x", 200, &[1.0, 2.0, 3.0])])
            .await
            .unwrap();
        drop(tx);
        assert!(load_points(&store, "alpha", None).await.unwrap().is_empty());

        let mut tx = store.begin_write().await.unwrap();
        assert!(delete_collection(&mut tx, "docs").await.unwrap());
        assert!(!delete_collection(&mut tx, "docs").await.unwrap());
        tx.commit().await.unwrap();
        assert!(load_points(&store, "docs", None).await.unwrap().is_empty());
        assert_eq!(max_seq(&store).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn round_trip_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(sqlite_store(&dir).await).await;
    }

    #[tokio::test]
    async fn round_trip_on_postgres() {
        round_trip(postgres_store().await).await;
    }

    #[test]
    fn vectors_round_trip_little_endian() {
        let bytes = encode_vector(&[1.0, -0.5]);
        assert_eq!(bytes, vec![0, 0, 128, 63, 0, 0, 0, 191]);
        assert_eq!(decode_vector(&bytes).unwrap(), vec![1.0, -0.5]);
        assert!(decode_vector(&[1, 2, 3]).is_none());
    }
}
