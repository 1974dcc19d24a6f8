//! The graph's file in a snapshot: `KEELHNSW`, the format (u32), the
//! dimension (u32), m (u32), the node count (u64), the entry node (u64,
//! `u64::MAX` for none) and its level (u32); then per node its level (u8),
//! its vector (f32s) and, per layer 0..=level, the list length (u32) and
//! the ids (u32). All little-endian. The manifest beside it holds the
//! file's length and CRC. It is written from a [`FrozenGraph`], so the graph
//! itself goes on taking writes meanwhile: the vectors are read from it a
//! block of nodes per hold of its read lock, so an append (a write to the
//! collection) waits for one block at most, never for the file.

use std::io::{self, Read, Write};

use crate::distance::Metric;
use crate::graph::{links_per_node, Entry, FrozenGraph, Graph, NodeParts, MAX_LEVEL};

const MAGIC: &[u8; 8] = b"KEELHNSW";
const FORMAT: u32 = 1;

const NODES_PER_BLOCK: usize = 4096;

pub fn write_graph(graph: &FrozenGraph, out: &mut impl Write) -> io::Result<()> {
    let dimension = graph.graph.read().vectors.dimension();
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT.to_le_bytes())?;
    out.write_all(
        &u32::try_from(dimension)
            .map_err(io::Error::other)?
            .to_le_bytes(),
    )?;
    out.write_all(&(graph.m as u32).to_le_bytes())?;
    out.write_all(&(graph.len() as u64).to_le_bytes())?;
    let (entry_node, entry_level) = match graph.entry {
        Some(entry) if (entry.node as usize) < graph.len() => (u64::from(entry.node), entry.level),
        _ => (u64::MAX, 0),
    };
    out.write_all(&entry_node.to_le_bytes())?;
    out.write_all(&(entry_level as u32).to_le_bytes())?;
    let mut lists = graph.lists.iter();
    let mut block: Vec<u8> = Vec::new();
    for first in (0..graph.len()).step_by(NODES_PER_BLOCK) {
        block.clear();
        let last = (first + NODES_PER_BLOCK).min(graph.len());
        {
            let storage = graph.graph.read();
            for node in first..last {
                let vector = storage
                    .vector(node)
                    .ok_or_else(|| io::Error::other(format!("node {node} is not in the graph")))?;
                block.push(graph.levels[node]);
                for value in vector {
                    block.extend_from_slice(&value.to_le_bytes());
                }
            }
        }
        let mut vectors = block.chunks(1 + dimension * 4);
        for level in &graph.levels[first..last] {
            out.write_all(vectors.next().unwrap_or_default())?;
            for _ in 0..=usize::from(*level) {
                let length = lists.next().copied().unwrap_or(0);
                out.write_all(&length.to_le_bytes())?;
                for _ in 0..length {
                    let id = lists.next().copied().unwrap_or(0);
                    out.write_all(&id.to_le_bytes())?;
                }
            }
        }
    }
    Ok(())
}

/// Reads a graph written by [`write_graph`]; every count and id is checked,
/// so a damaged file is an error, never a panic or a graph with dangling
/// links.
pub fn read_graph(
    metric: Metric,
    m: usize,
    ef_construction: usize,
    input: &mut impl Read,
) -> Result<Graph, String> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(short)?;
    if &magic != MAGIC {
        return Err("not a Keel graph file".to_string());
    }
    let format = read_u32(input)?;
    if format != FORMAT {
        return Err(format!("graph format {format} (this build reads {FORMAT})"));
    }
    let dimension = read_u32(input)? as usize;
    let file_m = read_u32(input)? as usize;
    if file_m != m.max(2) {
        return Err(format!(
            "the graph was built with m {file_m}, the collection has {m}"
        ));
    }
    let nodes = usize::try_from(read_u64(input)?).map_err(|error| error.to_string())?;
    let entry_node = read_u64(input)?;
    let entry_level = read_u32(input)? as usize;
    let entry = match entry_node {
        u64::MAX => None,
        node if (node as usize) < nodes && entry_level <= MAX_LEVEL => Some(Entry {
            node: node as u32,
            level: entry_level,
        }),
        node => {
            return Err(format!(
                "entry node {node} at level {entry_level} is out of range"
            ))
        }
    };
    let mut parts = Vec::with_capacity(nodes.min(1 << 24));
    let mut values = vec![0u8; dimension * 4];
    for node in 0..nodes {
        let [level] = read_array::<1>(input)?;
        let level = usize::from(level);
        if level > MAX_LEVEL {
            return Err(format!("node {node} has level {level}"));
        }
        input.read_exact(&mut values).map_err(short)?;
        let vector: Vec<f32> = values
            .chunks_exact(4)
            .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .collect();
        let mut lists = Vec::with_capacity(level + 1);
        for layer in 0..=level {
            let length = read_u32(input)? as usize;
            if length > links_per_node(m.max(2), layer) {
                return Err(format!("node {node} has {length} links on layer {layer}"));
            }
            let mut ids = Vec::with_capacity(length);
            for _ in 0..length {
                let id = read_u32(input)?;
                if id as usize >= nodes {
                    return Err(format!("node {node} links to node {id} of {nodes}"));
                }
                ids.push(id);
            }
            lists.push(ids);
        }
        parts.push(NodeParts {
            vector,
            level,
            lists,
        });
    }
    if input
        .read(&mut [0u8; 1])
        .map_err(|error| error.to_string())?
        != 0
    {
        return Err("bytes after the last node".to_string());
    }
    Ok(Graph::from_parts(metric, m, ef_construction, parts, entry))
}

