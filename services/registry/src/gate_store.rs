//! The SQL of promotion gates (table in `store.rs`'s schema).

use sqlx::AnyConnection;

/// model, alias, gate_json, updated_at_ms
pub type GateRow = (String, String, String, i64);

/// Inserts or replaces the gate of (model, alias).
pub async fn upsert_gate(conn: &mut AnyConnection, row: &GateRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO promotion_gates (model, alias, gate_json, updated_at_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (model, alias)
         DO UPDATE SET gate_json = excluded.gate_json, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&row.0)
    .bind(&row.1)
    .bind(&row.2)
    .bind(row.3)
    .execute(conn)
    .await?;
    Ok(())
}

/// True when a gate was deleted.
pub async fn delete_gate(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM promotion_gates WHERE model = $1 AND alias = $2")
        .bind(model)
        .bind(alias)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get_gate(
    conn: &mut AnyConnection,
    model: &str,
    alias: &str,
) -> Result<Option<GateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT model, alias, gate_json, updated_at_ms FROM promotion_gates
         WHERE model = $1 AND alias = $2",
    )
    .bind(model)
    .bind(alias)
    .fetch_optional(conn)
    .await
}

/// The model's gates by alias.
pub async fn list_gates(
    conn: &mut AnyConnection,
    model: &str,
) -> Result<Vec<GateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT model, alias, gate_json, updated_at_ms FROM promotion_gates
         WHERE model = $1 ORDER BY alias",
    )
    .bind(model)
    .fetch_all(conn)
    .await
}
