//! API keys: created with a name, scopes and an optional expiry, their
//! secret returned once and kept only as a SHA-256; listed, revoked, and
//! authenticated for the services that check their callers.
//!
//! A secret is `keel_<id>_<64 hex digits>`: 256 random bits, so a fast
//! hash is enough (nothing to brute-force, unlike a password), and the id
//! in it finds the row without scanning.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use keel_core::auth::{KeyLookup, LookupError, Principal};
use keel_types::{validate, FieldError, Scope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api_key_store::{self, StoredKey};
use crate::error::Error;
use crate::registry::Registry;

pub const MAX_SCOPES: usize = 32;
const SECRET_PREFIX: &str = "keel_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// As the caller wrote them, each a valid [`Scope`].
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    /// 0: never.
    pub expires_at_ms: i64,
    /// 0: not revoked.
    pub revoked_at_ms: i64,
    pub created_by: String,
}

impl ApiKey {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at_ms == 0 && (self.expires_at_ms == 0 || now_ms < self.expires_at_ms)
    }
}

/// A new key as the caller asked for it.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at_ms: i64,
    pub actor: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The id a secret names, when it has the shape of one.
fn id_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(SECRET_PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    let hex_digits = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|byte| byte.is_ascii_hexdigit())
    };
    (hex_digits(id, 12) && hex_digits(random, 64)).then_some(id)
}

fn validate_new_key(key: &NewKey, now_ms: i64) -> Result<Vec<String>, FieldError> {
    validate::name("name", &key.name)?;
    validate::max_len("actor", &key.actor, validate::MAX_ID_BYTES)?;
    if key.scopes.is_empty() || key.scopes.len() > MAX_SCOPES {
        return Err(FieldError::new(
            "scopes",
            format!(
                "must hold 1..={MAX_SCOPES} scopes, got {}",
                key.scopes.len()
            ),
        ));
    }
    let mut scopes = Vec::with_capacity(key.scopes.len());
    for (index, text) in key.scopes.iter().enumerate() {
        let scope = Scope::parse(&format!("scopes[{index}]"), text)?.to_string();
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if key.expires_at_ms != 0 && key.expires_at_ms <= now_ms {
        return Err(FieldError::new(
            "expires_at_ms",
            format!(
                "must be in the future (or 0: never), got {}",
                key.expires_at_ms
            ),
        ));
    }
    Ok(scopes)
}

impl Registry {
    /// Creates a key; returns it with its secret, which is not kept.
    pub async fn create_api_key(&self, new_key: NewKey) -> Result<(ApiKey, String), Error> {
        let now_ms = keel_core::time::now_ms();
        let scopes = validate_new_key(&new_key, now_ms)?;
        let id = hex::encode(rand::random::<[u8; 6]>());
        let secret = format!(
            "{SECRET_PREFIX}{id}_{}",
            hex::encode(rand::random::<[u8; 32]>())
        );
        let key = ApiKey {
            id,
            name: new_key.name,
            scopes,
            created_at_ms: now_ms,
            expires_at_ms: new_key.expires_at_ms,
            revoked_at_ms: 0,
            created_by: if new_key.actor.is_empty() {
                "anonymous".to_string()
            } else {
                new_key.actor
            },
        };
        let stored = StoredKey {
            key: key.clone(),
            secret_sha256: sha256_hex(&secret),
        };
        let mut tx = self.store.begin_write().await?;
        api_key_store::insert(tx.conn(), &stored).await?;
        tx.commit().await?;
        tracing::info!(id = %key.id, name = %key.name, scopes = ?key.scopes, actor = %key.created_by, "api key created");
        Ok((key, secret))
    }

    /// Newest first; without `include_inactive`, only keys that work now.
    pub async fn list_api_keys(&self, include_inactive: bool) -> Result<Vec<ApiKey>, Error> {
        let now_ms = keel_core::time::now_ms();
        let mut conn = self.store.pool().acquire().await?;
        Ok(api_key_store::list(&mut conn)
            .await?
            .into_iter()
            .map(|stored| stored.key)
            .filter(|key| include_inactive || key.is_active(now_ms))
            .collect())
    }

    pub async fn revoke_api_key(&self, id: &str, actor: &str) -> Result<ApiKey, Error> {
        let now_ms = keel_core::time::now_ms();
        let mut tx = self.store.begin_write().await?;
        // A key revoked before keeps its first revocation time.
        api_key_store::revoke(tx.conn(), id, now_ms).await?;
        let stored = api_key_store::get(tx.conn(), id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("api key `{id}` not found")))?;
        tx.commit().await?;
        tracing::info!(%id, %actor, "api key revoked");
        Ok(stored.key)
    }

    /// The active key `secret` belongs to; `None` when it belongs to none
    /// (unknown, wrong secret, revoked, expired), which callers answer
    /// with UNAUTHENTICATED without saying which.
    pub async fn authenticate_api_key(&self, secret: &str) -> Result<Option<ApiKey>, Error> {
        let Some(id) = id_of(secret) else {
            return Ok(None);
        };
        let mut conn = self.store.pool().acquire().await?;
        let Some(stored) = api_key_store::get(&mut conn, id).await? else {
            return Ok(None);
        };
        // Hashes, not secrets, are compared: equal prefixes of two
        // SHA-256 digests tell an attacker nothing about the secret.
        let matches = stored.secret_sha256 == sha256_hex(secret);
        Ok((matches && stored.key.is_active(keel_core::time::now_ms())).then_some(stored.key))
    }
}

