//! Searching the graph: a greedy walk down the upper layers, then a beam
//! of `ef` candidates on the layer asked for, as in the HNSW paper.
//!
//! A filter (`allowed`) keeps non-matching and deleted nodes out of the
//! results but not out of the walk, so the beam still crosses them to reach
//! matches behind them; with a filter the walk goes on until it holds `ef`
//! matches or runs out of nodes (hnswlib's rule), which is why a search
//! with a filter still finds `top_k` matches where they exist.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::distance::Metric;
use crate::graph::{Graph, Near, Storage};

/// Which nodes a search may return.
pub type Allowed<'a> = &'a dyn Fn(usize) -> bool;

/// What one search works with, kept per thread and reused by every search
/// on it, so a search allocates nothing: the nodes seen (reset in O(1) by
/// moving to a new epoch), the candidates, the results, one node's
/// unvisited neighbours.
struct Scratch {
    marks: Vec<u32>,
    epoch: u32,
    candidates: BinaryHeap<Reverse<Near>>,
    /// A max-heap: the worst kept result on top.
    results: BinaryHeap<Near>,
    unvisited: Vec<u32>,
}

impl Scratch {
    fn start(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }
}

/// True the first time `node` is seen in this search.
fn first_visit(marks: &mut [u32], epoch: u32, node: u32) -> bool {
    match marks.get_mut(node as usize) {
        Some(mark) if *mark != epoch => {
            *mark = epoch;
            true
        }
        _ => false,
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            marks: Vec::new(),
            epoch: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            unvisited: Vec::new(),
        })
    };
}

/// Moves from `near` to whichever neighbour on `layer` is closer to the
/// query, until none is.
pub(crate) fn greedy(
    storage: &Storage,
    metric: Metric,
    query: &[f32],
    mut near: Near,
    layer: usize,
) -> Near {
    loop {
        let mut moved = false;
        for neighbour in storage.neighbours(near.node as usize, layer) {
            let distance = storage.distance(metric, query, neighbour);
            if distance < near.distance {
                near = Near {
                    distance,
                    node: neighbour,
                };
                moved = true;
            }
        }
        if !moved {
            return near;
        }
    }
}

/// The (up to) `ef` nodes closest to the query on `layer` that `allowed`
/// keeps, nearest first, from the beam started at `entries`.
pub(crate) fn search_layer(
    storage: &Storage,
    metric: Metric,
    query: &[f32],
    entries: &[Near],
    ef: usize,
    layer: usize,
    allowed: Option<Allowed<'_>>,
) -> Vec<Near> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.start(storage.len());
        let Scratch {
            marks,
            epoch,
            candidates,
            results,
            unvisited,
        } = &mut *scratch;
        let epoch = *epoch;
        let keeps = |node: u32| allowed.is_none_or(|allowed| allowed(node as usize));
        for &entry in entries {
            if first_visit(marks, epoch, entry.node) {
                candidates.push(Reverse(entry));
                if keeps(entry.node) {
                    results.push(entry);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        let worst =
            |results: &BinaryHeap<Near>| results.peek().map_or(f32::MAX, |near| near.distance);
        while let Some(Reverse(current)) = candidates.pop() {
            if current.distance > worst(results) && (results.len() >= ef || allowed.is_none()) {
                break;
            }
            unvisited.clear();
            unvisited.extend(
                storage
                    .neighbours(current.node as usize, layer)
                    .filter(|neighbour| first_visit(marks, epoch, *neighbour)),
            );
            for &neighbour in unvisited.iter() {
                let distance = storage.distance(metric, query, neighbour);
                if results.len() < ef || distance < worst(results) {
                    let near = Near {
                        distance,
                        node: neighbour,
                    };
                    candidates.push(Reverse(near));
                    if keeps(neighbour) {
                        results.push(near);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut found: Vec<Near> = results.drain().collect();
        found.sort_unstable();
        found
    })
}

impl Graph {
    /// The (up to) `ef` nodes closest to `query` that `allowed` keeps,
    /// nearest first.
    pub fn search(&self, query: &[f32], ef: usize, allowed: Option<Allowed<'_>>) -> Vec<Near> {
        let storage = self.read();
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        let mut near = Near {
            distance: storage.distance(self.metric, query, entry.node),
            node: entry.node,
        };
        for layer in (1..=entry.level).rev() {
            near = greedy(&storage, self.metric, query, near, layer);
        }
        search_layer(&storage, self.metric, query, &[near], ef.max(1), 0, allowed)
    }
}
