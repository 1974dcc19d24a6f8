//! The feedback table's SQL.

use std::collections::HashSet;

use keel_store::{rows_per_statement, values_placeholders, Migration, Store, StoreError};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::QueryAs;
use sqlx::{Any, FromRow, Row};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "feedback",
    // idempotency_key is NULL when the caller sent none: NULLs never
    // collide in a unique index, on either backend.
    sqlite: "
        CREATE TABLE feedback (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            correction TEXT NOT NULL,
            comment TEXT NOT NULL,
            user_id TEXT NOT NULL,
            idempotency_key TEXT,
            created_at_ms BIGINT NOT NULL,
            endpoint TEXT NOT NULL,
            served_model TEXT NOT NULL,
            served_version BIGINT NOT NULL
        );
        CREATE UNIQUE INDEX feedback_by_idempotency_key ON feedback (idempotency_key);
        CREATE INDEX feedback_by_time ON feedback (created_at_ms, id);
        CREATE INDEX feedback_by_request ON feedback (request_id, created_at_ms);
        CREATE INDEX feedback_by_endpoint ON feedback (endpoint, created_at_ms)
    ",
    // COLLATE \"C\": keyset pagination compares ids bytewise, as SQLite does.
    postgres: "
        CREATE TABLE feedback (
            id TEXT COLLATE \"C\" PRIMARY KEY,
            request_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            correction TEXT NOT NULL,
            comment TEXT NOT NULL,
            user_id TEXT NOT NULL,
            idempotency_key TEXT,
            created_at_ms BIGINT NOT NULL,
            endpoint TEXT NOT NULL,
            served_model TEXT NOT NULL,
            served_version BIGINT NOT NULL
        );
        CREATE UNIQUE INDEX feedback_by_idempotency_key ON feedback (idempotency_key);
        CREATE INDEX feedback_by_time ON feedback (created_at_ms, id);
        CREATE INDEX feedback_by_request ON feedback (request_id, created_at_ms);
        CREATE INDEX feedback_by_endpoint ON feedback (endpoint, created_at_ms)
    ",
},
    // Feedback may now come before its inference record: it is stored
    // unjoined (joined_at_ms NULL, no endpoint or version yet) and joined
    // when the record arrives. The partial index holds only those.
    Migration {
        version: 2,
        name: "late_join",
        sqlite: "
            ALTER TABLE feedback ADD COLUMN joined_at_ms BIGINT;
            UPDATE feedback SET joined_at_ms = created_at_ms;
            CREATE INDEX feedback_unjoined ON feedback (created_at_ms, id) WHERE joined_at_ms IS NULL
        ",
        postgres: "
            ALTER TABLE feedback ADD COLUMN joined_at_ms BIGINT;
            UPDATE feedback SET joined_at_ms = created_at_ms;
            CREATE INDEX feedback_unjoined ON feedback (created_at_ms, id) WHERE joined_at_ms IS NULL
        ",
    },
    // Feedback kinds FLAG (reason) and RELEVANCE (on one passage), tags
    // (a JSON array), and feedback on a whole session (request_id empty).
    Migration {
        version: 3,
        name: "targets_and_tags",
        sqlite: "
            ALTER TABLE feedback ADD COLUMN session_id TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN passage_id TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN reason TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
            CREATE INDEX feedback_by_session ON feedback (session_id, created_at_ms) WHERE session_id <> ''
        ",
        postgres: "
            ALTER TABLE feedback ADD COLUMN session_id TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN passage_id TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN reason TEXT NOT NULL DEFAULT '';
            ALTER TABLE feedback ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
            CREATE INDEX feedback_by_session ON feedback (session_id, created_at_ms) WHERE session_id <> ''
        ",
    },
    // The export reads in (request_id, created_at_ms, id) order, a page
    // after a row value: an index in exactly that order serves it (and the
    // listing by request, which the index it replaces served).
    Migration {
        version: 4,
        name: "export_order",
        sqlite: "
            CREATE INDEX feedback_export_order ON feedback (request_id, created_at_ms, id);
            DROP INDEX feedback_by_request
        ",
        postgres: "
            CREATE INDEX feedback_export_order ON feedback (request_id, created_at_ms, id);
            DROP INDEX feedback_by_request
        ",
    },
];

