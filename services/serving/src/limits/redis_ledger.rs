//! Counters in Redis, shared by every replica: one Lua script checks and
//! charges all of a query's buckets at once (Redis runs a script
//! atomically), on the Redis server's clock. The arithmetic is
//! `ledger::next_level`'s, in Lua. A single Redis node: the buckets of one
//! query may live in different hash slots.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;

use super::ledger::{Charge, Ledger, LedgerError, Verdict, Window};

/// ARGV[1]: 1 to reserve, 0 to adjust; then per key: kind (`m` a rate per
/// minute, `p` a budget for a period), limit, units, the period's end in ms.
const APPLY: &str = r#"
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)
local reserve = ARGV[1] == '1'
local levels = {}
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 4
  local kind = ARGV[base + 1]
  local limit = tonumber(ARGV[base + 2])
  local units = tonumber(ARGV[base + 3])
  local ends_at_ms = tonumber(ARGV[base + 4])
  local level = tonumber(redis.call('GET', KEYS[i]) or '0')
  local next_level
  if kind == 'm' then
    local quotient = 60000000 * units / limit
    local step
    if quotient >= 0 then step = math.floor(quotient) else step = math.ceil(quotient) end
    if step >= 0 then
      next_level = math.max(level, now_us) + step
    else
      next_level = level + step
    end
    if reserve and next_level - now_us > 60000000 then
      return {0, i - 1, next_level - now_us - 60000000}
    end
  else
    next_level = level + units
    if reserve and next_level > limit then
      return {0, i - 1, math.max(ends_at_ms * 1000 - now_us, 0)}
    end
  end
  levels[i] = next_level
end
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 4
  local keep_ms
  if ARGV[base + 1] == 'm' then
    keep_ms = 120000
  else
    keep_ms = math.max(tonumber(ARGV[base + 4]) - now_ms, 0) + 86400000
  end
  redis.call('SET', KEYS[i], string.format('%d', levels[i]), 'PX', keep_ms)
end
return {1, 0, 0}
"#;

pub struct RedisLedger {
    connection: ConnectionManager,
    script: Script,
}

impl RedisLedger {
    /// Connects (and keeps reconnecting) to `url`.
    pub async fn connect(url: &str) -> Result<RedisLedger, LedgerError> {
        let client = redis::Client::open(url)
            .map_err(|error| LedgerError(format!("redis_url {url}: {error}")))?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(|error| LedgerError(format!("cannot reach redis at {url}: {error}")))?;
        Ok(RedisLedger {
            connection,
            script: Script::new(APPLY),
        })
    }

    async fn apply(&self, charges: &[Charge], reserve: bool) -> Result<Verdict, LedgerError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(if reserve { 1 } else { 0 });
        for charge in charges {
            let (kind, ends_at_ms) = match charge.window {
                Window::Minute => ("m", 0),
                Window::Period { ends_at_ms } => ("p", ends_at_ms),
            };
            invocation
                .key(&charge.bucket)
                .arg(kind)
                .arg(charge.limit)
                .arg(charge.units)
                .arg(ends_at_ms);
        }
        let mut connection = self.connection.clone();
        let (admitted, charge, wait_us): (i64, i64, i64) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| LedgerError(error.to_string()))?;
        Ok(if admitted == 1 {
            Verdict::Admitted
        } else {
            Verdict::Refused {
                charge: usize::try_from(charge).unwrap_or_default(),
                retry_after: std::time::Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            }
        })
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn reserve(&self, charges: &[Charge]) -> Result<Verdict, LedgerError> {
        self.apply(charges, true).await
    }

    async fn adjust(&self, charges: &[Charge]) -> Result<(), LedgerError> {
        self.apply(charges, false).await.map(|_| ())
    }
}
