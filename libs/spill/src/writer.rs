//! The one thread that writes: it takes what the appenders handed over,
//! writes it to the newest segment in one piece and fsyncs, at most once
//! per commit window, so one fsync covers every record of the window
//! (group commit). Request threads never wait on the disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::frame;
use crate::segment::{self, SEGMENT_HEADER_LEN};
use crate::stats::Counters;
use crate::Position;

pub(crate) enum Message {
    Record(Vec<u8>),
    /// Commit everything before it, answer, and stop.
    Close(oneshot::Sender<()>),
}

pub(crate) struct Writer {
    pub dir: PathBuf,
    pub commit_window: Duration,
    pub segment_bytes: u64,
    pub receiver: Receiver<Message>,
    /// `None` after a failed write: the next commit starts a new segment
    /// rather than append behind bytes of unknown state.
    pub file: Option<File>,
    pub segment_id: u64,
    pub segment_len: u64,
    /// Where the durable records end, for the reader.
    pub durable: watch::Sender<Position>,
    pub counters: Arc<Counters>,
}

impl Writer {
    pub fn run(mut self) {
        let mut buffer = Vec::new();
        let mut last_commit: Option<Instant> = None;
        while let Ok(first) = self.receiver.recv() {
            if let Some(started) = last_commit {
                let ready = started + self.commit_window;
                let now = Instant::now();
                if ready > now {
                    std::thread::sleep(ready - now);
                }
            }
            let mut records = 0u64;
            let mut close = None;
            let mut message = Some(first);
            while let Some(next) = message.take() {
                match next {
                    Message::Record(record) => {
                        frame::encode(&record, &mut buffer);
                        records += 1;
                    }
                    Message::Close(answer) => {
                        close = Some(answer);
                        break;
                    }
                }
                // Empty or disconnected: this commit takes what came so far.
                message = self.receiver.try_recv().ok();
            }
            if records > 0 {
                last_commit = Some(Instant::now());
                self.commit(&buffer, records);
            }
            buffer.clear();
            if let Some(answer) = close {
                let _ = answer.send(());
                return;
            }
        }
    }

    fn commit(&mut self, bytes: &[u8], records: u64) {
        let len = bytes.len() as u64;
        Counters::sub(&self.counters.pending_bytes, len);
        match self.write(bytes) {
            Ok(()) => {
                Counters::add(&self.counters.committed, records);
                Counters::add(&self.counters.commits, 1);
                Counters::add(&self.counters.disk_bytes, len);
                self.durable.send_replace(Position {
                    segment: self.segment_id,
                    offset: self.segment_len,
                });
            }
            Err(error) => {
                tracing::error!(%error, records, dir = %self.dir.display(), "spill log write failed, records lost");
                Counters::add(&self.counters.dropped_write_error, records);
                self.file = None;
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let full = self.segment_len > SEGMENT_HEADER_LEN
            && self.segment_len + bytes.len() as u64 > self.segment_bytes;
        if self.file.is_none() || full {
            self.roll()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("no segment open"));
        };
        file.write_all(bytes)?;
        file.sync_data()?;
        self.segment_len += bytes.len() as u64;
        Ok(())
    }

    /// Starts the next segment; the reader moves on to it once it has read
    /// this one to its end.
    fn roll(&mut self) -> io::Result<()> {
        let id = self.segment_id + 1;
        let file = segment::create(&self.dir, id)?;
        self.file = Some(file);
        self.segment_id = id;
        self.segment_len = SEGMENT_HEADER_LEN;
        Counters::add(&self.counters.disk_bytes, SEGMENT_HEADER_LEN);
        self.durable.send_replace(Position {
            segment: id,
            offset: SEGMENT_HEADER_LEN,
        });
        Ok(())
    }
}
