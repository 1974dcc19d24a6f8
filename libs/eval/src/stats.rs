//! Summaries of a scorer's values over a run, and the paired comparison of
//! two runs on the same examples, with 95% confidence intervals from
//! Student's t distribution.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The confidence the intervals are drawn at.
pub const CONFIDENCE: f64 = 0.95;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// The interval within [low, high]: a mean of values that cannot leave
    /// a range cannot either, whatever the t approximation says with few
    /// values.
    pub fn within(self, (low, high): (f64, f64)) -> Interval {
        Interval {
            low: self.low.clamp(low, high),
            high: self.high.clamp(low, high),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    /// The sample standard deviation (n − 1); 0 for one value.
    pub stddev: f64,
    /// The mean's 95% interval; a single value's is the value itself.
    pub interval: Interval,
}

/// The summary of `values`; `None` when there are none.
pub fn summarise(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let count = values.len();
    let mean = values.iter().sum::<f64>() / count as f64;
    if count == 1 {
        return Some(Summary {
            count: 1,
            mean,
            stddev: 0.0,
            interval: Interval {
                low: mean,
                high: mean,
            },
        });
    }
    let variance = values
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (count - 1) as f64;
    let stddev = variance.sqrt();
    let half_width = t_quantile(count - 1) * stddev / (count as f64).sqrt();
    Some(Summary {
        count: count as u64,
        mean,
        stddev,
        interval: Interval {
            low: mean - half_width,
            high: mean + half_width,
        },
    })
}

/// The summary of `b − a` over pairs of scores of the same examples: its
/// interval excluding 0 means the runs differ at 95% confidence.
pub fn paired_difference(pairs: &[(f64, f64)]) -> Option<Summary> {
    let differences: Vec<f64> = pairs.iter().map(|(a, b)| b - a).collect();
    summarise(&differences)
}

/// The two-sided 95% quantile of Student's t with `degrees` of freedom.
fn t_quantile(degrees: usize) -> f64 {
    match StudentsT::new(0.0, 1.0, degrees as f64) {
        Ok(distribution) => distribution.inverse_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0),
        // Only for 0 degrees, which summarise never asks for.
        Err(_) => f64::INFINITY,
    }
}

/// The 95% Wilson score interval of a proportion: `successes` of
/// `trials`. Unlike the normal approximation it stays inside [0, 1] and is
/// sensible at 0 or all successes and with few trials. `None` without trials.
pub fn proportion_interval(successes: u64, trials: u64) -> Option<Interval> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let rate = successes.min(trials) as f64 / n;
    // The normal quantile of the 95% two-sided interval.
    let z: f64 = 1.959_963_984_540_054;
    let z2 = z * z;
    let centre = (rate + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (rate * (1.0 - rate) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_has_the_t_interval_of_its_mean() {
        let summary = summarise(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.mean, 2.5);
        // variance 5/3; t(0.975, 3) = 3.182446305284263.
        let stddev = (5.0f64 / 3.0).sqrt();
        assert!((summary.stddev - stddev).abs() < 1e-12);
        let half = 3.182446305284263 * stddev / 2.0;
        assert!((summary.interval.low - (2.5 - half)).abs() < 1e-9);
        assert!((summary.interval.high - (2.5 + half)).abs() < 1e-9);
        assert_eq!(summarise(&[]), None);
        let one = summarise(&[0.7]).unwrap();
        assert_eq!(
            (one.stddev, one.interval.low, one.interval.high),
            (0.0, 0.7, 0.7)
        );
        // Two scores in [0, 1]: the t interval leaves the range; cut to it.
        let wide = summarise(&[0.5, 1.0]).unwrap().interval;
        assert!(wide.low < 0.0 && wide.high > 1.0, "{wide:?}");
        assert_eq!(
            wide.within((0.0, 1.0)),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
        let narrow = Interval {
            low: 0.2,
            high: 0.4,
        };
        assert_eq!(narrow.within((0.0, 1.0)), narrow);
    }

    #[test]
    fn pairing_sees_a_consistent_small_gain_that_unpaired_intervals_miss() {
        // Hard and easy examples vary a lot; b beats a by about 0.05 on each.
        let a = [0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6];
        let gains = [0.06, 0.04, 0.05, 0.05, 0.06, 0.04, 0.05, 0.05];
        let b: Vec<f64> = a.iter().zip(gains).map(|(x, gain)| x + gain).collect();
        let (summary_a, summary_b) = (summarise(&a).unwrap(), summarise(&b).unwrap());
        assert!(
            summary_a.interval.high > summary_b.interval.low,
            "unpaired overlap"
        );
        let pairs: Vec<(f64, f64)> = a.iter().copied().zip(b.iter().copied()).collect();
        let difference = paired_difference(&pairs).unwrap();
        assert!((difference.mean - 0.05).abs() < 1e-9);
        assert!(difference.interval.low > 0.0, "{difference:?}");
        assert!(!difference.interval.contains(0.0));
    }

    #[test]
    fn wilson_intervals_match_published_values() {
        // Newcombe (1998), table I: 81 of 263 → 0.2553 to 0.3662.
        let interval = proportion_interval(81, 263).unwrap();
        assert!((interval.low - 0.2553).abs() < 5e-4, "{interval:?}");
        assert!((interval.high - 0.3662).abs() < 5e-4, "{interval:?}");
        // 0 of 10 → 0 to 0.2775; 10 of 10 → 0.7225 to 1.
        let none = proportion_interval(0, 10).unwrap();
        assert_eq!(none.low, 0.0);
        assert!((none.high - 0.2775).abs() < 5e-4, "{none:?}");
        let all = proportion_interval(10, 10).unwrap();
        assert!((all.low - 0.7225).abs() < 5e-4, "{all:?}");
        assert!((all.high - 1.0).abs() < 1e-12, "{all:?}");
        assert_eq!(proportion_interval(0, 0), None);
    }
}
