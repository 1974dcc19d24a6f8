//! `[serving.cache]`: which endpoints answer from the cache, how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Embeds questions for the semantic cache (a vector-index embedder).
    /// Empty: the vector index's default.
    pub embedder: String,
    /// The longest a lookup may delay a query; slower is a miss.
    pub lookup_timeout_ms: u64,
    /// By endpoint name; `*` for every endpoint without its own entry.
    pub endpoints: BTreeMap<String, EndpointCache>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointCache {
    /// Answer again what the same rendered prompt and parameters were
    /// answered on the same chain version.
    pub exact: bool,
    /// Answer a question whose embedding is at least this similar (cosine,
    /// 0..=1) to one answered on the same chain version, skipping
    /// retrieval too. 0: off.
    pub semantic_threshold: f32,
    /// How long an answer is served from the cache.
    pub ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            embedder: String::new(),
            lookup_timeout_ms: 250,
            endpoints: BTreeMap::new(),
        }
    }
}

impl Default for EndpointCache {
    fn default() -> EndpointCache {
        EndpointCache {
            exact: true,
            semantic_threshold: 0.0,
            ttl_ms: 3_600_000,
        }
    }
}

impl CacheConfig {
    /// The settings of `endpoint`, when it caches.
    pub fn of(&self, endpoint: &str) -> Option<&EndpointCache> {
        self.endpoints
            .get(endpoint)
            .or_else(|| self.endpoints.get("*"))
            .filter(|settings| settings.exact || settings.semantic_threshold > 0.0)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.lookup_timeout_ms == 0 {
            return Err("serving.cache.lookup_timeout_ms must be positive".to_string());
        }
        for (endpoint, settings) in &self.endpoints {
            let field = |name: &str| format!("serving.cache.endpoints.{endpoint}.{name}");
            if endpoint != "*" {
                keel_types::validate::name("endpoint", endpoint).map_err(|error| {
                    format!("serving.cache.endpoints.{endpoint}: {}", error.rule)
                })?;
            }
            if !(0.0..=1.0).contains(&settings.semantic_threshold) {
                return Err(format!(
                    "{} must be within 0..=1, got {}",
                    field("semantic_threshold"),
                    settings.semantic_threshold
                ));
            }
            if settings.ttl_ms == 0 {
                return Err(format!("{} must be positive", field("ttl_ms")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_takes_its_own_settings_or_the_star() {
        let config: CacheConfig = toml::from_str(
            "[endpoints.support]\nsemantic_threshold = 0.9\n[endpoints.sales]\nexact = false\n[endpoints.\"*\"]\nttl_ms = 60000\n",
        )
        .unwrap();
        let support = config.of("support").unwrap();
        assert!(support.exact && support.semantic_threshold == 0.9);
        // Neither exact nor semantic: no cache.
        assert!(config.of("sales").is_none());
        assert_eq!(config.of("other").unwrap().ttl_ms, 60_000);
        assert!(CacheConfig::default().of("support").is_none());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut config = CacheConfig::default();
        config.endpoints.insert(
            "support".to_string(),
            EndpointCache {
                semantic_threshold: 1.5,
                ..EndpointCache::default()
            },
        );
        assert_eq!(
            config.check().unwrap_err(),
            "serving.cache.endpoints.support.semantic_threshold must be within 0..=1, got 1.5"
        );
    }
}
