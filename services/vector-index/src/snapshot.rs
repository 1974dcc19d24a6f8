//! Snapshots of a collection's index on disk, so that a start loads the
//! graph instead of rebuilding it: the graph with its vectors (`graph.bin`,
//! see `graph_io`), the slot table (each slot's point id and seq), and a
//! manifest written last with every file's length and CRC-32.
//!
//! `<root>/<collection>/snapshot-<generation>/` holds one snapshot; it is
//! written under `….partial` and renamed once complete and synced. A start
//! takes the newest snapshot whose manifest, checksums and collection all
//! match, and replays the rows written after it from the database. A torn,
//! missing or foreign snapshot is skipped with a warning: the collection
//! is rebuilt instead, never refused.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::graph::{FrozenGraph, Graph};
use crate::graph_io::{read_graph, write_graph};
use crate::index::SlotTable;

/// 1 was hnsw_rs's dump; its snapshots are refused and rebuilt.
const FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.json";
const SLOTS: &str = "slots.bin";
const GRAPH: &str = "graph.bin";
const SLOTS_MAGIC: &[u8; 8] = b"KEELSLOT";
const PARTIAL_SUFFIX: &str = ".partial";
const SNAPSHOT_PREFIX: &str = "snapshot-";

/// Where the snapshots of every collection live.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

/// What a snapshot must agree with to be loaded for a collection: a
/// collection dropped and created again under the same name, or with other
/// graph parameters, never gets the old graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotKey {
    pub collection: String,
    pub created_at_ms: i64,
    pub metric: String,
    pub dimension: usize,
    pub m: usize,
    pub ef_construction: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    key: SnapshotKey,
    /// Every write of the collection with a seq up to this one is in the
    /// snapshot; later ones are replayed from the database.
    covered_seq: i64,
    slots: usize,
    files: Vec<FileSum>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileSum {
    name: String,
    bytes: u64,
    crc32: u32,
}

/// A snapshot read back: the graph, its slot table and how far it covers.
pub struct LoadedSnapshot {
    pub graph: Graph,
    pub slot_table: SlotTable,
    pub covered_seq: i64,
}

impl SnapshotStore {
    pub fn new(root: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { root: root.into() }
    }

    fn collection_dir(&self, collection: &str) -> PathBuf {
        self.root.join(collection)
    }

    /// Writes a snapshot of `graph` and `slot_table` (one slot per node)
    /// and removes the older ones. Blocking.
    pub fn write(
        &self,
        key: &SnapshotKey,
        graph: &FrozenGraph,
        slot_table: &SlotTable,
        covered_seq: i64,
    ) -> io::Result<PathBuf> {
        if graph.len() != slot_table.len() {
            return Err(io::Error::other(format!(
                "a graph of {} nodes with {} slots",
                graph.len(),
                slot_table.len()
            )));
        }
        let dir = self.collection_dir(&key.collection);
        fs::create_dir_all(&dir)?;
        let existing = snapshot_dirs(&dir)?;
        let generation = existing.first().map_or(1, |(generation, _)| generation + 1);
        let final_dir = dir.join(format!("{SNAPSHOT_PREFIX}{generation:010}"));
        let partial = dir.join(format!("{SNAPSHOT_PREFIX}{generation:010}{PARTIAL_SUFFIX}"));
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        fs::create_dir_all(&partial)?;
        let mut graph_file = BufWriter::with_capacity(1 << 20, File::create(partial.join(GRAPH))?);
        write_graph(graph, &mut graph_file)?;
        graph_file
            .into_inner()
            .map_err(|error| error.into_error())?
            .sync_all()?;
        write_slot_table(&partial.join(SLOTS), slot_table)?;
        let mut files = Vec::new();
        for name in [GRAPH.to_string(), SLOTS.to_string()] {
            let path = partial.join(&name);
            let (bytes, crc32) = checksum(&path)?;
            files.push(FileSum { name, bytes, crc32 });
        }
        let manifest = Manifest {
            format: FORMAT,
            key: key.clone(),
            covered_seq,
            slots: slot_table.len(),
            files,
        };
        let mut manifest_file = File::create(partial.join(MANIFEST))?;
        manifest_file.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
        manifest_file.sync_all()?;
        fs::rename(&partial, &final_dir)?;
        File::open(&dir)?.sync_all()?;
        for (_, older) in existing {
            if let Err(error) = fs::remove_dir_all(&older) {
                tracing::warn!(path = %older.display(), %error, "could not remove an older snapshot");
            }
        }
        remove_partials(&dir);
        Ok(final_dir)
    }

