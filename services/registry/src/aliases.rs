//! Alias moves (set, delete) with compare-and-set, their audit trail, and
//! the live stream of moves watchers subscribe to.

use std::sync::Arc;

use futures::Stream;
use keel_core::CancellationToken;
use keel_types::model_ref::validate_alias;
use keel_types::{validate, FieldError};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{model_not_found, stored_u32, version_not_found, Page, Registry};
use crate::{gates, pagination, store};

pub const MAX_ACTOR_BYTES: usize = 256;
pub const MAX_REASON_BYTES: usize = 4096;
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// One alias move. previous_version 0: created; new_version 0: deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEvent {
    pub model: String,
    pub alias: String,
    pub previous_version: u32,
    pub new_version: u32,
    pub actor: String,
    pub reason: String,
    pub at_ms: i64,
    /// Strictly increasing across the registry; 0 in a watch's initial state.
    pub sequence: u64,
    /// The promotion gate's rules this move failed and overrode.
    pub overridden_gates: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AliasMove {
    pub model: String,
    pub alias: String,
    /// The version to point at; ignored by `delete_alias`.
    pub version: u32,
    /// Compare-and-set: the move happens only if the alias points at this
    /// version now (0: only if it does not exist).
    pub expected_current_version: Option<u32>,
    pub actor: String,
    pub reason: String,
    /// Move even when the alias's promotion gate fails (needs a reason).
    pub override_gate: bool,
}

impl Registry {
    pub async fn set_alias(&self, request: AliasMove) -> Result<AliasEvent, Error> {
        validate_move(&request)?;
        if request.version == 0 {
            return Err(FieldError::new("version", "must be at least 1, got 0").into());
        }
        let model = request.model.as_str();
        let alias = request.alias.as_str();
        let target = i64::from(request.version);

        let _moves = self.alias_moves.lock().await;
        let mut tx = self.store.begin_write().await?;
        // First, so the counter's row lock serialises this move against
        // every other one until commit (see store::next_event_sequence).
        let sequence = store::next_event_sequence(tx.conn()).await?;
        if store::get_model(tx.conn(), model).await?.is_none() {
            return Err(model_not_found(model));
        }
        if store::get_version(tx.conn(), model, target)
            .await?
            .is_none()
        {
            return Err(version_not_found(model, target));
        }
        let current = store::get_alias(tx.conn(), model, alias)
            .await?
            .unwrap_or(0);
        check_expected(model, alias, current, request.expected_current_version)?;
        if current == target {
            // Already there: a no-op. Return the move that put the alias
            // where it is, and write no audit row (the transaction rolls
            // back when dropped, so the sequence number is not used).
            let last = store::last_event(tx.conn(), model, alias).await?;
            return match last {
                Some(row) => event_from_row(row),
                None => Err(Error::Corrupt(format!(
                    "alias `{alias}` of model `{model}` has no audit event"
                ))),
            };
        }
        let failed = gates::failed_rules(tx.conn(), model, alias, target, current).await?;
        if !failed.is_empty() && !request.override_gate {
            return Err(Error::FailedPrecondition(format!(
                "the promotion gate of @{alias} of model `{model}` refuses version {target}: {}",
                failed.join("; ")
            )));
        }
        let at_ms = keel_core::time::now_ms();
        store::upsert_alias(tx.conn(), model, alias, target, at_ms).await?;
        let row = event_row(sequence, &request, current, target, at_ms, &failed)?;
        store::insert_event(tx.conn(), &row).await?;
        store::announce_event(tx.conn(), self.store.backend(), sequence).await?;
        tx.commit().await?;
        let event = event_from_row(row)?;
        self.publish(&event).await;
        Ok(event)
    }

