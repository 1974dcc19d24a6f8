//! Metrics: the score a search returns, its order, and the distance the HNSW
//! graph is built and searched with.

use std::cmp::Ordering;

use simsimd::SpatialSimilarity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity; vectors are normalised when they enter the index.
    Cosine,
    /// Dot product, higher is closer.
    Dot,
    /// Euclidean distance, lower is closer.
    L2,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    pub fn parse(text: &str) -> Option<Metric> {
        match text {
            "cosine" => Some(Metric::Cosine),
            "dot" => Some(Metric::Dot),
            "l2" => Some(Metric::L2),
            _ => None,
        }
    }

    /// The score of `candidate` for `query`, both in index form. A pair
    /// whose arithmetic overflows to NaN (components near `f32::MAX`)
    /// scores worst, never first.
    pub fn score(self, query: &[f32], candidate: &[f32]) -> f32 {
        let score = match self {
            Metric::Cosine | Metric::Dot => dot(query, candidate),
            Metric::L2 => squared_euclidean(query, candidate).sqrt(),
        };
        if !score.is_nan() {
            return score as f32;
        }
        match self {
            Metric::Cosine | Metric::Dot => f32::NEG_INFINITY,
            Metric::L2 => f32::INFINITY,
        }
    }

    /// The distance the graph orders nodes by, lower is closer: `-dot` for
    /// cosine and dot, the squared distance for L2 (the same order as the
    /// distance, without a square root per comparison). An overflowing pair
    /// (NaN) is as far apart as can be.
    pub fn distance(self, query: &[f32], candidate: &[f32]) -> f32 {
        let distance = match self {
            Metric::Cosine | Metric::Dot => -dot(query, candidate),
            Metric::L2 => squared_euclidean(query, candidate),
        };
        if distance.is_nan() {
            f32::MAX
        } else {
            distance as f32
        }
    }

    /// The score of a pair from its graph distance ([`Metric::distance`]),
    /// without touching the vectors again; an overflowed pair scores worst.
    pub fn score_from_distance(self, distance: f32) -> f32 {
        match (self, distance == f32::MAX) {
            (Metric::Cosine | Metric::Dot, false) => -distance,
            (Metric::Cosine | Metric::Dot, true) => f32::NEG_INFINITY,
            (Metric::L2, false) => distance.sqrt(),
            (Metric::L2, true) => f32::INFINITY,
        }
    }

    /// Orders scores best first.
    pub fn compare_scores(self, left: f32, right: f32) -> Ordering {
        match self {
            Metric::Cosine | Metric::Dot => right.total_cmp(&left),
            Metric::L2 => left.total_cmp(&right),
        }
    }

    /// The vector as the index keeps it: unit length for cosine (so a dot
    /// product is the cosine), unchanged otherwise. `None` for a zero vector
    /// under cosine, which has no direction.
    pub fn index_form(self, vector: &[f32]) -> Option<Vec<f32>> {
        if self != Metric::Cosine {
            return Some(vector.to_vec());
        }
        let norm = vector
            .iter()
            .map(|value| f64::from(*value) * f64::from(*value))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        Some(
            vector
                .iter()
                .map(|value| (f64::from(*value) / norm) as f32)
                .collect(),
        )
    }
}

/// SimSIMD picks the widest kernel the CPU has when the process starts
/// (AVX2 with FMA from Haswell and Zen on, AVX-512 from Skylake-X and Zen 4
/// on), so one binary runs at full width on every x86 machine: a 384-d
/// product is tens of nanoseconds where a scalar f64 loop took about half
/// a microsecond. It accumulates in f32, so components near `f32::MAX` can
/// overflow to infinity and `inf - inf` to NaN; the callers map NaN.
fn dot(left: &[f32], right: &[f32]) -> f64 {
    f32::dot(left, right).unwrap_or(f64::NAN)
}

