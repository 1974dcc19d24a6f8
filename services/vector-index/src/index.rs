//! The in-memory index of one collection: an HNSW graph over the points'
//! vectors, the points themselves, and tombstones for the graph nodes whose
//! point was replaced or deleted (a graph node is never removed; compaction
//! rebuilds without them). Everything here is synchronous and CPU-bound:
//! callers run it on blocking threads.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, Range};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::distance::Metric;
use crate::filter::PayloadFilter;
use crate::graph::{FrozenGraph, Graph, Storage};
use crate::graph_search::Allowed;
use crate::payload_index::PayloadIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

pub const DEFAULT_HNSW_PARAMS: HnswParams = HnswParams {
    m: 16,
    ef_construction: 200,
    ef_search: 64,
};

/// A point as it is written to the index; `vector` is in the metric's
/// index form (unit length for cosine). The index keeps the vector in its
/// graph and the rest as a [`StoredPoint`]: each vector is held once.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedPoint {
    pub id: String,
    /// The write that made this version of the point (the database's
    /// insertion sequence): how a snapshot's slot is matched to its row.
    pub seq: i64,
    pub vector: Vec<f32>,
    pub text: String,
    pub payload: Map<String, Value>,
}

/// A point as the index keeps it; its vector is in the graph
/// ([`CollectionIndex::vector_of`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: String,
    pub seq: i64,
    pub text: String,
    pub payload: Map<String, Value>,
}

impl StoredPoint {
    /// A copy without the vector, for a write that stays shared
    /// (compaction's log and the text index hold it too).
    fn of(point: &IndexedPoint) -> StoredPoint {
        StoredPoint {
            id: point.id.clone(),
            seq: point.seq,
            text: point.text.clone(),
            payload: point.payload.clone(),
        }
    }
}