    pub async fn delete_alias(&self, request: AliasMove) -> Result<AliasEvent, Error> {
        validate_move(&request)?;
        let model = request.model.as_str();
        let alias = request.alias.as_str();

        let _moves = self.alias_moves.lock().await;
        let mut tx = self.store.begin_write().await?;
        let sequence = store::next_event_sequence(tx.conn()).await?;
        if store::get_model(tx.conn(), model).await?.is_none() {
            return Err(model_not_found(model));
        }
        let Some(current) = store::get_alias(tx.conn(), model, alias).await? else {
            return Err(Error::NotFound(format!(
                "alias `{alias}` of model `{model}` not found"
            )));
        };
        check_expected(model, alias, current, request.expected_current_version)?;
        let at_ms = keel_core::time::now_ms();
        store::delete_alias(tx.conn(), model, alias).await?;
        let row = event_row(sequence, &request, current, 0, at_ms, &[])?;
        store::insert_event(tx.conn(), &row).await?;
        store::announce_event(tx.conn(), self.store.backend(), sequence).await?;
        tx.commit().await?;
        let event = event_from_row(row)?;
        self.publish(&event).await;
        Ok(event)
    }

    /// The audit trail, oldest first; empty `model`/`alias` match all.
    pub async fn alias_history(
        &self,
        model: &str,
        alias: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<AliasEvent>, Error> {
        if !model.is_empty() {
            validate::name("model", model)?;
        }
        if !alias.is_empty() {
            validate_alias("alias", alias)?;
        }
        let limit = validate::page_size("page_size", page_size)?;
        let after = pagination::decode_number("page_token", page_token)?;
        let mut conn = self.store.pool().acquire().await?;
        let rows = store::list_events(&mut conn, model, alias, after, i64::from(limit)).await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => pagination::encode(&last.0.to_string()),
            _ => String::new(),
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(event_from_row(row)?);
        }
        Ok(Page {
            items: events,
            next_page_token,
        })
    }

    /// Every alias move committed from now on (of `model` when not empty),
    /// optionally preceded by one event per existing alias. The stream ends
    /// with [`Error::WatchLagged`] when the watcher falls behind, and ends
    /// quietly on shutdown.
    pub async fn watch(
        &self,
        model: &str,
        send_initial_state: bool,
    ) -> Result<impl Stream<Item = Result<AliasEvent, Error>> + Send + 'static, Error> {
        if !model.is_empty() {
            validate::name("model", model)?;
        }
        let mut initial = Vec::new();
        let receiver = {
            // Under the move lock no local move commits between the
            // subscription and the snapshot, and publication is held: no
            // move is missed. A move another replica commits meanwhile may
            // show both in the snapshot and as a live event.
            let _moves = self.alias_moves.lock().await;
            let _publication = self.feed.hold().await;
            let receiver = self.feed.subscribe();
            if send_initial_state {
                let mut conn = self.store.pool().acquire().await?;
                for (alias_model, alias, version) in store::list_aliases(&mut conn, model).await? {
                    initial.push(AliasEvent {
                        model: alias_model,
                        alias,
                        previous_version: 0,
                        new_version: stored_u32("alias version", version)?,
                        actor: String::new(),
                        reason: String::new(),
                        at_ms: keel_core::time::now_ms(),
                        sequence: 0,
                        overridden_gates: Vec::new(),
                    });
                }
            }
            receiver
        };
        let state = WatchState {
            receiver,
            model: model.to_string(),
            shutdown: self.shutdown.clone(),
            gauge: WatcherGauge::new(self.metrics.clone()),
        };
        let initial_events = futures::stream::iter(initial.into_iter().map(Ok));
        let live_events = futures::stream::unfold(Some(state), next_live_event);
        Ok(futures::StreamExt::chain(initial_events, live_events))
    }

    /// Logs a move this replica committed and publishes it (with any
    /// other replica's moves before it) to the watchers here.
    async fn publish(&self, event: &AliasEvent) {
        self.metrics.alias_moves.inc();
        tracing::info!(
            model = %event.model,
            alias = %event.alias,
            previous_version = event.previous_version,
            new_version = event.new_version,
            actor = %event.actor,
            sequence = event.sequence,
            "alias moved"
        );
        if let Err(error) = self.feed.catch_up(&self.store).await {
            // Committed all the same; the feed's periodic catch-up retries.
            tracing::warn!(%error, "could not publish the alias move to watchers yet");
        }
    }
}

