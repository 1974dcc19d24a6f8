//! Limits and budgets per API key and per endpoint: requests and tokens
//! per minute, tokens and cost per UTC day and month. A query is charged
//! one request when it arrives, and its tokens (the rendered prompt plus
//! every output token it may use) and their price when it is about to
//! generate; after the answer the reservation is settled to the real
//! usage. Every charge is all-or-nothing in the store, so however many
//! replicas share it, admitted work never exceeds a limit and a budget is
//! overrun by at most what one answer used beyond its reservation.

pub mod calendar;
pub mod config;
pub mod ledger;
pub mod memory;
pub mod postgres_ledger;
pub mod redis_ledger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use config::{LimitRule, LimitStore, LimitsConfig};
use ledger::{Charge, Ledger, Verdict, Window};

use keel_core::metrics::{MetricsError, ServiceMetrics};
use prometheus::IntCounterVec;

use crate::error::Error;
use crate::metrics::ModelPrice;

/// Whose query it is, as rules match it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The API key's name (`master` for the master key, `anonymous` with
    /// authentication off).
    pub key: &'a str,
    pub endpoint: &'a str,
}

/// What one query may still use: its tokens and cost, charged ahead.
#[derive(Debug)]
pub struct Reservation {
    charges: Vec<(Charge, Unit)>,
    tokens: u64,
    cost_micros: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Request,
    Token,
    /// Millionths of the price currency.
    CostMicros,
}

#[derive(Clone)]
pub struct Limiter {
    rules: Arc<Vec<LimitRule>>,
    ledger: Arc<dyn Ledger>,
    prices: Arc<BTreeMap<String, ModelPrice>>,
    default_max_output_tokens: u32,
    prefix: Arc<str>,
    /// Refused queries by the limit that refused them.
    refusals: Option<IntCounterVec>,
}

impl Limiter {
    /// Opens the configured store (none is touched without rules).
    /// `database_url`: serving's own, the default Postgres.
    pub async fn open(
        config: &LimitsConfig,
        database_url: &str,
        prices: BTreeMap<String, ModelPrice>,
    ) -> Result<Limiter, Error> {
        config.check().map_err(Error::Config)?;
        let ledger = open_ledger(config, database_url).await?;
        if !config.rules.is_empty() {
            tracing::info!(rules = config.rules.len(), store = ?config.store, "limits on");
        }
        Ok(Limiter {
            rules: Arc::new(config.rules.clone()),
            ledger,
            prices: Arc::new(prices),
            default_max_output_tokens: config.default_max_output_tokens(),
            prefix: Arc::from(config.prefix()),
            refusals: None,
        })
    }

    /// No rules: every query is admitted.
    pub fn off() -> Limiter {
        Limiter {
            rules: Arc::new(Vec::new()),
            ledger: Arc::new(memory::MemoryLedger::default()),
            prices: Arc::new(BTreeMap::new()),
            default_max_output_tokens: config::DEFAULT_MAX_OUTPUT_TOKENS,
            prefix: Arc::from("keel-limits"),
            refusals: None,
        }
    }

    /// Counts refusals on `/metrics`, by the limit that refused.
    pub fn with_metrics(mut self, registry: &ServiceMetrics) -> Result<Limiter, MetricsError> {
        self.refusals = Some(registry.counter_vec(
            "keel_serving_limit_refusals_total",
            "Queries refused by [serving.limits], by the limit that refused them.",
            &["limit"],
        )?);
        Ok(self)
    }

    /// Charges one request to every matching requests-per-minute rule.
    pub async fn admit(&self, caller: Caller<'_>) -> Result<(), Error> {
        let charges = self.charges(caller, 1, 0, |unit| unit == Unit::Request);
        if charges.is_empty() {
            return Ok(());
        }
        self.reserve_all(caller, &charges).await
    }

    /// Whether a rule counts `caller`'s tokens or cost: then its answers
    /// are capped at the reserved output tokens.
    pub fn counts_tokens(&self, caller: Caller<'_>) -> bool {
        self.rules.iter().any(|rule| {
            matches(rule, caller)
                && (rule.tokens_per_minute.is_some()
                    || rule.tokens_per_day.is_some()
                    || rule.tokens_per_month.is_some()
                    || rule.cost_per_day.is_some()
                    || rule.cost_per_month.is_some())
        })
    }

    /// The output tokens reserved for a generator without `max_tokens`.
    pub fn default_max_output_tokens(&self) -> u32 {
        self.default_max_output_tokens
    }

