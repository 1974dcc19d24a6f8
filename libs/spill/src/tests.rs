use std::io::Write;
use std::path::Path;

use super::*;

fn settings(dir: &Path) -> SpillSettings {
    SpillSettings {
        dir: dir.to_path_buf(),
        commit_window: Duration::from_millis(5),
        segment_bytes: 1 << 20,
        disk_budget_bytes: 1 << 30,
    }
}

fn limits(max_records: usize) -> BatchLimits {
    BatchLimits {
        max_records,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(1),
    }
}

fn record(index: usize) -> Vec<u8> {
    format!("record {index:05}").into_bytes()
}

fn records(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(record).collect()
}

/// Reads until `count` records came, acknowledging each batch when asked.
async fn read_records(reader: &mut SpillReader, count: usize, acknowledge: bool) -> Vec<Vec<u8>> {
    let mut read = Vec::new();
    while read.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(10), reader.next_batch(limits(64)))
            .await
            .expect("records within 10 s")
            .unwrap()
            .expect("the log is open");
        read.extend(batch.records.iter().cloned());
        if acknowledge {
            reader.acknowledge(batch).await.unwrap();
        }
    }
    read
}

fn segment_ids(dir: &Path) -> Vec<u64> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn records_come_back_in_order_and_delivered_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut small_segments = settings(dir.path());
    small_segments.segment_bytes = 256;
    let (appender, mut reader) = open(small_segments).unwrap();
    for index in 0..100 {
        assert_eq!(appender.append(record(index)), Appended::Accepted);
    }
    assert_eq!(read_records(&mut reader, 100, true).await, records(0..100));
    let stats = appender.stats();
    assert_eq!(
        (stats.appended, stats.committed, stats.delivered),
        (100, 100, 100)
    );
    assert_eq!(stats.backlog, 0);
    // 100 records of 20 bytes need several 256-byte segments; only the
    // one being written is left.
    assert_eq!(
        segment_ids(dir.path()).len(),
        1,
        "{:?}",
        segment_ids(dir.path())
    );
}

#[tokio::test]
async fn what_was_not_acknowledged_is_read_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (appender, mut reader) = open(settings(dir.path())).unwrap();
        for index in 0..30 {
            appender.append(record(index));
        }
        appender.close().await;
        // Ten delivered, the rest read but never acknowledged.
        let batch = reader.next_batch(limits(10)).await.unwrap().unwrap();
        assert_eq!(batch.records, records(0..10));
        reader.acknowledge(batch).await.unwrap();
        let unacknowledged = reader.next_batch(limits(10)).await.unwrap().unwrap();
        assert_eq!(unacknowledged.records, records(10..20));
    }
    let (appender, mut reader) = open(settings(dir.path())).unwrap();
    assert_eq!(appender.stats().recovered, 20);
    appender.append(record(30));
    assert_eq!(read_records(&mut reader, 21, true).await, records(10..31));
    drop(reader);
    // Everything delivered: a third start finds nothing to deliver.
    let (appender, _reader) = open(settings(dir.path())).unwrap();
    assert_eq!(appender.stats().recovered, 0);
    assert_eq!(segment_ids(dir.path()).len(), 1);
}

#[tokio::test]
async fn an_unacknowledged_batch_is_read_again_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let (appender, mut reader) = open(settings(dir.path())).unwrap();
    for index in 0..5 {
        appender.append(record(index));
    }
    // All five durable before reading: a reader that acknowledges nothing
    // starts every batch at the beginning, so a batch cut by a commit
    // window would be read again inside one call of read_records.
    appender.close().await;
    let first = read_records(&mut reader, 5, false).await;
    let again = read_records(&mut reader, 5, false).await;
    assert_eq!(first, records(0..5));
    assert_eq!(again, first);
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_counted_and_the_log_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (appender, _reader) = open(settings(dir.path())).unwrap();
        for index in 0..10 {
            appender.append(record(index));
        }
        appender.close().await;
    }
    // A crash in the middle of a write: half a frame at the end.
    let last = *segment_ids(dir.path()).last().unwrap();
    let mut torn = Vec::new();
    frame::encode(b"this record was never committed", &mut torn);
    fs::OpenOptions::new()
        .append(true)
        .open(segment::path(dir.path(), last))
        .unwrap()
        .write_all(&torn[..torn.len() / 2])
        .unwrap();
    let (appender, mut reader) = open(settings(dir.path())).unwrap();
    let stats = appender.stats();
    assert_eq!((stats.recovered, stats.torn_tails), (10, 1));
    appender.append(record(10));
    assert_eq!(read_records(&mut reader, 11, true).await, records(0..11));
}

