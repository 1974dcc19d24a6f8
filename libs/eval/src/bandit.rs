//! Thompson sampling over arms with a binary feedback metric (a thumbs up
//! or a good rating is a success): each arm's share of traffic is the
//! posterior probability that it is the best, with a floor so every arm
//! keeps being measured (guards need data). Assignment is by a caller's
//! stable uniform number (a hash of the user or session), so a user stays
//! on one arm for as long as the shares do not move past them.

use rand::Rng;
use rand_distr::{Beta, Distribution};

/// Successes and trials of one arm on the experiment's metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmCounts {
    pub successes: u64,
    pub trials: u64,
}

impl ArmCounts {
    pub fn failures(&self) -> u64 {
        self.trials.saturating_sub(self.successes)
    }

    /// The observed success rate; 0 without trials.
    pub fn rate(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.successes as f64 / self.trials as f64
        }
    }
}

/// The probability that each arm has the highest success rate, under
/// uniform Beta(1, 1) priors, estimated from `draws` joint posterior draws.
pub fn probability_best(arms: &[ArmCounts], draws: usize, rng: &mut impl Rng) -> Vec<f64> {
    let posteriors: Vec<Option<Beta<f64>>> = arms
        .iter()
        .map(|arm| Beta::new(1.0 + arm.successes as f64, 1.0 + arm.failures() as f64).ok())
        .collect();
    let mut wins = vec![0usize; arms.len()];
    for _ in 0..draws.max(1) {
        let mut best = (0, f64::NEG_INFINITY);
        for (index, posterior) in posteriors.iter().enumerate() {
            let sample = posterior.as_ref().map_or(0.0, |beta| beta.sample(rng));
            if sample > best.1 {
                best = (index, sample);
            }
        }
        wins[best.0] += 1;
    }
    let total = draws.max(1) as f64;
    wins.into_iter().map(|count| count as f64 / total).collect()
}

/// `probability_best` with every arm raised to at least `floor` (a share in
/// [0, 1/arms]) and the rest scaled down to keep the sum 1.
pub fn shares_with_floor(probabilities: &[f64], floor: f64) -> Vec<f64> {
    let arms = probabilities.len();
    if arms == 0 {
        return Vec::new();
    }
    let floor = floor.clamp(0.0, 1.0 / arms as f64);
    let spare = 1.0 - floor * arms as f64;
    let total: f64 = probabilities.iter().sum();
    probabilities
        .iter()
        .map(|probability| {
            let share = if total > 0.0 {
                probability / total
            } else {
                1.0 / arms as f64
            };
            floor + spare * share
        })
        .collect()
}

/// The arm a caller whose stable uniform number is `u` (in [0, 1)) gets
/// under `shares`.
pub fn pick(shares: &[f64], u: f64) -> usize {
    let mut cumulative = 0.0;
    for (index, share) in shares.iter().enumerate() {
        cumulative += share;
        if u < cumulative {
            return index;
        }
    }
    shares.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_clearly_better_arm_is_almost_surely_best() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let arms = [
            ArmCounts {
                successes: 50,
                trials: 100,
            },
            ArmCounts {
                successes: 80,
                trials: 100,
            },
        ];
        let best = probability_best(&arms, 2000, &mut rng);
        assert!(best[1] > 0.99, "{best:?}");
        assert!((best.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // No data: a coin toss.
        let even = probability_best(&[ArmCounts::default(); 2], 4000, &mut rng);
        assert!((even[0] - 0.5).abs() < 0.05, "{even:?}");
    }

    #[test]
    fn shares_keep_a_floor_and_sum_to_one() {
        let shares = shares_with_floor(&[1.0, 0.0], 0.1);
        assert_eq!(shares, vec![0.9, 0.1]);
        let shares = shares_with_floor(&[0.2, 0.3, 0.5], 0.05);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((shares[0] - (0.05 + 0.85 * 0.2)).abs() < 1e-12);
        // A floor above 1/arms is capped there: equal shares.
        assert_eq!(shares_with_floor(&[1.0, 0.0], 0.9), vec![0.5, 0.5]);
    }

    #[test]
    fn a_stable_number_picks_the_same_arm_until_the_shares_move_past_it() {
        let shares = [0.3, 0.7];
        assert_eq!(pick(&shares, 0.0), 0);
        assert_eq!(pick(&shares, 0.29), 0);
        assert_eq!(pick(&shares, 0.31), 1);
        assert_eq!(pick(&shares, 0.999_999), 1);
        assert_eq!(pick(&[0.5, 0.5], 0.31), 0);
    }
}