    /// The most `generators` may cost for `input_tokens` in and
    /// `output_tokens` out: the dearest one's price.
    pub fn most_expensive(
        &self,
        generators: &[&str],
        input_tokens: u32,
        output_tokens: u32,
    ) -> f64 {
        generators
            .iter()
            .map(|generator| {
                crate::metrics::cost_usd(&self.prices, generator, input_tokens, output_tokens)
            })
            .fold(0.0, f64::max)
    }

    /// Reserves `tokens` and `cost` against every matching token and cost
    /// rule; `None` when none matches.
    pub async fn reserve(
        &self,
        caller: Caller<'_>,
        tokens: u64,
        cost: f64,
    ) -> Result<Option<Reservation>, Error> {
        let cost_micros = micros(cost);
        let charges = self.charges(caller, tokens, cost_micros, |unit| unit != Unit::Request);
        if charges.is_empty() {
            return Ok(None);
        }
        self.reserve_all(caller, &charges).await?;
        Ok(Some(Reservation {
            charges,
            tokens,
            cost_micros,
        }))
    }

    /// Brings a reservation to what the query really used. A failure is
    /// logged: the query has been answered, and the counters are off by
    /// at most its reservation.
    pub async fn settle(&self, reservation: Reservation, tokens: u64, cost: f64) {
        let token_delta = tokens as i64 - reservation.tokens as i64;
        let cost_delta = micros(cost) as i64 - reservation.cost_micros as i64;
        let adjustments: Vec<Charge> = reservation
            .charges
            .into_iter()
            .filter_map(|(charge, unit)| {
                let units = match unit {
                    Unit::Token => token_delta,
                    Unit::CostMicros => cost_delta,
                    Unit::Request => 0,
                };
                (units != 0).then_some(Charge { units, ..charge })
            })
            .collect();
        if adjustments.is_empty() {
            return;
        }
        if let Err(error) = self.ledger.adjust(&adjustments).await {
            tracing::warn!(%error, "settling a token reservation failed");
        }
    }

    async fn reserve_all(
        &self,
        caller: Caller<'_>,
        charges: &[(Charge, Unit)],
    ) -> Result<(), Error> {
        let plain: Vec<Charge> = charges.iter().map(|(charge, _)| charge.clone()).collect();
        match self.ledger.reserve(&plain).await {
            Ok(Verdict::Admitted) => Ok(()),
            Ok(Verdict::Refused {
                charge,
                retry_after,
            }) => {
                let (refused, unit) = &charges[charge.min(charges.len() - 1)];
                if let Some(refusals) = &self.refusals {
                    refusals.with_label_values(&[label(refused, *unit)]).inc();
                }
                Err(Error::RateLimited {
                    message: refusal(caller, refused, *unit),
                    retry_after,
                })
            }
            Err(error) => Err(Error::Unavailable(format!(
                "{error}: limits cannot be checked, so nothing is admitted"
            ))),
        }
    }

    /// Every bucket `caller` is charged in, with the units of its kind.
    fn charges(
        &self,
        caller: Caller<'_>,
        tokens: u64,
        cost_micros: u64,
        wanted: impl Fn(Unit) -> bool,
    ) -> Vec<(Charge, Unit)> {
        let now_ms = keel_core::time::now_ms();
        let day = calendar::day_of(now_ms);
        let month = calendar::month_of(now_ms);
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let cost = i64::try_from(cost_micros).unwrap_or(i64::MAX);
        let mut charges = Vec::new();
        for rule in self.rules.iter().filter(|rule| matches(rule, caller)) {
            let scope = format!(
                "{}:key={}:endpoint={}",
                self.prefix,
                scope_part(rule.key.as_deref(), caller.key),
                scope_part(rule.endpoint.as_deref(), caller.endpoint)
            );
            let limits = [
                (
                    rule.requests_per_minute,
                    Unit::Request,
                    "rpm".to_string(),
                    Window::Minute,
                    1,
                ),
                (
                    rule.tokens_per_minute,
                    Unit::Token,
                    "tpm".to_string(),
                    Window::Minute,
                    tokens,
                ),
                (
                    rule.tokens_per_day,
                    Unit::Token,
                    format!("tokens-day:{}", day.name),
                    Window::Period {
                        ends_at_ms: day.ends_at_ms,
                    },
                    tokens,
                ),
                (
                    rule.tokens_per_month,
                    Unit::Token,
                    format!("tokens-month:{}", month.name),
                    Window::Period {
                        ends_at_ms: month.ends_at_ms,
                    },
                    tokens,
                ),
                (
                    rule.cost_per_day.map(micros),
                    Unit::CostMicros,
                    format!("cost-day:{}", day.name),
                    Window::Period {
                        ends_at_ms: day.ends_at_ms,
                    },
                    cost,
                ),
                (
                    rule.cost_per_month.map(micros),
                    Unit::CostMicros,
                    format!("cost-month:{}", month.name),
                    Window::Period {
                        ends_at_ms: month.ends_at_ms,
                    },
                    cost,
                ),
            ];
            for (limit, unit, kind, window, units) in limits {
                let Some(limit) = limit else { continue };
                if !wanted(unit) {
                    continue;
                }
                charges.push((
                    Charge {
                        bucket: format!("{scope}:{kind}"),
                        window,
                        limit,
                        units,
                    },
                    unit,
                ));
            }
        }
        charges
    }
}