const COLUMNS: &str = "id, request_id, session_id, passage_id, kind, value, correction, comment,
    reason, tags, user_id, idempotency_key, created_at_ms, endpoint, served_model, served_version,
    joined_at_ms";

/// One row of `feedback`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRow {
    pub id: String,
    /// Empty for feedback on a session.
    pub request_id: String,
    pub session_id: String,
    pub passage_id: String,
    pub kind: String,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub reason: String,
    /// A JSON array of strings.
    pub tags: String,
    pub user_id: String,
    pub idempotency_key: Option<String>,
    pub created_at_ms: i64,
    pub endpoint: String,
    pub served_model: String,
    pub served_version: i64,
    /// `None` until the inference record arrived and was joined.
    pub joined_at_ms: Option<i64>,
}

impl<'r> FromRow<'r, AnyRow> for FeedbackRow {
    fn from_row(row: &'r AnyRow) -> Result<FeedbackRow, sqlx::Error> {
        Ok(FeedbackRow {
            id: row.try_get("id")?,
            request_id: row.try_get("request_id")?,
            session_id: row.try_get("session_id")?,
            passage_id: row.try_get("passage_id")?,
            kind: row.try_get("kind")?,
            value: row.try_get("value")?,
            correction: row.try_get("correction")?,
            comment: row.try_get("comment")?,
            reason: row.try_get("reason")?,
            tags: row.try_get("tags")?,
            user_id: row.try_get("user_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            created_at_ms: row.try_get("created_at_ms")?,
            endpoint: row.try_get("endpoint")?,
            served_model: row.try_get("served_model")?,
            served_version: row.try_get("served_version")?,
            joined_at_ms: row.try_get("joined_at_ms")?,
        })
    }
}

/// Inserts the rows in one transaction, skipping those whose idempotency
/// key is taken (by a stored row or an earlier row of the group); returns
/// the ids it inserted.
pub async fn insert_feedback_group(
    store: &Store,
    rows: &[FeedbackRow],
) -> Result<HashSet<String>, StoreError> {
    let mut tx = store.begin_write().await?;
    let mut inserted = HashSet::with_capacity(rows.len());
    let backend = store.backend();
    for chunk in rows.chunks(rows_per_statement(backend)) {
        // No RETURNING: SQLite's driver hands each returned row from its
        // connection thread on its own. A taken key is rare; only then are
        // the chunk's rows looked up.
        let sql = format!(
            "INSERT INTO feedback ({COLUMNS}) VALUES {}
             ON CONFLICT (idempotency_key) DO NOTHING",
            values_placeholders(backend, chunk.len(), 17)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(row.id.clone())
                .bind(row.request_id.clone())
                .bind(row.session_id.clone())
                .bind(row.passage_id.clone())
                .bind(row.kind.clone())
                .bind(row.value)
                .bind(row.correction.clone())
                .bind(row.comment.clone())
                .bind(row.reason.clone())
                .bind(row.tags.clone())
                .bind(row.user_id.clone())
                .bind(row.idempotency_key.clone())
                .bind(row.created_at_ms)
                .bind(row.endpoint.clone())
                .bind(row.served_model.clone())
                .bind(row.served_version)
                .bind(row.joined_at_ms);
        }
        let stored = query.execute(tx.conn()).await?.rows_affected();
        if stored == chunk.len() as u64 {
            inserted.extend(chunk.iter().map(|row| row.id.clone()));
            continue;
        }
        // The ids are new, so those in the table now are the ones stored.
        let sql = format!(
            "SELECT id FROM feedback WHERE id IN {}",
            values_placeholders(backend, 1, chunk.len())
        );
        let mut lookup = sqlx::query_as::<_, (String,)>(&sql);
        for row in chunk {
            lookup = lookup.bind(row.id.clone());
        }
        for (id,) in lookup.fetch_all(tx.conn()).await? {
            inserted.insert(id);
        }
    }
    tx.commit().await?;
    Ok(inserted)
}

pub async fn get_by_idempotency_key(
    store: &Store,
    key: &str,
) -> Result<Option<FeedbackRow>, StoreError> {
    let row: Option<FeedbackRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM feedback WHERE idempotency_key = $1"
    ))
    .bind(key.to_string())
    .fetch_optional(store.pool())
    .await?;
    Ok(row)
}

enum Arg {
    Text(String),
    Int(i64),
}

