//! The monitoring service's SQL. Inference log: the indexed columns serve
//! filters and metrics; `record` holds the whole record as JSON for reads.
//! Trace store: `span_chunks` holds a trace's spans as one OTLP protobuf
//! chunk per write (a span is never stored twice: see
//! `traces::write_spans`); `traces` is one summary row per trace, written
//! by the same transaction that stores its spans and listing its models;
//! `trace_models` maps a model to its traces. The SearchTraces filters on
//! endpoint, model, status and time are columns of an index.

use keel_store::{
    rows_per_statement, values_placeholders, Backend, Migration, Store, StoreError, WriteTx,
};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "traces",
        sqlite: "
        CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_span_id TEXT NOT NULL,
            name TEXT NOT NULL,
            kind BIGINT NOT NULL,
            service_name TEXT NOT NULL,
            scope_name TEXT NOT NULL,
            start_time_unix_nano BIGINT NOT NULL,
            end_time_unix_nano BIGINT NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            status_code BIGINT NOT NULL,
            status_message TEXT NOT NULL,
            attributes TEXT NOT NULL,
            events TEXT NOT NULL,
            PRIMARY KEY (trace_id, span_id)
        );
        CREATE TABLE traces (
            trace_id TEXT PRIMARY KEY,
            start_time_unix_nano BIGINT NOT NULL,
            end_time_unix_nano BIGINT NOT NULL,
            root_span_id TEXT NOT NULL,
            root_span_name TEXT NOT NULL,
            root_service_name TEXT NOT NULL,
            span_count BIGINT NOT NULL,
            status_code BIGINT NOT NULL,
            endpoint TEXT NOT NULL
        );
        CREATE INDEX traces_by_start ON traces (start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_endpoint ON traces (endpoint, start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_service ON traces (root_service_name, start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_status ON traces (status_code, start_time_unix_nano, trace_id);
        CREATE TABLE trace_models (
            trace_id TEXT NOT NULL,
            model TEXT NOT NULL,
            PRIMARY KEY (trace_id, model)
        );
        CREATE INDEX trace_models_by_model ON trace_models (model, trace_id)
    ",
        // COLLATE "C": keyset pagination and span order compare ids bytewise,
        // as SQLite does.
        postgres: "
        CREATE TABLE spans (
            trace_id TEXT COLLATE \"C\" NOT NULL,
            span_id TEXT COLLATE \"C\" NOT NULL,
            parent_span_id TEXT NOT NULL,
            name TEXT NOT NULL,
            kind BIGINT NOT NULL,
            service_name TEXT NOT NULL,
            scope_name TEXT NOT NULL,
            start_time_unix_nano BIGINT NOT NULL,
            end_time_unix_nano BIGINT NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            status_code BIGINT NOT NULL,
            status_message TEXT NOT NULL,
            attributes TEXT NOT NULL,
            events TEXT NOT NULL,
            PRIMARY KEY (trace_id, span_id)
        );
        CREATE TABLE traces (
            trace_id TEXT COLLATE \"C\" PRIMARY KEY,
            start_time_unix_nano BIGINT NOT NULL,
            end_time_unix_nano BIGINT NOT NULL,
            root_span_id TEXT NOT NULL,
            root_span_name TEXT NOT NULL,
            root_service_name TEXT NOT NULL,
            span_count BIGINT NOT NULL,
            status_code BIGINT NOT NULL,
            endpoint TEXT NOT NULL
        );
        CREATE INDEX traces_by_start ON traces (start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_endpoint ON traces (endpoint, start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_service ON traces (root_service_name, start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_status ON traces (status_code, start_time_unix_nano, trace_id);
        CREATE TABLE trace_models (
            trace_id TEXT COLLATE \"C\" NOT NULL,
            model TEXT NOT NULL,
            PRIMARY KEY (trace_id, model)
        );
        CREATE INDEX trace_models_by_model ON trace_models (model, trace_id)
    ",
    },
    // A row per span with an index on (trace, span) made storing a query's
    // trace cost more B-tree writes than answering the query: spans now go
    // in one row per trace and write, and trace_models keeps one B-tree per
    // entry fewer. Root-service search scans the start index instead.
    Migration {
        version: 3,
        name: "span_chunks",
        sqlite: "
        CREATE TABLE span_chunks (
            trace_id TEXT NOT NULL,
            chunk_key TEXT NOT NULL,
            spans BLOB NOT NULL,
            PRIMARY KEY (trace_id, chunk_key)
        );
        INSERT INTO span_chunks (trace_id, chunk_key, spans)
        SELECT trace_id, span_id, CAST(json_array(json_object(
            'span_id', span_id, 'parent_span_id', parent_span_id, 'name', name,
            'kind', kind, 'service_name', service_name, 'scope_name', scope_name,
            'start_time_unix_nano', start_time_unix_nano,
            'end_time_unix_nano', end_time_unix_nano,
            'status_code', status_code, 'status_message', status_message,
            'attributes', json(attributes), 'events', json(events))) AS BLOB)
        FROM spans;
        DROP TABLE spans;
        DROP INDEX traces_by_service;
        CREATE TABLE trace_models_compact (
            trace_id TEXT NOT NULL,
            model TEXT NOT NULL,
            PRIMARY KEY (trace_id, model)
        ) WITHOUT ROWID;
        INSERT INTO trace_models_compact (trace_id, model) SELECT trace_id, model FROM trace_models;
        DROP TABLE trace_models;
        ALTER TABLE trace_models_compact RENAME TO trace_models;
        CREATE INDEX trace_models_by_model ON trace_models (model, trace_id)
    ",
        postgres: "
        CREATE TABLE span_chunks (
            trace_id TEXT COLLATE \"C\" NOT NULL,
            chunk_key TEXT COLLATE \"C\" NOT NULL,
            spans BYTEA NOT NULL,
            PRIMARY KEY (trace_id, chunk_key)
        );
        INSERT INTO span_chunks (trace_id, chunk_key, spans)
        SELECT trace_id, span_id, convert_to(json_build_array(json_build_object(
            'span_id', span_id, 'parent_span_id', parent_span_id, 'name', name,
            'kind', kind, 'service_name', service_name, 'scope_name', scope_name,
            'start_time_unix_nano', start_time_unix_nano,
            'end_time_unix_nano', end_time_unix_nano,
            'status_code', status_code, 'status_message', status_message,
            'attributes', attributes::json, 'events', events::json))::text, 'UTF8')
        FROM spans;
        DROP TABLE spans;
        DROP INDEX traces_by_service
    ",
    },
    // Storing a query's trace still wrote eleven B-tree entries: the chunk
    // and its key, the summary row, its key and three indexes, and two per
    // model. Now a new trace writes seven: a chunk is keyed by its trace
    // alone (reads drop a span stored twice), the summary is keyed by its
    // trace id (no rowid on SQLite) and lists its models for display,
    // trace_models only serves the model filter, and the error filter's
    // index holds only failed traces.
    Migration {
        version: 4,
        name: "lean_traces",
        sqlite: "
        CREATE TABLE span_chunks_v4 (
            trace_id TEXT NOT NULL,
            spans BLOB NOT NULL
        );
        INSERT INTO span_chunks_v4 (trace_id, spans)
        SELECT trace_id, spans FROM span_chunks ORDER BY trace_id, chunk_key;
        DROP TABLE span_chunks;
        ALTER TABLE span_chunks_v4 RENAME TO span_chunks;
        CREATE INDEX span_chunks_by_trace ON span_chunks (trace_id);
        CREATE TABLE traces_v4 (
            trace_id TEXT PRIMARY KEY,
            start_time_unix_nano BIGINT NOT NULL,
            end_time_unix_nano BIGINT NOT NULL,
            root_span_id TEXT NOT NULL,
            root_span_name TEXT NOT NULL,
            root_service_name TEXT NOT NULL,
            span_count BIGINT NOT NULL,
            status_code BIGINT NOT NULL,
            endpoint TEXT NOT NULL,
            models TEXT NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO traces_v4
        SELECT trace_id, start_time_unix_nano, end_time_unix_nano, root_span_id,
            root_span_name, root_service_name, span_count, status_code, endpoint,
            (SELECT json_group_array(model) FROM
                (SELECT model FROM trace_models m WHERE m.trace_id = t.trace_id ORDER BY model))
        FROM traces t;
        DROP TABLE traces;
        ALTER TABLE traces_v4 RENAME TO traces;
        CREATE INDEX traces_by_start ON traces (start_time_unix_nano, trace_id);
        CREATE INDEX traces_by_endpoint ON traces (endpoint, start_time_unix_nano, trace_id);
        CREATE INDEX traces_with_errors ON traces (start_time_unix_nano, trace_id)
            WHERE status_code = 2;
        CREATE TABLE trace_models_v4 (
            model TEXT NOT NULL,
            trace_id TEXT NOT NULL,
            PRIMARY KEY (model, trace_id)
        ) WITHOUT ROWID;
        INSERT INTO trace_models_v4 (model, trace_id) SELECT model, trace_id FROM trace_models;
        DROP TABLE trace_models;
        ALTER TABLE trace_models_v4 RENAME TO trace_models
    ",
        postgres: "
        ALTER TABLE span_chunks DROP CONSTRAINT span_chunks_pkey;
        ALTER TABLE span_chunks DROP COLUMN chunk_key;
        CREATE INDEX span_chunks_by_trace ON span_chunks (trace_id);
        ALTER TABLE traces ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
        UPDATE traces SET models = m.models FROM (
            SELECT trace_id, json_agg(model ORDER BY model)::text AS models
            FROM trace_models GROUP BY trace_id
        ) m WHERE m.trace_id = traces.trace_id;
        ALTER TABLE traces ALTER COLUMN models DROP DEFAULT;
        DROP INDEX traces_by_status;
        CREATE INDEX traces_with_errors ON traces (start_time_unix_nano, trace_id)
            WHERE status_code = 2;
        DROP INDEX trace_models_by_model;
        ALTER TABLE trace_models DROP CONSTRAINT trace_models_pkey;
        ALTER TABLE trace_models ADD PRIMARY KEY (model, trace_id)
    ",
    },
    // Retention: a record feedback refers to is kept until keep_until_ms
    // (set by feedback's joins); expired traces are deleted by trace id.
    Migration {
        version: 5,
        name: "retention",
        sqlite: "
        ALTER TABLE inferences ADD COLUMN keep_until_ms BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX trace_models_by_trace ON trace_models (trace_id)
    ",
        postgres: "
        ALTER TABLE inferences ADD COLUMN keep_until_ms BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX trace_models_by_trace ON trace_models (trace_id)
    ",
    },
    // Every stored trace paid two B-tree entries per model for an index
    // that only retention used: retention now deletes a trace's model rows
    // by their key, from the model list its summary row keeps.
    Migration {
        version: 6,
        name: "trace_models_keyed_only",
        sqlite: "DROP INDEX trace_models_by_trace",
        postgres: "DROP INDEX trace_models_by_trace",
    },
    // Shadow answers point at the live request they mirror; the partial
    // index holds only them.
    Migration {
        version: 7,
        name: "shadow_of",
        sqlite: "
            ALTER TABLE inferences ADD COLUMN shadow_of TEXT NOT NULL DEFAULT '';
            CREATE INDEX inferences_by_shadow_of ON inferences (shadow_of) WHERE shadow_of <> ''
        ",
        postgres: "
            ALTER TABLE inferences ADD COLUMN shadow_of TEXT NOT NULL DEFAULT '';
            CREATE INDEX inferences_by_shadow_of ON inferences (shadow_of) WHERE shadow_of <> ''
        ",
    },
];

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
    /// The live request a shadow answer mirrors; empty otherwise.
    pub shadow_of: String,
    pub record_json: String,
}

/// Inserts the rows in one transaction, many to a statement (one trip to
/// the database's worker per statement, not per row); a row whose request
/// id is already stored is skipped. Returns how many rows were new.
pub async fn insert_inferences(store: &Store, rows: &[InferenceRow]) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let statement = (
        "INSERT INTO inferences (request_id, trace_id, endpoint, served_model, served_version,
            route_target, user_id, session_id, status, latency_ms, input_tokens, output_tokens,
            started_at_ms, record, shadow_of)",
        "ON CONFLICT (request_id) DO NOTHING",
    );
    let inserted = execute_rows(
        &mut tx,
        store.backend(),
        statement,
        15,
        rows,
        |row, args| {
            args.extend([
                Arg::Text(row.request_id.clone()),
                Arg::Text(row.trace_id.clone()),
                Arg::Text(row.endpoint.clone()),
                Arg::Text(row.served_model.clone()),
                Arg::Int(row.served_version),
                Arg::Text(row.route_target.clone()),
                Arg::Text(row.user_id.clone()),
                Arg::Text(row.session_id.clone()),
                Arg::Text(row.status.to_string()),
                Arg::Real(row.latency_ms),
                Arg::Int(row.input_tokens),
                Arg::Int(row.output_tokens),
                Arg::Int(row.started_at_ms),
                Arg::Text(row.record_json.clone()),
                Arg::Text(row.shadow_of.clone()),
            ]);
        },
    )
    .await?;
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

/// Keeps the records of `request_ids` from retention at least until
/// `until_ms`; returns how many records it extended.
pub async fn keep_inferences(
    store: &Store,
    request_ids: &[String],
    until_ms: i64,
) -> Result<u64, StoreError> {
    if request_ids.is_empty() {
        return Ok(0);
    }
    // `until_ms` is a number of ours: written into the statement, it
    // leaves only the ids as parameters (anonymous on SQLite).
    let sql = format!(
        "UPDATE inferences SET keep_until_ms = {until_ms}
         WHERE request_id IN {} AND keep_until_ms < {until_ms}",
        values_placeholders(store.backend(), 1, request_ids.len())
    );
    let mut tx = store.begin_write().await?;
    let mut query = sqlx::query(&sql);
    for request_id in request_ids {
        query = query.bind(request_id.clone());
    }
    let extended = query.execute(tx.conn()).await?.rows_affected();
    tx.commit().await?;
    Ok(extended)
}

/// Deletes up to `limit` records started before `before_ms` that no
/// feedback keeps past `now_ms`, oldest first, in one short transaction;
/// returns how many it deleted.
pub async fn delete_expired_inferences(
    store: &Store,
    before_ms: i64,
    now_ms: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let deleted = sqlx::query(
        "DELETE FROM inferences WHERE request_id IN (
             SELECT request_id FROM inferences
             WHERE started_at_ms < $1 AND keep_until_ms <= $2
             ORDER BY started_at_ms LIMIT $3)",
    )
    .bind(before_ms)
    .bind(now_ms)
    .bind(limit)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Deletes up to `limit` traces (their spans, summary and model rows) that
/// started before `before_unix_nano`, oldest first, in one short
/// transaction; returns how many traces it deleted.
pub async fn delete_expired_traces(
    store: &Store,
    before_unix_nano: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    let backend = store.backend();
    let mut tx = store.begin_write().await?;
    let expired: Vec<(String, String)> = sqlx::query_as(
        "SELECT trace_id, models FROM traces WHERE start_time_unix_nano < $1
         ORDER BY start_time_unix_nano LIMIT $2",
    )
    .bind(before_unix_nano)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let mut model_rows: Vec<(String, String)> = Vec::new();
    let mut unlisted: Vec<&str> = Vec::new();
    for (trace_id, models) in &expired {
        match serde_json::from_str::<Vec<String>>(models) {
            Ok(models) => {
                model_rows.extend(models.into_iter().map(|model| (model, trace_id.clone())));
            }
            Err(_) => unlisted.push(trace_id),
        }
    }
    for pairs in model_rows.chunks(IDS_PER_LOOKUP) {
        let sql = format!(
            "DELETE FROM trace_models WHERE (model, trace_id) IN (VALUES {})",
            values_placeholders(backend, pairs.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (model, trace_id) in pairs {
            query = query.bind(model.clone()).bind(trace_id.clone());
        }
        query.execute(tx.conn()).await?;
    }
    // A model list that cannot be read (never written so by Keel) costs a
    // scan rather than leaving the trace's model rows behind.
    for trace_id in unlisted {
        sqlx::query("DELETE FROM trace_models WHERE trace_id = $1")
            .bind(trace_id.to_string())
            .execute(tx.conn())
            .await?;
    }
    let placeholders: Vec<String> = (1..=expired.len())
        .map(|index| format!("${index}"))
        .collect();
    let list = placeholders.join(", ");
    for table in ["span_chunks", "traces"] {
        let sql = format!("DELETE FROM {table} WHERE trace_id IN ({list})");
        let mut query = sqlx::query(&sql);
        for (trace_id, _) in &expired {
            query = query.bind(trace_id.clone());
        }
        query.execute(tx.conn()).await?;
    }
    tx.commit().await?;
    Ok(expired.len() as u64)
}

/// `(request_id, record)` of the ids that exist, in no particular order.
pub async fn get_inferences(
    store: &Store,
    request_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    if request_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT request_id, record FROM inferences WHERE request_id IN {}",
        values_placeholders(store.backend(), 1, request_ids.len())
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
    /// Only the shadow answers of this live request id.
    pub shadow_of: Option<String>,
    /// Only rows strictly before this `(started_at_ms, request_id)`.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// A bound argument of a query built at run time.
enum Arg {
    Text(String),
    Int(i64),
    Real(f64),
    Bytes(Vec<u8>),
}

/// The WHERE clauses of a query built at run time, with their arguments
/// numbered `$1, $2, ...` in the order they are added.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Adds an argument and returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn clause(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// `(time < $a OR (time = $a AND key < $b))`: rows strictly before
    /// `(time, key)` in newest-first order.
    fn before(&mut self, time_column: &str, key_column: &str, time: i64, key: &str) {
        let earlier = self.arg(Arg::Int(time));
        let same_time = self.arg(Arg::Int(time));
        let smaller_key = self.arg(Arg::Text(key.to_string()));
        self.clause(format!(
            "({time_column} < {earlier} OR ({time_column} = {same_time} AND {key_column} < {smaller_key}))"
        ));
    }

    fn where_clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(number) => query.bind(number),
            Arg::Real(number) => query.bind(number),
            Arg::Bytes(bytes) => query.bind(bytes),
        };
    }
    query
}

fn bind_all_execute<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(number) => query.bind(number),
            Arg::Real(number) => query.bind(number),
            Arg::Bytes(bytes) => query.bind(bytes),
        };
    }
    query
}