/// The configured store, connected (none is touched without rules).
async fn open_ledger(config: &LimitsConfig, database_url: &str) -> Result<Arc<dyn Ledger>, Error> {
    let unreachable =
        |error: ledger::LedgerError| Error::Config(format!("serving.limits: {error}"));
    Ok(match (config.rules.is_empty(), config.store) {
        (true, _) | (false, LimitStore::Memory) => Arc::new(memory::MemoryLedger::default()),
        (false, LimitStore::Redis) => Arc::new(
            redis_ledger::RedisLedger::connect(&config.redis_url)
                .await
                .map_err(unreachable)?,
        ),
        (false, LimitStore::Postgres) => {
            let url = if config.postgres_url.is_empty() {
                database_url.to_string()
            } else {
                config.postgres_url.clone()
            };
            if !url.starts_with("postgres") {
                return Err(Error::Config(
                    "serving.limits.postgres_url must be set with store = \"postgres\" when serving's database is not Postgres".to_string(),
                ));
            }
            Arc::new(
                postgres_ledger::PostgresLedger::connect(&url)
                    .await
                    .map_err(unreachable)?,
            )
        }
    })
}

fn matches(rule: &LimitRule, caller: Caller<'_>) -> bool {
    let fits = |pattern: &Option<String>, value: &str| match pattern.as_deref() {
        None | Some("*") => true,
        Some(name) => name == value,
    };
    fits(&rule.key, caller.key) && fits(&rule.endpoint, caller.endpoint)
}

/// The part of a bucket id a pattern gives: shared (`*all`) when unset,
/// the caller's own value for `*` or a name.
fn scope_part<'a>(pattern: Option<&str>, value: &'a str) -> &'a str {
    match pattern {
        None => "*all",
        Some(_) => value,
    }
}

fn micros(cost: f64) -> u64 {
    if cost.is_finite() && cost > 0.0 {
        (cost * 1_000_000.0).round() as u64
    } else {
        0
    }
}

/// Names the limit, whose it is and how much a query needed.
fn refusal(caller: Caller<'_>, charge: &Charge, unit: Unit) -> String {
    let what = match (unit, charge.window) {
        (Unit::Request, _) => format!("{} requests per minute", charge.limit),
        (Unit::Token, Window::Minute) => format!("{} tokens per minute", charge.limit),
        (Unit::Token, Window::Period { .. }) => {
            format!(
                "a budget of {} tokens ({})",
                charge.limit,
                period_of(&charge.bucket)
            )
        }
        (Unit::CostMicros, _) => format!(
            "a budget of {:.2} ({})",
            charge.limit as f64 / 1_000_000.0,
            period_of(&charge.bucket)
        ),
    };
    let needed = match unit {
        _ if charge.units > i64::try_from(charge.limit).unwrap_or(i64::MAX) => {
            format!(
                "; this query needs {}, more than the limit itself",
                charge.units
            )
        }
        Unit::Request => String::new(),
        Unit::Token => format!("; this query reserves {} tokens", charge.units),
        Unit::CostMicros => format!(
            "; this query reserves {:.4}",
            charge.units as f64 / 1_000_000.0
        ),
    };
    format!(
        "limit reached: {what} for key `{}` on endpoint `{}`{needed}",
        caller.key, caller.endpoint
    )
}

/// The metrics label of a limit.
fn label(charge: &Charge, unit: Unit) -> &'static str {
    let daily = charge.bucket.contains("-day:");
    match (unit, charge.window) {
        (Unit::Request, _) => "requests_per_minute",
        (Unit::Token, Window::Minute) => "tokens_per_minute",
        (Unit::Token, Window::Period { .. }) if daily => "tokens_per_day",
        (Unit::Token, Window::Period { .. }) => "tokens_per_month",
        (Unit::CostMicros, _) if daily => "cost_per_day",
        (Unit::CostMicros, _) => "cost_per_month",
    }
}

/// `day 2026-12-01` from a bucket id ending in `tokens-day:2026-12-01`.
fn period_of(bucket: &str) -> String {
    let mut parts = bucket.rsplitn(2, ':');
    let period = parts.next().unwrap_or_default();
    let kind = parts.next().unwrap_or_default();
    let span = if kind.ends_with("-day") {
        "day"
    } else {
        "month"
    };
    format!("{span} {period}")
}