/// The registry checks its own callers' keys in its own store.
pub struct LocalKeys(pub Arc<Registry>);

impl KeyLookup for LocalKeys {
    fn lookup<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Principal>, LookupError>> + Send + 'a>> {
        Box::pin(async move {
            let key = self
                .0
                .authenticate_api_key(secret)
                .await
                .map_err(|error| LookupError(error.to_string()))?;
            Ok(key.map(|key| Principal::of_key(key.id, key.name, &key.scopes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_secrets_name_an_id() {
        let random = "a".repeat(64);
        assert_eq!(
            id_of(&format!("keel_0123456789ab_{random}")),
            Some("0123456789ab")
        );
        assert_eq!(id_of(&format!("keel_0123456789a_{random}")), None);
        assert_eq!(
            id_of(&format!("keel_0123456789ab_{}", "g".repeat(64))),
            None
        );
        assert_eq!(id_of(&format!("sk_0123456789ab_{random}")), None);
        assert_eq!(id_of(""), None);
    }

    #[test]
    fn new_keys_are_checked_and_scopes_normalised() {
        let now = 1_000;
        let key = |scopes: &[&str], expires_at_ms| NewKey {
            name: "ci".to_string(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            expires_at_ms,
            actor: String::new(),
        };
        assert_eq!(
            validate_new_key(&key(&["read", "query:*", "read"], 0), now).unwrap(),
            ["read", "query:*"]
        );
        assert_eq!(
            validate_new_key(&key(&[], 0), now).unwrap_err().field,
            "scopes"
        );
        assert_eq!(
            validate_new_key(&key(&["read", "root"], 0), now)
                .unwrap_err()
                .field,
            "scopes[1]"
        );
        assert_eq!(
            validate_new_key(&key(&["read"], 999), now)
                .unwrap_err()
                .field,
            "expires_at_ms"
        );
        let mut unnamed = key(&["read"], 0);
        unnamed.name = String::new();
        assert_eq!(validate_new_key(&unnamed, now).unwrap_err().field, "name");
    }

    #[test]
    fn a_key_works_until_revoked_or_expired() {
        let key = ApiKey {
            id: "0123456789ab".to_string(),
            name: "ci".to_string(),
            scopes: vec!["read".to_string()],
            created_at_ms: 0,
            expires_at_ms: 100,
            revoked_at_ms: 0,
            created_by: "t".to_string(),
        };
        assert!(key.is_active(99));
        assert!(!key.is_active(100));
        let revoked = ApiKey {
            expires_at_ms: 0,
            revoked_at_ms: 50,
            ..key
        };
        assert!(!revoked.is_active(10));
    }
}
