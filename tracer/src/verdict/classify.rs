//! From a site's time series to a verdict and a confidence.
//!
//! The rules, on live bytes and on live counts (the stronger signal wins):
//! - `cyclic`: at least two rises and two releases of a quarter of the range or more
//!   (batches accumulated and released); a leak after all if the troughs themselves keep
//!   rising.
//! - `leak`: a significant monotone increase over the whole window (Mann-Kendall, one
//!   sided, p < 0.001) that is still going in its last third (p < 0.05, positive
//!   Theil-Sen slope), seen over at least 20 samples (10 s): a cache that fills within
//!   that time is never called a leak.
//! - `plateau`: rose significantly (p < 0.01), but the last third is flat.
//! - `growing`: rising, without enough evidence yet for `leak`.
//! - `shrinking`: a significant decrease (p < 0.01).
//! - `stable`: none of these.
//!
//! Confidence is the product of how strong the trend tests are (1 - p) and how much
//! data there is (full from 20 samples on).

use super::trend::{mann_kendall, theil_sen};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Leak,
    Growing,
    Plateau,
    Cyclic,
    Shrinking,
    Stable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Growing => "growing",
            Verdict::Plateau => "plateau",
            Verdict::Cyclic => "cyclic",
            Verdict::Shrinking => "shrinking",
            Verdict::Stable => "stable",
        }
    }

    /// Leak suspects: what a report shows first and by default.
    pub fn is_growing(self) -> bool {
        matches!(self, Verdict::Leak | Verdict::Growing)
    }
}

/// What a series says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    pub confidence: f64,
    /// Current growth (Theil-Sen slope over the last third), units per minute.
    pub per_min: f64,
}

/// Samples before the tests say anything with confidence.
const FULL_CONFIDENCE_AT: f64 = 20.0;
const MIN_POINTS: usize = 6;

/// Assesses `y` sampled at times `t` (seconds).
pub fn assess(t: &[f64], y: &[f64]) -> Assessment {
    let n = y.len().min(t.len());
    let (t, y) = (&t[..n], &y[..n]);
    let stable = |confidence: f64| Assessment { verdict: Verdict::Stable, confidence, per_min: 0.0 };
    if n == 0 {
        return stable(0.0);
    }
    let (min, max) = y.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let amount = (n as f64 / FULL_CONFIDENCE_AT).min(1.0);
    if max == min {
        return stable(amount);
    }
    let tail_len = (n / 3).max(MIN_POINTS.min(n));
    let (tail_t, tail_y) = (&t[n - tail_len..], &y[n - tail_len..]);
    let per_min = theil_sen(tail_t, tail_y) * 60.0;

    if let Some(cyclic) = cycles(y, max - min, amount, per_min) {
        return cyclic;
    }
    if n < MIN_POINTS {
        let verdict = if y[n - 1] > y[0] { Verdict::Growing } else { Verdict::Stable };
        return Assessment { verdict, confidence: 0.2 * amount, per_min };
    }
    let all = mann_kendall(y);
    let tail = mann_kendall(tail_y);
    let rising = all.p_increasing < 0.001 && tail.p_increasing < 0.05 && per_min > 0.0;
    let (verdict, confidence) = if rising && n as f64 >= FULL_CONFIDENCE_AT {
        (Verdict::Leak, (1.0 - all.p_increasing) * (1.0 - tail.p_increasing))
    } else if all.p_increasing < 0.01 && tail.p_increasing >= 0.2 {
        // The flatter the tail, the surer the plateau.
        (Verdict::Plateau, (1.0 - all.p_increasing) * (2.0 * tail.p_increasing).min(1.0))
    } else if (all.p_increasing < 0.05 || tail.p_increasing < 0.05) && per_min > 0.0 {
        (Verdict::Growing, 1.0 - all.p_increasing.min(tail.p_increasing))
    } else if all.p_decreasing < 0.01 {
        (Verdict::Shrinking, 1.0 - all.p_decreasing)
    } else {
        (Verdict::Stable, (2.0 * all.p_increasing.min(all.p_decreasing)).min(1.0))
    };
    Assessment { verdict, confidence: confidence * amount, per_min }
}

