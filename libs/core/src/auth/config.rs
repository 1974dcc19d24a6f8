//! The `[auth]` section every service reads, and what it becomes at start:
//! the checker of incoming keys and the key this process presents.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::authenticator::{Authenticator, KeyLookup};
use super::registry_lookup::RegistryLookup;
use crate::channel::{ChannelError, ServiceChannel};
use crate::tls::ClientTls;

/// A master key shorter than this is refused: it is every scope at once.
pub const MIN_MASTER_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Check every call's key. A service refuses to listen on an address
    /// other than loopback with this off.
    pub enabled: bool,
    /// The environment variable holding the master key: every scope, and
    /// the key the services present to each other. Never in the file.
    pub master_key_env: String,
    /// Set by `keel up` and tests instead of the environment.
    #[serde(skip)]
    pub master_key: Option<String>,
    /// The registry's gRPC URL, where the other services check keys.
    pub registry_url: String,
    /// How long one check of a key is reused: a revocation takes effect
    /// within this (and one lookup's time).
    pub cache_ttl_ms: u64,
    /// While the registry is unreachable, a key it accepted within this
    /// long still works (0: none does).
    pub stale_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            master_key_env: "KEEL_MASTER_KEY".to_string(),
            master_key: None,
            registry_url: "http://127.0.0.1:7101".to_string(),
            cache_ttl_ms: 500,
            stale_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "[auth] enabled needs a master key: set {env} to a random secret of at least \
         {MIN_MASTER_KEY_BYTES} characters (e.g. `openssl rand -hex 32`)"
    )]
    MissingMasterKey { env: String },
    #[error("the master key in {env} is shorter than {MIN_MASTER_KEY_BYTES} characters")]
    ShortMasterKey { env: String },
    #[error("[auth] registry_url: {0}")]
    Channel(#[from] ChannelError),
}

impl AuthConfig {
    /// A config with authentication on and `master_key` given directly.
    pub fn with_master_key(master_key: &str) -> AuthConfig {
        AuthConfig {
            enabled: true,
            master_key: Some(master_key.to_string()),
            ..AuthConfig::default()
        }
    }

    /// The master key, given directly or read from `master_key_env`.
    pub fn read_master_key(&self) -> Result<Option<String>, AuthConfigError> {
        let key = match &self.master_key {
            Some(key) => Some(key.clone()),
            None => std::env::var(&self.master_key_env)
                .ok()
                .filter(|key| !key.is_empty()),
        };
        match key {
            Some(key) if key.len() < MIN_MASTER_KEY_BYTES => Err(AuthConfigError::ShortMasterKey {
                env: self.master_key_env.clone(),
            }),
            None if self.enabled => Err(AuthConfigError::MissingMasterKey {
                env: self.master_key_env.clone(),
            }),
            key => Ok(key),
        }
    }

    fn authenticator(
        &self,
        master_key: Option<&str>,
        lookup: Arc<dyn KeyLookup>,
    ) -> Arc<Authenticator> {
        Arc::new(Authenticator::new(
            master_key,
            lookup,
            Duration::from_millis(self.cache_ttl_ms),
            Duration::from_millis(self.stale_ms),
        ))
    }
}

/// What a running service does about keys: checks its callers' (when on)
/// and presents its own on the calls it makes.
#[derive(Clone, Default)]
pub struct Auth {
    authenticator: Option<Arc<Authenticator>>,
    own_key: Option<String>,
}

impl Auth {
    /// No checks, no key: loopback-only deployments and tests.
    pub fn off() -> Auth {
        Auth::default()
    }

    /// For the service that holds the keys: `lookup` reads its own store.
    pub fn with_lookup(
        config: &AuthConfig,
        lookup: Arc<dyn KeyLookup>,
    ) -> Result<Auth, AuthConfigError> {
        let master_key = config.read_master_key()?;
        Ok(Auth {
            authenticator: config
                .enabled
                .then(|| config.authenticator(master_key.as_deref(), lookup)),
            own_key: master_key,
        })
    }

    /// For every other service: keys are checked by the registry at
    /// `config.registry_url`, asked with the master key over `tls`.
    pub fn through_registry(config: &AuthConfig, tls: &ClientTls) -> Result<Auth, AuthConfigError> {
        let master_key = config.read_master_key()?;
        let authenticator = if config.enabled {
            let channel = ServiceChannel::lazy(
                &config.registry_url,
                Duration::from_secs(2),
                master_key.as_deref(),
                tls,
            )?;
            let lookup = Arc::new(RegistryLookup::new(channel, Duration::from_secs(2)));
            Some(config.authenticator(master_key.as_deref(), lookup))
        } else {
            None
        };
        Ok(Auth {
            authenticator,
            own_key: master_key,
        })
    }

    pub fn is_on(&self) -> bool {
        self.authenticator.is_some()
    }

    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.authenticator.clone()
    }

    /// The key this process presents when it calls another service.
    pub fn own_key(&self) -> Option<&str> {
        self.own_key.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_without_a_master_key_is_refused_naming_the_variable() {
        let config = AuthConfig {
            enabled: true,
            master_key_env: "KEEL_TEST_UNSET_MASTER_KEY".to_string(),
            ..AuthConfig::default()
        };
        let error = config.read_master_key().unwrap_err();
        assert!(
            error.to_string().contains("KEEL_TEST_UNSET_MASTER_KEY"),
            "{error}"
        );
        let short = AuthConfig {
            master_key: Some("short".to_string()),
            ..config.clone()
        };
        assert!(matches!(
            short.read_master_key(),
            Err(AuthConfigError::ShortMasterKey { .. })
        ));
    }

    #[tokio::test]
    async fn off_without_a_key_is_fine_and_a_given_key_is_presented() {
        let off = AuthConfig {
            master_key_env: "KEEL_TEST_UNSET_MASTER_KEY".to_string(),
            ..AuthConfig::default()
        };
        assert_eq!(off.read_master_key().unwrap(), None);
        let key = "k".repeat(MIN_MASTER_KEY_BYTES);
        let auth = Auth::through_registry(
            &AuthConfig::with_master_key(&key),
            &ClientTls::public_roots(),
        )
        .unwrap();
        assert!(auth.is_on());
        assert_eq!(auth.own_key(), Some(key.as_str()));
    }
}
