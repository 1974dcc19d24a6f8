//! Scores of a retrieval evaluation: per question where the first
//! answering passage ranked, and per search mode hit@1, hit@k, MRR and
//! recall@k over all questions.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// How one search ranked the passages that answer its question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeRank {
    /// 1-based rank of the first answering passage; `None` when none is in
    /// the top k.
    pub rank: Option<usize>,
    /// Answering passages in the top k.
    pub relevant_in_top_k: usize,
}

impl ModeRank {
    /// `found`: the ids a search returned, best first.
    pub fn of(found: &[String], relevant: &BTreeSet<String>) -> ModeRank {
        ModeRank {
            rank: found
                .iter()
                .position(|id| relevant.contains(id))
                .map(|position| position + 1),
            relevant_in_top_k: found.iter().filter(|id| relevant.contains(*id)).count(),
        }
    }
}

/// One question's outcome in every mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuestionRanks {
    pub question: String,
    pub source: String,
    /// Passages of the collection that answer it (its source's, holding
    /// the evidence); 0 means no search could find it.
    pub relevant_passages: usize,
    /// By mode name.
    pub modes: BTreeMap<String, ModeRank>,
}

/// One mode's scores over all questions, each a mean in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeScores {
    pub mode: String,
    /// Questions whose best passage answers them.
    pub hit_at_1: f64,
    /// Questions with an answering passage in the top k.
    pub hit_at_k: f64,
    /// Mean reciprocal rank of the first answering passage (0 beyond k).
    pub mrr: f64,
    /// Mean share of a question's answering passages found in the top k.
    pub recall_at_k: f64,
}

impl ModeScores {
    pub fn of(mode: &str, questions: &[QuestionRanks], k: usize) -> ModeScores {
        let missed = ModeRank {
            rank: None,
            relevant_in_top_k: 0,
        };
        // Each question's rank in this mode with its count of answering
        // passages.
        let ranked: Vec<(ModeRank, usize)> = questions
            .iter()
            .map(|question| {
                let rank = question.modes.get(mode).copied().unwrap_or(missed);
                (rank, question.relevant_passages)
            })
            .collect();
        let mean = |score: fn(&ModeRank, usize, usize) -> f64| -> f64 {
            if ranked.is_empty() {
                return 0.0;
            }
            let total: f64 = ranked
                .iter()
                .map(|(rank, relevant)| score(rank, *relevant, k))
                .sum();
            total / ranked.len() as f64
        };
        ModeScores {
            mode: mode.to_string(),
            hit_at_1: mean(|rank, _, _| f64::from(u8::from(rank.rank == Some(1)))),
            hit_at_k: mean(|rank, _, k| f64::from(u8::from(rank.rank.is_some_and(|r| r <= k)))),
            mrr: mean(|rank, _, _| rank.rank.map_or(0.0, |r| 1.0 / r as f64)),
            recall_at_k: mean(|rank, relevant, _| {
                if relevant == 0 {
                    return 0.0;
                }
                rank.relevant_in_top_k as f64 / relevant as f64
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn question(relevant: &[&str], dense: &[&str], keyword: &[&str]) -> QuestionRanks {
        let relevant: BTreeSet<String> = ids(relevant).into_iter().collect();
        QuestionRanks {
            question: "q".to_string(),
            source: "s".to_string(),
            relevant_passages: relevant.len(),
            modes: BTreeMap::from([
                ("dense".to_string(), ModeRank::of(&ids(dense), &relevant)),
                (
                    "keyword".to_string(),
                    ModeRank::of(&ids(keyword), &relevant),
                ),
            ]),
        }
    }

    #[test]
    fn ranks_are_one_based_and_count_every_answering_passage() {
        let relevant: BTreeSet<String> = ids(&["a", "c"]).into_iter().collect();
        assert_eq!(
            ModeRank::of(&ids(&["x", "c", "a"]), &relevant),
            ModeRank {
                rank: Some(2),
                relevant_in_top_k: 2
            }
        );
        assert_eq!(ModeRank::of(&ids(&["x"]), &relevant).rank, None);
    }

    #[test]
    fn scores_average_over_every_question_including_misses() {
        let questions = [
            // dense: rank 1; keyword: rank 2
            question(&["a"], &["a", "x"], &["x", "a"]),
            // dense: rank 3 with 1 of 2 found; keyword: miss
            question(&["b", "c"], &["x", "y", "b"], &["x", "y", "z"]),
            // nothing answers it: a miss everywhere
            question(&[], &["x"], &["y"]),
            // dense: rank 2 with both found; keyword: rank 1
            question(&["d", "e"], &["x", "d", "e"], &["d"]),
        ];
        let dense = ModeScores::of("dense", &questions, 3);
        assert_eq!(dense.hit_at_1, 0.25);
        assert_eq!(dense.hit_at_k, 0.75);
        assert!((dense.mrr - (1.0 + 1.0 / 3.0 + 0.5) / 4.0).abs() < 1e-12);
        assert!((dense.recall_at_k - (1.0 + 0.5 + 0.0 + 1.0) / 4.0).abs() < 1e-12);
        let keyword = ModeScores::of("keyword", &questions, 3);
        assert_eq!(keyword.hit_at_1, 0.25);
        assert_eq!(keyword.hit_at_k, 0.5);
        assert!((keyword.mrr - (0.5 + 1.0) / 4.0).abs() < 1e-12);
        assert!((keyword.recall_at_k - (1.0 + 0.5) / 4.0).abs() < 1e-12);
        let missing = ModeScores::of("hybrid", &questions, 3);
        assert_eq!((missing.hit_at_k, missing.mrr), (0.0, 0.0));
        assert_eq!(ModeScores::of("dense", &[], 3).mrr, 0.0);
    }
}