impl From<IndexedPoint> for StoredPoint {
    fn from(point: IndexedPoint) -> StoredPoint {
        StoredPoint {
            id: point.id,
            seq: point.seq,
            text: point.text,
            payload: point.payload,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub point: Arc<StoredPoint>,
    pub score: f32,
}

/// What a snapshot keeps of an index besides its graph: each slot's point
/// id and seq, `None` for a tombstone.
pub type SlotTable = Vec<Option<(String, i64)>>;

/// A slot as the payload index keys it. Slots are graph data ids, counted
/// from 0 by insertion; a collection would need four billion writes
/// between compactions to pass `u32`.
fn slot_key(slot: usize) -> u32 {
    u32::try_from(slot).unwrap_or(u32::MAX)
}

/// A filter matching fewer than 1/10 of the live points is searched
/// exactly: the graph walk would visit mostly non-matching nodes.
const SELECTIVE_FILTER_DIVISOR: usize = 10;

/// Exact scans over at least this many points are scored in parallel.
const PARALLEL_SCAN_MIN_POINTS: usize = 20_000;

pub struct CollectionIndex {
    metric: Metric,
    params: HnswParams,
    graph: Arc<Graph>,
    /// By graph data id, in insertion order; `None` is a tombstone.
    slots: Vec<Option<Arc<StoredPoint>>>,
    /// External id -> slot of its live version, ordered for scrolling.
    live_slots_by_id: BTreeMap<String, usize>,
    /// The payload keys the collection declared, for the payload index.
    indexed_keys: Vec<String>,
    payload_index: PayloadIndex,
}

/// Graph links for points that [`CollectionIndex::stage_upsert`] already
/// made visible to exact scans. Run them without holding the index lock:
/// the graph links through `&self`, so searches go on meanwhile.
#[must_use]
pub struct PendingInserts {
    graph: Arc<Graph>,
    nodes: Range<usize>,
}

impl PendingInserts {
    pub fn run(self) {
        self.graph.link(self.nodes);
    }
}

/// One page of [`CollectionIndex::scroll`].
pub struct ScrollPage {
    pub points: Vec<Arc<StoredPoint>>,
    /// The id to continue after; `None` on the last page.
    pub next_after: Option<String>,
}

impl CollectionIndex {
    pub fn empty(metric: Metric, params: HnswParams, indexed_keys: &[String]) -> CollectionIndex {
        CollectionIndex::build(metric, params, indexed_keys, Vec::new())
    }

    /// Builds the graph from `points` in the given (insertion) order; a later
    /// point with the same id replaces an earlier one.
    pub fn build(
        metric: Metric,
        params: HnswParams,
        indexed_keys: &[String],
        points: Vec<Arc<IndexedPoint>>,
    ) -> CollectionIndex {
        let graph = Graph::new(metric, params.m, params.ef_construction);
        let mut index = CollectionIndex {
            metric,
            params,
            graph: Arc::new(graph),
            slots: Vec::with_capacity(points.len()),
            live_slots_by_id: BTreeMap::new(),
            indexed_keys: indexed_keys.to_vec(),
            payload_index: PayloadIndex::new(indexed_keys),
        };
        let pending = index.stage(points);
        pending.run();
        index
    }

    pub fn indexed_keys(&self) -> &[String] {
        &self.indexed_keys
    }

    /// A copy of the graph and the slot table, for a snapshot. The caller
    /// keeps writes out while this runs, so that every slot is a linked
    /// graph node; the copy is written after, while writes go on.
    pub fn snapshot_parts(&self) -> (FrozenGraph, SlotTable) {
        let slot_table = self
            .slots
            .iter()
            .map(|slot| slot.as_ref().map(|point| (point.id.clone(), point.seq)))
            .collect();
        (self.graph.freeze(), slot_table)
    }

    /// The index from a snapshot (its graph and slot table) and the
    /// collection's rows in seq order. A row whose id and seq the snapshot
    /// holds takes its slot and the graph's vector; the other rows, written
    /// after the snapshot, must carry their vector and are returned as
    /// inserts still to run. Snapshot slots no row claims (the points
    /// deleted or replaced since) become tombstones.
    pub fn restore(
        metric: Metric,
        params: HnswParams,
        indexed_keys: &[String],
        graph: Graph,
        slot_table: SlotTable,
        rows: Vec<IndexedPoint>,
    ) -> Result<(CollectionIndex, PendingInserts), String> {
        if graph.len() != slot_table.len() {
            return Err(format!(
                "the graph holds {} nodes, the slot table {} slots",
                graph.len(),
                slot_table.len()
            ));
        }
        let snapshot_slot_by_id: HashMap<&str, (usize, i64)> = slot_table
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let (id, seq) = entry.as_ref()?;
                Some((id.as_str(), (slot, *seq)))
            })
            .collect();
        let mut index = CollectionIndex {
            metric,
            params,
            graph: Arc::new(graph),
            slots: vec![None; slot_table.len()],
            live_slots_by_id: BTreeMap::new(),
            indexed_keys: indexed_keys.to_vec(),
            payload_index: PayloadIndex::new(indexed_keys),
        };
        let mut written_since = Vec::new();
        for row in rows {
            match snapshot_slot_by_id.get(row.id.as_str()) {
                Some(&(slot, seq)) if seq == row.seq => {
                    index.payload_index.insert(slot_key(slot), &row.payload);
                    index.live_slots_by_id.insert(row.id.clone(), slot);
                    index.slots[slot] = Some(Arc::new(StoredPoint::from(row)));
                }
                _ if row.vector.is_empty() => {
                    return Err(format!(
                        "point `{}` (seq {}) is neither in the snapshot nor written after it",
                        row.id, row.seq
                    ));
                }
                _ => written_since.push(Arc::new(row)),
            }
        }
        let pending = index.stage(written_since);
        Ok((index, pending))
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    pub fn live_count(&self) -> usize {
        self.live_slots_by_id.len()
    }

    pub fn tombstone_count(&self) -> usize {
        self.slots.len() - self.live_slots_by_id.len()
    }

    /// True once tombstones are more than half of the graph.
    pub fn needs_rebuild(&self) -> bool {
        self.tombstone_count() * 2 > self.slots.len()
    }

    /// The live points in insertion order.
    pub fn live_points(&self) -> Vec<Arc<StoredPoint>> {
        self.slots.iter().flatten().cloned().collect()
    }

    /// The live points in insertion order with their vectors, to rebuild
    /// from.
    pub fn live_writes(&self) -> Vec<Arc<IndexedPoint>> {
        let storage = self.graph.read();
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, point)| {
                let point = point.as_ref()?;
                Some(Arc::new(IndexedPoint {
                    id: point.id.clone(),
                    seq: point.seq,
                    vector: storage.vector(slot)?.to_vec(),
                    text: point.text.clone(),
                    payload: point.payload.clone(),
                }))
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<StoredPoint>> {
        let slot = *self.live_slots_by_id.get(id)?;
        self.slots.get(slot)?.as_ref()
    }

    /// The vector of this version of the point (index form); `None` once it
    /// was replaced or deleted.
    pub fn vector_of(&self, point: &StoredPoint) -> Option<Vec<f32>> {
        let slot = *self.live_slots_by_id.get(&point.id)?;
        let live = self.slots.get(slot)?.as_ref()?;
        if live.seq != point.seq {
            return None;
        }
        self.graph.vector(slot)
    }

    /// Makes `points` live (tombstoning the versions they replace) and
    /// returns the graph inserts still to run.
    pub fn stage_upsert(&mut self, points: Vec<IndexedPoint>) -> PendingInserts {
        self.stage(points.into_iter().map(Arc::new).collect())
    }

    /// [`Self::stage_upsert`] for points already shared.
    pub fn stage_points(&mut self, points: Vec<Arc<IndexedPoint>>) -> PendingInserts {
        self.stage(points)
    }

    fn stage(&mut self, points: Vec<Arc<IndexedPoint>>) -> PendingInserts {
        // Graph nodes are numbered like slots: both only ever grow, together.
        let nodes = self
            .graph
            .append(points.iter().map(|point| point.vector.as_slice()));
        debug_assert_eq!(nodes.start, self.slots.len());
        for point in points {
            let slot = self.slots.len();
            if let Some(replaced_slot) = self.live_slots_by_id.insert(point.id.clone(), slot) {
                self.tombstone(replaced_slot);
            }
            self.payload_index.insert(slot_key(slot), &point.payload);
            self.slots.push(Some(Arc::new(StoredPoint::of(&point))));
        }
        PendingInserts {
            graph: Arc::clone(&self.graph),
            nodes,
        }
    }

    /// Removes the points with these ids; returns how many were live.
    pub fn delete(&mut self, ids: &[String]) -> usize {
        let mut deleted = 0;
        for id in ids {
            if let Some(slot) = self.live_slots_by_id.remove(id) {
                self.tombstone(slot);
                deleted += 1;
            }
        }
        deleted
    }

    fn tombstone(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot) {
            if let Some(point) = entry.take() {
                self.payload_index.remove(slot_key(slot), &point.payload);
            }
        }
    }

    /// How many live points `filter` keeps.
    pub fn count(&self, filter: &PayloadFilter) -> usize {
        if filter.is_empty() {
            return self.live_count();
        }
        self.matching_slots(filter).len()
    }

    /// Up to `limit` live points that `filter` keeps, by id, after the id
    /// `after` when given.
    pub fn scroll(&self, filter: &PayloadFilter, after: Option<&str>, limit: usize) -> ScrollPage {
        let start = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        let mut points: Vec<Arc<StoredPoint>> = Vec::with_capacity(limit.min(1024) + 1);
        if !filter.is_empty() && self.payload_index.candidates(filter).is_some() {
            // The index names the matches: sorting them beats walking every id.
            let mut matching: Vec<&Arc<StoredPoint>> = self
                .matching_slots(filter)
                .into_iter()
                .filter_map(|slot| self.slots.get(slot)?.as_ref())
                .filter(|point| after.is_none_or(|after| point.id.as_str() > after))
                .collect();
            matching.sort_unstable_by(|left, right| left.id.cmp(&right.id));
            points.extend(matching.into_iter().take(limit + 1).cloned());
        } else {
            let live = self
                .live_slots_by_id
                .range::<str, _>((start, Bound::Unbounded))
                .filter_map(|(_, slot)| self.slots.get(*slot)?.as_ref())
                .filter(|point| filter.matches(&point.payload));
            points.extend(live.take(limit + 1).cloned());
        }
        let next_after = if points.len() > limit {
            points.truncate(limit);
            points.last().map(|point| point.id.clone())
        } else {
            None
        };
        ScrollPage { points, next_after }
    }

    /// The live slots `filter` keeps, ascending: from the payload index's
    /// candidates when it can name them, else by reading every payload.
    fn matching_slots(&self, filter: &PayloadFilter) -> Vec<usize> {
        let keeps = |slot: usize| {
            self.slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|point| filter.matches(&point.payload))
        };
        match self.payload_index.candidates(filter) {
            Some(candidates) => candidates
                .iter()
                .map(|slot| slot as usize)
                .filter(|slot| keeps(*slot))
                .collect(),
            None => (0..self.slots.len()).filter(|slot| keeps(*slot)).collect(),
        }
    }