/// `(started_at_ms, request_id, record)`, newest first.
pub async fn list_inferences(
    store: &Store,
    list: &ListQuery,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut conditions = Conditions::default();
    if let Some(endpoint) = &list.endpoint {
        let endpoint = conditions.arg(Arg::Text(endpoint.clone()));
        conditions.clause(format!("endpoint = {endpoint}"));
    }
    if let Some(served_model) = &list.served_model {
        let served_model = conditions.arg(Arg::Text(served_model.clone()));
        conditions.clause(format!("served_model = {served_model}"));
    }
    if let Some(served_version) = list.served_version {
        let served_version = conditions.arg(Arg::Int(served_version));
        conditions.clause(format!("served_version = {served_version}"));
    }
    if let Some(since_ms) = list.since_ms {
        let since_ms = conditions.arg(Arg::Int(since_ms));
        conditions.clause(format!("started_at_ms >= {since_ms}"));
    }
    if let Some(until_ms) = list.until_ms {
        let until_ms = conditions.arg(Arg::Int(until_ms));
        conditions.clause(format!("started_at_ms < {until_ms}"));
    }
    if let Some(shadow_of) = &list.shadow_of {
        let shadow_of = conditions.arg(Arg::Text(shadow_of.clone()));
        conditions.clause(format!("shadow_of = {shadow_of}"));
    }
    if let Some((started_at_ms, request_id)) = &list.before {
        conditions.before("started_at_ms", "request_id", *started_at_ms, request_id);
    }
    let where_clause = conditions.where_clause();
    let limit = conditions.arg(Arg::Int(list.limit));
    let sql = format!(
        "SELECT started_at_ms, request_id, record FROM inferences {where_clause}
         ORDER BY started_at_ms DESC, request_id DESC LIMIT {limit}"
    );
    bind_all(
        sqlx::query_as::<_, (i64, String, String)>(&sql),
        conditions.args,
    )
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::from)
}

