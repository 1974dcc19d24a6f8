//! `[serving.limits]`: request and token rates and token and cost budgets,
//! per API key and per endpoint, and where their counters live.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Where the counters live: `memory` (this process: exact for one
    /// replica), `redis` or `postgres` (shared: exact across replicas).
    pub store: LimitStore,
    /// `store = "redis"`: e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `store = "postgres"`: empty uses serving's own database_url.
    pub postgres_url: String,
    /// Every counter's id starts with it: deployments sharing one Redis
    /// or database keep apart. Empty: `keel-limits`.
    pub prefix: String,
    /// Output tokens reserved for a generator the chain sets no
    /// `max_tokens` for; the answer is capped there while token limits
    /// apply, so a reservation always covers what the call can use.
    pub default_max_output_tokens: u32,
    pub rules: Vec<LimitRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitStore {
    #[default]
    Memory,
    Redis,
    Postgres,
}

/// One rule: whose traffic it counts (`key`, `endpoint`) and its limits.
/// A query is charged against every rule that matches it, and admitted
/// only when every one has room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitRule {
    /// An API key's name; `*`: every key, each with counters of its own;
    /// unset: every key, sharing the counters.
    pub key: Option<String>,
    /// An endpoint's name; `*` and unset as for `key`.
    pub endpoint: Option<String>,
    pub requests_per_minute: Option<u64>,
    /// Prompt plus answer tokens.
    pub tokens_per_minute: Option<u64>,
    /// UTC calendar day.
    pub tokens_per_day: Option<u64>,
    /// UTC calendar month.
    pub tokens_per_month: Option<u64>,
    /// In the currency of `[serving.prices]`, per UTC day.
    pub cost_per_day: Option<f64>,
    pub cost_per_month: Option<f64>,
}

pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 1024;

impl LimitsConfig {
    /// The counters' id prefix.
    pub fn prefix(&self) -> &str {
        if self.prefix.is_empty() {
            "keel-limits"
        } else {
            &self.prefix
        }
    }

    /// The reservation for a generator without `max_tokens`.
    pub fn default_max_output_tokens(&self) -> u32 {
        if self.default_max_output_tokens == 0 {
            DEFAULT_MAX_OUTPUT_TOKENS
        } else {
            self.default_max_output_tokens
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.store == LimitStore::Redis && self.redis_url.is_empty() {
            return Err("serving.limits.redis_url must be set with store = \"redis\"".to_string());
        }
        let mut scopes = std::collections::BTreeSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let field = |name: &str| format!("serving.limits.rules[{index}].{name}");
            for (name, value) in [("key", &rule.key), ("endpoint", &rule.endpoint)] {
                if let Some(value) = value {
                    if value != "*" {
                        keel_types::validate::name("name", value)
                            .map_err(|error| format!("{}: {}", field(name), error.rule))?;
                    }
                }
            }
            let counts = [
                ("requests_per_minute", rule.requests_per_minute),
                ("tokens_per_minute", rule.tokens_per_minute),
                ("tokens_per_day", rule.tokens_per_day),
                ("tokens_per_month", rule.tokens_per_month),
            ];
            let costs = [
                ("cost_per_day", rule.cost_per_day),
                ("cost_per_month", rule.cost_per_month),
            ];
            if counts.iter().all(|(_, value)| value.is_none())
                && costs.iter().all(|(_, value)| value.is_none())
            {
                return Err(format!(
                    "serving.limits.rules[{index}]: sets no limit (requests_per_minute, tokens_per_minute, tokens_per_day, tokens_per_month, cost_per_day or cost_per_month)"
                ));
            }
            for (name, value) in counts {
                if value == Some(0) {
                    return Err(format!("{} must be positive", field(name)));
                }
            }
            for (name, value) in costs {
                if let Some(value) = value {
                    if !value.is_finite() || value <= 0.0 {
                        return Err(format!(
                            "{} must be a positive number, got {value}",
                            field(name)
                        ));
                    }
                }
            }
            if !scopes.insert((rule.key.clone(), rule.endpoint.clone())) {
                return Err(format!(
                    "serving.limits.rules[{index}]: another rule has the same key and endpoint; put their limits in one rule"
                ));
            }
        }
        Ok(())
    }
}
