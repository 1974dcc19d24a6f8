//! The consumer's side: reads durable records in the order they were
//! appended, hands them out in batches, and on acknowledgement records how
//! far delivery got (the cursor file) and removes the segments it passed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::segment::{self, Stop, SEGMENT_HEADER_LEN};
use crate::stats::Counters;
use crate::{Position, SpillError};

const CURSOR_FILE: &str = "cursor";
const CURSOR_TEMP_FILE: &str = "cursor.tmp";

/// Records read, not yet acknowledged.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Vec<u8>>,
    /// Where reading continues after this batch.
    end: Position,
}

/// How much one batch may hold, and how long it may wait to fill.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    /// A batch stops growing once it passes this (one record may exceed it).
    pub max_bytes: usize,
    /// How long a batch with records waits for more before it goes.
    pub linger: Duration,
}

pub struct SpillReader {
    pub(crate) dir: PathBuf,
    pub(crate) counters: Arc<Counters>,
    pub(crate) durable: watch::Receiver<Position>,
    /// The first record not yet acknowledged.
    pub(crate) delivered: Position,
}

impl SpillReader {
    /// The next records after the last acknowledged batch (so an
    /// unacknowledged batch is read again), waiting until at least one is
    /// durable. `None` once the log is closed and everything was read.
    pub async fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Batch>, SpillError> {
        let mut batch = Batch {
            records: Vec::new(),
            end: self.delivered,
        };
        let mut bytes = 0usize;
        let mut send_at: Option<Instant> = None;
        loop {
            let durable = *self.durable.borrow_and_update();
            let room = limits.max_records.saturating_sub(batch.records.len());
            let bytes_room = limits.max_bytes.saturating_sub(bytes).max(1);
            let (records, end) = self.read(batch.end, durable, room, bytes_room).await?;
            bytes += records.iter().map(Vec::len).sum::<usize>();
            batch.records.extend(records);
            batch.end = end;
            if batch.records.len() >= limits.max_records || bytes >= limits.max_bytes {
                return Ok(Some(batch));
            }
            if !batch.records.is_empty() {
                let deadline = *send_at.get_or_insert_with(|| Instant::now() + limits.linger);
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Ok(Some(batch)),
                    changed = self.durable.changed() => {
                        if changed.is_err() {
                            // The writer stopped: nothing more will come.
                            return Ok(Some(batch));
                        }
                    }
                }
            } else if self.durable.changed().await.is_err() {
                // Closed; read once more what the last commit made durable.
                let durable = *self.durable.borrow();
                let (records, end) = self
                    .read(batch.end, durable, limits.max_records, limits.max_bytes)
                    .await?;
                if records.is_empty() {
                    return Ok(None);
                }
                batch.records = records;
                batch.end = end;
                return Ok(Some(batch));
            }
        }
    }

    /// Marks `batch` delivered: it is not read again, in this process or
    /// after a restart, and segments read to their end are removed.
    pub async fn acknowledge(&mut self, batch: Batch) -> Result<(), SpillError> {
        let passed = self.delivered.segment..batch.end.segment;
        self.delivered = batch.end;
        Counters::add(&self.counters.delivered, batch.records.len() as u64);
        let dir = self.dir.clone();
        let counters = self.counters.clone();
        let cursor = batch.end;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            write_cursor(&dir, cursor)?;
            for id in passed {
                let path = segment::path(&dir, id);
                match fs::metadata(&path) {
                    Ok(metadata) => {
                        fs::remove_file(&path)?;
                        Counters::sub(&counters.disk_bytes, metadata.len());
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        })
        .await
        .map_err(|error| SpillError::Io(io::Error::other(error)))??;
        Ok(())
    }

    /// Reads from `from` up to `durable`, moving through sealed segments.
    async fn read(
        &self,
        from: Position,
        durable: Position,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, Position), SpillError> {
        let dir = self.dir.clone();
        let counters = self.counters.clone();
        tokio::task::spawn_blocking(move || {
            read_span(&dir, &counters, from, durable, max_records, max_bytes)
        })
        .await
        .map_err(|error| SpillError::Io(io::Error::other(error)))?
        .map_err(SpillError::Io)
    }
}

fn read_span(
    dir: &Path,
    counters: &Counters,
    from: Position,
    durable: Position,
    max_records: usize,
    max_bytes: usize,
) -> io::Result<(Vec<Vec<u8>>, Position)> {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut at = from;
    while records.len() < max_records && bytes < max_bytes && at <= durable {
        let live = at.segment == durable.segment;
        let end = if live { durable.offset } else { u64::MAX };
        let read = match segment::read(
            dir,
            at.segment,
            at.offset,
            end,
            max_records - records.len(),
            max_bytes - bytes,
        ) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !live => {
                // Recovery removes the segments it found with nothing left
                // to deliver.
                tracing::debug!(segment = at.segment, dir = %dir.display(), "spill segment absent, skipped");
                at = next_segment(at);
                continue;
            }
            Err(error) => return Err(error),
        };
        bytes += read.records.iter().map(Vec::len).sum::<usize>();
        records.extend(read.records);
        at.offset = read.next_offset;
        match (read.stop, live) {
            (Stop::Limit, _) => break,
            (Stop::End, true) => break,
            (Stop::End, false) => at = next_segment(at),
            (Stop::Damaged, _) => {
                tracing::error!(segment = at.segment, offset = at.offset, dir = %dir.display(), "damaged bytes in the spill log, the rest of the segment skipped");
                Counters::add(&counters.damaged_segments, 1);
                if live {
                    at.offset = durable.offset;
                    break;
                }
                at = next_segment(at);
            }
        }
    }
    Ok((records, at))
}

fn next_segment(at: Position) -> Position {
    Position {
        segment: at.segment + 1,
        offset: SEGMENT_HEADER_LEN,
    }
}

/// Written beside the segments and swapped in whole. Not fsynced: after a
/// crash an older cursor only means records delivered again, which the
/// consumer deduplicates.
fn write_cursor(dir: &Path, cursor: Position) -> io::Result<()> {
    let temp = dir.join(CURSOR_TEMP_FILE);
    fs::write(&temp, format!("{} {}\n", cursor.segment, cursor.offset))?;
    fs::rename(temp, dir.join(CURSOR_FILE))
}

/// The cursor an earlier run left; `None` when there is none or it does not
/// parse (delivery then starts at the oldest segment).
pub(crate) fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join(CURSOR_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position { segment, offset })
}