struct WatchState {
    receiver: broadcast::Receiver<AliasEvent>,
    model: String,
    shutdown: CancellationToken,
    gauge: WatcherGauge,
}

/// Counts live watchers on the metrics gauge while it exists.
struct WatcherGauge(Arc<Metrics>);

impl WatcherGauge {
    fn new(metrics: Arc<Metrics>) -> WatcherGauge {
        metrics.watchers.inc();
        WatcherGauge(metrics)
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

/// One step of a watch: the next matching event, or the lag error after
/// which the stream ends (state None), or the end on shutdown.
async fn next_live_event(
    state: Option<WatchState>,
) -> Option<(Result<AliasEvent, Error>, Option<WatchState>)> {
    let mut state = state?;
    loop {
        let received = tokio::select! {
            _ = state.shutdown.cancelled() => return None,
            received = state.receiver.recv() => received,
        };
        match received {
            Ok(event) => {
                if state.model.is_empty() || event.model == state.model {
                    return Some((Ok(event), Some(state)));
                }
            }
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                state.gauge.0.watchers_lagged.inc();
                tracing::warn!(skipped, "alias watcher lagged, ending its stream");
                return Some((Err(Error::WatchLagged { skipped }), None));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn validate_move(request: &AliasMove) -> Result<(), FieldError> {
    validate::name("model", &request.model)?;
    validate_alias("alias", &request.alias)?;
    validate::max_len("actor", &request.actor, MAX_ACTOR_BYTES)?;
    validate::max_len("reason", &request.reason, MAX_REASON_BYTES)?;
    if request.override_gate && request.reason.trim().is_empty() {
        return Err(FieldError::new(
            "reason",
            "must say why when override_gate is set: it is kept in the audit trail",
        ));
    }
    Ok(())
}

/// The compare-and-set check; `current` is 0 when the alias does not exist.
fn check_expected(
    model: &str,
    alias: &str,
    current: i64,
    expected: Option<u32>,
) -> Result<(), Error> {
    let Some(expected) = expected else {
        return Ok(());
    };
    if i64::from(expected) == current {
        return Ok(());
    }
    let message = match (expected, current) {
        (0, _) => format!(
            "alias `{alias}` of model `{model}` already exists at version {current}, expected it not to exist"
        ),
        (_, 0) => format!(
            "alias `{alias}` of model `{model}` does not exist, expected it at version {expected}"
        ),
        _ => format!(
            "alias `{alias}` of model `{model}` points at version {current}, expected version {expected}"
        ),
    };
    Err(Error::FailedPrecondition(message))
}

fn event_row(
    sequence: i64,
    request: &AliasMove,
    previous_version: i64,
    new_version: i64,
    at_ms: i64,
    overridden_gates: &[String],
) -> Result<store::EventRow, Error> {
    let actor = if request.actor.trim().is_empty() {
        ANONYMOUS_ACTOR.to_string()
    } else {
        request.actor.clone()
    };
    let overridden_gates_json = serde_json::to_string(overridden_gates)
        .map_err(|error| Error::Corrupt(format!("cannot encode overridden gates: {error}")))?;
    Ok((
        sequence,
        request.model.clone(),
        request.alias.clone(),
        previous_version,
        new_version,
        actor,
        request.reason.clone(),
        at_ms,
        overridden_gates_json,
    ))
}

pub(crate) fn event_from_row(row: store::EventRow) -> Result<AliasEvent, Error> {
    let (sequence, model, alias, previous_version, new_version, actor, reason, at_ms, gates_json) =
        row;
    let overridden_gates = serde_json::from_str(&gates_json)
        .map_err(|error| Error::Corrupt(format!("stored overridden gates: {error}")))?;
    Ok(AliasEvent {
        overridden_gates,
        previous_version: stored_u32("previous version", previous_version)?,
        new_version: stored_u32("new version", new_version)?,
        sequence: u64::try_from(sequence)
            .map_err(|_| Error::Corrupt(format!("stored sequence {sequence}")))?,
        model,
        alias,
        actor,
        reason,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::registry::NewModel;
    use crate::registry::NewVersion;
    use crate::spec::{ModelKind, PromptSpec, VersionSpec};
    use keel_testkit::TestDatabase;

    /// A registry replica on `database`.
    async fn open_replica(
        database: &TestDatabase,
        watch_buffer: usize,
        shutdown: CancellationToken,
    ) -> Registry {
        Registry::open(
            database.open(crate::store::MIGRATIONS).await,
            watch_buffer,
            Metrics::unregistered(),
            shutdown,
        )
        .await
        .unwrap()
    }

    /// The PROMPT model `prompt` with `versions` versions.
    async fn add_prompt_model(registry: &Registry, versions: usize) {
        registry
            .create_model(NewModel {
                name: "prompt".into(),
                kind: ModelKind::Prompt,
                description: String::new(),
                tags: Default::default(),
            })
            .await
            .unwrap();
        for _ in 0..versions {
            let version = NewVersion {
                model: "prompt".into(),
                spec: Some(VersionSpec::Prompt(PromptSpec {
                    template: "{{ question }}".into(),
                })),
                description: String::new(),
                tags: Default::default(),
                lineage: Default::default(),
            };
            registry.create_version(version).await.unwrap();
        }
    }

    async fn registry_with_versions(
        watch_buffer: usize,
        shutdown: CancellationToken,
    ) -> (Registry, TestDatabase) {
        let database = TestDatabase::sqlite();
        let registry = open_replica(&database, watch_buffer, shutdown).await;
        add_prompt_model(&registry, 2).await;
        (registry, database)
    }

    fn move_to(version: u32) -> AliasMove {
        AliasMove {
            model: "prompt".into(),
            alias: "champion".into(),
            version,
            expected_current_version: None,
            actor: String::new(),
            reason: String::new(),
            override_gate: false,
        }
    }

    #[tokio::test]
    async fn a_lagging_watcher_gets_watch_lagged_then_the_end() {
        let (registry, _database) = registry_with_versions(2, CancellationToken::new()).await;
        let mut events = Box::pin(registry.watch("", false).await.unwrap());
        for round in 0..5u32 {
            registry.set_alias(move_to(1 + round % 2)).await.unwrap();
        }
        let first = events.next().await.unwrap();
        assert!(
            matches!(first, Err(Error::WatchLagged { skipped: 3 })),
            "{first:?}"
        );
        assert!(events.next().await.is_none());
        assert_eq!(registry.metrics.watchers_lagged.get(), 1);
        drop(events);
        assert_eq!(registry.metrics.watchers.get(), 0);
    }

    #[tokio::test]
    async fn watch_sends_initial_state_then_moves_and_ends_on_shutdown() {
        let shutdown = CancellationToken::new();
        let (registry, _database) = registry_with_versions(16, shutdown.clone()).await;
        let first_move = registry.set_alias(move_to(1)).await.unwrap();
        assert_eq!(first_move.actor, ANONYMOUS_ACTOR);
        let mut events = Box::pin(registry.watch("prompt", true).await.unwrap());
        let initial = events.next().await.unwrap().unwrap();
        assert_eq!(
            (
                initial.alias.as_str(),
                initial.previous_version,
                initial.new_version,
                initial.sequence
            ),
            ("champion", 0, 1, 0)
        );
        let second_move = registry.set_alias(move_to(2)).await.unwrap();
        let live = events.next().await.unwrap().unwrap();
        assert_eq!(live, second_move);
        assert_eq!((live.previous_version, live.new_version), (1, 2));
        assert!(live.sequence > first_move.sequence);
        shutdown.cancel();
        assert!(events.next().await.is_none());
    }

    /// Two replicas share one Postgres: the in-process lock does not cover
    /// them, the counter row lock must.
    #[tokio::test]
    async fn replicas_sharing_postgres_race_with_exactly_one_winner() {
        let database = TestDatabase::postgres().await;
        let first = Arc::new(open_replica(&database, 16, CancellationToken::new()).await);
        let second = Arc::new(open_replica(&database, 16, CancellationToken::new()).await);
        add_prompt_model(&first, 4).await;
        for round in 0..5u32 {
            let expected = if round == 0 { 0 } else { 1 + (round - 1) % 4 };
            let mut racers = Vec::new();
            for (index, replica) in [first.clone(), second.clone(), first.clone(), second.clone()]
                .into_iter()
                .enumerate()
            {
                let mut request = move_to(1 + (round + index as u32) % 4);
                request.expected_current_version = Some(expected);
                racers.push(tokio::spawn(
                    async move { replica.set_alias(request).await },
                ));
            }
            let mut winners = Vec::new();
            for racer in racers {
                match racer.await.unwrap() {
                    Ok(event) => winners.push(event),
                    Err(Error::FailedPrecondition(_)) => {}
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
            // A racer asking for the version the alias already has is a
            // no-op success; every real move must be unique.
            let moves: Vec<&AliasEvent> = winners
                .iter()
                .filter(|event| event.previous_version == expected)
                .collect();
            assert_eq!(moves.len(), 1, "round {round}: {winners:?}");
            // Park the alias where the next round expects it.
            let park = 1 + round % 4;
            let mut request = move_to(park);
            request.expected_current_version = Some(moves[0].new_version);
            first.set_alias(request).await.unwrap();
        }
        let trail = first
            .alias_history("prompt", "champion", 1000, "")
            .await
            .unwrap()
            .items;
        for pair in trail.windows(2) {
            assert!(pair[0].sequence < pair[1].sequence, "{pair:?}");
            assert_eq!(pair[0].new_version, pair[1].previous_version, "{pair:?}");
        }
    }

    /// A move committed by one replica reaches the other replica's
    /// watchers through Postgres NOTIFY, each within a second of its
    /// commit (the periodic catch-up alone takes up to five), in order.
    #[tokio::test]
    async fn a_move_on_one_replica_reaches_the_other_replicas_watchers() {
        let database = TestDatabase::postgres().await;
        let shutdown = CancellationToken::new();
        let watched = Arc::new(open_replica(&database, 16, shutdown.clone()).await);
        let moving = Arc::new(open_replica(&database, 16, shutdown.clone()).await);
        add_prompt_model(&moving, 2).await;
        let follower = tokio::spawn({
            let watched = watched.clone();
            let url = database.url.clone();
            async move { watched.follow_alias_moves(&url).await }
        });
        let mut events = Box::pin(watched.watch("prompt", false).await.unwrap());
        // The first move also shows the follower is up (by NOTIFY or by
        // its first catch-up); the next ones can only come by NOTIFY in time.
        let first = moving.set_alias(move_to(1)).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        assert_eq!(received.unwrap().unwrap().unwrap(), first);
        for round in 0..3u32 {
            let moved = moving.set_alias(move_to(2 - round % 2)).await.unwrap();
            let received = tokio::time::timeout(Duration::from_secs(1), events.next())
                .await
                .unwrap_or_else(|_| panic!("move {round} not received within a second"));
            assert_eq!(received.unwrap().unwrap(), moved);
        }
        // A move the watched replica commits itself arrives once: the
        // event after it is the next move, not a second copy.
        let own = watched.set_alias(move_to(1)).await.unwrap();
        let next = moving.set_alias(move_to(2)).await.unwrap();
        for expected in [own, next] {
            let received = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
            assert_eq!(received.unwrap().unwrap().unwrap(), expected);
        }
        shutdown.cancel();
        follower.await.unwrap();
        assert!(events.next().await.is_none());
    }

    #[test]
    fn compare_and_set_messages_say_the_current_version() {
        assert!(check_expected("m", "a", 3, None).is_ok());
        assert!(check_expected("m", "a", 3, Some(3)).is_ok());
        assert!(check_expected("m", "a", 0, Some(0)).is_ok());
        let moved = check_expected("m", "a", 3, Some(2))
            .unwrap_err()
            .to_string();
        assert_eq!(
            moved,
            "alias `a` of model `m` points at version 3, expected version 2"
        );
        let exists = check_expected("m", "a", 3, Some(0))
            .unwrap_err()
            .to_string();
        assert!(exists.contains("already exists at version 3"), "{exists}");
        let missing = check_expected("m", "a", 0, Some(4))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
