//! The ANN benchmark's data: base vectors, queries and the exact nearest
//! neighbours of each query, either read from a directory of .fvecs/.ivecs
//! files (`loadtests/ann/datasets.py` writes them, for Keel and the
//! reference implementations alike) or drawn here.

use std::io::Read as _;
use std::path::Path;

use keel_vector_index::distance::Metric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Neighbours per query that recall is measured on.
pub const TOP_K: usize = 10;

pub struct AnnDataset {
    pub name: String,
    pub metric: Metric,
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Per query, the positions in `base` of its `TOP_K` nearest, nearest
    /// first; `None` until computed by brute force.
    pub truth: Option<Vec<Vec<usize>>>,
}

impl AnnDataset {
    /// A directory holding base.fvecs, query.fvecs, gt.ivecs and
    /// metric.txt (`cosine` or `l2`).
    pub fn read(dir: &Path) -> anyhow::Result<AnnDataset> {
        let metric = match std::fs::read_to_string(dir.join("metric.txt"))?.trim() {
            "cosine" => Metric::Cosine,
            "l2" => Metric::L2,
            other => anyhow::bail!("{}: unknown metric {other:?}", dir.display()),
        };
        let truth = read_vecs(&dir.join("gt.ivecs"))?
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .take(TOP_K)
                    .map(|bits| usize::try_from(bits as i32))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let floats = |name: &str| -> anyhow::Result<Vec<Vec<f32>>> {
            Ok(read_vecs(&dir.join(name))?
                .into_iter()
                .map(|row| row.into_iter().map(f32::from_bits).collect())
                .collect())
        };
        Ok(AnnDataset {
            name: dir
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            metric,
            base: floats("base.fvecs")?,
            queries: floats("query.fvecs")?,
            truth: Some(truth),
        })
    }

    /// Embedding-like vectors: a Gaussian mixture (64 clusters) in a
    /// 32-dimensional subspace of `dim`, plus a little noise everywhere,
    /// L2-normalised; queries from the same distribution. Cosine.
    pub fn embedding_like(points: usize, queries: usize, dim: usize, seed: u64) -> AnnDataset {
        let mut data = EmbeddingLike::new(dim, seed);
        AnnDataset {
            name: "embedding-like".to_string(),
            metric: Metric::Cosine,
            base: (0..points).map(|_| data.draw()).collect(),
            queries: (0..queries).map(|_| data.draw()).collect(),
            truth: None,
        }
    }

    pub fn dimension(&self) -> usize {
        // The queries too: the in-process run moves the base out.
        self.base
            .first()
            .or(self.queries.first())
            .map_or(0, Vec::len)
    }

    /// The exact neighbours, computed by brute force when the dataset
    /// came without them.
    pub fn truth(&mut self) -> &[Vec<usize>] {
        if self.truth.is_none() {
            let bar = crate::progress::bar(self.queries.len() as u64, "brute force");
            let truth = self
                .queries
                .iter()
                .map(|query| {
                    bar.inc(1);
                    exact_neighbours(self.metric, &self.base, query)
                })
                .collect();
            bar.finish_and_clear();
            self.truth = Some(truth);
        }
        self.truth.as_deref().unwrap_or_default()
    }
}

/// The positions of the `TOP_K` base vectors closest to `query`.
fn exact_neighbours(metric: Metric, base: &[Vec<f32>], query: &[f32]) -> Vec<usize> {
    // Smaller is closer for every metric once similarities are negated.
    let distance = |vector: &[f32]| -> f32 {
        match metric {
            Metric::L2 => vector
                .iter()
                .zip(query)
                .map(|(a, b)| (a - b) * (a - b))
                .sum(),
            Metric::Cosine | Metric::Dot => {
                -vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()
            }
        }
    };
    let mut scored: Vec<(f32, usize)> = base
        .iter()
        .enumerate()
        .map(|(position, vector)| (distance(vector), position))
        .collect();
    let k = TOP_K.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
    let nearest = &mut scored[..k];
    nearest.sort_by(|a, b| a.0.total_cmp(&b.0));
    // A new vector: collecting `scored` itself would keep its whole
    // allocation behind ten positions.
    nearest.iter().map(|(_, position)| *position).collect()
}

/// Rows of a .fvecs/.ivecs file as raw 32-bit words: each row is its
/// length (little-endian i32) and that many values. Read row by row, so
/// that the file is never in memory beside its rows (the benchmark reports
/// the peak RSS).
fn read_vecs(path: &Path) -> anyhow::Result<Vec<Vec<u32>>> {
    let file = std::fs::File::open(path)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut rows = Vec::new();
    let mut word = [0u8; 4];
    loop {
        match reader.read_exact(&mut word) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(rows),
            Err(error) => anyhow::bail!("{}: {error}", path.display()),
        }
        let length = u32::from_le_bytes(word) as usize;
        let mut bytes = vec![0u8; length * 4];
        reader
            .read_exact(&mut bytes)
            .map_err(|_| anyhow::anyhow!("{}: truncated row", path.display()))?;
        rows.push(
            bytes
                .chunks_exact(4)
                .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
                .collect(),
        );
    }
}