    /// The newest snapshot of the collection that is whole and belongs to
    /// it; `None` (with the reason logged) when there is none. Blocking.
    #[cfg(test)]
    pub fn load(&self, key: &SnapshotKey, metric: Metric) -> Option<LoadedSnapshot> {
        let found = self.find(key)?;
        match found.read(metric) {
            Ok(loaded) => Some(loaded),
            Err(reason) => {
                tracing::warn!(collection = %key.collection, %reason, "snapshot refused");
                None
            }
        }
    }

    /// The newest snapshot of the collection whose manifest, checksums and
    /// collection match, not yet read; `None` (reasons logged) when none
    /// does. Blocking.
    pub fn find(&self, key: &SnapshotKey) -> Option<FoundSnapshot> {
        let dir = self.collection_dir(&key.collection);
        let candidates = match snapshot_dirs(&dir) {
            Ok(candidates) => candidates,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(collection = %key.collection, %error, "snapshots unreadable; rebuilding");
                return None;
            }
        };
        for (_, path) in candidates {
            match check(&path, key) {
                Ok(manifest) => return Some(FoundSnapshot { path, manifest }),
                Err(reason) => tracing::warn!(
                    collection = %key.collection,
                    snapshot = %path.display(),
                    %reason,
                    "snapshot refused"
                ),
            }
        }
        None
    }

    /// The highest seq any snapshot on disk covers (0 with none). Blocking.
    pub fn max_covered_seq(&self) -> i64 {
        let Ok(collections) = fs::read_dir(&self.root) else {
            return 0;
        };
        let mut highest = 0;
        for collection in collections.flatten() {
            let Ok(snapshots) = snapshot_dirs(&collection.path()) else {
                continue;
            };
            for (_, path) in snapshots {
                let manifest = fs::read(path.join(MANIFEST))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok());
                if let Some(manifest) = manifest {
                    highest = highest.max(manifest.covered_seq);
                }
            }
        }
        highest
    }

    /// Removes every snapshot of the collection.
    pub fn remove(&self, collection: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.collection_dir(collection)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

/// The finished snapshot directories, newest generation first.
fn snapshot_dirs(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(generation) = name.strip_prefix(SNAPSHOT_PREFIX) else {
            continue;
        };
        if let Ok(generation) = generation.parse::<u64>() {
            found.push((generation, entry.path()));
        }
    }
    found.sort_by_key(|(generation, _)| std::cmp::Reverse(*generation));
    Ok(found)
}

/// Snapshots a crash interrupted: never complete, never loaded.
fn remove_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(PARTIAL_SUFFIX)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A whole snapshot of the collection, found by [`SnapshotStore::find`].
pub struct FoundSnapshot {
    path: PathBuf,
    manifest: Manifest,
}

impl FoundSnapshot {
    /// Every write with a seq up to this one is in the snapshot.
    pub fn covered_seq(&self) -> i64 {
        self.manifest.covered_seq
    }

    /// Reads the slot table and the graph. Blocking.
    pub fn read(self, metric: Metric) -> Result<LoadedSnapshot, String> {
        let slot_table =
            read_slot_table(&self.path.join(SLOTS)).map_err(|error| format!("{SLOTS}: {error}"))?;
        if slot_table.len() != self.manifest.slots {
            return Err(format!(
                "{SLOTS} holds {} slots, the manifest says {}",
                slot_table.len(),
                self.manifest.slots
            ));
        }
        let key = &self.manifest.key;
        let file =
            File::open(self.path.join(GRAPH)).map_err(|error| format!("{GRAPH}: {error}"))?;
        let graph = read_graph(
            metric,
            key.m,
            key.ef_construction,
            &mut BufReader::with_capacity(1 << 20, file),
        )
        .map_err(|error| format!("{GRAPH}: {error}"))?;
        if graph.len() != slot_table.len() {
            return Err(format!(
                "the graph holds {} nodes, the slot table {}",
                graph.len(),
                slot_table.len()
            ));
        }
        Ok(LoadedSnapshot {
            graph,
            slot_table,
            covered_seq: self.manifest.covered_seq,
        })
    }
}