/// `sql` with `args` bound in order.
fn query_with<'q, O>(sql: &'q str, args: Vec<Arg>) -> QueryAs<'q, Any, O, AnyArguments<'q>>
where
    O: for<'r> FromRow<'r, AnyRow>,
{
    let mut query = sqlx::query_as::<_, O>(sql);
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(number) => query.bind(number),
        };
    }
    query
}

async fn fetch_rows(
    store: &Store,
    sql: &str,
    args: Vec<Arg>,
) -> Result<Vec<FeedbackRow>, StoreError> {
    Ok(query_with(sql, args).fetch_all(store.pool()).await?)
}

/// Rows strictly past `position` in the keyset order of `columns` (`<`
/// newest first, `>` oldest first), as a row value: both backends seek an
/// index in that order to it, where the equivalent ORs made SQLite scan
/// from the start on every page. Pushes the position's arguments.
fn keyset_clause(args: &mut Vec<Arg>, columns: &str, position: Vec<Arg>, past: &str) -> String {
    let mut placeholders = Vec::with_capacity(position.len());
    for value in position {
        args.push(value);
        placeholders.push(format!("${}", args.len()));
    }
    format!("({columns}) {past} ({})", placeholders.join(", "))
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        return String::new();
    }
    format!("WHERE {}", clauses.join(" AND "))
}

/// Filters and keyset position of one page of `list_feedback`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub endpoint: Option<String>,
    /// Only rows strictly before this `(created_at_ms, id)`.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// Newest first by (created_at_ms, id).
pub async fn list_feedback(
    store: &Store,
    list: &ListQuery,
) -> Result<Vec<FeedbackRow>, StoreError> {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(request_id) = &list.request_id {
        args.push(Arg::Text(request_id.clone()));
        clauses.push(format!("request_id = ${}", args.len()));
    }
    if let Some(session_id) = &list.session_id {
        args.push(Arg::Text(session_id.clone()));
        clauses.push(format!("session_id = ${}", args.len()));
    }
    if let Some(endpoint) = &list.endpoint {
        args.push(Arg::Text(endpoint.clone()));
        clauses.push(format!("endpoint = ${}", args.len()));
    }
    if let Some((created_at_ms, id)) = &list.before {
        clauses.push(keyset_clause(
            &mut args,
            "created_at_ms, id",
            vec![Arg::Int(*created_at_ms), Arg::Text(id.clone())],
            "<",
        ));
    }
    args.push(Arg::Int(list.limit));
    let limit = args.len();
    let sql = format!(
        "SELECT {COLUMNS} FROM feedback {} ORDER BY created_at_ms DESC, id DESC LIMIT ${limit}",
        where_clause(&clauses)
    );
    fetch_rows(store, &sql, args).await
}

/// Which feedback a dataset export reads; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub endpoint: Option<String>,
    pub served_model: Option<String>,
    pub served_version: Option<i64>,
    /// On created_at_ms, inclusive.
    pub since_ms: Option<i64>,
    /// Exclusive.
    pub until_ms: Option<i64>,
}

/// The clauses of `export`'s filters on the columns the join fills.
fn served_clauses(export: &ExportQuery, clauses: &mut Vec<String>, args: &mut Vec<Arg>) {
    if let Some(endpoint) = &export.endpoint {
        args.push(Arg::Text(endpoint.clone()));
        clauses.push(format!("endpoint = ${}", args.len()));
    }
    if let Some(served_model) = &export.served_model {
        args.push(Arg::Text(served_model.clone()));
        clauses.push(format!("served_model = ${}", args.len()));
    }
    if let Some(served_version) = export.served_version {
        args.push(Arg::Int(served_version));
        clauses.push(format!("served_version = ${}", args.len()));
    }
}

fn time_clauses(export: &ExportQuery, clauses: &mut Vec<String>, args: &mut Vec<Arg>) {
    if let Some(since_ms) = export.since_ms {
        args.push(Arg::Int(since_ms));
        clauses.push(format!("created_at_ms >= ${}", args.len()));
    }
    if let Some(until_ms) = export.until_ms {
        args.push(Arg::Int(until_ms));
        clauses.push(format!("created_at_ms < ${}", args.len()));
    }
}

/// Where an export page starts: after this row in (request_id,
/// created_at_ms, id) order.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPosition {
    pub request_id: String,
    pub created_at_ms: i64,
    pub id: String,
}