    /// The `top_k` best live points for `query` (index form) among those
    /// the filter keeps, best first, ties by id.
    pub fn search(
        &self,
        query: &[f32],
        top_k: usize,
        filter: &PayloadFilter,
        exact_search_threshold: usize,
    ) -> Vec<Hit> {
        let ef = self.params.ef_search;
        self.search_with_ef(query, top_k, filter, exact_search_threshold, ef)
    }

    /// [`Self::search`] with the graph's candidate list `ef` long (at least
    /// `top_k`) instead of the collection's default.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        top_k: usize,
        filter: &PayloadFilter,
        exact_search_threshold: usize,
        ef: usize,
    ) -> Vec<Hit> {
        let live_count = self.live_count();
        if live_count == 0 || top_k == 0 {
            return Vec::new();
        }
        let ef = ef.max(top_k);
        if filter.is_empty() {
            let live_slots = || self.live_slots_by_id.values().copied();
            if live_count <= exact_search_threshold {
                return self.exact_search(query, top_k, live_slots());
            }
            let hits = self.graph_search(query, top_k, ef, filter, None);
            if hits.len() >= top_k.min(live_count) {
                return hits;
            }
            return self.exact_search(query, top_k, live_slots());
        }
        let matching_slots = self.matching_slots(filter);
        let selective = matching_slots.len() <= exact_search_threshold
            || matching_slots.len() * SELECTIVE_FILTER_DIVISOR < live_count;
        if selective {
            return self.exact_search(query, top_k, matching_slots.iter().copied());
        }
        let hits = self.graph_search(query, top_k, ef, filter, Some(&matching_slots));
        if hits.len() >= top_k.min(matching_slots.len()) {
            return hits;
        }
        self.exact_search(query, top_k, matching_slots.iter().copied())
    }

    fn graph_search(
        &self,
        query: &[f32],
        top_k: usize,
        ef: usize,
        filter: &PayloadFilter,
        allowed_slots: Option<&[usize]>,
    ) -> Vec<Hit> {
        let is_live = |slot: usize| self.slots.get(slot).is_some_and(Option::is_some);
        let allowed_set = allowed_slots.map(|slots| SlotSet::new(self.slots.len(), slots));
        let is_allowed = |slot: usize| allowed_set.as_ref().is_some_and(|set| set.contains(slot));
        let neighbours = match allowed_slots {
            Some(_) => self.graph.search(query, ef, Some(&is_allowed as Allowed)),
            None if self.tombstone_count() == 0 => self.graph.search(query, ef, None),
            None => self.graph.search(query, ef, Some(&is_live as Allowed)),
        };
        // Re-checked here so that no behaviour of the graph search can let a
        // tombstone or a non-matching point through.
        let metric = self.metric;
        let scored: Vec<(f32, &Arc<StoredPoint>)> = neighbours
            .iter()
            .filter_map(|neighbour| {
                let point = self.slots.get(neighbour.node as usize)?.as_ref()?;
                filter
                    .matches(&point.payload)
                    .then(|| (metric.score_from_distance(neighbour.distance), point))
            })
            .collect();
        self.rank(scored, top_k)
    }

    /// The `top_k` best of the live points in `slots`, scored against
    /// every one.
    fn exact_search<'a>(
        &'a self,
        query: &[f32],
        top_k: usize,
        slots: impl Iterator<Item = usize>,
    ) -> Vec<Hit> {
        let guard = self.graph.read();
        let storage: &Storage = &guard;
        let candidates: Vec<(usize, &'a Arc<StoredPoint>)> = slots
            .filter_map(|slot| Some((slot, self.slots.get(slot)?.as_ref()?)))
            .collect();
        let metric = self.metric;
        let score = |&(slot, point): &(usize, &'a Arc<StoredPoint>)| -> Option<(f32, &'a Arc<StoredPoint>)> {
            Some((metric.score(query, storage.vector(slot)?), point))
        };
        let scored: Vec<(f32, &Arc<StoredPoint>)> = if candidates.len() >= PARALLEL_SCAN_MIN_POINTS
        {
            candidates.par_iter().filter_map(score).collect()
        } else {
            candidates.iter().filter_map(score).collect()
        };
        self.rank(scored, top_k)
    }

    /// The `top_k` best of `scored`, best first, ties by id; only those are
    /// cloned into hits.
    fn rank(&self, mut scored: Vec<(f32, &Arc<StoredPoint>)>, top_k: usize) -> Vec<Hit> {
        let metric = self.metric;
        let order = |left: &(f32, &Arc<StoredPoint>), right: &(f32, &Arc<StoredPoint>)| {
            metric
                .compare_scores(left.0, right.0)
                .then_with(|| left.1.id.cmp(&right.1.id))
        };
        if top_k == 0 {
            return Vec::new();
        }
        if scored.len() > top_k {
            scored.select_nth_unstable_by(top_k - 1, order);
            scored.truncate(top_k);
        }
        scored.sort_by(order);
        scored
            .into_iter()
            .map(|(score, point)| Hit {
                score,
                point: Arc::clone(point),
            })
            .collect()
    }
}

