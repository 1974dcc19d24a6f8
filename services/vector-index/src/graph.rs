//! Keel's HNSW graph (Malkov & Yashunin, with hnswlib's neighbour
//! heuristic): the nodes' vectors in flat blocks and their neighbour
//! lists, layer 0 in one flat array of atomics.
//!
//! Nodes are numbered from 0 in the order they are appended, which is the
//! index's slot order. Appending (a vector, a level, empty lists) takes the
//! storage's write lock for a moment; linking a node into the graph and
//! searching only read it, so searches run while a batch is being linked.
//! A neighbour list is rewritten under its node's own mutex and read
//! without one: its ids are atomics, so a reader racing a rewrite sees a
//! mix of two valid lists, never an invalid id — what an approximate
//! search tolerates, as hnswlib's does.
//!
//! The graph is the only place the index keeps a vector. Flat storage is
//! what makes a search fast: measured on 100k 384-d vectors, a search read
//! each vector through its own allocation 25-30% slower than from a flat
//! block (a second dependent memory access per distance).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::distance::Metric;

/// Layers above this are never drawn: with M = 2 a level of 16 comes once
/// in 65,536 nodes, with M = 16 once in 10^19.
pub const MAX_LEVEL: usize = 16;

const NO_ENTRY: u64 = u64::MAX;

/// A node and its distance to the query (lower is closer), ordered by
/// distance, then node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub distance: f32,
    pub node: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

/// Where every search starts: a node on the top layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub node: u32,
    pub level: usize,
}

impl Entry {
    fn pack(self) -> u64 {
        ((self.level as u64) << 32) | u64::from(self.node)
    }

    fn unpack(packed: u64) -> Option<Entry> {
        (packed != NO_ENTRY).then_some(Entry {
            node: packed as u32,
            level: (packed >> 32) as usize,
        })
    }
}

pub struct Graph {
    pub(crate) metric: Metric,
    /// Links per node on the upper layers; layer 0 has twice as many.
    pub(crate) m: usize,
    pub(crate) ef_construction: usize,
    pub(crate) storage: RwLock<Storage>,
    entry: AtomicU64,
}

/// Vectors per block of [`VectorBlocks`].
const NODES_PER_BLOCK: usize = 1 << 14;

/// The nodes' vectors, `dimension` f32s each, in blocks allocated whole:
/// appending fills the last block and never moves a vector already stored
/// (a growing flat array would copy every vector at each doubling, under
/// the write lock).
pub(crate) struct VectorBlocks {
    dimension: usize,
    blocks: Vec<Vec<f32>>,
    len: usize,
}

impl VectorBlocks {
    fn push(&mut self, vector: &[f32]) {
        if self.len == 0 {
            self.dimension = vector.len();
        }
        let dimension = self.dimension;
        if self.len.is_multiple_of(NODES_PER_BLOCK) {
            self.blocks
                .push(Vec::with_capacity(NODES_PER_BLOCK * dimension));
        }
        if let Some(block) = self.blocks.last_mut() {
            // The index checks every vector's dimension before it gets
            // here; a wrong one is cut or padded rather than shifting every
            // later vector.
            block.extend(
                vector
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0.0))
                    .take(dimension),
            );
        }
        self.len += 1;
    }

    pub(crate) fn get(&self, node: usize) -> Option<&[f32]> {
        let block = self.blocks.get(node / NODES_PER_BLOCK)?;
        let start = (node % NODES_PER_BLOCK) * self.dimension;
        block.get(start..start + self.dimension)
    }

    pub(crate) fn dimension(&self) -> usize {
        self.dimension
    }
}

pub(crate) struct Storage {
    pub(crate) vectors: VectorBlocks,
    pub(crate) levels: Vec<u8>,
    /// Per node `1 + 2m` atomics: the list's length, then its ids.
    layer0: Vec<AtomicU32>,
    /// Per node, per layer 1..=level, `1 + m` atomics laid out the same.
    upper: Vec<Box<[AtomicU32]>>,
    /// Taken to rewrite the node's lists.
    pub(crate) locks: Vec<Mutex<()>>,
    m: usize,
}

/// The most links a node keeps on `layer`: `m`, twice that on layer 0.
pub(crate) fn links_per_node(m: usize, layer: usize) -> usize {
    if layer == 0 {
        2 * m
    } else {
        m
    }
}

fn empty_lists(count: usize) -> impl Iterator<Item = AtomicU32> {
    (0..count).map(|_| AtomicU32::new(0))
}

