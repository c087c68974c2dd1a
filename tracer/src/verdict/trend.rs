//! Trend statistics on short, noisy time series: the Mann-Kendall test (is there a
//! monotone trend, and how sure) and the Theil-Sen slope (how fast, robust to outliers).

/// Result of a one-sided Mann-Kendall test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannKendall {
    /// Kendall's S: concordant minus discordant pairs.
    pub s: i64,
    /// Normal approximation of S, with the continuity and tie corrections.
    pub z: f64,
    /// p-value of "no trend" against "increasing".
    pub p_increasing: f64,
    /// p-value of "no trend" against "decreasing".
    pub p_decreasing: f64,
    /// Kendall's tau (S over the number of pairs), from -1 to 1.
    pub tau: f64,
}

pub fn mann_kendall(y: &[f64]) -> MannKendall {
    let n = y.len();
    if n < 3 {
        return MannKendall { s: 0, z: 0.0, p_increasing: 1.0, p_decreasing: 1.0, tau: 0.0 };
    }
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match y[j].partial_cmp(&y[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    // Ties shrink the variance: sum over groups of equal values.
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i = j;
    }
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    let z = if var <= 0.0 {
        0.0
    } else if s > 0 {
        (s as f64 - 1.0) / var.sqrt()
    } else if s < 0 {
        (s as f64 + 1.0) / var.sqrt()
    } else {
        0.0
    };
    MannKendall {
        s,
        z,
        p_increasing: 1.0 - normal_cdf(z),
        p_decreasing: normal_cdf(z),
        tau: s as f64 / (nf * (nf - 1.0) / 2.0),
    }
}

/// Theil-Sen slope: the median of the slopes between all pairs of points (in y units
/// per t unit). Series longer than `MAX_POINTS` are thinned evenly first.
pub fn theil_sen(t: &[f64], y: &[f64]) -> f64 {
    const MAX_POINTS: usize = 64;
    let n = t.len().min(y.len());
    let step = n.div_ceil(MAX_POINTS).max(1);
    let points: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (t[i], y[i])).collect();
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, &(ti, yi)) in points.iter().enumerate() {
        for &(tj, yj) in &points[i + 1..] {
            if tj > ti {
                slopes.push((yj - yi) / (tj - ti));
            }
        }
    }
    median(&mut slopes)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// Standard normal CDF.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Chebyshev fit, fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-3.0) - 0.00135).abs() < 1e-5);
    }

    #[test]
    fn a_rising_line_is_a_certain_increase() {
        let y: Vec<f64> = (0..20).map(f64::from).collect();
        let mk = mann_kendall(&y);
        assert_eq!(mk.s, 190);
        assert_eq!(mk.tau, 1.0);
        assert!(mk.p_increasing < 1e-6);
        assert!(mk.p_decreasing > 0.999);
    }

    #[test]
    fn a_constant_has_no_trend() {
        let mk = mann_kendall(&[5.0; 30]);
        assert_eq!((mk.s, mk.z), (0, 0.0));
        assert!((mk.p_increasing - 0.5).abs() < 1e-6);
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let t: Vec<f64> = (0..21).map(f64::from).collect();
        let mut y: Vec<f64> = t.iter().map(|x| 3.0 * x + 7.0).collect();
        y[10] = 10_000.0;
        assert!((theil_sen(&t, &y) - 3.0).abs() < 1e-9);
    }

    proptest! {
        /// Any strictly increasing series is called increasing, whatever its shape.
        #[test]
        fn strictly_increasing_series_are_increasing(steps in prop::collection::vec(0.001f64..1e6, 12..80)) {
            let y: Vec<f64> = steps.iter().scan(0.0, |acc, s| { *acc += s; Some(*acc) }).collect();
            let mk = mann_kendall(&y);
            prop_assert!(mk.p_increasing < 1e-3);
            prop_assert!(mk.tau == 1.0);
        }

        /// Mirroring a series in time mirrors the statistic.
        #[test]
        fn reversal_negates_s(y in prop::collection::vec(-1e3f64..1e3, 3..60)) {
            let mut r = y.clone();
            r.reverse();
            prop_assert_eq!(mann_kendall(&y).s, -mann_kendall(&r).s);
        }

        /// The Theil-Sen slope of an exact line is its slope, and it scales with y.
        #[test]
        fn theil_sen_recovers_lines(slope in -1e4f64..1e4, intercept in -1e6f64..1e6, n in 3usize..200) {
            let t: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
            let y: Vec<f64> = t.iter().map(|x| slope * x + intercept).collect();
            let fitted = theil_sen(&t, &y);
            prop_assert!((fitted - slope).abs() <= 1e-6 * slope.abs().max(1.0));
        }

        /// p-values are probabilities.
        #[test]
        fn p_values_are_probabilities(y in prop::collection::vec(-1e3f64..1e3, 0..60)) {
            let mk = mann_kendall(&y);
            prop_assert!((0.0..=1.0).contains(&mk.p_increasing));
            prop_assert!((0.0..=1.0).contains(&mk.p_decreasing));
        }
    }
}
