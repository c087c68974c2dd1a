//! A verdict at death: when the target was killed for its memory (the OOM killer), the
//! series may be too short for the usual tests (they want 10 s). A site whose series
//! rose all along and that holds most of the growth is then a `leak` all the same, with
//! `oom_kill` as the reason. A bounded cache that filled and stayed flat is not: its
//! series stopped rising.

use super::trend::mann_kendall;

/// Kendall's tau a series needs (1 is strictly rising).
const MIN_TAU: f64 = 0.8;
const MIN_POINTS: usize = 4;
/// The share of all sites' growth a site must hold.
const MIN_SHARE: f64 = 0.5;

/// The rise of a series: last minus first.
pub fn rise(y: &[f64]) -> f64 {
    match (y.first(), y.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0.0,
    }
}

/// Whether `y` (whose rise is `rise`, out of `total_rise` over all sites) is a leak at
/// death; the confidence if so.
pub fn leak_at_death(y: &[f64], total_rise: f64) -> Option<f64> {
    if y.len() < MIN_POINTS || total_rise <= 0.0 {
        return None;
    }
    let rise = rise(y);
    if rise < MIN_SHARE * total_rise {
        return None;
    }
    let all = mann_kendall(y);
    // Still rising at the end: the last third has no sample below its start.
    let tail = &y[y.len() - (y.len() / 3).max(2)..];
    let rising_to_the_end = tail.windows(2).all(|w| w[1] >= w[0]) && tail[tail.len() - 1] > tail[0];
    (all.tau >= MIN_TAU && rising_to_the_end).then_some(all.tau.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_rising_to_the_kill_with_most_of_the_growth_is_a_leak() {
        // Eight samples (4 s) of a 1 MiB-per-50-ms leak.
        let y: Vec<f64> = (0..8).map(|i| f64::from(i as u32) * 10.0 * 1048576.0).collect();
        let total = rise(&y) + 5.0 * 1048576.0;
        assert!(leak_at_death(&y, total).is_some_and(|c| c > 0.99));
    }

    #[test]
    fn a_filled_cache_a_small_share_or_too_few_points_are_not() {
        let filled: Vec<f64> = (0..12).map(|i| f64::from(i.min(6) as u32) * 25.0).collect();
        assert_eq!(leak_at_death(&filled, rise(&filled)), None);
        let y: Vec<f64> = (0..8).map(|i| f64::from(i as u32)).collect();
        assert_eq!(leak_at_death(&y, 100.0), None, "7 of 100 is no share");
        assert_eq!(leak_at_death(&y[..3], rise(&y[..3])), None);
    }
}