impl Storage {
    fn new(m: usize) -> Storage {
        Storage {
            vectors: VectorBlocks {
                dimension: 0,
                blocks: Vec::new(),
                len: 0,
            },
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            m,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    /// The most links a node keeps on `layer`.
    pub(crate) fn capacity(&self, layer: usize) -> usize {
        links_per_node(self.m, layer)
    }

    pub(crate) fn push(&mut self, vector: &[f32], level: usize) {
        self.vectors.push(vector);
        self.levels.push(level as u8);
        self.layer0.extend(empty_lists(1 + self.capacity(0)));
        self.upper.push(empty_lists(level * (1 + self.m)).collect());
        self.locks.push(Mutex::new(()));
    }

    /// The node's list on `layer` (length first); empty above its level.
    fn list(&self, node: usize, layer: usize) -> &[AtomicU32] {
        let list = if layer == 0 {
            let stride = 1 + self.capacity(0);
            self.layer0.get(node * stride..(node + 1) * stride)
        } else {
            let stride = 1 + self.m;
            self.upper
                .get(node)
                .and_then(|lists| lists.get((layer - 1) * stride..layer * stride))
        };
        list.unwrap_or(&[])
    }

    /// The node's neighbours on `layer`.
    pub(crate) fn neighbours(&self, node: usize, layer: usize) -> impl Iterator<Item = u32> + '_ {
        let list = self.list(node, layer);
        let length = list
            .first()
            .map_or(0, |length| length.load(Ordering::Acquire) as usize)
            .min(list.len().saturating_sub(1));
        list.iter()
            .skip(1)
            .take(length)
            .map(|id| id.load(Ordering::Relaxed))
    }

    /// Replaces the node's list on `layer`; the caller holds its lock.
    pub(crate) fn set_neighbours(&self, node: usize, layer: usize, ids: impl Iterator<Item = u32>) {
        let list = self.list(node, layer);
        let Some((length, slots)) = list.split_first() else {
            return;
        };
        let mut written = 0;
        for (slot, id) in slots.iter().zip(ids) {
            slot.store(id, Ordering::Relaxed);
            written += 1;
        }
        length.store(written, Ordering::Release);
    }

    pub(crate) fn distance(&self, metric: Metric, left: &[f32], node: u32) -> f32 {
        match self.vectors.get(node as usize) {
            Some(vector) => metric.distance(left, vector),
            None => f32::MAX,
        }
    }

    pub(crate) fn vector(&self, node: usize) -> Option<&[f32]> {
        self.vectors.get(node)
    }
}

/// The node's level, drawn from its number so that a build is repeatable:
/// `floor(-ln(u) / ln(m))` for `u` uniform in (0, 1], as the paper has.
fn level_of(node: usize, m: usize) -> usize {
    let mut bits = (node as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    bits = (bits ^ (bits >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    bits = (bits ^ (bits >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    bits ^= bits >> 31;
    let uniform = ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = -uniform.ln() / (m.max(2) as f64).ln();
    (level as usize).min(MAX_LEVEL)
}

/// One node as a snapshot holds it.
pub(crate) struct NodeParts {
    pub vector: Vec<f32>,
    pub level: usize,
    /// Per layer 0..=level, the ids.
    pub lists: Vec<Vec<u32>>,
}

/// The graph as it was at one moment, for a snapshot to write while the
/// graph goes on changing: the lists copied (a copy in memory takes a
/// fraction of the time writing them out does); the vectors are read from
/// the graph as they are written out, since a stored vector never changes.
pub struct FrozenGraph {
    pub(crate) graph: Arc<Graph>,
    pub(crate) m: usize,
    pub(crate) entry: Option<Entry>,
    pub(crate) levels: Vec<u8>,
    /// Per node, per layer 0..=level: the list's length, then its ids.
    pub(crate) lists: Vec<u32>,
}

impl FrozenGraph {
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

impl Graph {
    pub fn new(metric: Metric, m: usize, ef_construction: usize) -> Graph {
        let m = m.max(2);
        Graph {
            metric,
            m,
            ef_construction,
            storage: RwLock::new(Storage::new(m)),
            entry: AtomicU64::new(NO_ENTRY),
        }
    }

    /// A graph read back from a snapshot.
    pub(crate) fn from_parts(
        metric: Metric,
        m: usize,
        ef_construction: usize,
        nodes: Vec<NodeParts>,
        entry: Option<Entry>,
    ) -> Graph {
        let graph = Graph::new(metric, m, ef_construction);
        {
            let mut storage = graph.storage.write();
            for (node, parts) in nodes.into_iter().enumerate() {
                storage.push(&parts.vector, parts.level);
                for (layer, ids) in parts.lists.into_iter().enumerate() {
                    storage.set_neighbours(node, layer, ids.into_iter());
                }
            }
        }
        graph
            .entry
            .store(entry.map_or(NO_ENTRY, Entry::pack), Ordering::Release);
        graph
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn len(&self) -> usize {
        self.storage.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn entry(&self) -> Option<Entry> {
        Entry::unpack(self.entry.load(Ordering::Acquire))
    }

    /// Makes `entry` the entry point unless one as high is already set.
    pub(crate) fn raise_entry(&self, entry: Entry) {
        let mut current = self.entry.load(Ordering::Acquire);
        loop {
            if Entry::unpack(current).is_some_and(|current| current.level >= entry.level) {
                return;
            }
            match self.entry.compare_exchange(
                current,
                entry.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// A copy of the graph as it is now. Call it while no node is being
    /// linked, so that every node is wholly in the graph.
    pub fn freeze(self: &Arc<Self>) -> FrozenGraph {
        let storage = self.read();
        let mut lists = Vec::with_capacity(storage.len() * (2 + storage.capacity(0)));
        for (node, level) in storage.levels.iter().enumerate() {
            for layer in 0..=usize::from(*level) {
                let length_at = lists.len();
                lists.push(0);
                lists.extend(storage.neighbours(node, layer));
                lists[length_at] = (lists.len() - length_at - 1) as u32;
            }
        }
        FrozenGraph {
            graph: Arc::clone(self),
            m: self.m,
            entry: self.entry(),
            levels: storage.levels.clone(),
            lists,
        }
    }

    /// A copy of the node's vector.
    pub fn vector(&self, node: usize) -> Option<Vec<f32>> {
        self.storage.read().vector(node).map(<[f32]>::to_vec)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.storage.read()
    }

    /// Adds nodes for `vectors`, not yet linked (no search reaches them);
    /// returns their numbers.
    pub fn append<'a>(&self, vectors: impl IntoIterator<Item = &'a [f32]>) -> Range<usize> {
        let mut storage = self.storage.write();
        let first = storage.len();
        for vector in vectors {
            let level = level_of(storage.len(), self.m);
            storage.push(vector, level);
        }
        first..storage.len()
    }
}