const CLUSTERS: usize = 64;
const RANK: usize = 32;

/// Draws embedding-like vectors: a cluster centre plus spread, in a
/// `RANK`-dimensional subspace of `dim`, plus a little noise everywhere.
struct EmbeddingLike {
    basis: Vec<Vec<f32>>,
    centres: Vec<Vec<f32>>,
    rng: StdRng,
}

impl EmbeddingLike {
    fn new(dim: usize, seed: u64) -> EmbeddingLike {
        let mut rng = StdRng::seed_from_u64(seed);
        let basis = (0..RANK)
            .map(|_| (0..dim).map(|_| gaussian(&mut rng)).collect())
            .collect();
        let centres = (0..CLUSTERS)
            .map(|_| (0..RANK).map(|_| gaussian(&mut rng)).collect())
            .collect();
        EmbeddingLike {
            basis,
            centres,
            rng,
        }
    }

    fn draw(&mut self) -> Vec<f32> {
        let centre = &self.centres[self.rng.random_range(0..CLUSTERS)];
        let latent: Vec<f32> = centre
            .iter()
            .map(|value| value + 0.5 * gaussian(&mut self.rng))
            .collect();
        let dim = self.basis[0].len();
        let mut vector: Vec<f32> = (0..dim).map(|_| 0.1 * gaussian(&mut self.rng)).collect();
        for (weight, direction) in latent.iter().zip(&self.basis) {
            for (value, component) in vector.iter_mut().zip(direction) {
                *value += weight * component;
            }
        }
        let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|value| *value /= norm);
        vector
    }
}

/// Box-Muller: one standard normal draw.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Recall@10 of `found` (positions in the base, per query) against the
/// truth.
pub fn recall_at_10(found: &[Vec<usize>], truth: &[Vec<usize>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(found, truth)| found.iter().filter(|id| truth.contains(id)).count())
        .sum();
    hits as f64 / (truth.len() * TOP_K) as f64
}

/// The process's peak resident memory (VmHWM), in MiB; 0 where /proc is
/// missing.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vecs_files_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for row in [[1.5f32, -2.0], [0.25, 4.0]] {
            bytes.extend(2i32.to_le_bytes());
            for value in row {
                bytes.extend(value.to_le_bytes());
            }
        }
        std::fs::write(dir.path().join("base.fvecs"), &bytes).unwrap();
        std::fs::write(dir.path().join("query.fvecs"), &bytes[..12]).unwrap();
        let mut truth = Vec::new();
        truth.extend(2i32.to_le_bytes());
        truth.extend(1i32.to_le_bytes());
        truth.extend(0i32.to_le_bytes());
        std::fs::write(dir.path().join("gt.ivecs"), &truth).unwrap();
        std::fs::write(dir.path().join("metric.txt"), "l2\n").unwrap();
        let dataset = AnnDataset::read(dir.path()).unwrap();
        assert_eq!(dataset.base, vec![vec![1.5, -2.0], vec![0.25, 4.0]]);
        assert_eq!(dataset.queries, vec![vec![1.5, -2.0]]);
        assert_eq!(dataset.truth, Some(vec![vec![1, 0]]));
        assert_eq!(dataset.metric, Metric::L2);
        std::fs::write(dir.path().join("query.fvecs"), &bytes[..10]).unwrap();
        assert!(AnnDataset::read(dir.path()).is_err());
    }

    #[test]
    fn recall_counts_true_neighbours_found() {
        let truth = vec![vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9]; 2];
        let found = vec![
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![0, 1, 2, 3, 4, 50, 60, 70, 80, 90],
        ];
        assert_eq!(recall_at_10(&found, &truth), 0.75);
    }

    #[test]
    fn exact_neighbours_are_nearest_first_for_each_metric() {
        let base: Vec<Vec<f32>> = (0..20).map(|n| vec![n as f32, 1.0]).collect();
        let near_five = exact_neighbours(Metric::L2, &base, &[5.2, 1.0]);
        assert_eq!(near_five, [5, 6, 4, 7, 3, 8, 2, 9, 1, 10]);
        let largest = exact_neighbours(Metric::Dot, &base, &[1.0, 0.0]);
        assert_eq!(largest[..3], [19, 18, 17]);
    }
}