/// The counts and sums of one served (model, version) over a window.
#[derive(Debug, Clone)]
pub struct VersionTotals {
    pub served_model: String,
    pub served_version: i64,
    pub request_count: i64,
    pub error_count: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Per served (model, version) of `endpoint`, over the requests that
/// started at or after `since_ms`, ordered by model then version: one row
/// per version, whatever the window holds.
pub async fn version_totals(
    store: &Store,
    endpoint: &str,
    since_ms: i64,
) -> Result<Vec<VersionTotals>, StoreError> {
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT served_model, served_version, CAST(COUNT(*) AS BIGINT),
                CAST(SUM(CASE WHEN status = $3 THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT)
         FROM inferences WHERE endpoint = $1 AND started_at_ms >= $2 AND shadow_of = ''
         GROUP BY served_model, served_version
         ORDER BY served_model, served_version",
    )
    .bind(endpoint.to_string())
    .bind(since_ms)
    .bind(STATUS_ERROR)
    .fetch_all(store.pool())
    .await?;
    let mut totals = Vec::with_capacity(rows.len());
    for (served_model, served_version, request_count, error_count, input_tokens, output_tokens) in
        rows
    {
        totals.push(VersionTotals {
            served_model,
            served_version,
            request_count,
            error_count,
            input_tokens,
            output_tokens,
        });
    }
    Ok(totals)
}

/// The latency at 0-based position `offset` of the window's latencies of
/// one served version, in ascending order: the database sorts, one value
/// comes back.
pub async fn latency_at(
    store: &Store,
    endpoint: &str,
    since_ms: i64,
    served_model: &str,
    served_version: i64,
    offset: i64,
) -> Result<Option<f64>, StoreError> {
    let row: Option<(f64,)> = sqlx::query_as(
        "SELECT latency_ms FROM inferences
         WHERE endpoint = $1 AND started_at_ms >= $2 AND served_model = $3 AND served_version = $4
             AND shadow_of = ''
         ORDER BY latency_ms LIMIT 1 OFFSET $5",
    )
    .bind(endpoint.to_string())
    .bind(since_ms)
    .bind(served_model.to_string())
    .bind(served_version)
    .bind(offset)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|(latency_ms,)| latency_ms))
}