/// One page of the joined feedback on requests that `export` matches, in
/// (request_id, created_at_ms, id) order: a request's feedback comes
/// together and oldest first, so "latest" is the last one. Session
/// feedback (no request) is left out.
pub async fn export_page(
    store: &Store,
    export: &ExportQuery,
    after: Option<&ExportPosition>,
    limit: i64,
) -> Result<Vec<FeedbackRow>, StoreError> {
    // Feedback whose record has not arrived has nothing to export yet.
    let mut clauses = vec![
        "joined_at_ms IS NOT NULL".to_string(),
        "request_id <> ''".to_string(),
    ];
    let mut args = Vec::new();
    served_clauses(export, &mut clauses, &mut args);
    time_clauses(export, &mut clauses, &mut args);
    if let Some(after) = after {
        clauses.push(keyset_clause(
            &mut args,
            "request_id, created_at_ms, id",
            vec![
                Arg::Text(after.request_id.clone()),
                Arg::Int(after.created_at_ms),
                Arg::Text(after.id.clone()),
            ],
            ">",
        ));
    }
    args.push(Arg::Int(limit));
    let limit = args.len();
    let sql = format!(
        "SELECT {COLUMNS} FROM feedback {} ORDER BY request_id ASC, created_at_ms ASC, id ASC LIMIT ${limit}",
        where_clause(&clauses)
    );
    fetch_rows(store, &sql, args).await
}

/// What an export will read: the requests with joined feedback that match
/// `export`, and the feedback in its time range still waiting for its
/// inference record (which cannot be matched on served columns yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCounts {
    pub requests: u64,
    pub unjoined: u64,
}

pub async fn export_counts(
    store: &Store,
    export: &ExportQuery,
) -> Result<ExportCounts, StoreError> {
    let mut clauses = vec![
        "joined_at_ms IS NOT NULL".to_string(),
        "request_id <> ''".to_string(),
    ];
    let mut args = Vec::new();
    served_clauses(export, &mut clauses, &mut args);
    time_clauses(export, &mut clauses, &mut args);
    let requests = count(
        store,
        &format!(
            "SELECT COUNT(DISTINCT request_id) FROM feedback {}",
            where_clause(&clauses)
        ),
        args,
    )
    .await?;
    let mut clauses = vec!["joined_at_ms IS NULL".to_string()];
    let mut args = Vec::new();
    time_clauses(export, &mut clauses, &mut args);
    let unjoined = count(
        store,
        &format!("SELECT COUNT(*) FROM feedback {}", where_clause(&clauses)),
        args,
    )
    .await?;
    Ok(ExportCounts { requests, unjoined })
}