#[tokio::test]
async fn damage_inside_an_old_segment_skips_its_rest_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut small_segments = settings(dir.path());
        small_segments.segment_bytes = 100;
        let (appender, _reader) = open(small_segments).unwrap();
        // One commit per append, so each segment holds a known set: 20
        // bytes a record, four to a 100-byte segment.
        for index in 0..8 {
            appender.append(record(index));
            while appender.stats().committed < index as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        appender.close().await;
    }
    let first = segment_ids(dir.path())[0];
    let path = segment::path(dir.path(), first);
    let mut bytes = fs::read(&path).unwrap();
    // The second record's payload.
    let second = SEGMENT_HEADER_LEN as usize + 20 + 8;
    bytes[second] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (appender, mut reader) = open(settings(dir.path())).unwrap();
    // Recovery cuts the first segment after its only intact record.
    assert_eq!(appender.stats().torn_tails, 1);
    let mut expected = records(0..1);
    expected.extend(records(4..8));
    assert_eq!(read_records(&mut reader, 5, true).await, expected);
}

#[tokio::test]
async fn past_the_disk_budget_records_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut tiny = settings(dir.path());
    // The new segment's header, and three 20-byte records.
    tiny.disk_budget_bytes = SEGMENT_HEADER_LEN + 60;
    let (appender, mut reader) = open(tiny).unwrap();
    let answers: Vec<Appended> = (0..5).map(|index| appender.append(record(index))).collect();
    assert_eq!(
        answers,
        vec![
            Appended::Accepted,
            Appended::Accepted,
            Appended::Accepted,
            Appended::OverBudget,
            Appended::OverBudget
        ]
    );
    assert_eq!(appender.stats().dropped_disk_budget, 2);
    assert_eq!(read_records(&mut reader, 3, true).await, records(0..3));
}

#[tokio::test]
async fn one_fsync_covers_the_records_of_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut slow = settings(dir.path());
    slow.commit_window = Duration::from_millis(200);
    let (appender, mut reader) = open(slow).unwrap();
    // The first commit goes at once; what follows within the window waits
    // for the next one.
    for index in 0..500 {
        appender.append(record(index));
    }
    assert_eq!(read_records(&mut reader, 500, true).await, records(0..500));
    let stats = appender.stats();
    assert!(stats.commits <= 3, "{stats:?}");
}

#[tokio::test]
async fn after_close_appends_are_refused_and_the_reader_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (appender, mut reader) = open(settings(dir.path())).unwrap();
    appender.append(record(0));
    appender.close().await;
    assert_eq!(appender.append(record(1)), Appended::Closed);
    assert_eq!(appender.stats().committed, 1);
    let batch = reader.next_batch(limits(10)).await.unwrap().unwrap();
    assert_eq!(batch.records, records(0..1));
    reader.acknowledge(batch).await.unwrap();
    assert!(reader.next_batch(limits(10)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_torn_tail_after_everything_was_delivered_is_counted_too() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (appender, mut reader) = open(settings(dir.path())).unwrap();
        appender.append(record(0));
        read_records(&mut reader, 1, true).await;
        appender.close().await;
    }
    let last = *segment_ids(dir.path()).last().unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(segment::path(dir.path(), last))
        .unwrap()
        .write_all(&[0x40, 0, 0, 0, 1, 2])
        .unwrap();
    let (appender, _reader) = open(settings(dir.path())).unwrap();
    let stats = appender.stats();
    assert_eq!((stats.recovered, stats.torn_tails), (0, 1));
}