/// The snapshot's manifest, once it matches `key` and every file matches
/// its length and checksum.
fn check(path: &Path, key: &SnapshotKey) -> Result<Manifest, String> {
    let manifest_bytes =
        fs::read(path.join(MANIFEST)).map_err(|error| format!("no manifest: {error}"))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| format!("unreadable manifest: {error}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "format {} (this build reads {FORMAT})",
            manifest.format
        ));
    }
    if &manifest.key != key {
        return Err(format!(
            "taken of another collection or other parameters: {:?}",
            manifest.key
        ));
    }
    for file in &manifest.files {
        let (bytes, crc32) =
            checksum(&path.join(&file.name)).map_err(|error| format!("{}: {error}", file.name))?;
        if (bytes, crc32) != (file.bytes, file.crc32) {
            return Err(format!(
                "{} is torn: {bytes} bytes with CRC-32 {crc32:08x}, the manifest says {} bytes with {:08x}",
                file.name, file.bytes, file.crc32
            ));
        }
    }
    Ok(manifest)
}

fn checksum(path: &Path) -> io::Result<(u64, u32)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((bytes, hasher.finalize()))
}

/// `KEELSLOT`, the slot count (u64), then per slot a live flag (u8) and,
/// when live, the seq (i64) and the id (u32 length, UTF-8 bytes); all
/// little-endian.
fn write_slot_table(path: &Path, slot_table: &SlotTable) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(SLOTS_MAGIC)?;
    out.write_all(&(slot_table.len() as u64).to_le_bytes())?;
    for slot in slot_table {
        match slot {
            None => out.write_all(&[0])?,
            Some((id, seq)) => {
                out.write_all(&[1])?;
                out.write_all(&seq.to_le_bytes())?;
                let length = u32::try_from(id.len()).map_err(io::Error::other)?;
                out.write_all(&length.to_le_bytes())?;
                out.write_all(id.as_bytes())?;
            }
        }
    }
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()
}

fn read_slot_table(path: &Path) -> io::Result<SlotTable> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != SLOTS_MAGIC {
        return Err(io::Error::other("not a slot table"));
    }
    let count = u64::from_le_bytes(read_array(&mut input)?);
    let count = usize::try_from(count).map_err(io::Error::other)?;
    let mut slots = Vec::with_capacity(count.min(1 << 24));
    for _ in 0..count {
        let [live] = read_array::<1>(&mut input)?;
        if live == 0 {
            slots.push(None);
            continue;
        }
        let seq = i64::from_le_bytes(read_array(&mut input)?);
        let length = u32::from_le_bytes(read_array(&mut input)?) as usize;
        let mut id = vec![0u8; length];
        input.read_exact(&mut id)?;
        let id = String::from_utf8(id).map_err(io::Error::other)?;
        slots.push(Some((id, seq)));
    }
    Ok(slots)
}