fn squared_euclidean(left: &[f32], right: &[f32]) -> f64 {
    f32::l2sq(left, right).unwrap_or(f64::NAN)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (xorshift64), for test vectors.
    pub(crate) fn test_values(mut state: u64) -> impl FnMut() -> f32 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        }
    }

    #[test]
    fn graph_distance_follows_the_score_and_never_is_nan() {
        let query = [1.0f32, 2.0];
        let near = [10.0f32, 10.0];
        let far = [-10.0f32, -10.0];
        let huge = [f32::MAX, f32::MAX];
        let huge_negative = [f32::MAX, -f32::MAX];
        assert!(Metric::Dot.distance(&query, &near) < Metric::Dot.distance(&query, &far));
        assert!(Metric::L2.distance(&query, &[1.0, 3.0]) < Metric::L2.distance(&query, &near));
        assert_eq!(Metric::L2.distance(&query, &[4.0, 6.0]), 25.0);
        for (metric, candidate) in [
            (Metric::Dot, near),
            (Metric::L2, far),
            (Metric::Cosine, near),
        ] {
            let via_distance = metric.score_from_distance(metric.distance(&query, &candidate));
            let exact = metric.score(&query, &candidate);
            assert!(
                (via_distance - exact).abs() <= exact.abs() * 1e-6,
                "{via_distance} {exact}"
            );
        }
        assert_eq!(
            Metric::Dot.score_from_distance(Metric::Dot.distance(&huge, &huge_negative)),
            f32::NEG_INFINITY
        );
        for candidate in [near, far, huge, huge_negative] {
            assert!(!Metric::Dot.distance(&query, &candidate).is_nan());
        }
        assert_eq!(Metric::Dot.distance(&huge, &huge_negative), f32::MAX);
        assert!(
            Metric::Dot.compare_scores(
                Metric::Dot.score(&query, &near),
                Metric::Dot.score(&query, &far)
            ) == Ordering::Less
        );
    }

    #[test]
    fn cosine_normalises_and_rejects_zero() {
        let unit = Metric::Cosine.index_form(&[3.0, 4.0]).unwrap();
        assert_eq!(unit, vec![0.6, 0.8]);
        assert!(Metric::Cosine.index_form(&[0.0, 0.0]).is_none());
        assert_eq!(Metric::L2.index_form(&[0.0, 0.0]).unwrap(), vec![0.0, 0.0]);
        assert!((Metric::Cosine.distance(&unit, &unit) + 1.0).abs() < 1e-6);
    }

    /// The SIMD kernels agree with an f64 reference on embedding-sized
    /// vectors (lengths that are not a multiple of the vector width too).
    #[test]
    fn simd_products_match_an_f64_reference() {
        let mut next = test_values(0x2545_f491_4f6c_dd1d);
        for length in [1, 7, 384, 385, 1536] {
            let left: Vec<f32> = (0..length).map(|_| next()).collect();
            let right: Vec<f32> = (0..length).map(|_| next()).collect();
            let reference_dot: f64 = left
                .iter()
                .zip(&right)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let reference_l2: f64 = left
                .iter()
                .zip(&right)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum::<f64>()
                .sqrt();
            let dot_score = f64::from(Metric::Dot.score(&left, &right));
            let l2_score = f64::from(Metric::L2.score(&left, &right));
            assert!(
                (dot_score - reference_dot).abs() < 1e-4,
                "{length}: {dot_score} {reference_dot}"
            );
            assert!(
                (l2_score - reference_l2).abs() < 1e-4,
                "{length}: {l2_score} {reference_l2}"
            );
        }
    }

    #[test]
    fn an_overflowing_pair_scores_worst() {
        let query = [f32::MAX, f32::MAX];
        let overflowing = [f32::MAX, -f32::MAX];
        let ordinary = [1.0f32, -0.5];
        let dot_nan = Metric::Dot.score(&query, &overflowing);
        assert_eq!(dot_nan, f32::NEG_INFINITY);
        assert_eq!(
            Metric::Dot.compare_scores(Metric::Dot.score(&query, &ordinary), dot_nan),
            Ordering::Less
        );
        let huge_difference = [-f32::MAX, -f32::MAX];
        let l2 = Metric::L2.score(&query, &huge_difference);
        assert!(!l2.is_nan());
    }

    #[test]
    fn l2_orders_ascending() {
        assert_eq!(Metric::L2.score(&[0.0, 0.0], &[3.0, 4.0]), 5.0);
        assert_eq!(Metric::L2.compare_scores(1.0, 2.0), Ordering::Less);
        assert_eq!(Metric::Cosine.compare_scores(1.0, 2.0), Ordering::Greater);
    }
}