/// The status code of an ERROR span (OpenTelemetry's numbering); a
/// trace's `status_code` is the largest of its spans'.
pub const SPAN_STATUS_ERROR: i64 = 2;

/// Runs `{head} VALUES (..), (..) {tail}` over `rows`, `rows_per_statement`
/// rows of `columns` arguments at a time; `row_args` adds one row's.
/// Returns the rows the statements affected.
async fn execute_rows<R>(
    tx: &mut WriteTx,
    backend: Backend,
    (head, tail): (&str, &str),
    columns: usize,
    rows: impl IntoIterator<Item = R>,
    row_args: impl Fn(R, &mut Vec<Arg>),
) -> Result<u64, StoreError> {
    let per_statement = rows_per_statement(backend);
    let mut affected = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut args = Vec::with_capacity(per_statement * columns);
        for row in rows.by_ref().take(per_statement) {
            row_args(row, &mut args);
        }
        let sql = format!(
            "{head} VALUES {} {tail}",
            values_placeholders(backend, args.len() / columns, columns)
        );
        affected += bind_all_execute(sqlx::query(&sql), args)
            .execute(tx.conn())
            .await?
            .rows_affected();
    }
    Ok(affected)
}

/// A trace's summary row: what a write of new spans makes of it, or, for a
/// trace already stored, what those spans add (see [`merge_traces`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceUpsert {
    pub trace_id: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    /// Empty when the batch brought no root span.
    pub root_span_id: String,
    pub root_span_name: String,
    pub root_service_name: String,
    /// Spans newly stored by the batch.
    pub span_count: i64,
    pub status_code: i64,
    /// Empty when the batch named none.
    pub endpoint: String,
    /// Every model of the trace, as a sorted JSON array of strings.
    pub models: String,
}

