//! Where limit counters live, and the arithmetic every store applies the
//! same way: a rate is a GCRA bucket (its level is the "theoretical
//! arrival time" in µs), a budget is a running sum for its period. A
//! reservation charges every bucket of a query or none, atomically in the
//! store, so concurrent queries on any number of replicas never take the
//! same room twice.

use std::time::Duration;

use async_trait::async_trait;

/// One minute in µs: the window of every rate.
pub const MINUTE_US: i64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `limit` units per rolling minute, at most `limit` at once (GCRA).
    Minute,
    /// `limit` units until the period named in the bucket id ends.
    Period { ends_at_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The counter's id: the scope and the limit it counts.
    pub bucket: String,
    pub window: Window,
    pub limit: u64,
    /// Negative: given back (a reservation settled below its size).
    pub units: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// `charge` (an index into the charges) has no room; none was taken.
    Refused {
        charge: usize,
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("limits store: {0}")]
pub struct LedgerError(pub String);

#[async_trait]
pub trait Ledger: Send + Sync {
    /// Charges every bucket, or none when one lacks room.
    async fn reserve(&self, charges: &[Charge]) -> Result<Verdict, LedgerError>;
    /// Charges (or, with negative units, credits) every bucket, whatever
    /// room they have: a reservation settled to the real usage.
    async fn adjust(&self, charges: &[Charge]) -> Result<(), LedgerError>;
}

/// A bucket's level after `charge` at `now_us`; `Err(wait_us)` when a
/// reservation finds no room.
pub fn next_level(level: i64, charge: &Charge, now_us: i64, reserve: bool) -> Result<i64, i64> {
    let limit = i64::try_from(charge.limit).unwrap_or(i64::MAX).max(1);
    match charge.window {
        Window::Minute => {
            let step =
                (i128::from(MINUTE_US) * i128::from(charge.units) / i128::from(limit)) as i64;
            // A credit moves the level back; a charge starts from now when
            // the bucket has drained.
            let next = if step >= 0 {
                level.max(now_us) + step
            } else {
                level + step
            };
            if reserve && next - now_us > MINUTE_US {
                Err(next - now_us - MINUTE_US)
            } else {
                Ok(next)
            }
        }
        Window::Period { ends_at_ms } => {
            let next = level + charge.units;
            if reserve && next > limit {
                Err((ends_at_ms * 1000 - now_us).max(0))
            } else {
                Ok(next)
            }
        }
    }
}

/// How long a counter is worth keeping after it was last charged.
pub fn keep_for_ms(window: Window, now_ms: i64) -> i64 {
    match window {
        Window::Minute => 2 * MINUTE_US / 1000,
        // A day past the period's end, for clock skew between replicas.
        Window::Period { ends_at_ms } => (ends_at_ms - now_ms).max(0) + 86_400_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u64, units: i64) -> Charge {
        Charge {
            bucket: "b".to_string(),
            window: Window::Minute,
            limit,
            units,
        }
    }

    #[test]
    fn a_rate_admits_its_limit_at_once_then_one_per_interval() {
        let now = 1_000_000_000;
        let mut level = 0;
        for _ in 0..600 {
            level = next_level(level, &rate(600, 1), now, true).unwrap();
        }
        // The 601st waits one interval (100 ms at 600 per minute).
        assert_eq!(next_level(level, &rate(600, 1), now, true), Err(100_000));
        assert!(next_level(level, &rate(600, 1), now + 100_000, true).is_ok());
    }

    #[test]
    fn a_credit_gives_room_back() {
        let now = 5_000_000;
        let level = next_level(0, &rate(1000, 1000), now, true).unwrap();
        assert!(next_level(level, &rate(1000, 1), now, true).is_err());
        let level = next_level(level, &rate(1000, -400), now, false).unwrap();
        let level = next_level(level, &rate(1000, 400), now, true).unwrap();
        assert!(next_level(level, &rate(1000, 1), now, true).is_err());
    }

    #[test]
    fn a_budget_is_full_until_its_period_ends() {
        let budget = Charge {
            bucket: "b".to_string(),
            window: Window::Period { ends_at_ms: 10_000 },
            limit: 100,
            units: 60,
        };
        let level = next_level(0, &budget, 4_000_000, true).unwrap();
        assert_eq!(level, 60);
        assert_eq!(next_level(level, &budget, 4_000_000, true), Err(6_000_000));
        // Settling above the reservation is never refused.
        assert_eq!(next_level(level, &budget, 4_000_000, false), Ok(120));
    }
}
