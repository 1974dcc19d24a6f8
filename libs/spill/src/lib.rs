//! keel-spill: a local spill log. Records handed to [`SpillAppender::append`]
//! (which never waits) are written by one thread to append-only,
//! checksummed segment files and fsynced in groups, at most once per
//! commit window; one consumer reads them back in order with
//! [`SpillReader::next_batch`] and acknowledges what it delivered, after
//! which those records are never read again and finished segments are
//! removed. After a crash, everything committed and not acknowledged is
//! read again; a torn tail (a write cut short) is found by its checksum,
//! cut off and counted, never fatal. Only a full disk budget refuses
//! records, and those are counted.
//!
//! Hand-written rather than taken from a crate: the write-ahead logs on
//! crates.io are either marked experimental by their authors or built for
//! replaying a database, not for a queue whose consumer acknowledges and
//! whose delivered segments are deleted.

mod frame;
mod reader;
mod segment;
mod stats;
mod writer;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

pub use frame::MAX_RECORD_LEN;
pub use reader::{Batch, BatchLimits, SpillReader};
pub use stats::SpillStats;

use crate::segment::SEGMENT_HEADER_LEN;
use crate::stats::Counters;
use crate::writer::{Message, Writer};

#[derive(Debug, Clone)]
pub struct SpillSettings {
    pub dir: PathBuf,
    /// The most a committed record waits for its fsync; one fsync covers
    /// every record appended within it.
    pub commit_window: Duration,
    /// A segment is closed and a new one begun past this size.
    pub segment_bytes: u64,
    /// Segment files and records waiting to be written together; beyond
    /// it records are refused and counted.
    pub disk_budget_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("spill log I/O: {0}")]
    Io(#[from] io::Error),
}

/// A place in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    segment: u64,
    offset: u64,
}

/// What `append` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Accepted,
    /// Refused: the log holds its disk budget's worth already.
    OverBudget,
    /// Refused: larger than `MAX_RECORD_LEN`.
    TooLarge,
    /// Refused: the log was closed.
    Closed,
}

/// The producers' handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SpillAppender {
    sender: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    closed: Arc<AtomicBool>,
    disk_budget_bytes: u64,
}

/// Opens the log in `settings.dir` (creating it), recovers what an earlier
/// run left undelivered, and starts the writer thread.
pub fn open(settings: SpillSettings) -> Result<(SpillAppender, SpillReader), SpillError> {
    let dir = settings.dir.clone();
    fs::create_dir_all(&dir)?;
    let counters = Arc::new(Counters::default());
    let recovered = recover(&settings, &counters)?;
    let start = recovered.start;
    let live = recovered.last_segment + 1;
    let file = segment::create(&dir, live)?;
    Counters::add(&counters.disk_bytes, SEGMENT_HEADER_LEN);
    let live_start = Position {
        segment: live,
        offset: SEGMENT_HEADER_LEN,
    };
    let (durable_sender, durable) = watch::channel(live_start);
    let (sender, receiver) = mpsc::channel();
    let writer = Writer {
        dir: dir.clone(),
        commit_window: settings.commit_window,
        segment_bytes: settings.segment_bytes,
        receiver,
        file: Some(file),
        segment_id: live,
        segment_len: SEGMENT_HEADER_LEN,
        durable: durable_sender,
        counters: counters.clone(),
    };
    std::thread::Builder::new()
        .name("keel-spill-writer".to_string())
        .spawn(move || writer.run())?;
    let stats = counters.snapshot();
    tracing::info!(
        dir = %dir.display(),
        recovered = stats.recovered,
        torn_tails = stats.torn_tails,
        disk_bytes = stats.disk_bytes,
        "spill log open"
    );
    let appender = SpillAppender {
        sender,
        counters: counters.clone(),
        closed: Arc::new(AtomicBool::new(false)),
        disk_budget_bytes: settings.disk_budget_bytes,
    };
    let reader = SpillReader {
        dir,
        counters,
        durable,
        delivered: start.unwrap_or(live_start),
    };
    Ok((appender, reader))
}

/// What an earlier run left.
struct Recovered {
    /// Where delivery resumes: `None` when nothing is left to deliver.
    start: Option<Position>,
    /// The newest segment id an earlier run used (or its cursor names), so
    /// the new segment comes after it and an old cursor never points into
    /// it.
    last_segment: u64,
}

/// Removes what was delivered (and segments with nothing left to
/// deliver), cuts torn tails off and counts what is left.
fn recover(settings: &SpillSettings, counters: &Counters) -> Result<Recovered, SpillError> {
    let dir = &settings.dir;
    let cursor = reader::read_cursor(dir);
    let mut start = None;
    let mut last_segment = cursor.map(|cursor| cursor.segment).unwrap_or(0);
    for (id, size) in segment::list(dir)? {
        last_segment = last_segment.max(id);
        let from = match cursor {
            Some(cursor) if id < cursor.segment => {
                fs::remove_file(segment::path(dir, id))?;
                continue;
            }
            Some(cursor) if id == cursor.segment => cursor.offset,
            _ => SEGMENT_HEADER_LEN,
        };
        let scan = segment::scan(dir, id, from)?;
        let torn = scan.valid_end < size;
        if torn {
            tracing::warn!(
                segment = id,
                dir = %dir.display(),
                cut_bytes = size - scan.valid_end,
                "spill segment ends in a torn or damaged record, its tail cut off"
            );
            Counters::add(&counters.torn_tails, 1);
        }
        if scan.records == 0 {
            fs::remove_file(segment::path(dir, id))?;
            continue;
        }
        let mut size = size;
        if torn {
            segment::truncate(dir, id, scan.valid_end)?;
            size = scan.valid_end;
        }
        Counters::add(&counters.recovered, scan.records);
        Counters::add(&counters.disk_bytes, size);
        start.get_or_insert(Position {
            segment: id,
            offset: from,
        });
    }
    Ok(Recovered {
        start,
        last_segment,
    })
}

impl SpillAppender {
    /// Hands `record` to the writer; it is durable within about one commit
    /// window. Never blocks.
    pub fn append(&self, record: Vec<u8>) -> Appended {
        if self.closed.load(Ordering::Relaxed) {
            Counters::add(&self.counters.dropped_closed, 1);
            return Appended::Closed;
        }
        if record.len() > MAX_RECORD_LEN {
            Counters::add(&self.counters.dropped_write_error, 1);
            return Appended::TooLarge;
        }
        let size = frame::frame_len(&record) as u64;
        let used = self.counters.disk_bytes.load(Ordering::Relaxed)
            + self.counters.pending_bytes.load(Ordering::Relaxed);
        if used + size > self.disk_budget_bytes {
            Counters::add(&self.counters.dropped_disk_budget, 1);
            return Appended::OverBudget;
        }
        Counters::add(&self.counters.pending_bytes, size);
        if self.sender.send(Message::Record(record)).is_err() {
            Counters::sub(&self.counters.pending_bytes, size);
            Counters::add(&self.counters.dropped_closed, 1);
            return Appended::Closed;
        }
        Counters::add(&self.counters.appended, 1);
        Appended::Accepted
    }

    /// Commits everything appended so far and stops the writer; later
    /// appends are refused. The reader still reads what was committed.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let (answer, committed) = oneshot::channel();
        if self.sender.send(Message::Close(answer)).is_ok() {
            let _ = committed.await;
        }
    }

    pub fn stats(&self) -> SpillStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests;