const TRACE_COLUMNS: &str = "trace_id, start_time_unix_nano, end_time_unix_nano, root_span_id,
    root_span_name, root_service_name, span_count, status_code, endpoint, models";

fn trace_args(row: &TraceUpsert, args: &mut Vec<Arg>) {
    args.extend([
        Arg::Text(row.trace_id.clone()),
        Arg::Int(row.start_time_unix_nano),
        Arg::Int(row.end_time_unix_nano),
        Arg::Text(row.root_span_id.clone()),
        Arg::Text(row.root_span_name.clone()),
        Arg::Text(row.root_service_name.clone()),
        Arg::Int(row.span_count),
        Arg::Int(row.status_code),
        Arg::Text(row.endpoint.clone()),
        Arg::Text(row.models.clone()),
    ]);
}

/// Inserts the summaries of traces not stored yet and returns their ids;
/// a trace already stored is left as it is (merge it with
/// [`merge_traces`]). The common case, a trace whose spans all come in
/// one write, costs this one insert and no read.
pub async fn insert_new_traces(
    tx: &mut WriteTx,
    backend: Backend,
    rows: &[TraceUpsert],
) -> Result<Vec<String>, StoreError> {
    let mut inserted = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(rows_per_statement(backend)) {
        let sql = format!(
            "INSERT INTO traces ({TRACE_COLUMNS}) VALUES {}
             ON CONFLICT (trace_id) DO NOTHING
             RETURNING trace_id",
            values_placeholders(backend, chunk.len(), 10)
        );
        let mut args = Vec::with_capacity(chunk.len() * 10);
        for row in chunk {
            trace_args(row, &mut args);
        }
        let returned = bind_all(sqlx::query_as::<_, (String,)>(&sql), args)
            .fetch_all(tx.conn())
            .await?;
        inserted.extend(returned.into_iter().map(|(trace_id,)| trace_id));
    }
    Ok(inserted)
}

