//! From a bearer secret to a [`Principal`]: the master key is checked here,
//! any other key is looked up where keys live (the registry's own store,
//! or the registry over gRPC) and the answer cached for `ttl`, so a
//! revocation takes effect within it. Concurrent calls with the same key
//! share one lookup; while the registry is unreachable, a key it knew
//! keeps working for `stale_for`, so an outage of the registry is not an
//! outage of every service.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::error::AuthError;
use super::principal::Principal;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Where keys live: the key a secret belongs to, `None` when it belongs to
/// no active key.
pub trait KeyLookup: Send + Sync + 'static {
    fn lookup<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Principal>, LookupError>> + Send + 'a>>;
}

type SecretDigest = [u8; 32];

/// One lookup's answer, shared by the calls that wait for it.
struct Slot {
    started: Instant,
    answer: OnceCell<Option<Principal>>,
}

/// More distinct secrets than this in one `ttl` (a scan with random keys)
/// empty the cache rather than grow it.
const MAX_CACHED_KEYS: usize = 10_000;

pub struct Authenticator {
    master_key: Option<SecretDigest>,
    lookup: Arc<dyn KeyLookup>,
    ttl: Duration,
    stale_for: Duration,
    cache: Mutex<HashMap<SecretDigest, Arc<Slot>>>,
}

fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

impl Authenticator {
    pub fn new(
        master_key: Option<&str>,
        lookup: Arc<dyn KeyLookup>,
        ttl: Duration,
        stale_for: Duration,
    ) -> Authenticator {
        Authenticator {
            master_key: master_key.map(digest),
            lookup,
            ttl,
            stale_for,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller `secret` authenticates, or why not.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        let key_digest = digest(secret);
        // Digests, not secrets, are compared: a matching prefix of two
        // SHA-256 digests tells nothing about the secret.
        if self.master_key == Some(key_digest) {
            return Ok(Principal::master());
        }
        let (slot, previous) = self.slot(key_digest);
        let looked_up = slot
            .answer
            .get_or_try_init(|| async { self.lookup.lookup(secret).await.map_err(|error| error.0) })
            .await;
        match looked_up {
            Ok(Some(principal)) => Ok(principal.clone()),
            Ok(None) => Err(AuthError::Invalid),
            Err(reason) => {
                // The last answer, while it is recent enough to trust.
                let trusted = previous
                    .filter(|previous| previous.started.elapsed() < self.stale_for)
                    .filter(|previous| matches!(previous.answer.get(), Some(Some(_))));
                let known = trusted
                    .as_ref()
                    .and_then(|previous| previous.answer.get().cloned().flatten());
                self.put_back(&key_digest, &slot, trusted);
                known.ok_or(AuthError::Unavailable(reason))
            }
        }
    }

    /// The current slot for a key, and the expired one it replaced.
    fn slot(&self, key_digest: SecretDigest) -> (Arc<Slot>, Option<Arc<Slot>>) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = cache.get(&key_digest) {
            if slot.started.elapsed() < self.ttl {
                return (slot.clone(), None);
            }
        }
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        let fresh = Arc::new(Slot {
            started: Instant::now(),
            answer: OnceCell::new(),
        });
        let previous = cache.insert(key_digest, fresh.clone());
        (fresh, previous)
    }

    /// Replaces a failed lookup's slot with the last good answer (expired,
    /// so the next call asks again and can still fall back on it), or
    /// with nothing.
    fn put_back(&self, key_digest: &SecretDigest, failed: &Arc<Slot>, known: Option<Arc<Slot>>) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !cache
            .get(key_digest)
            .is_some_and(|cached| Arc::ptr_eq(cached, failed))
        {
            return;
        }
        match known {
            Some(known) => cache.insert(*key_digest, known),
            None => cache.remove(key_digest),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use keel_types::Scope;

    use super::*;

    /// One key, `good`, that can be revoked, and a store that can go down.
    #[derive(Default)]
    struct Keys {
        calls: AtomicUsize,
        revoked: AtomicBool,
        down: AtomicBool,
    }

    impl KeyLookup for Keys {
        fn lookup<'a>(
            &'a self,
            secret: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<Option<Principal>, LookupError>> + Send + 'a>>
        {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(LookupError("registry unreachable".to_string()));
                }
                let active = secret == "good" && !self.revoked.load(Ordering::SeqCst);
                Ok(active.then(|| Principal {
                    key_id: "k1".to_string(),
                    name: "bot".to_string(),
                    scopes: vec![Scope::Read],
                }))
            })
        }
    }

    fn authenticator(keys: &Arc<Keys>, ttl_ms: u64, stale_ms: u64) -> Authenticator {
        Authenticator::new(
            Some("the-master-key"),
            keys.clone(),
            Duration::from_millis(ttl_ms),
            Duration::from_millis(stale_ms),
        )
    }

    #[tokio::test]
    async fn the_master_key_needs_no_lookup_and_holds_admin() {
        let keys = Arc::new(Keys::default());
        let principal = authenticator(&keys, 1000, 0)
            .authenticate("the-master-key")
            .await
            .unwrap();
        assert!(principal.grants(&Scope::Admin));
        assert_eq!(keys.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_lookup_and_unknown_keys_are_invalid() {
        let keys = Arc::new(Keys::default());
        let auth = authenticator(&keys, 60_000, 0);
        let calls = (0..20).map(|_| auth.authenticate("good"));
        for result in futures::future::join_all(calls).await {
            assert_eq!(result.unwrap().name, "bot");
        }
        assert_eq!(keys.calls.load(Ordering::SeqCst), 1);
        assert_eq!(auth.authenticate("bad").await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn a_revocation_is_seen_once_the_ttl_passes() {
        let keys = Arc::new(Keys::default());
        let auth = authenticator(&keys, 50, 0);
        assert!(auth.authenticate("good").await.is_ok());
        keys.revoked.store(true, Ordering::SeqCst);
        // Within the ttl the cached answer stands...
        assert!(auth.authenticate("good").await.is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // ...after it, the key is refused.
        assert_eq!(auth.authenticate("good").await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn an_unreachable_store_keeps_recent_keys_and_refuses_unknown_ones() {
        let keys = Arc::new(Keys::default());
        let auth = authenticator(&keys, 10, 60_000);
        assert!(auth.authenticate("good").await.is_ok());
        keys.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(auth.authenticate("good").await.unwrap().name, "bot");
        assert_eq!(auth.authenticate("good").await.unwrap().name, "bot");
        assert!(matches!(
            auth.authenticate("other").await,
            Err(AuthError::Unavailable(reason)) if reason.contains("unreachable")
        ));
    }
}
