//! Placeholders for statements with many values (multi-row INSERTs, long
//! `IN` lists), written the way each backend binds them fastest.

use crate::Backend;

/// Rows per multi-row INSERT. SQLite looks each `$N` placeholder up by
/// name, scanning those already seen, so a long statement costs it
/// quadratically (4096 spans: 65 ms in statements of 20 rows, 225 ms of
/// 200); Postgres gains from fewer, longer statements (55 ms at 20 rows,
/// 36 ms at 200).
pub fn rows_per_statement(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 20,
        Backend::Postgres => 200,
    }
}

/// `rows` rows of `columns` arguments: `($1, $2), ($3, $4)` on Postgres,
/// `(?, ?), (?, ?)` on SQLite. SQLite looks a numbered parameter's name up
/// in a list as long as the statement's parameters, once per bound value:
/// quadratic in a multi-row insert, where anonymous `?` costs nothing.
pub fn values_placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    use std::fmt::Write;
    // Built on every span insert: one string, no allocation per value.
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=columns {
            if column > 1 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * columns + column);
                }
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_on_postgres_and_anonymous_on_sqlite() {
        assert_eq!(
            values_placeholders(Backend::Postgres, 2, 2),
            "($1, $2), ($3, $4)"
        );
        assert_eq!(
            values_placeholders(Backend::Sqlite, 2, 3),
            "(?, ?, ?), (?, ?, ?)"
        );
    }
}
