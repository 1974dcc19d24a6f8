//! Linking appended nodes into the graph: per layer, a beam search of
//! `ef_construction` for the node's neighbours, hnswlib's heuristic to keep
//! `m` of them that point in different directions, and a link back from
//! each, pruned by the same heuristic when the neighbour's list is full.

use std::ops::Range;

use rayon::prelude::*;

use crate::distance::Metric;
use crate::graph::{Entry, Graph, Near, Storage};
use crate::graph_search::{greedy, search_layer};

/// A batch of at least this many nodes is linked on rayon's threads; each
/// link is a search of its own and they share only the lists' locks.
/// Smaller batches stay on the caller's thread, where a hand-off would
/// cost more than it saves.
const PARALLEL_LINK_MIN_NODES: usize = 64;

impl Graph {
    /// Links the appended `nodes` into the graph; searches go on meanwhile.
    pub fn link(&self, nodes: Range<usize>) {
        let storage = self.read();
        let storage: &Storage = &storage;
        let mut nodes = nodes;
        // The very first node becomes the entry before the others look
        // for one.
        if self.entry().is_none() {
            if let Some(first) = nodes.next() {
                self.link_node(storage, first);
            }
        }
        let nodes: Vec<usize> = nodes.collect();
        if nodes.len() < PARALLEL_LINK_MIN_NODES {
            for node in nodes {
                self.link_node(storage, node);
            }
        } else {
            nodes
                .into_par_iter()
                .for_each(|node| self.link_node(storage, node));
        }
    }

    fn link_node(&self, storage: &Storage, node: usize) {
        let Some(query) = storage.vector(node) else {
            return;
        };
        let level = usize::from(storage.levels.get(node).copied().unwrap_or(0));
        let this = Entry {
            node: node as u32,
            level,
        };
        let Some(entry) = self.entry() else {
            self.raise_entry(this);
            return;
        };
        if entry.node == this.node {
            return;
        }
        let metric = self.metric;
        let mut near = Near {
            distance: storage.distance(metric, query, entry.node),
            node: entry.node,
        };
        for layer in (level + 1..=entry.level).rev() {
            near = greedy(storage, metric, query, near, layer);
        }
        // The node's own lists are set on every layer before any node links
        // back to it: a search that reaches it on an upper layer then finds
        // its layer-0 list too, instead of a dead end (what a node being
        // linked by another thread would otherwise be).
        let mut entries = vec![near];
        let mut chosen_by_layer = Vec::with_capacity(level + 1);
        for layer in (0..=level.min(entry.level)).rev() {
            let mut found = search_layer(
                storage,
                metric,
                query,
                &entries,
                self.ef_construction,
                layer,
                None,
            );
            found.retain(|near| near.node != this.node);
            // As faiss does: a new node takes as many links as the layer
            // holds (2m on layer 0), which hnswlib caps at m; on hard data
            // (high intrinsic dimension) the extra links keep every node
            // reachable.
            let chosen = select_neighbours(storage, metric, &found, storage.capacity(layer));
            {
                let _locked = storage.locks[node].lock();
                storage.set_neighbours(node, layer, chosen.iter().map(|near| near.node));
            }
            chosen_by_layer.push((layer, chosen));
            if !found.is_empty() {
                entries = found;
            }
        }
        for (layer, chosen) in chosen_by_layer {
            for neighbour in chosen {
                link_back(storage, metric, neighbour, this.node, layer);
            }
        }
        if level > entry.level {
            self.raise_entry(this);
        }
    }
}

/// Adds `node` to `neighbour`'s list on `layer`; a full list keeps what the
/// heuristic chooses among its links and the new one.
fn link_back(storage: &Storage, metric: Metric, neighbour: Near, node: u32, layer: usize) {
    let target = neighbour.node as usize;
    let Some(target_vector) = storage.vector(target) else {
        return;
    };
    let _locked = storage.locks[target].lock();
    let current: Vec<u32> = storage.neighbours(target, layer).collect();
    if current.contains(&node) {
        return;
    }
    let capacity = storage.capacity(layer);
    if current.len() < capacity {
        let extended = current.iter().copied().chain(std::iter::once(node));
        storage.set_neighbours(target, layer, extended);
        return;
    }
    let mut candidates: Vec<Near> = current
        .iter()
        .map(|&id| Near {
            distance: storage.distance(metric, target_vector, id),
            node: id,
        })
        .collect();
    // The distance is symmetric: the new node is as far from the target
    // as the target from it.
    candidates.push(Near {
        distance: neighbour.distance,
        node,
    });
    candidates.sort_unstable();
    let kept = select_neighbours(storage, metric, &candidates, capacity);
    storage.set_neighbours(target, layer, kept.iter().map(|near| near.node));
}

/// hnswlib's heuristic: from `candidates` (nearest first), up to `limit`
/// nodes, each kept only if it is closer to the base than to every node
/// kept before it, so the links spread out instead of bunching in one
/// direction.
fn select_neighbours(
    storage: &Storage,
    metric: Metric,
    candidates: &[Near],
    limit: usize,
) -> Vec<Near> {
    if candidates.len() <= limit {
        return candidates.to_vec();
    }
    let mut kept: Vec<Near> = Vec::with_capacity(limit);
    for candidate in candidates {
        if kept.len() >= limit {
            break;
        }
        let Some(vector) = storage.vector(candidate.node as usize) else {
            continue;
        };
        let diverse = kept
            .iter()
            .all(|chosen| storage.distance(metric, vector, chosen.node) >= candidate.distance);
        if diverse {
            kept.push(*candidate);
        }
    }
    kept
}
