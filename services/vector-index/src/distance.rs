//! Metrics: the score a search returns, its order, and the distance the HNSW
//! graph is built with.

use std::cmp::Ordering;

use hnsw_rs::anndists::dist::Distance;

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

    /// The score of `candidate` for `query`, both in index form.
    pub fn score(self, query: &[f32], candidate: &[f32]) -> f32 {
        match self {
            Metric::Cosine | Metric::Dot => dot(query, candidate) as f32,
            Metric::L2 => euclidean(query, candidate) as f32,
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

/// Accumulated in f64: finite f32 inputs can overflow f32 products, and an
/// `inf - inf` would make a NaN, which hnsw_rs panics on.
fn dot(left: &[f32], right: &[f32]) -> f64 {
    left.iter()
        .zip(right)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

fn euclidean(left: &[f32], right: &[f32]) -> f64 {
    left.iter()
        .zip(right)
        .map(|(a, b)| {
            let difference = f64::from(*a) - f64::from(*b);
            difference * difference
        })
        .sum::<f64>()
        .sqrt()
}

/// Maps any real to a positive number, strictly increasing and without
/// cancellation: `t + sqrt(t² + 1)`.
fn positive_increasing(value: f64) -> f64 {
    let hypotenuse = (value * value + 1.0).sqrt();
    if value >= 0.0 {
        value + hypotenuse
    } else {
        1.0 / (hypotenuse - value)
    }
}

/// The distance the graph is built and searched with. hnsw_rs asserts that
/// distances are non-negative and panics on NaN, and its own `DistDot`
/// asserts `dot <= 1`, which rounding breaks. HNSW only ever compares
/// distances, so any strictly increasing map of `-dot` builds the same graph
/// as `-dot` itself; `positive_increasing` is one that stays positive.
#[derive(Debug, Clone, Copy)]
pub struct GraphDistance {
    pub metric: Metric,
}

impl Distance<f32> for GraphDistance {
    fn eval(&self, left: &[f32], right: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine | Metric::Dot => positive_increasing(-dot(left, right)) as f32,
            Metric::L2 => euclidean(left, right) as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_distance_is_positive_and_follows_the_score() {
        let distance = GraphDistance {
            metric: Metric::Dot,
        };
        let query = [1.0f32, 2.0];
        let near = [10.0f32, 10.0];
        let far = [-10.0f32, -10.0];
        let huge = [f32::MAX, f32::MAX];
        let huge_negative = [f32::MAX, -f32::MAX];
        assert!(distance.eval(&query, &near) < distance.eval(&query, &far));
        for candidate in [near, far, huge, huge_negative] {
            let value = distance.eval(&query, &candidate);
            assert!(value >= 0.0 && !value.is_nan(), "{value}");
        }
        assert!(!distance.eval(&huge, &huge_negative).is_nan());
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
        let self_distance = GraphDistance {
            metric: Metric::Cosine,
        }
        .eval(&unit, &unit);
        assert!(self_distance > 0.0);
    }

    #[test]
    fn l2_orders_ascending() {
        assert_eq!(Metric::L2.score(&[0.0, 0.0], &[3.0, 4.0]), 5.0);
        assert_eq!(Metric::L2.compare_scores(1.0, 2.0), Ordering::Less);
        assert_eq!(Metric::Cosine.compare_scores(1.0, 2.0), Ordering::Greater);
    }
}
