//! What an experiment's figures say: the verdict of the sequential test on
//! the thumbs-up rate (safe to read at every refresh), the challenger's
//! next traffic share, and whether the challenger breached a guard.

use keel_eval::bandit::{probability_best, shares_with_floor, ArmCounts};
use keel_eval::sequential::{SequentialTest, Verdict};
use rand::Rng;

use crate::experiment::{Allocation, ArmFigures, Assessment, Guards, Settings, VerdictKind};

/// Joint posterior draws behind a Thompson share: enough that the share's
/// noise (about 1/sqrt(draws)) stays under a point.
const THOMPSON_DRAWS: usize = 10_000;
/// The sequential test's prior spread on the difference of rates: most
/// sensitive to differences of about 10 points.
const PRIOR_SPREAD: f64 = 0.1;

fn counts(figures: &ArmFigures) -> ArmCounts {
    ArmCounts {
        successes: figures.liked,
        trials: figures.ratings(),
    }
}

pub fn assess(
    settings: &Settings,
    control: ArmFigures,
    challenger: ArmFigures,
    rng: &mut impl Rng,
) -> Assessment {
    let test = SequentialTest {
        alpha: settings.alpha,
        tau: PRIOR_SPREAD,
        min_trials_per_arm: settings.min_ratings_per_arm,
    };
    let confidence = (1.0 - settings.alpha) * 100.0;
    let verdict = test.verdict(counts(&control), counts(&challenger));
    let (verdict_kind, text, difference, p_value, more_ratings_needed) = match verdict {
        Verdict::NotEnoughData { trials_needed } => (
            VerdictKind::NotEnoughData,
            format!(
                "not enough data: each arm needs {} ratings, about {trials_needed} more",
                settings.min_ratings_per_arm
            ),
            challenger.like_rate() - control.like_rate(),
            1.0,
            trials_needed,
        ),
        Verdict::Winner {
            challenger_wins,
            difference,
            p_value,
        } => {
            let (kind, winner, loser) = if challenger_wins {
                (VerdictKind::ChallengerWins, "challenger", "control")
            } else {
                (VerdictKind::ControlWins, "control", "challenger")
            };
            (
                kind,
                format!(
                    "{winner} beats {loser} with {confidence:.0}% confidence \
                     ({difference:+.3} thumbs-up rate, p = {p_value:.4})"
                ),
                difference,
                p_value,
                0,
            )
        }
        Verdict::NoDifferenceYet {
            difference,
            p_value,
            more_trials_per_arm,
        } => (
            VerdictKind::NoDifferenceYet,
            format!(
                "no difference yet ({difference:+.3} thumbs-up rate, p = {p_value:.3}): \
                 about {more_trials_per_arm} more ratings per arm needed"
            ),
            difference,
            p_value,
            more_trials_per_arm,
        ),
    };
    let challenger_share = match settings.allocation {
        Allocation::Fixed => f64::from(settings.challenger_percent) / 100.0,
        Allocation::Thompson => {
            let best = probability_best(
                &[counts(&control), counts(&challenger)],
                THOMPSON_DRAWS,
                rng,
            );
            shares_with_floor(&best, settings.floor)[1]
        }
    };
    Assessment {
        control,
        challenger,
        challenger_share,
        verdict_kind,
        verdict: text,
        difference,
        p_value,
        more_ratings_needed,
    }
}