/// `(trace_id, models)` of these stored traces; on Postgres their rows stay
/// locked until the transaction ends, so two writers adding to one trace
/// take turns and each sees the other's spans.
pub async fn lock_traces(
    tx: &mut WriteTx,
    backend: Backend,
    trace_ids: &[&str],
) -> Result<Vec<(String, String)>, StoreError> {
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    };
    let mut found = Vec::with_capacity(trace_ids.len());
    for ids in trace_ids.chunks(IDS_PER_LOOKUP) {
        let sql = format!(
            "SELECT trace_id, models FROM traces WHERE trace_id IN {}{lock}",
            values_placeholders(backend, 1, ids.len())
        );
        let args = ids.iter().map(|id| Arg::Text(id.to_string())).collect();
        found.extend(
            bind_all(sqlx::query_as::<_, (String, String)>(&sql), args)
                .fetch_all(tx.conn())
                .await?,
        );
    }
    Ok(found)
}

/// Folds newly stored spans into stored summaries: the earlier start, the
/// later end, the first root and endpoint stored, the added span count,
/// the worst status; `models` replaces the stored list (the caller merged
/// them). `rows` must hold one row per trace (Postgres refuses to update a
/// row twice in one statement).
pub async fn merge_traces(
    tx: &mut WriteTx,
    backend: Backend,
    rows: &[TraceUpsert],
) -> Result<(), StoreError> {
    let head = format!("INSERT INTO traces ({TRACE_COLUMNS})");
    let tail = "ON CONFLICT (trace_id) DO UPDATE SET
        start_time_unix_nano = CASE
            WHEN excluded.start_time_unix_nano < traces.start_time_unix_nano
            THEN excluded.start_time_unix_nano ELSE traces.start_time_unix_nano END,
        end_time_unix_nano = CASE
            WHEN excluded.end_time_unix_nano > traces.end_time_unix_nano
            THEN excluded.end_time_unix_nano ELSE traces.end_time_unix_nano END,
        root_span_id = CASE WHEN traces.root_span_id = ''
            THEN excluded.root_span_id ELSE traces.root_span_id END,
        root_span_name = CASE WHEN traces.root_span_id = ''
            THEN excluded.root_span_name ELSE traces.root_span_name END,
        root_service_name = CASE WHEN traces.root_span_id = ''
            THEN excluded.root_service_name ELSE traces.root_service_name END,
        span_count = traces.span_count + excluded.span_count,
        status_code = CASE WHEN excluded.status_code > traces.status_code
            THEN excluded.status_code ELSE traces.status_code END,
        endpoint = CASE WHEN traces.endpoint = ''
            THEN excluded.endpoint ELSE traces.endpoint END,
        models = excluded.models";
    execute_rows(tx, backend, (&head, tail), 10, rows, trace_args).await?;
    Ok(())
}

