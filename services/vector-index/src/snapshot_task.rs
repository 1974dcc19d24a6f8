//! Taking snapshots: every interval, each loaded collection written to
//! since its last snapshot is snapshotted on a blocking thread, and once
//! more at shutdown, so that the next start restores instead of rebuilding.
//!
//! A snapshot holds the collection's writer lock only to take the slot
//! table and a copy of the graph (every write before it wholly in the
//! graph); the files are written after, while writes and searches go on. One
//! snapshot is written at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::collections::{Collection, VectorIndex};
use crate::error::Error;

impl VectorIndex {
    /// Snapshots changed collections every `interval` until `shutdown`.
    pub async fn run_snapshots(&self, interval: Duration, shutdown: CancellationToken) {
        if self.snapshots.is_none() {
            return;
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => self.snapshot_changed().await,
            }
        }
    }

    /// Snapshots every loaded collection written to since its last
    /// snapshot; a failure is logged and retried at the next call.
    pub async fn snapshot_changed(&self) {
        let collections: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        for collection in collections {
            if collection.ready().is_err()
                || collection.unsnapshotted_writes.load(Ordering::Relaxed) == 0
            {
                continue;
            }
            if let Err(error) = self.snapshot(&collection).await {
                tracing::warn!(collection = %collection.name, %error, "snapshot failed; the next one retries");
            }
        }
    }

    async fn snapshot(&self, collection: &Collection) -> Result<(), Error> {
        let Some(snapshots) = self.snapshots.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.snapshot_writer.lock().await;
        let dropped = collection.writer.lock().await;
        if *dropped {
            return Ok(());
        }
        let writes = collection.unsnapshotted_writes.swap(0, Ordering::Relaxed);
        if writes == 0 {
            return Ok(());
        }
        // Every write of this collection up to here is committed and in
        // the graph: its writes take seqs under the lock held now.
        let covered_seq = self.last_seq.load(Ordering::SeqCst);
        let (graph, slot_table) = collection.index.read().snapshot_parts();
        drop(dropped);
        // A graph with no node (every point deleted, then compacted away)
        // has nothing to restore: a start rebuilds it from the log in no
        // time.
        if graph.is_empty() {
            return Ok(());
        }
        let key = collection.snapshot_key();
        let started = Instant::now();
        let slots = slot_table.len();
        let written = tokio::task::spawn_blocking(move || {
            snapshots.write(&key, &graph, &slot_table, covered_seq)
        })
        .await?;
        if let Ok(path) = &written {
            // Dropped while the files were written: they belong to no one.
            if *collection.writer.lock().await {
                let _ = std::fs::remove_dir_all(path);
                return Ok(());
            }
        }
        match written {
            Ok(path) => {
                tracing::info!(
                    collection = %collection.name,
                    slots,
                    covered_seq,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    path = %path.display(),
                    "snapshot written"
                );
                Ok(())
            }
            Err(error) => {
                collection
                    .unsnapshotted_writes
                    .fetch_add(writes, Ordering::Relaxed);
                Err(Error::Snapshot(error))
            }
        }
    }

    /// Removes a collection's snapshots (it was dropped, or a new one
    /// takes its name).
    pub(crate) async fn remove_snapshots(&self, collection: &str) -> Result<(), Error> {
        let Some(snapshots) = self.snapshots.clone() else {
            return Ok(());
        };
        let collection = collection.to_string();
        tokio::task::spawn_blocking(move || snapshots.remove(&collection))
            .await?
            .map_err(Error::Snapshot)
    }
}
