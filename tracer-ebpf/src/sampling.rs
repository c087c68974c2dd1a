//! Sampling by bytes (`--sample-bytes RATE`): an allocation of `size` bytes is sampled
//! with probability 1 - exp(-size / rate), as if a Poisson process over bytes picked a
//! byte every `rate` bytes on average (Go's and jemalloc's heap profilers do the same).
//! The kernel side draws with [`sample_threshold`]; userspace weighs each sample by the
//! inverse of exactly the probability it was drawn with.

/// exp(-i/8) scaled to 2^32 - 1, for i in 0..=64.
const EXP_Q32: [u32; 65] = [
    4294967295, 3790295335, 3344923893, 2951884975, 2605029347, 2298930330, 2028798895, 1790408741,
    1580030168, 1394371730, 1230528732, 1085937795, 958336740, 845729205, 746353404, 658654567, 581260615,
    512960693, 452686222, 399494189, 352552384, 311126387, 274568073, 242305474, 213833830, 188707693,
    166533955, 146965699, 129696774, 114457002, 101007949, 89139202, 78665070, 69421681, 61264418, 54065659,
    47712777, 42106378, 37158748, 32792480, 28939262, 25538809, 22537920, 19889645, 17552550, 15490071,
    13669939, 12063679, 10646160, 9395203, 8291237, 7316991, 6457222, 5698479, 5028890, 4437980, 3916503,
    3456302, 3050176, 2691771, 2375479, 2096353, 1850025, 1632641, 1440801,
];

/// The probability that an allocation of `size` bytes is sampled at mean `rate`, scaled
/// to 2^32 - 1: sampled when a uniform random u32 is at most this (and it is not 0).
/// Integer arithmetic only, so the kernel side can run it; `rate` 0 samples everything.
#[inline(always)]
pub fn sample_threshold(size: u64, rate: u64) -> u32 {
    if rate == 0 {
        return u32::MAX;
    }
    // size / rate in 1/2048ths: table steps of 1/8, interpolated in 1/256ths.
    let x = size.saturating_mul(2048) / rate;
    let i = (x / 256) as usize;
    let frac = x % 256;
    if i >= 64 {
        return u32::MAX;
    }
    let (a, b) = (EXP_Q32[i & 63] as u64, EXP_Q32[(i & 63) + 1] as u64);
    let exp = a - (a - b) * frac / 256;
    (u32::MAX as u64 - exp) as u32
}

/// The weight of a block drawn with `threshold`: the inverse of its probability (1 when
/// not sampled, threshold 0).
pub fn weight(threshold: u32) -> f64 {
    if threshold == 0 { 1.0 } else { f64::from(u32::MAX) / f64::from(threshold) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// The table is exp(-i/8) to within rounding.
    #[test]
    fn the_table_is_the_exponential() {
        for (i, &v) in EXP_Q32.iter().enumerate() {
            let exact = libm_exp(-(i as f64) / 8.0) * f64::from(u32::MAX);
            assert!((f64::from(v) - exact).abs() <= 1.0, "entry {i}: {v} vs {exact}");
        }
    }

    /// The interpolated threshold is within 0.1% (absolute, of probability) of
    /// 1 - exp(-size/rate) everywhere, and exact at the extremes.
    #[test]
    fn thresholds_follow_one_minus_exp() {
        let rate = 524_288u64;
        for size in (0..=rate * 9).step_by(997) {
            let p = f64::from(sample_threshold(size, rate)) / f64::from(u32::MAX);
            let exact = 1.0 - libm_exp(-(size as f64) / rate as f64);
            assert!((p - exact).abs() < 1e-3, "size {size}: {p} vs {exact}");
        }
        assert_eq!(sample_threshold(0, rate), 0, "an empty allocation is never drawn");
        assert_eq!(sample_threshold(rate * 8, rate), u32::MAX, "beyond 8 rates: always");
        assert_eq!(sample_threshold(1, 0), u32::MAX, "rate 0 traces everything");
        assert_eq!(sample_threshold(u64::MAX, 1), u32::MAX, "no overflow");
    }

    #[test]
    fn thresholds_grow_with_size() {
        let mut last = 0;
        for size in 0..100_000u64 {
            let t = sample_threshold(size, 4096);
            assert!(t >= last, "size {size}");
            last = t;
        }
    }

    #[test]
    fn weights_invert_probabilities() {
        assert_eq!(weight(0), 1.0);
        assert_eq!(weight(u32::MAX), 1.0);
        assert!((weight(u32::MAX / 4) - 4.0).abs() < 1e-6);
    }

    fn libm_exp(x: f64) -> f64 {
        std::primitive::f64::exp(x)
    }
}