/// Stores `(trace_id, spans)` chunks: concatenated one-span OTLP
/// `TracesData` messages.
pub async fn insert_span_chunks(
    tx: &mut WriteTx,
    backend: Backend,
    rows: Vec<(String, Vec<u8>)>,
) -> Result<(), StoreError> {
    let statement = ("INSERT INTO span_chunks (trace_id, spans)", "");
    execute_rows(
        tx,
        backend,
        statement,
        2,
        rows,
        |(trace_id, spans), args| {
            args.extend([Arg::Text(trace_id), Arg::Bytes(spans)]);
        },
    )
    .await?;
    Ok(())
}

/// `(trace_id, spans)` of every chunk stored for these traces, read inside
/// the write that is about to add to them.
pub async fn chunks_of_traces(
    tx: &mut WriteTx,
    backend: Backend,
    trace_ids: &[&str],
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut chunks = Vec::new();
    for ids in trace_ids.chunks(IDS_PER_LOOKUP) {
        let sql = format!(
            "SELECT trace_id, spans FROM span_chunks WHERE trace_id IN {}",
            values_placeholders(backend, 1, ids.len())
        );
        let args = ids.iter().map(|id| Arg::Text(id.to_string())).collect();
        let found = bind_all(sqlx::query_as::<_, (String, Vec<u8>)>(&sql), args)
            .fetch_all(tx.conn())
            .await?;
        chunks.extend(found);
    }
    Ok(chunks)
}

/// Ids per `IN (...)` lookup: far below SQLite's 32766 parameters.
const IDS_PER_LOOKUP: usize = 500;

/// Records `(model, trace_id)` pairs for the model filter; a pair already
/// stored is skipped.
pub async fn insert_trace_models(
    tx: &mut WriteTx,
    backend: Backend,
    pairs: &[(&str, &str)],
) -> Result<(), StoreError> {
    let statement = (
        "INSERT INTO trace_models (model, trace_id)",
        "ON CONFLICT (model, trace_id) DO NOTHING",
    );
    execute_rows(
        tx,
        backend,
        statement,
        2,
        pairs,
        |(model, trace_id), args| {
            args.extend([
                Arg::Text(model.to_string()),
                Arg::Text(trace_id.to_string()),
            ]);
        },
    )
    .await?;
    Ok(())
}

