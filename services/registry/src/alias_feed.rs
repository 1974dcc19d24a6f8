//! Publishes committed alias moves to this process's watchers, in sequence
//! order, whichever replica committed them.
//!
//! The audit table is the feed: every move has a sequence number, handed out
//! and committed in order (see `store::next_event_sequence`), so "publish
//! every event after the last one published here" never skips a move and
//! never repeats one. A local commit catches up at once; on Postgres a move
//! committed by another replica arrives as a `NOTIFY` (sent inside the
//! move's transaction, so only once it commits), and a periodic catch-up
//! covers notifications lost while the listening connection was down.

use std::time::Duration;

use keel_core::CancellationToken;
use keel_store::{Backend, Store};
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, Mutex, MutexGuard};

use crate::aliases::{event_from_row, AliasEvent};
use crate::error::Error;
use crate::store;

/// The Postgres channel alias moves are announced on; the payload is the
/// move's sequence number (informational: the catch-up reads the table).
pub const NOTIFY_CHANNEL: &str = "keel_alias_moves";
/// Catch up this often even without a notification.
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(5);
const LISTEN_RETRY: Duration = Duration::from_secs(1);
const EVENTS_PER_READ: i64 = 500;

pub struct AliasFeed {
    sender: broadcast::Sender<AliasEvent>,
    /// The sequence of the last event published here. Held while
    /// publishing, so events go out one catch-up at a time, in order.
    published: Mutex<u64>,
}

impl AliasFeed {
    /// A feed that publishes moves committed from now on.
    pub async fn open(store: &Store, buffer: usize) -> Result<AliasFeed, Error> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let mut conn = store.pool().acquire().await?;
        let last = store::last_event_sequence(&mut conn).await?;
        Ok(AliasFeed {
            sender,
            published: Mutex::new(sequence_u64(last)?),
        })
    }

    /// Holds publication still: a watcher subscribing under this guard and
    /// reading the aliases misses no move that commits after its read.
    pub async fn hold(&self) -> MutexGuard<'_, u64> {
        self.published.lock().await
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AliasEvent> {
        self.sender.subscribe()
    }

    /// Publishes every committed event after the last one published here;
    /// returns how many.
    pub async fn catch_up(&self, store: &Store) -> Result<usize, Error> {
        let mut published = self.published.lock().await;
        let mut conn = store.pool().acquire().await?;
        let mut count = 0;
        loop {
            let after = i64::try_from(*published)
                .map_err(|_| Error::Corrupt(format!("published sequence {}", *published)))?;
            let rows = store::list_events(&mut conn, "", "", after, EVENTS_PER_READ).await?;
            let full = rows.len() as i64 == EVENTS_PER_READ;
            for row in rows {
                let event = event_from_row(row)?;
                *published = event.sequence;
                count += 1;
                // An error only means nobody watches right now.
                let _ = self.sender.send(event);
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// Catches up until `shutdown`: on Postgres on every notification of a
    /// move another replica committed, and on every backend periodically
    /// (a local catch-up that failed after its commit is retried there).
    pub async fn follow(&self, store: &Store, database_url: &str, shutdown: CancellationToken) {
        if store.backend() != Backend::Postgres {
            let mut ticks = tokio::time::interval(CATCH_UP_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if let Err(error) = self.catch_up(store).await {
                    tracing::warn!(%error, "alias feed catch-up failed");
                }
            }
        }
        let mut reported_down = false;
        loop {
            match self.listen(store, database_url, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    if !reported_down {
                        tracing::warn!(%error, "cannot listen for other replicas' alias moves, retrying");
                        reported_down = true;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LISTEN_RETRY) => {}
            }
        }
    }

    /// One listening connection: returns Ok on shutdown, Err when the
    /// connection cannot be (re)established.
    async fn listen(
        &self,
        store: &Store,
        database_url: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut listener = PgListener::connect(database_url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        tracing::info!(
            channel = NOTIFY_CHANNEL,
            "listening for alias moves from other replicas"
        );
        let mut ticks = tokio::time::interval(CATCH_UP_INTERVAL);
        loop {
            // Moves committed before LISTEN took effect, or while the
            // connection was down, are caught up here.
            if let Err(error) = self.catch_up(store).await {
                tracing::warn!(%error, "alias feed catch-up failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
                received = listener.recv() => {
                    // sqlx reconnects inside recv; an error means it could not.
                    received?;
                }
            }
        }
    }
}

fn sequence_u64(sequence: i64) -> Result<u64, Error> {
    u64::try_from(sequence).map_err(|_| Error::Corrupt(format!("stored sequence {sequence}")))
}