/// A set of slots as one bit each: a filter's matches, checked once per
/// node the graph search visits.
struct SlotSet {
    words: Vec<u64>,
}

impl SlotSet {
    fn new(slot_count: usize, slots: &[usize]) -> SlotSet {
        let mut words = vec![0u64; slot_count.div_ceil(64)];
        for &slot in slots {
            if let Some(word) = words.get_mut(slot / 64) {
                *word |= 1 << (slot % 64);
            }
        }
        SlotSet { words }
    }

    fn contains(&self, slot: usize) -> bool {
        self.words
            .get(slot / 64)
            .is_some_and(|word| word >> (slot % 64) & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Condition, NumericRange, Predicate};
    use proptest::prelude::*;
    use serde_json::json;

    fn point(id: &str, vector: Vec<f32>, payload: Value) -> IndexedPoint {
        IndexedPoint {
            id: id.to_string(),
            seq: 0,
            vector,
            text: format!("text of {id}"),
            payload: payload.as_object().cloned().unwrap_or_default(),
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|hit| hit.point.id.as_str()).collect()
    }

    fn ids_of(points: &[Arc<StoredPoint>]) -> Vec<&str> {
        points.iter().map(|point| point.id.as_str()).collect()
    }

    fn grid_index(metric: Metric, count: usize) -> CollectionIndex {
        grid_index_with_keys(metric, count, &[])
    }

    fn grid_index_with_keys(
        metric: Metric,
        count: usize,
        indexed_keys: &[String],
    ) -> CollectionIndex {
        let mut index = CollectionIndex::empty(metric, DEFAULT_HNSW_PARAMS, indexed_keys);
        let points = (0..count)
            .map(|n| {
                let angle = n as f32 * 0.1;
                point(
                    &format!("p{n:03}"),
                    vec![
                        angle.cos() * (1.0 + n as f32),
                        angle.sin() * (1.0 + n as f32),
                        1.0,
                    ],
                    json!({"parity": n % 2, "bucket": n % 7}),
                )
            })
            .collect();
        index.stage_upsert(points).run();
        index
    }

    /// Points inserted in parallel batches are all reachable through the
    /// graph (each found first for its own vector) and the graph's top 10
    /// agrees with exact search: what a lost or badly linked node would
    /// break.
    #[test]
    fn parallel_batches_leave_every_point_reachable() {
        let mut next = crate::distance::tests::test_values(0x9e37_79b9_7f4a_7c15);
        let mut index = CollectionIndex::empty(Metric::Cosine, DEFAULT_HNSW_PARAMS, &[]);
        for batch in 0..4 {
            let points: Vec<IndexedPoint> = (0..500)
                .map(|n| {
                    let vector: Vec<f32> = (0..24).map(|_| next()).collect();
                    let mut point = point(&format!("b{batch}-{n:03}"), vector, json!({}));
                    point.vector = Metric::Cosine.index_form(&point.vector).unwrap();
                    point
                })
                .collect();
            index.stage_upsert(points).run();
        }
        let everything = PayloadFilter::default();
        let mut found_first = 0;
        let mut agreeing = 0;
        let points = index.live_writes();
        for point in &points {
            let via_graph = index.search(&point.vector, 10, &everything, 0);
            if via_graph.first().map(|hit| hit.point.id.as_str()) == Some(point.id.as_str()) {
                found_first += 1;
            }
            let exact = index.search(&point.vector, 10, &everything, usize::MAX);
            agreeing += ids(&via_graph)
                .iter()
                .filter(|id| ids(&exact).contains(id))
                .count();
        }
        assert_eq!(found_first, points.len());
        let recall = agreeing as f64 / (points.len() * 10) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    use Condition as C;

    fn bucket_range(gte: Option<f64>, lt: Option<f64>) -> Condition {
        C::field(
            "bucket",
            Predicate::Range(NumericRange {
                gte,
                lt,
                ..NumericRange::default()
            }),
        )
    }

    /// Filtered searches against brute force at 50%, 10% and 1%
    /// selectivity, through the graph and the exact path, with and without
    /// a payload index on the key: never a point the filter refuses, always
    /// top_k, recall@10 at least 0.95.
    #[test]
    fn filtered_search_agrees_with_brute_force_at_every_selectivity() {
        let mut next = crate::distance::tests::test_values(0x243f_6a88_85a3_08d3);
        let points: Vec<IndexedPoint> = (0..3000)
            .map(|n| {
                let vector: Vec<f32> = (0..16).map(|_| next()).collect();
                let vector = Metric::Cosine.index_form(&vector).unwrap();
                point(&format!("p{n:04}"), vector, json!({"bucket": n % 100}))
            })
            .collect();
        let must = |conditions: Vec<Condition>| PayloadFilter {
            must: conditions,
            ..PayloadFilter::default()
        };
        let filters = [
            ("50%", 1500, must(vec![bucket_range(None, Some(50.0))])),
            (
                "10% in",
                300,
                must(vec![C::field(
                    "bucket",
                    Predicate::AnyOf((0..10).map(|n| json!(n)).collect()),
                )]),
            ),
            (
                "10% should, must_not",
                300,
                PayloadFilter {
                    should: vec![
                        bucket_range(None, Some(6.0)),
                        bucket_range(Some(95.0), None),
                    ],
                    must_not: vec![C::field("bucket", Predicate::Equals(json!(0)))],
                    ..PayloadFilter::default()
                },
            ),
            (
                "1%",
                30,
                must(vec![C::field("bucket", Predicate::Equals(json!(42.0)))]),
            ),
        ];
        let queries: Vec<Vec<f32>> = (0..30)
            .map(|_| {
                let vector: Vec<f32> = (0..16).map(|_| next()).collect();
                Metric::Cosine.index_form(&vector).unwrap()
            })
            .collect();
        for indexed_keys in [vec![], vec!["bucket".to_string()]] {
            let mut index =
                CollectionIndex::empty(Metric::Cosine, DEFAULT_HNSW_PARAMS, &indexed_keys);
            index.stage_upsert(points.clone()).run();
            for (name, matching, filter) in &filters {
                assert_eq!(index.count(filter), *matching, "{name}");
                let mut agreeing = 0;
                for query in &queries {
                    let hits = index.search(query, 10, filter, 0);
                    assert_eq!(hits.len(), 10, "{name}");
                    assert!(hits.iter().all(|hit| filter.matches(&hit.point.payload)));
                    let mut exact: Vec<(f32, &str)> = points
                        .iter()
                        .filter(|point| filter.matches(&point.payload))
                        .map(|point| {
                            (
                                Metric::Cosine.score(query, &point.vector),
                                point.id.as_str(),
                            )
                        })
                        .collect();
                    exact.sort_by(|left, right| right.0.total_cmp(&left.0));
                    let best: Vec<&str> = exact.iter().take(10).map(|(_, id)| *id).collect();
                    agreeing += ids(&hits).iter().filter(|id| best.contains(id)).count();
                }
                let recall = agreeing as f64 / (queries.len() * 10) as f64;
                assert!(
                    recall >= 0.95,
                    "{name} indexed {indexed_keys:?}: recall@10 {recall}"
                );
            }
        }
    }

    #[test]
    fn scroll_pages_by_id_and_count_follows_deletes() {
        for indexed_keys in [vec![], vec!["bucket".to_string()]] {
            let mut index = grid_index_with_keys(Metric::L2, 50, &indexed_keys);
            index.delete(&["p004".to_string(), "p011".to_string()]);
            let filter =
                PayloadFilter::equalities(json!({"bucket": 4}).as_object().cloned().unwrap());
            assert_eq!(index.count(&filter), 5);
            assert_eq!(index.count(&PayloadFilter::default()), 48);
            let first = index.scroll(&filter, None, 4);
            assert_eq!(ids_of(&first.points), vec!["p018", "p025", "p032", "p039"]);
            assert_eq!(first.next_after.as_deref(), Some("p039"));
            let second = index.scroll(&filter, first.next_after.as_deref(), 4);
            assert_eq!(ids_of(&second.points), vec!["p046"]);
            assert_eq!(second.next_after, None);
            let everything = index.scroll(&PayloadFilter::default(), Some("p045"), 10);
            assert_eq!(
                ids_of(&everything.points),
                vec!["p046", "p047", "p048", "p049"]
            );
            assert_eq!(everything.next_after, None);
        }
    }

    #[test]
    fn l2_search_is_ascending_and_graph_agrees_with_exact() {
        let index = grid_index(Metric::L2, 300);
        let query = [3.0, 0.5, 1.0];
        let via_graph = index.search(&query, 5, &PayloadFilter::default(), 0);
        let exact = index.search(&query, 5, &PayloadFilter::default(), usize::MAX);
        assert_eq!(ids(&via_graph), ids(&exact));
        assert_eq!(via_graph.len(), 5);
        for pair in via_graph.windows(2) {
            assert!(pair[0].score <= pair[1].score);
        }
    }

    #[test]
    fn ties_are_ordered_by_id() {
        let mut index = CollectionIndex::empty(Metric::Dot, DEFAULT_HNSW_PARAMS, &[]);
        index
            .stage_upsert(vec![
                point("b", vec![1.0, 0.0], json!({})),
                point("a", vec![1.0, 0.0], json!({})),
                point("c", vec![2.0, 0.0], json!({})),
            ])
            .run();
        let hits = index.search(&[1.0, 0.0], 3, &PayloadFilter::default(), 0);
        assert_eq!(ids(&hits), vec!["c", "a", "b"]);
        assert_eq!(hits[0].score, 2.0);
    }

    #[test]
    fn replace_and_delete_leave_tombstones_and_rebuild_drops_them() {
        let mut index = grid_index(Metric::L2, 10);
        index
            .stage_upsert(vec![point(
                "p000",
                vec![100.0, 100.0, 100.0],
                json!({"new": true}),
            )])
            .run();
        assert_eq!(index.live_count(), 10);
        assert_eq!(index.tombstone_count(), 1);
        let hits = index.search(&[100.0, 100.0, 100.0], 10, &PayloadFilter::default(), 0);
        assert_eq!(hits[0].point.id, "p000");
        assert_eq!(hits[0].score, 0.0);
        assert_eq!(hits.len(), 10);
        assert_eq!(hits.iter().filter(|hit| hit.point.id == "p000").count(), 1);

        let deleted = index.delete(&["p001".to_string(), "p002".to_string(), "nope".to_string()]);
        assert_eq!(deleted, 2);
        let hits = index.search(&[0.0, 0.0, 0.0], 10, &PayloadFilter::default(), 0);
        assert_eq!(hits.len(), 8);
        assert!(!ids(&hits).contains(&"p001"));
        assert!(!index.needs_rebuild());

        let to_delete: Vec<String> = (3..8).map(|n| format!("p{n:03}")).collect();
        index.delete(&to_delete);
        assert!(index.needs_rebuild());
        let rebuilt = CollectionIndex::build(
            index.metric(),
            index.params(),
            index.indexed_keys(),
            index.live_writes(),
        );
        assert_eq!(rebuilt.tombstone_count(), 0);
        assert_eq!(rebuilt.live_count(), 3);
        let hits = rebuilt.search(&[100.0, 100.0, 100.0], 10, &PayloadFilter::default(), 0);
        assert_eq!(ids(&hits), vec!["p000", "p009", "p008"]);
    }

    #[test]
    fn selective_and_broad_filters_return_top_k_matching() {
        let index = grid_index(Metric::Cosine, 400);
        let broad = PayloadFilter::equalities(json!({"parity": 1}).as_object().cloned().unwrap());
        let hits = index.search(&[1.0, 0.0, 0.0], 20, &broad, 0);
        assert_eq!(hits.len(), 20);
        assert!(hits
            .iter()
            .all(|hit| hit.point.payload["parity"] == json!(1)));
        let narrow = PayloadFilter::equalities(
            json!({"parity": 0, "bucket": 3})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let hits = index.search(&[1.0, 0.0, 0.0], 1000, &narrow, 0);
        let expected = (0..400).filter(|n| n % 2 == 0 && n % 7 == 3).count();
        assert_eq!(hits.len(), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A filtered search never returns a non-matching, deleted or
        /// replaced point, and returns top_k results when enough match.
        #[test]
        fn filtered_search_only_returns_live_matching_points(
            vectors in proptest::collection::vec(proptest::collection::vec(-10.0f32..10.0, 4), 1..120),
            categories in proptest::collection::vec(0u8..4, 120),
            deleted in proptest::collection::vec(0usize..120, 0..40),
            wanted in 0u8..4,
            top_k in 1usize..50,
            exact_threshold in prop_oneof![Just(0usize), Just(1000usize)],
            metric in prop_oneof![Just(Metric::Cosine), Just(Metric::Dot), Just(Metric::L2)],
            indexed in any::<bool>(),
        ) {
            let indexed_keys = if indexed { vec!["category".to_string()] } else { Vec::new() };
            let mut index = CollectionIndex::empty(metric, HnswParams { m: 4, ef_construction: 16, ef_search: 8 }, &indexed_keys);
            let points: Vec<IndexedPoint> = vectors
                .iter()
                .enumerate()
                .filter_map(|(n, vector)| {
                    let vector = metric.index_form(vector)?;
                    Some(point(&format!("p{n}"), vector, json!({"category": categories[n]})))
                })
                .collect();
            index.stage_upsert(points.clone()).run();
            let deleted_ids: Vec<String> = deleted.iter().map(|n| format!("p{n}")).collect();
            index.delete(&deleted_ids);
            // Replacing every third point flips its category: the old version
            // must never surface.
            let replacements: Vec<IndexedPoint> = points
                .iter()
                .step_by(3)
                .filter(|p| !deleted_ids.contains(&p.id))
                .map(|p| {
                    let flipped = (p.payload["category"].as_u64().unwrap_or(0) + 1) % 4;
                    point(&p.id, p.vector.clone(), json!({"category": flipped, "replaced": true}))
                })
                .collect();
            index.stage_upsert(replacements).run();

            let filter = PayloadFilter::equalities(json!({"category": wanted}).as_object().cloned().unwrap());
            let hits = index.search(&[1.0, 0.5, -0.5, 2.0], top_k, &filter, exact_threshold);
            let live = index.live_points();
            let matching = live.iter().filter(|p| filter.matches(&p.payload)).count();
            prop_assert_eq!(hits.len(), top_k.min(matching));
            for hit in &hits {
                prop_assert!(filter.matches(&hit.point.payload));
                prop_assert!(!deleted_ids.contains(&hit.point.id));
                let current = index.get(&hit.point.id).map(|p| p.payload.clone());
                prop_assert_eq!(Some(hit.point.payload.clone()), current);
            }
        }
    }
}
