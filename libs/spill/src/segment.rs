//! Segment files: `<id>.spill`, numbered in the order they were written,
//! each a magic header followed by frames. The writer only ever appends to
//! the newest; the reader removes a segment once everything in it was
//! delivered.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::frame::{self, Decoded};

const MAGIC: &[u8; 8] = b"KEELSPL1";
/// Where a segment's first frame starts.
pub const SEGMENT_HEADER_LEN: u64 = MAGIC.len() as u64;
const EXTENSION: &str = "spill";
/// What one read asks of the file at least: small records come in bulk.
const MIN_READ: usize = 64 << 10;
/// What recovery holds in memory at once while it counts records.
const SCAN_BYTES: usize = 4 << 20;

pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{EXTENSION}"))
}

/// The segments in `dir`, oldest first, with their sizes.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|extension| extension.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Some(id) = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((id, entry.metadata()?.len()));
    }
    segments.sort_unstable();
    Ok(segments)
}

/// A new, empty segment, durable (its directory entry included) before it
/// is written to.
pub fn create(dir: &Path, id: u64) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path(dir, id))?;
    file.write_all(MAGIC)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// What a whole segment holds, read at start for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Intact records from `from` on.
    pub records: u64,
    /// Where the intact frames end: the segment's size unless its tail
    /// is torn or damaged.
    pub valid_end: u64,
}

/// Counts the intact records of segment `id` from offset `from`, stopping
/// at the first torn or damaged frame.
pub fn scan(dir: &Path, id: u64, from: u64) -> io::Result<Scan> {
    let mut records = 0;
    let mut offset = from.max(SEGMENT_HEADER_LEN);
    if !has_magic(dir, id)? {
        return Ok(Scan {
            records: 0,
            valid_end: 0,
        });
    }
    loop {
        let read = read(dir, id, offset, u64::MAX, usize::MAX, SCAN_BYTES)?;
        records += read.records.len() as u64;
        offset = read.next_offset;
        match read.stop {
            Stop::Limit => {}
            Stop::End | Stop::Damaged => {
                return Ok(Scan {
                    records,
                    valid_end: offset,
                })
            }
        }
    }
}

fn has_magic(dir: &Path, id: u64) -> io::Result<bool> {
    let mut header = [0u8; MAGIC.len()];
    let mut file = File::open(path(dir, id))?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(&header == MAGIC),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// Cuts a torn or damaged tail off, so that later reads and appends meet
/// only intact frames.
pub fn truncate(dir: &Path, id: u64, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path(dir, id))?;
    if len < SEGMENT_HEADER_LEN {
        // No valid header: a segment created but never written. Give it
        // one, so it reads as empty.
        file.set_len(0)?;
        let mut file = file;
        file.write_all(MAGIC)?;
        return file.sync_all();
    }
    file.set_len(len)?;
    file.sync_all()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped at `max_records` or `max_bytes`: more may follow.
    Limit,
    /// Reached `end` (or the end of the file) after an intact frame.
    End,
    /// The next frame is torn or damaged.
    Damaged,
}

#[derive(Debug)]
pub struct Chunk {
    pub records: Vec<Vec<u8>>,
    /// The offset after the last record returned.
    pub next_offset: u64,
    pub stop: Stop,
}

