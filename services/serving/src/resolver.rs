//! Route target -> the chain it runs now (chain spec plus its compiled
//! prompt), cached and kept fresh by a watch on the registry's alias moves.
//!
//! Entries that went through an alias (of the chain or of its prompt) are
//! evicted when an alias of that model moves and cleared whenever the watch
//! (re)connects; while the watch is down they are not cached at all, so a
//! move is never missed. Entries that went through an alias also expire
//! after a TTL, which bounds how long an announcement lost on the way
//! (a registry replica that missed another's move) can go unnoticed.
//! Entries made only of versions never change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keel_types::ModelRef;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::prompt::PromptTemplate;
use crate::registry::{GeneratorChoice, RegistryClient, VersionSpec};

/// Beyond this many entries the cache starts over; targets come from
/// endpoints, so this is only reached when endpoints churn.
const MAX_CACHED_CHAINS: usize = 10_000;
const WATCH_BACKOFF_START: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ResolvedChain {
    pub model: String,
    pub version: u32,
    pub collection: String,
    pub top_k: u32,
    pub filter: serde_json::Map<String, serde_json::Value>,
    pub prompt: Arc<PromptTemplate>,
    pub generator: String,
    pub params: keel_models::GenerationParams,
    /// The remote model the generator asks for; empty: its configured one.
    pub generator_model: String,
    /// Tried in order when the generator before is unavailable.
    pub fallbacks: Vec<GeneratorChoice>,
    pub retrieval_mode: keel_types::SearchMode,
}

struct CachedChain {
    chain: Arc<ResolvedChain>,
    /// Models whose aliases this entry went through.
    alias_models: Vec<String>,
    resolved_at: Instant,
}

impl CachedChain {
    fn is_fresh(&self, ttl: Duration) -> bool {
        self.alias_models.is_empty() || self.resolved_at.elapsed() < ttl
    }
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, CachedChain>,
    /// Bumped on every invalidation, so a resolution that raced with one
    /// does not store what it read before it.
    epoch: u64,
    watch_connected: bool,
}

/// Alias moves waiting for a slow subscriber; beyond it the oldest are
/// skipped (it is told how many).
const MOVES_BUFFER: usize = 256;

pub struct Resolver {
    registry: RegistryClient,
    state: Mutex<CacheState>,
    /// How long an alias-based entry is trusted without an announcement.
    alias_ttl: Duration,
    /// Models whose alias moved, for whoever keeps answers per version
    /// (the answer cache).
    moves: tokio::sync::broadcast::Sender<String>,
}

impl Resolver {
    pub fn new(registry: RegistryClient, alias_ttl: Duration) -> Resolver {
        Resolver {
            registry,
            state: Mutex::new(CacheState::default()),
            alias_ttl,
            moves: tokio::sync::broadcast::channel(MOVES_BUFFER).0,
        }
    }

    /// Every model whose alias moves from now on, as the watch reports it.
    pub fn subscribe_moves(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.moves.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A poisoned lock only means another thread panicked mid-update of
        // a cache; its data is still a valid map.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn resolve(&self, target: &ModelRef) -> Result<Arc<ResolvedChain>, Error> {
        let key = target.to_string();
        let epoch_at_start = {
            let state = self.lock();
            if let Some(entry) = state.entries.get(&key) {
                if entry.is_fresh(self.alias_ttl) {
                    return Ok(entry.chain.clone());
                }
            }
            state.epoch
        };
        let resolved_at = Instant::now();
        let (chain, alias_models) = self.resolve_uncached(target).await?;
        let chain = Arc::new(chain);
        let mut state = self.lock();
        let cacheable =
            state.epoch == epoch_at_start && (alias_models.is_empty() || state.watch_connected);
        if cacheable {
            if state.entries.len() >= MAX_CACHED_CHAINS {
                state.entries.clear();
            }
            state.entries.insert(
                key,
                CachedChain {
                    chain: chain.clone(),
                    alias_models,
                    resolved_at,
                },
            );
        }
        Ok(chain)
    }