/// An upper estimate of a prompt's tokens, made before any tokenizer sees
/// it: subword tokenizers give English text about four bytes a token, and
/// rarely fewer than three; the settlement corrects it to the generator's
/// own count.
pub fn estimate_input_tokens(prompt: &str) -> u32 {
    u32::try_from(prompt.len().div_ceil(3))
        .unwrap_or(u32::MAX)
        .saturating_add(16)
}

/// What a refused caller is told to wait, rounded up to whole seconds.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rules: Vec<LimitRule>) -> Limiter {
        Limiter {
            rules: Arc::new(rules),
            ..Limiter::off()
        }
    }

    fn caller<'a>(key: &'a str, endpoint: &'a str) -> Caller<'a> {
        Caller { key, endpoint }
    }

    #[tokio::test]
    async fn each_key_has_its_own_rate_with_a_star_and_all_share_without() {
        let per_key = limiter(vec![LimitRule {
            key: Some("*".to_string()),
            requests_per_minute: Some(2),
            ..LimitRule::default()
        }]);
        for _ in 0..2 {
            per_key.admit(caller("a", "support")).await.unwrap();
        }
        per_key.admit(caller("b", "support")).await.unwrap();
        let refused = per_key.admit(caller("a", "sales")).await.unwrap_err();
        let Error::RateLimited {
            message,
            retry_after,
        } = refused
        else {
            panic!("{refused:?}")
        };
        assert_eq!(
            message,
            "limit reached: 2 requests per minute for key `a` on endpoint `sales`"
        );
        // One interval of 30 s, less the moments the test took.
        assert!(retry_after > Duration::from_secs(29) && retry_after <= Duration::from_secs(30));

        let shared = limiter(vec![LimitRule {
            requests_per_minute: Some(2),
            ..LimitRule::default()
        }]);
        shared.admit(caller("a", "support")).await.unwrap();
        shared.admit(caller("b", "sales")).await.unwrap();
        assert!(shared.admit(caller("c", "other")).await.is_err());
    }

    #[tokio::test]
    async fn a_rule_for_one_key_or_endpoint_leaves_the_others_alone() {
        let limiter = limiter(vec![LimitRule {
            key: Some("ci".to_string()),
            endpoint: Some("support".to_string()),
            requests_per_minute: Some(1),
            ..LimitRule::default()
        }]);
        limiter.admit(caller("ci", "support")).await.unwrap();
        assert!(limiter.admit(caller("ci", "support")).await.is_err());
        limiter.admit(caller("ci", "sales")).await.unwrap();
        limiter.admit(caller("web", "support")).await.unwrap();
        assert!(!limiter.counts_tokens(caller("ci", "support")));
    }

    #[tokio::test]
    async fn a_budget_reserves_then_settles_to_what_was_used() {
        let limiter = limiter(vec![LimitRule {
            key: Some("ci".to_string()),
            tokens_per_day: Some(1000),
            ..LimitRule::default()
        }]);
        let who = caller("ci", "support");
        assert!(limiter.counts_tokens(who));
        let first = limiter.reserve(who, 600, 0.0).await.unwrap().unwrap();
        let refused = limiter.reserve(who, 600, 0.0).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("limit reached: a budget of 1000 tokens (day "),
            "{refused}"
        );
        // The first answer used 100 of its 600: 500 come back.
        limiter.settle(first, 100, 0.0).await;
        let second = limiter.reserve(who, 600, 0.0).await.unwrap().unwrap();
        assert!(limiter.reserve(who, 301, 0.0).await.is_err());
        limiter.settle(second, 600, 0.0).await;
        // A rate rule alone reserves nothing.
        assert!(limiter
            .reserve(caller("web", "support"), 10, 0.0)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_cost_budget_counts_the_price() {
        let limiter = limiter(vec![LimitRule {
            cost_per_month: Some(0.01),
            ..LimitRule::default()
        }]);
        let who = caller("ci", "support");
        let held = limiter.reserve(who, 10, 0.006).await.unwrap().unwrap();
        let refused = limiter.reserve(who, 10, 0.006).await.unwrap_err();
        assert!(
            refused.to_string().contains("a budget of 0.01 (month "),
            "{refused}"
        );
        limiter.settle(held, 10, 0.001).await;
        assert!(limiter.reserve(who, 10, 0.006).await.is_ok());
    }

    #[test]
    fn prompts_are_estimated_above_their_token_count() {
        assert_eq!(estimate_input_tokens(""), 16);
        assert_eq!(estimate_input_tokens(&"word ".repeat(300)), 516);
    }
}
