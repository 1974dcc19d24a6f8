//! Counters in this process: exact for one replica, and what `keel up`
//! uses. (governor's GCRA cannot give back the unused part of a token
//! reservation, so the same arithmetic as the shared stores is used here.)

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::ledger::{keep_for_ms, next_level, Charge, Ledger, LedgerError, Verdict};

/// Expired counters are swept once the map grows past this.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct MemoryLedger {
    /// Bucket id → (level, expires at ms).
    buckets: Mutex<HashMap<String, (i64, i64)>>,
}

impl MemoryLedger {
    fn apply(&self, charges: &[Charge], reserve: bool) -> Result<Verdict, LedgerError> {
        let now_ms = keel_core::time::now_ms();
        let now_us = now_ms * 1000;
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| LedgerError("counters poisoned".to_string()))?;
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, (_, expires_at_ms)| *expires_at_ms > now_ms);
        }
        let mut levels = Vec::with_capacity(charges.len());
        for (index, charge) in charges.iter().enumerate() {
            let level = match buckets.get(&charge.bucket) {
                Some((level, expires_at_ms)) if *expires_at_ms > now_ms => *level,
                _ => 0,
            };
            match next_level(level, charge, now_us, reserve) {
                Ok(next) => levels.push(next),
                Err(wait_us) => {
                    return Ok(Verdict::Refused {
                        charge: index,
                        retry_after: std::time::Duration::from_micros(wait_us as u64),
                    })
                }
            }
        }
        for (charge, level) in charges.iter().zip(levels) {
            let expires_at_ms = now_ms + keep_for_ms(charge.window, now_ms);
            buckets.insert(charge.bucket.clone(), (level, expires_at_ms));
        }
        Ok(Verdict::Admitted)
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn reserve(&self, charges: &[Charge]) -> Result<Verdict, LedgerError> {
        self.apply(charges, true)
    }

    async fn adjust(&self, charges: &[Charge]) -> Result<(), LedgerError> {
        self.apply(charges, false).map(|_| ())
    }
}