async fn count(store: &Store, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
    let (count,): (i64,) = query_with(sql, args).fetch_one(store.pool()).await?;
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Unjoined feedback created at or after `since_ms`, oldest first by
/// (created_at_ms, id), after `after` when given.
pub async fn unjoined_feedback(
    store: &Store,
    since_ms: i64,
    until_ms: i64,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<FeedbackRow>, StoreError> {
    let mut args = vec![Arg::Int(since_ms), Arg::Int(until_ms)];
    let mut clauses = vec![
        "joined_at_ms IS NULL".to_string(),
        "created_at_ms >= $1".to_string(),
        "created_at_ms < $2".to_string(),
    ];
    if let Some((created_at_ms, id)) = after {
        clauses.push(keyset_clause(
            &mut args,
            "created_at_ms, id",
            vec![Arg::Int(created_at_ms), Arg::Text(id)],
            ">",
        ));
    }
    args.push(Arg::Int(limit));
    let limit = args.len();
    let sql = format!(
        "SELECT {COLUMNS} FROM feedback {} ORDER BY created_at_ms ASC, id ASC LIMIT ${limit}",
        where_clause(&clauses)
    );
    fetch_rows(store, &sql, args).await
}

/// Deletes up to `limit` rows created before `before_ms`, oldest first, in
/// one short transaction; returns how many it deleted.
pub async fn delete_expired_feedback(
    store: &Store,
    before_ms: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let deleted = sqlx::query(
        "DELETE FROM feedback WHERE id IN (
             SELECT id FROM feedback WHERE created_at_ms < $1
             ORDER BY created_at_ms LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// What an inference record gives the feedback on its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub request_id: String,
    pub endpoint: String,
    pub served_model: String,
    pub served_version: i64,
}

/// Joins the unjoined feedback on each request in `joins`, in one
/// transaction; returns how many rows it joined.
pub async fn join_feedback(
    store: &Store,
    joins: &[Join],
    joined_at_ms: i64,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let mut joined = 0;
    for join in joins {
        let result = sqlx::query(
            "UPDATE feedback SET endpoint = $1, served_model = $2, served_version = $3,
                 joined_at_ms = $4
             WHERE request_id = $5 AND joined_at_ms IS NULL",
        )
        .bind(join.endpoint.clone())
        .bind(join.served_model.clone())
        .bind(join.served_version)
        .bind(joined_at_ms)
        .bind(join.request_id.clone())
        .execute(tx.conn())
        .await?;
        joined += result.rows_affected();
    }
    tx.commit().await?;
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        id: &str,
        request_id: &str,
        created_at_ms: i64,
        key: Option<&str>,
        endpoint: &str,
    ) -> FeedbackRow {
        FeedbackRow {
            id: id.to_string(),
            request_id: request_id.to_string(),
            session_id: String::new(),
            passage_id: String::new(),
            kind: "rating".to_string(),
            value: 4.0,
            correction: String::new(),
            comment: "ok".to_string(),
            reason: String::new(),
            tags: r#"["a","b"]"#.to_string(),
            user_id: "u".to_string(),
            idempotency_key: key.map(str::to_string),
            created_at_ms,
            endpoint: endpoint.to_string(),
            served_model: "chain".to_string(),
            served_version: if endpoint == "sales" { 2 } else { 1 },
            joined_at_ms: Some(created_at_ms),
        }
    }

    /// Inserts one row as a group of one; whether it was inserted.
    async fn insert_feedback(store: &Store, row: &FeedbackRow) -> Result<bool, StoreError> {
        let inserted = insert_feedback_group(store, std::slice::from_ref(row)).await?;
        Ok(inserted.contains(&row.id))
    }

    fn ids(rows: &[FeedbackRow]) -> Vec<&str> {
        rows.iter().map(|row| row.id.as_str()).collect()
    }

    /// Every page of `export_page`, `limit` rows at a time.
    async fn export_feedback(store: &Store, export: &ExportQuery) -> Vec<FeedbackRow> {
        let mut rows: Vec<FeedbackRow> = Vec::new();
        loop {
            let after = rows.last().map(|row| ExportPosition {
                request_id: row.request_id.clone(),
                created_at_ms: row.created_at_ms,
                id: row.id.clone(),
            });
            let page = export_page(store, export, after.as_ref(), 2).await.unwrap();
            let done = page.len() < 2;
            rows.extend(page);
            if done {
                return rows;
            }
        }
    }

    async fn exercise(store: &Store) {
        let rows = vec![
            row("a1", "r1", 1_000, Some("key-1"), "support"),
            row("a3", "r2", 2_000, None, "support"),
            row("a2", "r2", 2_000, None, "sales"),
            row("a4", "r1", 3_000, None, "support"),
        ];
        for each in &rows {
            assert!(insert_feedback(store, each).await.unwrap());
        }
        // A second row with a taken key is not inserted, whether the key
        // is stored already or taken earlier in the same group.
        let duplicate = row("a9", "r9", 9_000, Some("key-1"), "support");
        assert!(!insert_feedback(store, &duplicate).await.unwrap());
        let group = [
            row("g1", "r9", 9_000, Some("key-g"), "support"),
            row("g2", "r9", 9_000, Some("key-g"), "support"),
            row("g3", "r9", 9_000, Some("key-1"), "support"),
        ];
        let inserted = insert_feedback_group(store, &group).await.unwrap();
        assert_eq!(inserted, HashSet::from(["g1".to_string()]));
        sqlx::query("DELETE FROM feedback WHERE id = 'g1'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            get_by_idempotency_key(store, "key-1").await.unwrap(),
            Some(rows[0].clone())
        );
        assert_eq!(get_by_idempotency_key(store, "key-2").await.unwrap(), None);

        let first_page = list_feedback(
            store,
            &ListQuery {
                limit: 2,
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&first_page), vec!["a4", "a3"]);
        let second_page = list_feedback(
            store,
            &ListQuery {
                before: Some((2_000, "a3".to_string())),
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&second_page), vec!["a2", "a1"]);
        let for_request = list_feedback(
            store,
            &ListQuery {
                request_id: Some("r1".to_string()),
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&for_request), vec!["a4", "a1"]);

        let everything = export_feedback(store, &ExportQuery::default()).await;
        // Request order, then oldest first within a request.
        assert_eq!(ids(&everything), vec!["a1", "a4", "a2", "a3"]);
        assert_eq!(everything[2].idempotency_key, None);
        assert_eq!(everything[0].tags, r#"["a","b"]"#);
        assert_eq!(
            export_counts(store, &ExportQuery::default()).await.unwrap(),
            ExportCounts {
                requests: 2,
                unjoined: 0
            }
        );
        let filtered = export_feedback(
            store,
            &ExportQuery {
                endpoint: Some("support".to_string()),
                served_model: Some("chain".to_string()),
                served_version: Some(1),
                since_ms: Some(1_500),
                until_ms: Some(3_000),
            },
        )
        .await;
        assert_eq!(ids(&filtered), vec!["a3"]);

        // Feedback that came before its record: kept, not exported, found
        // by the joiner, then joined once its record is known.
        let early = FeedbackRow {
            endpoint: String::new(),
            served_model: String::new(),
            served_version: 0,
            joined_at_ms: None,
            ..row("b1", "r7", 4_000, None, "")
        };
        let later = FeedbackRow {
            joined_at_ms: None,
            ..row("b2", "r8", 5_000, None, "")
        };
        assert!(insert_feedback(store, &early).await.unwrap());
        assert!(insert_feedback(store, &later).await.unwrap());
        let exported = export_feedback(store, &ExportQuery::default()).await;
        assert_eq!(ids(&exported), vec!["a1", "a4", "a2", "a3"]);
        assert_eq!(
            export_counts(store, &ExportQuery::default()).await.unwrap(),
            ExportCounts {
                requests: 2,
                unjoined: 2
            }
        );
        // Feedback on a session is listed by its session, never exported.
        let on_session = FeedbackRow {
            request_id: String::new(),
            session_id: "chat-1".to_string(),
            ..row("c1", "", 4_500, None, "")
        };
        assert!(insert_feedback(store, &on_session).await.unwrap());
        let for_session = list_feedback(
            store,
            &ListQuery {
                session_id: Some("chat-1".to_string()),
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&for_session), vec!["c1"]);
        let unjoined = unjoined_feedback(store, 0, i64::MAX, None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&unjoined), vec!["b1", "b2"]);
        let after_first =
            unjoined_feedback(store, 0, i64::MAX, Some((4_000, "b1".to_string())), 10)
                .await
                .unwrap();
        assert_eq!(ids(&after_first), vec!["b2"]);
        assert!(unjoined_feedback(store, 4_500, i64::MAX, None, 10)
            .await
            .unwrap()
            .iter()
            .all(|row| row.id == "b2"));
        let joined = join_feedback(
            store,
            &[Join {
                request_id: "r7".to_string(),
                endpoint: "support".to_string(),
                served_model: "chain".to_string(),
                served_version: 3,
            }],
            6_000,
        )
        .await
        .unwrap();
        assert_eq!(joined, 1);
        let exported = export_feedback(store, &ExportQuery::default()).await;
        assert_eq!(ids(&exported), vec!["a1", "a4", "a2", "a3", "b1"]);
        assert_eq!(exported[4].served_version, 3);
        assert_eq!(exported[4].joined_at_ms, Some(6_000));
        let unjoined = unjoined_feedback(store, 0, i64::MAX, None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&unjoined), vec!["b2"]);
    }

    #[tokio::test]
    async fn sqlite_store_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let url = keel_store::default_sqlite_url(dir.path(), "feedback");
        let store = Store::open(&url, MIGRATIONS).await.unwrap();
        exercise(&store).await;
        store.close().await;
        let reopened = Store::open(&url, MIGRATIONS).await.unwrap();
        let everything = export_feedback(&reopened, &ExportQuery::default()).await;
        assert_eq!(ids(&everything), vec!["a1", "a4", "a2", "a3", "b1"]);
    }

    #[tokio::test]
    async fn postgres_store() {
        let url = keel_store::testing::fresh_postgres_database()
            .await
            .expect("postgres must run at postgres://postgres@127.0.0.1:5432/test");
        let store = Store::open(&url, MIGRATIONS).await.unwrap();
        exercise(&store).await;
    }
}
