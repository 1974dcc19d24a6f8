//! Reciprocal rank fusion (Cormack, Clarke and Büttcher,
//! 2009): a hybrid search ranks each point by the weighted sum of
//! `1 / (k + rank)` over the dense and the keyword rankings it appears in,
//! so neither score scale dominates and a point both rankings like rises.

use std::collections::HashMap;

use crate::index::Hit;

/// The constant of RRF: large enough that the first few ranks of one list
/// do not drown the other list.
pub const RRF_K: f32 = 60.0;

/// How many candidates each ranking of a hybrid search contributes per
/// result asked for.
pub const HYBRID_CANDIDATES_PER_RESULT: usize = 4;
pub const HYBRID_MIN_CANDIDATES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionWeights {
    pub dense: f32,
    pub keyword: f32,
}

impl Default for FusionWeights {
    fn default() -> FusionWeights {
        FusionWeights {
            dense: 1.0,
            keyword: 1.0,
        }
    }
}

/// The `top_k` best points of both rankings (each best first) by weighted
/// reciprocal rank; a hit's score becomes its fused score. Ties by id.
pub fn fuse(dense: Vec<Hit>, keyword: Vec<Hit>, weights: FusionWeights, top_k: usize) -> Vec<Hit> {
    let mut fused: HashMap<String, Hit> = HashMap::with_capacity(dense.len() + keyword.len());
    for (hits, weight) in [(dense, weights.dense), (keyword, weights.keyword)] {
        for (rank, hit) in hits.into_iter().enumerate() {
            let contribution = weight / (RRF_K + rank as f32 + 1.0);
            fused
                .entry(hit.point.id.clone())
                .and_modify(|existing| existing.score += contribution)
                .or_insert(Hit {
                    point: hit.point,
                    score: contribution,
                });
        }
    }
    let mut ranked: Vec<Hit> = fused.into_values().collect();
    ranked.sort_by(|left, right| {
        right
            .score
            .total_cmp(&left.score)
            .then_with(|| left.point.id.cmp(&right.point.id))
    });
    ranked.truncate(top_k);
    ranked
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::StoredPoint;

    fn hits(ids: &[&str]) -> Vec<Hit> {
        ids.iter()
            .map(|id| Hit {
                point: Arc::new(StoredPoint {
                    id: id.to_string(),
                    seq: 0,
                    text: String::new(),
                    payload: Default::default(),
                }),
                score: 0.0,
            })
            .collect()
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|hit| hit.point.id.as_str()).collect()
    }

    #[test]
    fn a_point_both_rankings_hold_rises_and_weights_tilt_the_rest() {
        let dense = hits(&["a", "b", "c"]);
        let keyword = hits(&["d", "c", "e"]);
        let fused = fuse(dense.clone(), keyword.clone(), FusionWeights::default(), 10);
        assert_eq!(ids(&fused), vec!["c", "a", "d", "b", "e"]);
        let expected_c = 1.0 / 63.0 + 1.0 / 62.0;
        assert!((fused[0].score - expected_c).abs() < 1e-7);

        let keyword_only = FusionWeights {
            dense: 0.0,
            keyword: 1.0,
        };
        let fused = fuse(dense.clone(), keyword.clone(), keyword_only, 2);
        assert_eq!(ids(&fused), vec!["d", "c"]);
        let dense_heavy = FusionWeights {
            dense: 3.0,
            keyword: 1.0,
        };
        let fused = fuse(dense, keyword, dense_heavy, 4);
        assert_eq!(ids(&fused), vec!["c", "a", "b", "d"]);
    }
}