fn read_array<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::PayloadFilter;
    use crate::index::{CollectionIndex, IndexedPoint, DEFAULT_HNSW_PARAMS};
    use serde_json::json;

    fn key(collection: &str) -> SnapshotKey {
        SnapshotKey {
            collection: collection.to_string(),
            created_at_ms: 1,
            metric: "cosine".to_string(),
            dimension: 8,
            m: DEFAULT_HNSW_PARAMS.m,
            ef_construction: DEFAULT_HNSW_PARAMS.ef_construction,
        }
    }

    fn points(count: usize, first_seq: i64) -> Vec<IndexedPoint> {
        let mut next = crate::distance::tests::test_values(first_seq as u64 + 17);
        (0..count)
            .map(|n| IndexedPoint {
                id: format!("p{n:04}"),
                seq: first_seq + n as i64,
                vector: Metric::Cosine
                    .index_form(&(0..8).map(|_| next()).collect::<Vec<f32>>())
                    .unwrap(),
                text: format!("text {n}"),
                payload: json!({"n": n}).as_object().cloned().unwrap(),
            })
            .collect()
    }

    fn write(store: &SnapshotStore, index: &CollectionIndex, covered_seq: i64) -> PathBuf {
        let (graph, slot_table) = index.snapshot_parts();
        store
            .write(&key("docs"), &graph, &slot_table, covered_seq)
            .unwrap()
    }

    /// The rows as a start reads them: vectors only after `covered_seq`.
    fn rows_after(points: &[IndexedPoint], covered_seq: i64) -> Vec<IndexedPoint> {
        points
            .iter()
            .cloned()
            .map(|mut point| {
                if point.seq <= covered_seq {
                    point.vector = Vec::new();
                }
                point
            })
            .collect()
    }

    #[test]
    fn a_restored_index_answers_as_the_one_snapshotted_plus_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        let first = points(300, 1);
        let mut index =
            CollectionIndex::empty(Metric::Cosine, DEFAULT_HNSW_PARAMS, &["n".to_string()]);
        index.stage_upsert(first.clone()).run();
        index.delete(&["p0003".to_string()]);
        write(&store, &index, 300);

        // After the snapshot: p0005 replaced, p0007 deleted (its row gone).
        let mut rows: Vec<IndexedPoint> = first
            .iter()
            .filter(|point| !["p0003", "p0005", "p0007"].contains(&point.id.as_str()))
            .cloned()
            .collect();
        let mut replaced = points(6, 301).pop().unwrap();
        replaced.id = "p0005".to_string();
        rows.push(replaced.clone());

        let loaded = store.load(&key("docs"), Metric::Cosine).unwrap();
        assert_eq!(loaded.covered_seq, 300);
        assert_eq!(loaded.slot_table.len(), 300);
        assert_eq!(loaded.slot_table[3], None);
        let (restored, pending) = CollectionIndex::restore(
            Metric::Cosine,
            DEFAULT_HNSW_PARAMS,
            &["n".to_string()],
            loaded.graph,
            loaded.slot_table,
            rows_after(&rows, 300),
        )
        .unwrap();
        pending.run();
        assert_eq!(restored.live_count(), 298);
        let vector_of = |id: &str| restored.vector_of(restored.get(id).unwrap()).unwrap();
        assert_eq!(vector_of("p0005"), replaced.vector.to_vec());
        assert_eq!(vector_of("p0010"), first[10].vector.to_vec());
        assert!(restored.get("p0007").is_none());
        let everything = PayloadFilter::default();
        let hits = restored.search(&replaced.vector, 1, &everything, 0);
        assert_eq!(hits[0].point.id, "p0005");
        for point in rows.iter().take(50) {
            let hits = restored.search(&point.vector, 1, &everything, 0);
            assert_eq!(hits[0].point.id, point.id);
        }
        let by_n = PayloadFilter::equalities(json!({"n": 10}).as_object().cloned().unwrap());
        assert_eq!(restored.count(&by_n), 1);
    }

    #[test]
    fn torn_foreign_and_missing_snapshots_are_refused_and_older_ones_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        assert!(store.load(&key("docs"), Metric::Cosine).is_none());
        let mut index = CollectionIndex::empty(Metric::Cosine, DEFAULT_HNSW_PARAMS, &[]);
        index.stage_upsert(points(100, 1)).run();
        let older = write(&store, &index, 100);
        // A newer snapshot removes the older one; keep a copy of it to
        // fall back to.
        let kept = dir.path().join("kept");
        fs::create_dir(&kept).unwrap();
        for entry in fs::read_dir(&older).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), kept.join(entry.file_name())).unwrap();
        }
        index.stage_upsert(points(120, 101)).run();
        let newer = write(&store, &index, 220);
        assert!(!older.exists());
        fs::rename(&kept, &older).unwrap();

        let other_collection = SnapshotKey {
            created_at_ms: 2,
            ..key("docs")
        };
        assert!(store.load(&other_collection, Metric::Cosine).is_none());

        // Tear the newer graph file: the older snapshot is loaded.
        let graph_file = newer.join(GRAPH);
        let length = fs::metadata(&graph_file).unwrap().len();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&graph_file)
            .unwrap();
        file.set_len(length / 2).unwrap();
        let loaded = store.load(&key("docs"), Metric::Cosine).unwrap();
        assert_eq!(loaded.covered_seq, 100);
        assert_eq!(loaded.slot_table.len(), 100);

        // A missing manifest counts as no snapshot.
        fs::remove_file(older.join(MANIFEST)).unwrap();
        assert!(store.load(&key("docs"), Metric::Cosine).is_none());
        store.remove("docs").unwrap();
        assert!(!dir.path().join("docs").exists());
    }

    #[test]
    fn a_row_the_snapshot_should_hold_but_lacks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        let mut index = CollectionIndex::empty(Metric::Cosine, DEFAULT_HNSW_PARAMS, &[]);
        index.stage_upsert(points(20, 1)).run();
        write(&store, &index, 20);
        let loaded = store.load(&key("docs"), Metric::Cosine).unwrap();
        let mut stranger = points(1, 5).pop().unwrap();
        stranger.id = "stranger".to_string();
        stranger.vector = Vec::new();
        let error = CollectionIndex::restore(
            Metric::Cosine,
            DEFAULT_HNSW_PARAMS,
            &[],
            loaded.graph,
            loaded.slot_table,
            vec![stranger],
        )
        .err()
        .unwrap();
        assert!(error.contains("stranger"), "{error}");
    }
}