/// The stored chunks of one trace, in the order they were written.
pub async fn get_span_chunks(store: &Store, trace_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT spans FROM span_chunks WHERE trace_id = $1")
        .bind(trace_id.to_string())
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().map(|(spans,)| spans).collect())
}

/// Filters and the keyset position of one page of `search_traces`.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub endpoint: Option<String>,
    pub model: Option<String>,
    /// The root span's service.
    pub service_name: Option<String>,
    /// Trace start, inclusive.
    pub since_unix_nano: Option<i64>,
    /// Trace start, exclusive.
    pub until_unix_nano: Option<i64>,
    pub min_duration_nanos: Option<i64>,
    /// `Some(true)`: traces with an ERROR span; `Some(false)`: without.
    pub errors: Option<bool>,
    /// Only traces strictly before this `(start_time_unix_nano, trace_id)`.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// One row of `traces`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub trace_id: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    pub root_span_name: String,
    pub root_service_name: String,
    pub span_count: i64,
    pub status_code: i64,
    pub endpoint: String,
    /// A sorted JSON array of strings.
    pub models: String,
}

type TraceTuple = (String, i64, i64, String, String, i64, i64, String, String);

/// Matching traces, newest first by (start, trace id).
pub async fn search_traces(store: &Store, query: &TraceQuery) -> Result<Vec<TraceRow>, StoreError> {
    let mut conditions = Conditions::default();
    if let Some(endpoint) = &query.endpoint {
        let endpoint = conditions.arg(Arg::Text(endpoint.clone()));
        conditions.clause(format!("endpoint = {endpoint}"));
    }
    if let Some(service_name) = &query.service_name {
        let service_name = conditions.arg(Arg::Text(service_name.clone()));
        conditions.clause(format!("root_service_name = {service_name}"));
    }
    if let Some(model) = &query.model {
        let model = conditions.arg(Arg::Text(model.clone()));
        conditions.clause(format!(
            "trace_id IN (SELECT trace_id FROM trace_models WHERE model = {model})"
        ));
    }
    if let Some(since) = query.since_unix_nano {
        let since = conditions.arg(Arg::Int(since));
        conditions.clause(format!("start_time_unix_nano >= {since}"));
    }
    if let Some(until) = query.until_unix_nano {
        let until = conditions.arg(Arg::Int(until));
        conditions.clause(format!("start_time_unix_nano < {until}"));
    }
    if let Some(min_duration) = query.min_duration_nanos {
        let min_duration = conditions.arg(Arg::Int(min_duration));
        conditions.clause(format!(
            "end_time_unix_nano - start_time_unix_nano >= {min_duration}"
        ));
    }
    // Written as a literal: the planner uses the partial index of failed
    // traces only for the condition it was declared with.
    match query.errors {
        Some(true) => conditions.clause(format!("status_code = {SPAN_STATUS_ERROR}")),
        Some(false) => conditions.clause(format!("status_code < {SPAN_STATUS_ERROR}")),
        None => {}
    }
    if let Some((start, trace_id)) = &query.before {
        conditions.before("start_time_unix_nano", "trace_id", *start, trace_id);
    }
    let where_clause = conditions.where_clause();
    let limit = conditions.arg(Arg::Int(query.limit));
    let sql = format!(
        "SELECT trace_id, start_time_unix_nano, end_time_unix_nano, root_span_name,
            root_service_name, span_count, status_code, endpoint, models
         FROM traces {where_clause}
         ORDER BY start_time_unix_nano DESC, trace_id DESC LIMIT {limit}"
    );
    let tuples: Vec<TraceTuple> = bind_all(sqlx::query_as::<_, TraceTuple>(&sql), conditions.args)
        .fetch_all(store.pool())
        .await?;
    Ok(tuples
        .into_iter()
        .map(
            |(
                trace_id,
                start_time_unix_nano,
                end_time_unix_nano,
                root_span_name,
                root_service_name,
                span_count,
                status_code,
                endpoint,
                models,
            )| TraceRow {
                trace_id,
                start_time_unix_nano,
                end_time_unix_nano,
                root_span_name,
                root_service_name,
                span_count,
                status_code,
                endpoint,
                models,
            },
        )
        .collect())
}
