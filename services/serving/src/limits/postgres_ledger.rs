//! Counters in Postgres, shared by every replica. One function call per
//! reservation: it locks the query's bucket rows (in id order, so two
//! queries never deadlock), checks and charges them all or none, on the
//! database's clock, and returns. The locks are held for that one call's
//! few microseconds, never across a round trip to a client, which is what
//! keeps many replicas on one hot key from queueing on its row; nor
//! across a disk sync: the call commits without waiting for the WAL flush
//! (a database crash may forget its last moment's charges). The
//! arithmetic is `ledger::next_level`'s, in PL/pgSQL.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::ledger::{Charge, Ledger, LedgerError, Verdict, Window};

/// Serialises the schema setup of replicas starting together.
const SCHEMA_LOCK: i64 = 0x006b_6565_6c6c_696d;
/// Counters expired this long ago are deleted every `SWEEP_EVERY` calls.
const SWEEP_EVERY: u64 = 10_000;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS keel_limit_buckets (
    id TEXT PRIMARY KEY,
    level BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
)";

const CREATE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION keel_limits_apply(
    ids TEXT[], kinds TEXT[], limits BIGINT[], units BIGINT[], ends_at_ms BIGINT[],
    reserve BOOLEAN, OUT admitted BOOLEAN, OUT refused INT, OUT wait_us BIGINT)
LANGUAGE plpgsql AS $body$
DECLARE
    now_us BIGINT := floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    now_ms BIGINT := floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    new_levels BIGINT[] := ARRAY[]::BIGINT[];
    cur_level BIGINT;
    step BIGINT;
    new_level BIGINT;
BEGIN
    -- A hot bucket's row lock is held until commit: without waiting for
    -- the WAL flush, that is microseconds, not a disk sync. A database
    -- crash may forget the last moment's charges.
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO keel_limit_buckets (id, level, expires_at_ms)
        SELECT unnest(ids), 0, 0 ON CONFLICT (id) DO NOTHING;
    FOR i IN 1 .. cardinality(ids) LOOP
        SELECT CASE WHEN b.expires_at_ms > now_ms THEN b.level ELSE 0 END INTO cur_level
            FROM keel_limit_buckets b WHERE b.id = ids[i] FOR UPDATE;
        IF kinds[i] = 'm' THEN
            step := trunc(60000000::NUMERIC * units[i] / limits[i])::BIGINT;
            IF step >= 0 THEN
                new_level := GREATEST(cur_level, now_us) + step;
            ELSE
                new_level := cur_level + step;
            END IF;
            IF reserve AND new_level - now_us > 60000000 THEN
                admitted := FALSE; refused := i - 1; wait_us := new_level - now_us - 60000000;
                RETURN;
            END IF;
        ELSE
            new_level := cur_level + units[i];
            IF reserve AND new_level > limits[i] THEN
                admitted := FALSE; refused := i - 1;
                wait_us := GREATEST(ends_at_ms[i] * 1000 - now_us, 0);
                RETURN;
            END IF;
        END IF;
        new_levels := new_levels || new_level;
    END LOOP;
    FOR i IN 1 .. cardinality(ids) LOOP
        UPDATE keel_limit_buckets
            SET level = new_levels[i],
                expires_at_ms = now_ms + CASE WHEN kinds[i] = 'm' THEN 120000
                    ELSE GREATEST(ends_at_ms[i] - now_ms, 0) + 86400000 END
            WHERE id = ids[i];
    END LOOP;
    admitted := TRUE; refused := 0; wait_us := 0;
END
$body$"#;

pub struct PostgresLedger {
    pool: PgPool,
    calls: AtomicU64,
}

impl PostgresLedger {
    /// Connects to `url` and creates the counters' table and function.
    pub async fn connect(url: &str) -> Result<PostgresLedger, LedgerError> {
        let failed = |error: sqlx::Error| LedgerError(format!("postgres: {error}"));
        // Each call holds a connection for one short statement: a few
        // serve thousands of reservations a second.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(failed)?;
        // One simple query: its statements run in one implicit
        // transaction, which holds the lock to its end.
        let setup = format!(
            "SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {CREATE_TABLE}; {CREATE_FUNCTION};"
        );
        sqlx::raw_sql(&setup).execute(&pool).await.map_err(failed)?;
        Ok(PostgresLedger {
            pool,
            calls: AtomicU64::new(0),
        })
    }

    async fn apply(&self, charges: &[Charge], reserve: bool) -> Result<Verdict, LedgerError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let swept = sqlx::query("DELETE FROM keel_limit_buckets WHERE expires_at_ms < $1")
                    .bind(keel_core::time::now_ms() - 86_400_000)
                    .execute(&pool)
                    .await;
                if let Err(error) = swept {
                    tracing::warn!(%error, "sweeping expired limit counters failed");
                }
            });
        }
        // Rows are locked in id order.
        let mut order: Vec<usize> = (0..charges.len()).collect();
        order.sort_by(|&a, &b| charges[a].bucket.cmp(&charges[b].bucket));
        let mut ids = Vec::with_capacity(charges.len());
        let mut kinds = Vec::with_capacity(charges.len());
        let mut limits = Vec::with_capacity(charges.len());
        let mut units = Vec::with_capacity(charges.len());
        let mut ends = Vec::with_capacity(charges.len());
        for &index in &order {
            let charge = &charges[index];
            let (kind, ends_at_ms) = match charge.window {
                Window::Minute => ("m", 0),
                Window::Period { ends_at_ms } => ("p", ends_at_ms),
            };
            ids.push(charge.bucket.clone());
            kinds.push(kind.to_string());
            limits.push(i64::try_from(charge.limit).unwrap_or(i64::MAX));
            units.push(charge.units);
            ends.push(ends_at_ms);
        }
        let (admitted, refused, wait_us): (bool, i32, i64) = sqlx::query_as(
            "SELECT admitted, refused, wait_us FROM keel_limits_apply($1, $2, $3, $4, $5, $6)",
        )
        .bind(ids)
        .bind(kinds)
        .bind(limits)
        .bind(units)
        .bind(ends)
        .bind(reserve)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| LedgerError(format!("postgres: {error}")))?;
        Ok(if admitted {
            Verdict::Admitted
        } else {
            Verdict::Refused {
                charge: usize::try_from(refused)
                    .ok()
                    .and_then(|position| order.get(position).copied())
                    .unwrap_or_default(),
                retry_after: std::time::Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            }
        })
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn reserve(&self, charges: &[Charge]) -> Result<Verdict, LedgerError> {
        self.apply(charges, true).await
    }

    async fn adjust(&self, charges: &[Charge]) -> Result<(), LedgerError> {
        self.apply(charges, false).await.map(|_| ())
    }
}
