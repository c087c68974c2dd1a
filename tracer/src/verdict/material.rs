//! Whether a rise is worth reporting. The trend tests are rank-based: they say a series
//! rises, however little. A site whose live count is a handful of in-flight requests can
//! rise "significantly" from 1 to 3; that is no leak anyone cares about. So a site is
//! `growing` or `leak` only when its rise over the window is material: at least a
//! minimum (16 things, 16 KiB), at least a quarter of the level it started from (what
//! is live anyway: in-flight work, a warm cache), and at least the user's floor
//! (`--min-growth`, per minute). A `plateau` (rose, then flat) needs a material rise
//! too, measured as the level it settled at over the level it started from: in-flight
//! work at a site first seen after attach is otherwise a "plateau" of three.

use super::{
    classify::{Assessment, Verdict},
    trend::theil_sen,
};
use crate::config::MinGrowth;

/// A rise below these is never material.
const MIN_RISE_COUNT: f64 = 16.0;
const MIN_RISE_BYTES: f64 = 16384.0;
/// A rise below this share of the starting level is never material.
const MIN_RELATIVE_RISE: f64 = 0.25;

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Count,
    Bytes,
}

/// Is the rise of `y` (sampled at `t`, seconds) material? `a` is its assessment.
pub fn material(t: &[f64], y: &[f64], a: &Assessment, measure: Measure, floor: &MinGrowth) -> bool {
    let n = y.len().min(t.len());
    if n < 2 {
        return false;
    }
    let head = &y[..(n / 3).max(1)];
    let base = head.iter().copied().fold(f64::INFINITY, f64::min).max(0.0);
    let minimum = match measure {
        Measure::Count => MIN_RISE_COUNT,
        Measure::Bytes => MIN_RISE_BYTES,
    };
    let tail = median(&y[n - (n / 3).max(1)..]);
    if a.verdict == Verdict::Plateau {
        let rise = tail - base;
        return rise >= minimum && rise >= MIN_RELATIVE_RISE * base;
    }
    if a.verdict == Verdict::Shrinking {
        let (start, fall) = (median(head), median(head) - tail);
        return fall >= minimum && fall >= MIN_RELATIVE_RISE * start;
    }
    let rise = theil_sen(&t[..n], &y[..n]) * (t[n - 1] - t[0]);
    let floor_per_min = match measure {
        Measure::Count => floor.count_per_min,
        Measure::Bytes => floor.bytes_per_min,
    };
    rise >= minimum && rise >= MIN_RELATIVE_RISE * base && a.per_min >= floor_per_min
}

fn median(y: &[f64]) -> f64 {
    let mut v = y.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::classify::assess;

    fn times(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 * 0.5).collect()
    }

    fn check(y: &[f64], measure: Measure, floor: MinGrowth) -> (Verdict, bool) {
        let t = times(y.len());
        let a = assess(&t, y);
        (a.verdict, material(&t, y, &a, measure, &floor))
    }

    #[test]
    fn a_few_in_flight_blocks_creeping_up_are_not_material() {
        // Live reply buffers creeping up by a dozen over a minute (redis under load).
        let y: Vec<f64> = (0..120).map(|i| f64::from((i / 10) as u32)).collect();
        let (verdict, material) = check(&y, Measure::Count, MinGrowth::default());
        assert!(verdict.is_growing(), "the trend test alone calls it {verdict:?}");
        assert!(!material);
    }

    #[test]
    fn a_small_rise_on_a_large_base_is_not_material_a_large_one_is() {
        let small: Vec<f64> = (0..60).map(|i| 1000.0 + f64::from(i as u32) * 0.5).collect();
        assert!(!check(&small, Measure::Count, MinGrowth::default()).1, "30 on 1000");
        let large: Vec<f64> = (0..60).map(|i| 1000.0 + f64::from(i as u32) * 10.0).collect();
        assert!(check(&large, Measure::Count, MinGrowth::default()).1, "600 on 1000");
    }

    #[test]
    fn a_leak_from_nothing_is_material_and_the_floor_applies() {
        // 10 a second for 30 s: 300 things, 1200 a minute.
        let y: Vec<f64> = (0..60).map(|i| f64::from(i as u32) * 5.0).collect();
        assert_eq!(check(&y, Measure::Count, MinGrowth::default()), (Verdict::Leak, true));
        let floor = MinGrowth { count_per_min: 2000.0, bytes_per_min: 0.0 };
        assert!(!check(&y, Measure::Count, floor).1, "below --min-growth");
        // Bytes: 64 bytes 100 times a second is material.
        let bytes: Vec<f64> = (0..60).map(|i| f64::from(i as u32) * 3200.0).collect();
        assert!(check(&bytes, Measure::Bytes, MinGrowth::default()).1);
    }

    #[test]
    fn a_plateau_of_a_few_in_flight_things_is_not_material_a_full_cache_is() {
        // Nothing before the work starts, then a handful in flight at any time.
        let mut state = 0x2545_f491_u32;
        let churn: Vec<f64> = (0..60)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i < 20 { 0.0 } else { f64::from(state % 5 + 1) }
            })
            .collect();
        let (verdict, material) = check(&churn, Measure::Count, MinGrowth::default());
        assert_eq!(verdict, Verdict::Plateau, "the trend test alone calls it a plateau");
        assert!(!material);
        let cache: Vec<f64> = (0..60).map(|i| f64::from((i as u32).min(20)) * 50.0).collect();
        assert_eq!(check(&cache, Measure::Count, MinGrowth::default()), (Verdict::Plateau, true));
    }

    #[test]
    fn a_fall_from_a_handful_is_not_material_a_drained_queue_is() {
        let few: Vec<f64> = (0..60u32).map(|i| f64::from(5u32.saturating_sub(i / 10))).collect();
        let (verdict, material) = check(&few, Measure::Count, MinGrowth::default());
        assert_eq!(verdict, Verdict::Shrinking, "the trend test alone calls it shrinking");
        assert!(!material);
        let drained: Vec<f64> = (0..60u32).map(|i| f64::from(600u32.saturating_sub(i * 10))).collect();
        assert_eq!(check(&drained, Measure::Count, MinGrowth::default()), (Verdict::Shrinking, true));
    }
}