/// The first guard the challenger breaches, in words; `None` while it has
/// too few requests (ratings, for the thumbs-down rate) to tell.
pub fn breached_guard(guards: &Guards, challenger: &ArmFigures) -> Option<String> {
    if challenger.requests >= guards.min_requests {
        if let Some(limit) = guards.max_error_rate {
            let rate = challenger.error_rate();
            if rate > limit {
                return Some(format!(
                    "error rate {rate:.3} over the limit {limit} ({} of {} requests failed)",
                    challenger.errors, challenger.requests
                ));
            }
        }
        if let Some(limit) = guards.max_p95_latency_ms {
            let p95 = challenger.latency_p95_ms;
            if p95 > limit {
                return Some(format!("p95 latency {p95:.0} ms over the limit {limit} ms"));
            }
        }
    }
    if challenger.ratings() >= guards.min_requests {
        if let Some(limit) = guards.max_thumbs_down_rate {
            let rate = challenger.thumbs_down_rate();
            if rate > limit {
                return Some(format!(
                    "thumbs-down rate {rate:.3} over the limit {limit} ({} of {} ratings)",
                    challenger.disliked,
                    challenger.ratings()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::experiment::StickyBy;

    fn settings(allocation: Allocation) -> Settings {
        Settings {
            allocation,
            challenger_percent: 20,
            floor: 0.05,
            sticky_by: StickyBy::User,
            guards: Guards {
                max_error_rate: Some(0.1),
                max_p95_latency_ms: Some(2000.0),
                max_thumbs_down_rate: Some(0.5),
                min_requests: 20,
            },
            alpha: 0.05,
            min_ratings_per_arm: 30,
            promote_on_win: false,
        }
    }

    fn rated(liked: u64, disliked: u64) -> ArmFigures {
        ArmFigures {
            requests: liked + disliked,
            liked,
            disliked,
            ..ArmFigures::default()
        }
    }

    #[test]
    fn verdicts_in_words() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let fixed = settings(Allocation::Fixed);
        let early = assess(&fixed, rated(10, 10), rated(5, 5), &mut rng);
        assert_eq!(early.verdict_kind, VerdictKind::NotEnoughData);
        assert_eq!(early.more_ratings_needed, 20);
        assert_eq!(early.challenger_share, 0.2);

        let clear = assess(&fixed, rated(10, 30), rated(35, 5), &mut rng);
        assert_eq!(clear.verdict_kind, VerdictKind::ChallengerWins);
        assert!(
            clear
                .verdict
                .starts_with("challenger beats control with 95% confidence (+0.625"),
            "{}",
            clear.verdict
        );
        assert!(clear.p_value < 0.05);

        let reversed = assess(&fixed, rated(35, 5), rated(10, 30), &mut rng);
        assert_eq!(reversed.verdict_kind, VerdictKind::ControlWins);

        let close = assess(&fixed, rated(20, 20), rated(21, 19), &mut rng);
        assert_eq!(close.verdict_kind, VerdictKind::NoDifferenceYet);
        assert!(close.more_ratings_needed > 100, "{close:?}");
        assert!(close.verdict.contains("more ratings per arm needed"));
    }

    #[test]
    fn thompson_moves_traffic_to_the_better_arm_but_keeps_the_floor() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let thompson = settings(Allocation::Thompson);
        let even = assess(&thompson, rated(0, 0), rated(0, 0), &mut rng);
        assert!((even.challenger_share - 0.5).abs() < 0.03, "{even:?}");
        let better = assess(&thompson, rated(10, 30), rated(35, 5), &mut rng);
        assert!((better.challenger_share - 0.95).abs() < 1e-9, "{better:?}");
        let worse = assess(&thompson, rated(35, 5), rated(10, 30), &mut rng);
        assert!((worse.challenger_share - 0.05).abs() < 1e-9, "{worse:?}");
    }

    #[test]
    fn guards_wait_for_enough_requests_then_name_the_breach() {
        let guards = settings(Allocation::Fixed).guards;
        let few_errors = ArmFigures {
            requests: 10,
            errors: 9,
            ..ArmFigures::default()
        };
        assert_eq!(breached_guard(&guards, &few_errors), None);
        let failing = ArmFigures {
            requests: 40,
            errors: 8,
            ..ArmFigures::default()
        };
        assert_eq!(
            breached_guard(&guards, &failing).unwrap(),
            "error rate 0.200 over the limit 0.1 (8 of 40 requests failed)"
        );
        let slow = ArmFigures {
            requests: 40,
            latency_p95_ms: 2500.0,
            ..ArmFigures::default()
        };
        assert!(breached_guard(&guards, &slow)
            .unwrap()
            .starts_with("p95 latency 2500 ms"));
        let disliked = rated(5, 15);
        assert!(breached_guard(&guards, &disliked)
            .unwrap()
            .starts_with("thumbs-down rate 0.750"));
        assert_eq!(breached_guard(&guards, &rated(15, 5)), None);
    }
}