/// Reads intact records of segment `id` from `offset` up to `end`, at
/// most `max_records` of them and about `max_bytes` (always at least one
/// record when one is there).
pub fn read(
    dir: &Path,
    id: u64,
    offset: u64,
    end: u64,
    max_records: usize,
    max_bytes: usize,
) -> io::Result<Chunk> {
    let mut file = File::open(path(dir, id))?;
    let end = end.min(file.metadata()?.len());
    let mut records = Vec::new();
    let mut offset = offset.max(SEGMENT_HEADER_LEN);
    let mut bytes_read = 0usize;
    let mut buffer = Vec::new();
    loop {
        if offset >= end {
            return Ok(Chunk {
                records,
                next_offset: offset,
                stop: Stop::End,
            });
        }
        if records.len() >= max_records || (bytes_read >= max_bytes && !records.is_empty()) {
            return Ok(Chunk {
                records,
                next_offset: offset,
                stop: Stop::Limit,
            });
        }
        let available = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let want = available.min(max_bytes.saturating_sub(bytes_read).max(MIN_READ));
        buffer.resize(want, 0);
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut buffer)?;
        let mut at = 0;
        loop {
            match frame::decode(&buffer[at..]) {
                Decoded::Record { payload, frame_len } => {
                    records.push(payload.to_vec());
                    at += frame_len;
                    bytes_read += frame_len;
                    if records.len() >= max_records || bytes_read >= max_bytes {
                        break;
                    }
                }
                Decoded::Incomplete { needed } => {
                    let frame_end = offset + (at + needed) as u64;
                    if frame_end > end {
                        // Runs past what was written: a torn tail, or
                        // (for the live segment) past what is durable.
                        let stop = if at == buffer.len() {
                            Stop::End
                        } else {
                            Stop::Damaged
                        };
                        return Ok(Chunk {
                            records,
                            next_offset: offset + at as u64,
                            stop,
                        });
                    }
                    if at == 0 {
                        // One record larger than this read: read it whole.
                        buffer.resize(needed, 0);
                        file.seek(SeekFrom::Start(offset))?;
                        file.read_exact(&mut buffer)?;
                        continue;
                    }
                    break;
                }
                Decoded::Damaged => {
                    return Ok(Chunk {
                        records,
                        next_offset: offset + at as u64,
                        stop: Stop::Damaged,
                    });
                }
            }
        }
        offset += at as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_records(dir: &Path, id: u64, records: &[&[u8]]) -> u64 {
        let mut file = create(dir, id).unwrap();
        let mut bytes = Vec::new();
        for record in records {
            frame::encode(record, &mut bytes);
        }
        file.write_all(&bytes).unwrap();
        SEGMENT_HEADER_LEN + bytes.len() as u64
    }

    #[test]
    fn segments_list_oldest_first_and_ignore_other_files() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 12, &[b"a"]);
        write_records(dir.path(), 3, &[]);
        fs::write(dir.path().join("cursor"), "3 8").unwrap();
        let ids: Vec<u64> = list(dir.path())
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![3, 12]);
    }

    #[test]
    fn reads_respect_the_record_limit_and_continue_where_they_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let end = write_records(dir.path(), 1, &[b"one", b"two", b"three"]);
        let first = read(dir.path(), 1, 0, u64::MAX, 2, usize::MAX).unwrap();
        assert_eq!(first.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(first.stop, Stop::Limit);
        let rest = read(dir.path(), 1, first.next_offset, u64::MAX, 2, usize::MAX).unwrap();
        assert_eq!(rest.records, vec![b"three".to_vec()]);
        assert_eq!((rest.next_offset, rest.stop), (end, Stop::End));
    }

    #[test]
    fn a_record_larger_than_one_read_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3 * MIN_READ];
        write_records(dir.path(), 1, &[b"small", &big, b"after"]);
        // 16 bytes: the small record's 13 leave room, so the big one
        // follows, whole, and the batch is full.
        let first = read(dir.path(), 1, 0, u64::MAX, 10, 16).unwrap();
        assert_eq!(first.records, vec![b"small".to_vec(), big]);
        assert_eq!(first.stop, Stop::Limit);
        let last = read(dir.path(), 1, first.next_offset, u64::MAX, 10, 16).unwrap();
        assert_eq!(last.records, vec![b"after".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_found_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let end = write_records(dir.path(), 1, &[b"kept", b"torn record"]);
        let torn_at = end - 4;
        OpenOptions::new()
            .write(true)
            .open(path(dir.path(), 1))
            .unwrap()
            .set_len(torn_at)
            .unwrap();
        let found = scan(dir.path(), 1, 0).unwrap();
        assert_eq!(found.records, 1);
        assert_eq!(found.valid_end, SEGMENT_HEADER_LEN + 12);
        truncate(dir.path(), 1, found.valid_end).unwrap();
        let after = read(dir.path(), 1, 0, u64::MAX, 10, usize::MAX).unwrap();
        assert_eq!(after.records, vec![b"kept".to_vec()]);
        assert_eq!(after.stop, Stop::End);
    }

    #[test]
    fn damaged_bytes_stop_the_read_at_the_last_intact_record() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 1, &[b"good", b"flipped", b"unreachable"]);
        let mut bytes = fs::read(path(dir.path(), 1)).unwrap();
        let flipped_payload = SEGMENT_HEADER_LEN as usize + 12 + 8;
        bytes[flipped_payload] ^= 0x40;
        fs::write(path(dir.path(), 1), bytes).unwrap();
        let read = read(dir.path(), 1, 0, u64::MAX, 10, usize::MAX).unwrap();
        assert_eq!(read.records, vec![b"good".to_vec()]);
        assert_eq!(read.stop, Stop::Damaged);
        assert_eq!(scan(dir.path(), 1, 0).unwrap().records, 1);
    }

    #[test]
    fn a_segment_without_its_header_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path(), 4), b"KEEL").unwrap();
        assert_eq!(
            scan(dir.path(), 4, 0).unwrap(),
            Scan {
                records: 0,
                valid_end: 0
            }
        );
        truncate(dir.path(), 4, 0).unwrap();
        assert_eq!(fs::read(path(dir.path(), 4)).unwrap(), MAGIC.to_vec());
    }
}