/// Sawtooth detection: at least two sudden releases (a fall of 40% of the range from one
/// sample to the next), with the stretches between them rising (Kendall's tau of 0.6 or
/// more on average). Noise has falls as large, but nothing rising in between.
fn cycles(y: &[f64], range: f64, amount: f64, per_min: f64) -> Option<Assessment> {
    let drops: Vec<usize> = (1..y.len()).filter(|&i| y[i - 1] - y[i] >= 0.4 * range).collect();
    if drops.len() < 2 {
        return None;
    }
    let bounds: Vec<usize> =
        std::iter::once(0).chain(drops.iter().copied()).chain(std::iter::once(y.len())).collect();
    let taus: Vec<f64> =
        bounds.windows(2).filter(|w| w[1] - w[0] >= 3).map(|w| mann_kendall(&y[w[0]..w[1]]).tau).collect();
    if taus.is_empty() {
        return None;
    }
    let rising = taus.iter().sum::<f64>() / taus.len() as f64;
    if rising < 0.6 {
        return None;
    }
    // Batches released down to a floor that itself keeps rising: a leak under the saw.
    let troughs: Vec<f64> = drops.iter().map(|&i| y[i]).collect();
    if troughs.len() >= 4 {
        let floor = mann_kendall(&troughs);
        if floor.p_increasing < 0.01 && troughs[troughs.len() - 1] - troughs[0] >= 0.25 * range {
            return Some(Assessment {
                verdict: Verdict::Leak,
                confidence: (1.0 - floor.p_increasing) * amount,
                per_min,
            });
        }
    }
    let confidence = (drops.len() as f64 / 4.0).min(1.0) * rising * amount;
    Some(Assessment { verdict: Verdict::Cyclic, confidence, per_min: 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Half-second samples, as the session takes them.
    fn times(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 * 0.5).collect()
    }

    fn verdict_of(y: &[f64]) -> Assessment {
        assess(&times(y.len()), y)
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: usize) -> f64 {
        let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn linear_growth_is_a_leak_with_its_rate() {
        let y: Vec<f64> = (0..60).map(|i| 1000.0 + 64.0 * i as f64).collect();
        let a = verdict_of(&y);
        assert_eq!(a.verdict, Verdict::Leak);
        assert!(a.confidence > 0.99, "{a:?}");
        // 64 per half second = 7680 per minute.
        assert!((a.per_min - 7680.0).abs() < 1e-6, "{a:?}");
    }

    #[test]
    fn a_leak_is_growing_until_twenty_samples_then_a_leak() {
        let y: Vec<f64> = (0..20).map(|i| 50.0 * i as f64).collect();
        assert_eq!(verdict_of(&y[..19]).verdict, Verdict::Growing);
        assert_eq!(verdict_of(&y).verdict, Verdict::Leak);
    }

    #[test]
    fn a_step_then_flat_is_a_plateau() {
        let y: Vec<f64> = (0..60).map(|i| if i < 20 { 100.0 * i as f64 } else { 2000.0 }).collect();
        let a = verdict_of(&y);
        assert_eq!(a.verdict, Verdict::Plateau, "{a:?}");
        assert_eq!(a.per_min, 0.0);
    }

    #[test]
    fn a_single_step_is_not_a_leak() {
        let y: Vec<f64> = (0..60).map(|i| if i < 30 { 500.0 } else { 900.0 }).collect();
        assert_ne!(verdict_of(&y).verdict, Verdict::Leak);
    }

    #[test]
    fn a_sawtooth_is_cyclic() {
        let y: Vec<f64> = (0..60).map(|i| (i % 6) as f64 * 100.0).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Cyclic);
    }

    #[test]
    fn short_batches_are_cyclic_too() {
        // Three samples of accumulation, then a release: a 2 s period at 0.5 s ticks.
        let y: Vec<f64> = (0..60).map(|i| [0.0, 100.0, 200.0, 300.0][i % 4] + 5.0 * noise(i)).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Cyclic);
    }

    #[test]
    fn a_sawtooth_on_a_rising_floor_is_a_leak() {
        let y: Vec<f64> = (0..60).map(|i| (i % 6) as f64 * 100.0 + 40.0 * i as f64).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Leak);
    }

    #[test]
    fn plateau_with_noise_and_noisy_flat() {
        let y: Vec<f64> =
            (0..60).map(|i| if i < 15 { 100.0 * i as f64 } else { 1500.0 } + 20.0 * noise(i)).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Plateau);
        let flat: Vec<f64> = (0..60).map(|i| 500.0 + 30.0 * noise(i)).collect();
        let a = verdict_of(&flat);
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
    }

    #[test]
    fn a_single_spike_is_stable() {
        let mut y = vec![300.0; 60];
        y[30] = 5000.0;
        assert_eq!(verdict_of(&y).verdict, Verdict::Stable);
    }

    #[test]
    fn a_slow_leak_under_noise_is_a_leak() {
        // 1 block in thousands kept: +2 per sample under +-40 of churn.
        let y: Vec<f64> = (0..60).map(|i| 500.0 + 2.0 * i as f64 + 40.0 * noise(i)).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Leak);
    }

    #[test]
    fn decreasing_is_shrinking_and_nothing_is_stable() {
        let y: Vec<f64> = (0..40).map(|i| 4000.0 - 50.0 * i as f64).collect();
        assert_eq!(verdict_of(&y).verdict, Verdict::Shrinking);
        assert_eq!(verdict_of(&[0.0; 40]).verdict, Verdict::Stable);
        assert_eq!(verdict_of(&[]).verdict, Verdict::Stable);
    }

    proptest! {
        /// A series that only grows (by any positive steps) is a leak once there are
        /// enough samples.
        #[test]
        fn monotone_growth_is_a_leak(steps in prop::collection::vec(1.0f64..1e4, 20..120)) {
            let y: Vec<f64> = steps.iter().scan(0.0, |acc, s| { *acc += s; Some(*acc) }).collect();
            prop_assert_eq!(verdict_of(&y).verdict, Verdict::Leak);
        }

        /// Growth that stops for the last half of the window is never a leak.
        #[test]
        fn growth_that_stopped_is_not_a_leak(steps in prop::collection::vec(1.0f64..1e4, 10..60), flat in 20usize..100) {
            let mut y: Vec<f64> = steps.iter().scan(0.0, |acc, s| { *acc += s; Some(*acc) }).collect();
            let last = *y.last().unwrap();
            let flat = flat.max(y.len());
            y.extend(std::iter::repeat_n(last, flat));
            prop_assert_ne!(verdict_of(&y).verdict, Verdict::Leak);
        }

        /// Growth, then a level that only wobbles (noise of up to 5% of the rise) for the
        /// last half: never a leak (the wobble may read as a short rise: `growing` at
        /// most).
        #[test]
        fn growth_then_a_noisy_level_is_a_plateau(
            steps in prop::collection::vec(1.0f64..1e4, 10..60),
            flat in 20usize..100,
            share in 0.0f64..0.05,
            seed in 0usize..1000,
        ) {
            let mut y: Vec<f64> = steps.iter().scan(0.0, |acc, s| { *acc += s; Some(*acc) }).collect();
            let (last, flat) = (*y.last().unwrap(), flat.max(y.len()));
            y.extend((0..flat).map(|i| last + share * last * noise(i + seed * 1000)));
            prop_assert_ne!(verdict_of(&y).verdict, Verdict::Leak);
        }

        /// The last third decides: still rising there (steadily, with noise), a leak;
        /// flat there, not.
        #[test]
        fn the_last_third_decides(n in 30usize..150, slope in 1.0f64..100.0, seed in 0usize..1000) {
            let rising: Vec<f64> = (0..n).map(|i| slope * i as f64 + slope * 0.3 * noise(i + seed * 1000)).collect();
            prop_assert_eq!(verdict_of(&rising).verdict, Verdict::Leak);
            let knee = n - n / 3;
            let stopped: Vec<f64> = (0..n).map(|i| slope * i.min(knee) as f64).collect();
            prop_assert_ne!(verdict_of(&stopped).verdict, Verdict::Leak);
        }

        /// Bounded noise around a level is never a leak.
        #[test]
        fn bounded_noise_is_not_a_leak(level in 0.0f64..1e6, amplitude in 0.0f64..1e3, seed in 0usize..1000, n in 10usize..150) {
            let y: Vec<f64> = (0..n).map(|i| level + amplitude * noise(i + seed * 1000)).collect();
            prop_assert_ne!(verdict_of(&y).verdict, Verdict::Leak);
        }

        /// Confidence is a probability.
        #[test]
        fn confidence_is_in_range(y in prop::collection::vec(0.0f64..1e6, 0..100)) {
            let a = verdict_of(&y);
            prop_assert!((0.0..=1.0).contains(&a.confidence), "{:?}", a);
        }
    }
}
