//! Compaction: an HNSW node cannot be removed without leaving holes in its
//! neighbours' lists, so deleted and replaced points stay in the graph as
//! tombstones. Once they are more than half of it, a
//! new graph is built from the live points on a blocking thread while
//! searches and writes go on against the old one; the writes made
//! meanwhile are logged and applied to the new graph, and it is swapped in.
//! Writes wait only for that catch-up, searches never.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;

use crate::collections::Collection;
use crate::index::{CollectionIndex, IndexedPoint};

/// A write made while a compaction builds, replayed on the new graph.
pub(crate) enum LoggedWrite {
    Upsert(Vec<Arc<IndexedPoint>>),
    Delete(Vec<String>),
}

/// Called by a write, under the collection's writer lock, once it is
/// applied: logs it for a compaction under way, or starts one when the
/// tombstones call for it.
pub(crate) fn after_write(
    collection: &Arc<Collection>,
    write: LoggedWrite,
    compactions: &IntCounter,
) {
    {
        let mut log = collection.compaction_log.lock();
        if let Some(log) = log.as_mut() {
            log.push(write);
            return;
        }
    }
    let (live_points, metric, params, indexed_keys, tombstones) = {
        let index = collection.index.read();
        if !index.needs_rebuild() {
            return;
        }
        (
            index.live_writes(),
            index.metric(),
            index.params(),
            index.indexed_keys().to_vec(),
            index.tombstone_count(),
        )
    };
    *collection.compaction_log.lock() = Some(Vec::new());
    let collection = Arc::clone(collection);
    let compactions = compactions.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let points = live_points.len();
        let built = tokio::task::spawn_blocking(move || {
            CollectionIndex::build(metric, params, &indexed_keys, live_points)
        })
        .await;
        let rebuilt = match built {
            Ok(rebuilt) => rebuilt,
            Err(error) => {
                tracing::error!(collection = %collection.name, %error, "compaction failed; the next write retries");
                *collection.compaction_log.lock() = None;
                return;
            }
        };
        let dropped = collection.writer.lock().await;
        let log = collection.compaction_log.lock().take().unwrap_or_default();
        if *dropped {
            return;
        }
        let caught_up = log.len();
        let swapped = tokio::task::spawn_blocking(move || catch_up(rebuilt, log)).await;
        match swapped {
            Ok(rebuilt) => {
                *collection.index.write() = rebuilt;
                collection
                    .unsnapshotted_writes
                    .fetch_add(1, Ordering::Relaxed);
                compactions.inc();
                tracing::info!(
                    collection = %collection.name,
                    points,
                    tombstones,
                    writes_caught_up = caught_up,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "collection compacted"
                );
            }
            Err(error) => {
                tracing::error!(collection = %collection.name, %error, "compaction catch-up failed; the next write retries");
            }
        }
        drop(dropped);
    });
}

/// Applies the writes logged during the build, in order.
fn catch_up(mut rebuilt: CollectionIndex, log: Vec<LoggedWrite>) -> CollectionIndex {
    for write in log {
        match write {
            LoggedWrite::Upsert(points) => rebuilt.stage_points(points).run(),
            LoggedWrite::Delete(ids) => {
                rebuilt.delete(&ids);
            }
        }
    }
    rebuilt
}