    async fn resolve_uncached(
        &self,
        target: &ModelRef,
    ) -> Result<(ResolvedChain, Vec<String>), Error> {
        let chain_version = self
            .registry
            .resolve(&target.to_string())
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "route target `{target}` does not resolve: no such model, alias or version"
                ))
            })?;
        let VersionSpec::Chain(spec) = chain_version.spec else {
            return Err(Error::FailedPrecondition(format!(
                "route target `{target}` resolves to {}/{}, which is not a chain",
                chain_version.model, chain_version.version
            )));
        };
        let chain_name = format!("{}/{}", chain_version.model, chain_version.version);
        let prompt_target = ModelRef::parse("prompt", &spec.prompt).map_err(|error| {
            Error::FailedPrecondition(format!(
                "chain {chain_name} has an invalid prompt reference: {error}"
            ))
        })?;
        let prompt_version = self.registry.resolve(&spec.prompt).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "prompt `{}` of chain {chain_name} does not resolve",
                spec.prompt
            ))
        })?;
        let VersionSpec::Prompt { template } = &prompt_version.spec else {
            return Err(Error::FailedPrecondition(format!(
                "prompt `{}` of chain {chain_name} resolves to {}/{}, which is not a prompt",
                spec.prompt, prompt_version.model, prompt_version.version
            )));
        };
        let prompt =
            PromptTemplate::compile(&prompt_version.model, prompt_version.version, template)?;
        let mut alias_models = Vec::new();
        if target.is_alias() {
            alias_models.push(target.model.clone());
        }
        if prompt_target.is_alias() {
            alias_models.push(prompt_target.model.clone());
        }
        let chain = ResolvedChain {
            model: chain_version.model,
            version: chain_version.version,
            collection: spec.collection,
            top_k: spec.top_k,
            filter: spec.filter,
            prompt: Arc::new(prompt),
            generator: spec.generator,
            params: spec.params,
            generator_model: spec.generator_model,
            fallbacks: spec.fallbacks,
            retrieval_mode: spec.retrieval_mode,
        };
        Ok((chain, alias_models))
    }

    /// An alias of `model` moved: forget what went through its aliases.
    pub fn on_alias_moved(&self, model: &str) {
        {
            let mut state = self.lock();
            state.epoch += 1;
            state.entries.retain(|_, entry| {
                !entry
                    .alias_models
                    .iter()
                    .any(|alias_model| alias_model == model)
            });
        }
        // Nobody subscribed is not an error.
        let _ = self.moves.send(model.to_string());
    }

    /// Aliases may have moved while the watch was down: forget every
    /// alias-based entry and cache them again from now on.
    fn on_watch_connected(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state
            .entries
            .retain(|_, entry| entry.alias_models.is_empty());
        state.watch_connected = true;
    }

    fn on_watch_lost(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.watch_connected = false;
    }

    pub fn is_watching(&self) -> bool {
        self.lock().watch_connected
    }

    /// Follows the registry's alias moves until `shutdown`, reconnecting
    /// with backoff while the registry is down.
    pub async fn watch_aliases(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = WATCH_BACKOFF_START;
        let mut reported_down = false;
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                subscribed = self.registry.watch_aliases() => subscribed,
            };
            match subscribed {
                Ok(mut watch) => {
                    self.on_watch_connected();
                    tracing::info!("alias watch connected");
                    backoff = WATCH_BACKOFF_START;
                    reported_down = false;
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            next = watch.next_moved_model() => next,
                        };
                        match next {
                            Ok(Some(model)) => {
                                tracing::debug!(model = %model, "alias moved, evicting cached chains");
                                self.on_alias_moved(&model);
                            }
                            Ok(None) => {
                                tracing::warn!("alias watch ended by the registry, reconnecting");
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "alias watch lost, reconnecting");
                                break;
                            }
                        }
                    }
                    self.on_watch_lost();
                }
                Err(error) => {
                    if !reported_down {
                        tracing::warn!(%error, "cannot watch registry aliases, retrying with backoff");
                        reported_down = true;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    }
}
