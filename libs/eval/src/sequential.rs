//! The verdict of an experiment between a control arm A and a challenger
//! B on a binary metric, safe to read at any time: the mixture sequential
//! probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always
//! valid inference", 2017) on the difference of the success rates, with a
//! normal prior N(0, τ²) on the difference. Its p-value stays valid however
//! often it is looked at, so checking after every rating does not inflate
//! false winners beyond `alpha`.

use crate::bandit::ArmCounts;

/// The test's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialTest {
    /// The false-winner rate the test allows (0.05: 95% confidence).
    pub alpha: f64,
    /// Spread of the prior on the difference of rates: the size of effect
    /// the test is most sensitive to.
    pub tau: f64,
    /// Trials each arm needs before any verdict (the normal approximation
    /// needs some data).
    pub min_trials_per_arm: u64,
}

impl Default for SequentialTest {
    fn default() -> SequentialTest {
        SequentialTest {
            alpha: 0.05,
            tau: 0.1,
            min_trials_per_arm: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fewer trials than the minimum on some arm.
    NotEnoughData { trials_needed: u64 },
    /// B beats A (or A beats B) at 1 − alpha confidence.
    Winner {
        challenger_wins: bool,
        difference: f64,
        p_value: f64,
    },
    /// Not distinguishable yet; about this many more trials per arm if the
    /// observed difference holds.
    NoDifferenceYet {
        difference: f64,
        p_value: f64,
        more_trials_per_arm: u64,
    },
}

impl SequentialTest {
    /// The mixture likelihood ratio Λ of "the rates differ" against "they
    /// are equal" after these counts; the always-valid p-value is
    /// min(1, 1/Λ).
    pub fn likelihood_ratio(&self, control: ArmCounts, challenger: ArmCounts) -> f64 {
        let Some(variance) = variance_of_difference(control, challenger) else {
            return 1.0;
        };
        let difference = challenger.rate() - control.rate();
        ratio(difference, variance, self.tau * self.tau)
    }

    pub fn verdict(&self, control: ArmCounts, challenger: ArmCounts) -> Verdict {
        let fewest = control.trials.min(challenger.trials);
        if fewest < self.min_trials_per_arm {
            return Verdict::NotEnoughData {
                trials_needed: self.min_trials_per_arm - fewest,
            };
        }
        let difference = challenger.rate() - control.rate();
        let p_value = (1.0 / self.likelihood_ratio(control, challenger)).min(1.0);
        if p_value <= self.alpha {
            return Verdict::Winner {
                challenger_wins: difference > 0.0,
                difference,
                p_value,
            };
        }
        Verdict::NoDifferenceYet {
            difference,
            p_value,
            more_trials_per_arm: self.more_trials_needed(control, challenger),
        }
    }

    /// Trials per arm, beyond the larger arm's count now, at which the test
    /// would call a winner if the observed rates held (an observed
    /// difference under 2 points is taken as 2 points: smaller effects are
    /// not worth waiting for).
    fn more_trials_needed(&self, control: ArmCounts, challenger: ArmCounts) -> u64 {
        let (rate_a, rate_b) = (control.rate(), challenger.rate());
        let difference = (rate_b - rate_a).abs().max(0.02);
        // Per-trial variance of the difference with n trials on each arm.
        let spread = (rate_a * (1.0 - rate_a) + rate_b * (1.0 - rate_b)).max(0.01);
        let threshold = 1.0 / self.alpha;
        let crosses =
            |n: u64| ratio(difference, spread / n as f64, self.tau * self.tau) >= threshold;
        let mut high = control.trials.max(challenger.trials).max(1);
        while !crosses(high) {
            high = high.saturating_mul(2);
            if high >= 1 << 40 {
                return u64::MAX;
            }
        }
        let mut low = high / 2;
        while low + 1 < high {
            let middle = low + (high - low) / 2;
            if crosses(middle) {
                high = middle;
            } else {
                low = middle;
            }
        }
        high.saturating_sub(control.trials.max(challenger.trials))
    }
}

/// Var(p̂_B − p̂_A) by the observed rates (a rate of 0 or 1 is moved half a
/// trial inward so the variance is never 0); `None` without trials.
fn variance_of_difference(control: ArmCounts, challenger: ArmCounts) -> Option<f64> {
    if control.trials == 0 || challenger.trials == 0 {
        return None;
    }
    let part = |arm: ArmCounts| {
        let n = arm.trials as f64;
        let rate = arm.rate().clamp(0.5 / n, 1.0 - 0.5 / n);
        rate * (1.0 - rate) / n
    };
    Some(part(control) + part(challenger))
}

/// Λ = sqrt(V / (V + τ²)) · exp(θ² τ² / (2 V (V + τ²))).
fn ratio(difference: f64, variance: f64, tau_squared: f64) -> f64 {
    let total = variance + tau_squared;
    (variance / total).sqrt()
        * (difference * difference * tau_squared / (2.0 * variance * total)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(successes: u64, trials: u64) -> ArmCounts {
        ArmCounts { successes, trials }
    }

    #[test]
    fn the_ratio_matches_the_formula() {
        let test = SequentialTest::default();
        // A: 500/1000, B: 600/1000. V = 0.25/1000 + 0.24/1000.
        let variance: f64 = 0.000_49;
        let tau_squared: f64 = 0.01;
        let expected = (variance / (variance + tau_squared)).sqrt()
            * (0.01 * tau_squared / (2.0 * variance * (variance + tau_squared))).exp();
        let got = test.likelihood_ratio(arm(500, 1000), arm(600, 1000));
        assert!((got / expected - 1.0).abs() < 1e-9, "{got} vs {expected}");
        assert!(
            got > 20.0,
            "a 10-point lift on 1000 each is decisive: {got}"
        );
    }

    #[test]
    fn verdicts_need_data_then_a_clear_difference() {
        let test = SequentialTest::default();
        assert_eq!(
            test.verdict(arm(30, 60), arm(50, 100)),
            Verdict::NotEnoughData { trials_needed: 40 }
        );
        match test.verdict(arm(500, 1000), arm(600, 1000)) {
            Verdict::Winner {
                challenger_wins,
                difference,
                p_value,
            } => {
                assert!(challenger_wins);
                assert!((difference - 0.1).abs() < 1e-12);
                assert!(p_value < 0.05);
            }
            other => panic!("{other:?}"),
        }
        match test.verdict(arm(600, 1000), arm(500, 1000)) {
            Verdict::Winner {
                challenger_wins, ..
            } => assert!(!challenger_wins),
            other => panic!("{other:?}"),
        }
        match test.verdict(arm(100, 200), arm(106, 200)) {
            Verdict::NoDifferenceYet {
                more_trials_per_arm,
                p_value,
                ..
            } => {
                assert!(p_value > 0.05);
                // A 3-point difference at rates near 0.5 needs thousands.
                assert!(
                    (1000..100_000).contains(&more_trials_per_arm),
                    "{more_trials_per_arm}"
                );
                // With about that many more trials (10% over, for the
                // rounding of the counts) and the same rates, it decides;
                // with half as many, it does not yet.
                let half = 200 + more_trials_per_arm / 2;
                let a = arm(half / 2, half);
                let b = arm((half as f64 * 0.53) as u64, half);
                assert!(matches!(
                    test.verdict(a, b),
                    Verdict::NoDifferenceYet { .. }
                ));
                let n = 200 + more_trials_per_arm * 11 / 10;
                let a = arm((n as f64 * 0.5) as u64, n);
                let b = arm((n as f64 * 0.53) as u64, n);
                assert!(matches!(test.verdict(a, b), Verdict::Winner { .. }));
            }
            other => panic!("{other:?}"),
        }
    }
}
