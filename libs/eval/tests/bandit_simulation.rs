//! Simulated experiments: synthetic users with known success rates for
//! two arms, allocated by Thompson sampling (shares refreshed every 50
//! ratings, each arm kept at 10% at least), the sequential verdict read at
//! every refresh as a dashboard would. Over 200 seeds: with a better
//! challenger the verdict names it in at least 95% of seeds and most
//! traffic goes to it; with equal arms a winner is declared no more often
//! than the test's 5% error rate allows.

use keel_eval::bandit::{pick, probability_best, shares_with_floor, ArmCounts};
use keel_eval::sequential::{SequentialTest, Verdict};
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 200;
const USERS: u64 = 6000;
const REFRESH_EVERY: u64 = 50;
const DRAWS: usize = 200;
const FLOOR: f64 = 0.1;

struct Outcome {
    /// `Some(true)`: the challenger (arm 1) declared the winner.
    challenger_wins: Option<bool>,
    /// The challenger's share of all users served.
    challenger_share: f64,
}

fn simulate(seed: u64, rates: [f64; 2]) -> Outcome {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let test = SequentialTest::default();
    let mut arms = [ArmCounts::default(); 2];
    let mut shares = vec![0.5, 0.5];
    for user in 1..=USERS {
        // A new user's stable number: where the shares place them.
        let arm = pick(&shares, rng.random::<f64>());
        arms[arm].trials += 1;
        if rng.random::<f64>() < rates[arm] {
            arms[arm].successes += 1;
        }
        if user % REFRESH_EVERY == 0 {
            if let Verdict::Winner {
                challenger_wins, ..
            } = test.verdict(arms[0], arms[1])
            {
                return Outcome {
                    challenger_wins: Some(challenger_wins),
                    challenger_share: arms[1].trials as f64 / user as f64,
                };
            }
            shares = shares_with_floor(&probability_best(&arms, DRAWS, &mut rng), FLOOR);
        }
    }
    Outcome {
        challenger_wins: None,
        challenger_share: arms[1].trials as f64 / USERS as f64,
    }
}

#[test]
fn a_better_challenger_is_found_and_gets_most_of_the_traffic() {
    let outcomes: Vec<Outcome> = (0..SEEDS).map(|seed| simulate(seed, [0.5, 0.6])).collect();
    let right = outcomes
        .iter()
        .filter(|outcome| outcome.challenger_wins == Some(true))
        .count();
    let wrong = outcomes
        .iter()
        .filter(|outcome| outcome.challenger_wins == Some(false))
        .count();
    let mean_share = outcomes
        .iter()
        .map(|outcome| outcome.challenger_share)
        .sum::<f64>()
        / SEEDS as f64;
    eprintln!(
        "better challenger: right {right}/{SEEDS}, wrong {wrong}, its mean share {mean_share:.3}"
    );
    assert!(
        right as f64 >= 0.95 * SEEDS as f64,
        "right in {right} of {SEEDS} seeds"
    );
    assert_eq!(wrong, 0, "the worse arm was declared the winner");
    assert!(
        mean_share > 0.6,
        "the better arm got {mean_share:.3} of the traffic"
    );
}

#[test]
fn equal_arms_rarely_get_a_winner() {
    let false_winners = (0..SEEDS)
        .map(|seed| simulate(1000 + seed, [0.5, 0.5]))
        .filter(|outcome| outcome.challenger_wins.is_some())
        .count();
    // At alpha 0.05 over 200 seeds: 10 expected at most, and three binomial
    // standard deviations (about 9) of room for chance.
    let allowed = (0.05 * SEEDS as f64 + 3.0 * (SEEDS as f64 * 0.05 * 0.95).sqrt()).floor();
    eprintln!("equal arms: a winner declared in {false_winners}/{SEEDS} seeds (allowed {allowed})");
    assert!(
        false_winners as f64 <= allowed,
        "{false_winners} false winners"
    );
}