fn short(error: io::Error) -> String {
    format!("the graph file ends early: {error}")
}

fn read_array<const N: usize>(input: &mut impl Read) -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes).map_err(short)?;
    Ok(bytes)
}

fn read_u32(input: &mut impl Read) -> Result<u32, String> {
    read_array(input).map(u32::from_le_bytes)
}

fn read_u64(input: &mut impl Read) -> Result<u64, String> {
    read_array(input).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::tests::test_values;
    use std::sync::Arc;

    fn unit_vectors(count: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut next = test_values(seed);
        (0..count)
            .map(|_| {
                let vector: Vec<f32> = (0..12).map(|_| next()).collect();
                Metric::Cosine.index_form(&vector).unwrap_or(vector)
            })
            .collect()
    }

    fn linked_graph(vectors: &[Vec<f32>]) -> Arc<Graph> {
        let graph = Arc::new(Graph::new(Metric::Cosine, 8, 64));
        let nodes = graph.append(vectors.iter().map(Vec::as_slice));
        graph.link(nodes);
        graph
    }

    fn write(graph: &FrozenGraph) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_graph(graph, &mut bytes).unwrap();
        bytes
    }

    /// A graph frozen before more nodes were linked reads back as it was
    /// then: same vectors, no link to a later node, and every node found
    /// first for its own vector.
    #[test]
    fn a_frozen_graph_reads_back_without_the_nodes_linked_after_it() {
        let vectors = unit_vectors(900, 7);
        let graph = linked_graph(&vectors[..600]);
        let frozen = graph.freeze();
        assert_eq!(frozen.len(), 600);
        let later = graph.append(vectors[600..].iter().map(Vec::as_slice));
        graph.link(later);
        assert_eq!(graph.len(), 900);

        let bytes = write(&frozen);
        let read = read_graph(Metric::Cosine, 8, 64, &mut bytes.as_slice()).unwrap();
        assert_eq!(read.len(), 600);
        assert_eq!(read.entry(), frozen.entry);
        let storage = read.read();
        for (node, vector) in vectors.iter().enumerate().take(600) {
            assert_eq!(storage.vector(node), Some(vector.as_slice()));
            for layer in 0..=usize::from(storage.levels[node]) {
                assert!(storage
                    .neighbours(node, layer)
                    .all(|id| (id as usize) < 600));
            }
        }
        drop(storage);
        for (node, vector) in vectors[..600].iter().enumerate() {
            let found = read.search(vector, 10, None);
            assert_eq!(found[0].node as usize, node);
        }
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let vectors = unit_vectors(200, 11);
        let graph = linked_graph(&vectors);
        let bytes = write(&graph.freeze());
        assert!(read_graph(Metric::Cosine, 8, 64, &mut bytes.as_slice()).is_ok());

        let torn = &bytes[..bytes.len() - 3];
        let error = read_graph(Metric::Cosine, 8, 64, &mut &torn[..])
            .err()
            .unwrap();
        assert!(error.contains("ends early"), "{error}");

        let mut longer = bytes.clone();
        longer.push(0);
        let error = read_graph(Metric::Cosine, 8, 64, &mut longer.as_slice())
            .err()
            .unwrap();
        assert!(error.contains("after the last node"), "{error}");

        let error = read_graph(Metric::Cosine, 10, 64, &mut bytes.as_slice())
            .err()
            .unwrap();
        assert!(error.contains("m 8"), "{error}");

        // The first node's first link pointing past the end.
        let header = 8 + 4 + 4 + 4 + 8 + 8 + 4;
        let first_list = header + 1 + 12 * 4 + 4;
        let mut dangling = bytes.clone();
        dangling[first_list..first_list + 4].copy_from_slice(&5000u32.to_le_bytes());
        let error = read_graph(Metric::Cosine, 8, 64, &mut dangling.as_slice())
            .err()
            .unwrap();
        assert!(error.contains("links to node 5000"), "{error}");
    }

    /// Searches running while a batch is linked see only whole nodes: they
    /// never fail, and once linking ends every node is found.
    #[test]
    fn searches_run_while_a_batch_is_linked() {
        let vectors = unit_vectors(3000, 13);
        let graph = linked_graph(&vectors[..500]);
        let nodes = graph.append(vectors[500..].iter().map(Vec::as_slice));
        let linking = {
            let graph = Arc::clone(&graph);
            std::thread::spawn(move || graph.link(nodes))
        };
        let mut searches = 0;
        while !linking.is_finished() || searches == 0 {
            let query = &vectors[searches % 500];
            let found = graph.search(query, 32, None);
            assert_eq!(found[0].node as usize, searches % 500);
            searches += 1;
        }
        linking.join().unwrap();
        let missed = vectors
            .iter()
            .enumerate()
            .filter(|(node, vector)| graph.search(vector, 32, None)[0].node as usize != *node)
            .count();
        assert_eq!(missed, 0);
    }
}
