//! What the spill log counts, shared by its appenders, its writer thread
//! and its reader.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appended: AtomicU64,
    pub committed: AtomicU64,
    pub commits: AtomicU64,
    pub delivered: AtomicU64,
    pub recovered: AtomicU64,
    pub dropped_disk_budget: AtomicU64,
    pub dropped_closed: AtomicU64,
    pub dropped_write_error: AtomicU64,
    pub torn_tails: AtomicU64,
    pub damaged_segments: AtomicU64,
    /// Appended, not yet written: counted against the disk budget too, so
    /// memory is bounded by it as well.
    pub pending_bytes: AtomicU64,
    pub disk_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, value: u64) {
        // Never below zero, whatever order the threads update in.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
            Some(current.saturating_sub(value))
        });
    }

    pub fn snapshot(&self) -> SpillStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let committed = read(&self.committed);
        let recovered = read(&self.recovered);
        let delivered = read(&self.delivered);
        SpillStats {
            appended: read(&self.appended),
            committed,
            commits: read(&self.commits),
            delivered,
            recovered,
            dropped_disk_budget: read(&self.dropped_disk_budget),
            dropped_closed: read(&self.dropped_closed),
            dropped_write_error: read(&self.dropped_write_error),
            torn_tails: read(&self.torn_tails),
            damaged_segments: read(&self.damaged_segments),
            disk_bytes: read(&self.disk_bytes),
            backlog: (committed + recovered).saturating_sub(delivered),
        }
    }
}

/// Counts since this process opened the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillStats {
    /// Records accepted by `append`.
    pub appended: u64,
    /// Records written and fsynced.
    pub committed: u64,
    /// Group commits (one fsync each).
    pub commits: u64,
    /// Records the consumer acknowledged.
    pub delivered: u64,
    /// Records found on disk at open, left undelivered by an earlier run.
    pub recovered: u64,
    /// Records refused because the log had reached its disk budget.
    pub dropped_disk_budget: u64,
    /// Records appended after `close`.
    pub dropped_closed: u64,
    /// Records lost to a failed write or fsync.
    pub dropped_write_error: u64,
    /// Segments whose torn or damaged tail was cut off at open.
    pub torn_tails: u64,
    /// Segments whose rest was skipped because of damaged bytes met later.
    pub damaged_segments: u64,
    /// The segment files' size now.
    pub disk_bytes: u64,
    /// Durable records not yet delivered.
    pub backlog: u64,
}

impl SpillStats {
    /// Every record refused or lost, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_disk_budget + self.dropped_closed + self.dropped_write_error
    }
}
