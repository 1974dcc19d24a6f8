//! The inference log's SQL. The indexed columns serve filters and metrics;
//! `record` holds the whole record as JSON for reads.

use keel_store::{Migration, Store, StoreError};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "inferences",
    sqlite: "
        CREATE TABLE inferences (
            request_id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            served_model TEXT NOT NULL,
            served_version BIGINT NOT NULL,
            route_target TEXT NOT NULL,
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            status TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            started_at_ms BIGINT NOT NULL,
            record TEXT NOT NULL
        );
        CREATE INDEX inferences_by_time ON inferences (started_at_ms, request_id);
        CREATE INDEX inferences_by_endpoint ON inferences (endpoint, started_at_ms, request_id)
    ",
    // COLLATE \"C\": keyset pagination compares request ids bytewise, as SQLite does.
    postgres: "
        CREATE TABLE inferences (
            request_id TEXT COLLATE \"C\" PRIMARY KEY,
            trace_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            served_model TEXT NOT NULL,
            served_version BIGINT NOT NULL,
            route_target TEXT NOT NULL,
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            status TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            started_at_ms BIGINT NOT NULL,
            record TEXT NOT NULL
        );
        CREATE INDEX inferences_by_time ON inferences (started_at_ms, request_id);
        CREATE INDEX inferences_by_endpoint ON inferences (endpoint, started_at_ms, request_id)
    ",
}];

pub const STATUS_OK: &str = "ok";
pub const STATUS_ERROR: &str = "error";

/// One row of `inferences`, ready to insert.
#[derive(Debug, Clone)]
pub struct InferenceRow {
    pub request_id: String,
    pub trace_id: String,
    pub endpoint: String,
    pub served_model: String,
    pub served_version: i64,
    pub route_target: String,
    pub user_id: String,
    pub session_id: String,
    pub status: &'static str,
    pub latency_ms: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub started_at_ms: i64,
    pub record_json: String,
}

/// Inserts the rows in one transaction; a row whose request id is already
/// stored is skipped. Returns how many rows were new.
pub async fn insert_inferences(store: &Store, rows: &[InferenceRow]) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let mut inserted = 0;
    for row in rows {
        let result = sqlx::query(
            "INSERT INTO inferences (request_id, trace_id, endpoint, served_model, served_version,
                route_target, user_id, session_id, status, latency_ms, input_tokens, output_tokens,
                started_at_ms, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(row.request_id.clone())
        .bind(row.trace_id.clone())
        .bind(row.endpoint.clone())
        .bind(row.served_model.clone())
        .bind(row.served_version)
        .bind(row.route_target.clone())
        .bind(row.user_id.clone())
        .bind(row.session_id.clone())
        .bind(row.status)
        .bind(row.latency_ms)
        .bind(row.input_tokens)
        .bind(row.output_tokens)
        .bind(row.started_at_ms)
        .bind(row.record_json.clone())
        .execute(tx.conn())
        .await?;
        inserted += result.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The stored JSON of one record.
pub async fn get_inference(store: &Store, request_id: &str) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT record FROM inferences WHERE request_id = $1")
            .bind(request_id.to_string())
            .fetch_optional(store.pool())
            .await?;
    Ok(row.map(|(record,)| record))
}

/// `(request_id, record)` of the ids that exist, in no particular order.
pub async fn get_inferences(
    store: &Store,
    request_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    if request_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=request_ids.len())
        .map(|index| format!("${index}"))
        .collect();
    let sql = format!(
        "SELECT request_id, record FROM inferences WHERE request_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for request_id in request_ids {
        query = query.bind(request_id.clone());
    }
    query
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::from)
}

/// Filters and the keyset position of one page of `list_inferences`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub endpoint: Option<String>,
    pub served_model: Option<String>,
    pub served_version: Option<i64>,
    /// Inclusive.
    pub since_ms: Option<i64>,
    /// Exclusive.
    pub until_ms: Option<i64>,
    /// Only rows strictly before this `(started_at_ms, request_id)`.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// `(started_at_ms, request_id, record)`, newest first.
pub async fn list_inferences(
    store: &Store,
    list: &ListQuery,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    if let Some(endpoint) = &list.endpoint {
        args.push(Arg::Text(endpoint.clone()));
        clauses.push(format!("endpoint = ${}", args.len()));
    }
    if let Some(served_model) = &list.served_model {
        args.push(Arg::Text(served_model.clone()));
        clauses.push(format!("served_model = ${}", args.len()));
    }
    if let Some(served_version) = list.served_version {
        args.push(Arg::Int(served_version));
        clauses.push(format!("served_version = ${}", args.len()));
    }
    if let Some(since_ms) = list.since_ms {
        args.push(Arg::Int(since_ms));
        clauses.push(format!("started_at_ms >= ${}", args.len()));
    }
    if let Some(until_ms) = list.until_ms {
        args.push(Arg::Int(until_ms));
        clauses.push(format!("started_at_ms < ${}", args.len()));
    }
    if let Some((started_at_ms, request_id)) = &list.before {
        args.push(Arg::Int(*started_at_ms));
        let earlier = args.len();
        args.push(Arg::Int(*started_at_ms));
        let same_time = args.len();
        args.push(Arg::Text(request_id.clone()));
        let smaller_id = args.len();
        clauses.push(format!(
            "(started_at_ms < ${earlier} OR (started_at_ms = ${same_time} AND request_id < ${smaller_id}))"
        ));
    }
    args.push(Arg::Int(list.limit));
    let limit = args.len();
    let where_clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT started_at_ms, request_id, record FROM inferences {where_clause}
         ORDER BY started_at_ms DESC, request_id DESC LIMIT ${limit}"
    );
    let mut query = sqlx::query_as::<_, (i64, String, String)>(&sql);
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(number) => query.bind(number),
        };
    }
    query
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::from)
}

/// What metrics need of one request.
#[derive(Debug, Clone)]
pub struct MetricsRow {
    pub served_model: String,
    pub served_version: i64,
    pub status: String,
    pub latency_ms: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// The requests of `endpoint` that started at or after `since_ms`.
pub async fn metrics_rows(
    store: &Store,
    endpoint: &str,
    since_ms: i64,
) -> Result<Vec<MetricsRow>, StoreError> {
    let rows: Vec<(String, i64, String, f64, i64, i64)> = sqlx::query_as(
        "SELECT served_model, served_version, status, latency_ms, input_tokens, output_tokens
         FROM inferences WHERE endpoint = $1 AND started_at_ms >= $2",
    )
    .bind(endpoint.to_string())
    .bind(since_ms)
    .fetch_all(store.pool())
    .await?;
    let mut metrics_rows = Vec::with_capacity(rows.len());
    for (served_model, served_version, status, latency_ms, input_tokens, output_tokens) in rows {
        metrics_rows.push(MetricsRow {
            served_model,
            served_version,
            status,
            latency_ms,
            input_tokens,
            output_tokens,
        });
    }
    Ok(metrics_rows)
}
