//! Sampling by bytes (`--sample-bytes RATE`): an allocation of `size` bytes is sampled
//! with probability 1 - exp(-size / rate), as if a Poisson process over bytes picked a
//! byte every `rate` bytes on average (Go's and jemalloc's heap profilers do the same).
//! The kernel side draws with [`sample_threshold`]; userspace weighs each sample by the
//! inverse of exactly the probability it was drawn with.

/// exp(-i/32) scaled to 2^32 - 1, for i in 0..=256: linear interpolation between
/// entries is then within 1.3e-4 of the exponential (h^2/8 for steps h = 1/32).
const EXP_Q32: [u32; 257] = [
    4294967295, 4162825043, 4034748381, 3910612224, 3790295335, 3673680207, 3560652949, 3451103175,
    3344923893, 3242011404, 3142265199, 3045587862, 2951884975, 2861065022, 2773039305, 2687721855,
    2605029347, 2524881020, 2447198597, 2371906212, 2298930330, 2228199679, 2159645182, 2093199885,
    2028798895, 1966379315, 1905880184, 1847242415, 1790408741, 1735323655, 1681933359, 1630185710,
    1580030168, 1531417751, 1484300980, 1438633840, 1394371730, 1351471421, 1309891017, 1269589907,
    1230528732, 1192669343, 1155974765, 1120409161, 1085937795, 1052527001, 1020144150, 988757614, 958336740,
    928851819, 900274052, 872575532, 845729205, 819708853, 794489063, 770045204, 746353404, 723390524,
    701134137, 679562507, 658654567, 638389896, 618748704, 599711808, 581260615, 563377106, 546043815,
    529243813, 512960693, 497178551, 481881975, 467056026, 452686222, 438758532, 425259351, 412175496,
    399494189, 387203045, 375290060, 363743599, 352552384, 341705488, 331192315, 321002599, 311126387,
    301554035, 292276192, 283283799, 274568073, 266120502, 257932835, 249997075, 242305474, 234850518,
    227624928, 220621645, 213833830, 207254855, 200878294, 194697918, 188707693, 182901768, 177274472,
    171820310, 166533955, 161410243, 156444172, 151630891, 146965699, 142444040, 138061497, 133813792,
    129696774, 125706424, 121838844, 118090257, 114457002, 110935530, 107522402, 104214286, 101007949,
    97900261, 94888187, 91968784, 89139202, 86396677, 83738531, 81162167, 78665070, 76244800, 73898994,
    71625361, 69421681, 67285800, 65215634, 63209160, 61264418, 59379510, 57552595, 55781887, 54065659,
    52402234, 50789987, 49227343, 47712777, 46244809, 44822006, 43442978, 42106378, 40810901, 39555281,
    38338293, 37158748, 36015493, 34907413, 33833425, 32792480, 31783561, 30805684, 29857893, 28939262,
    28048895, 27185921, 26349498, 25538809, 24753063, 23991491, 23253350, 22537920, 21844501, 21172416,
    20521010, 19889645, 19277704, 18684592, 18109727, 17552550, 17012514, 16489094, 15981778, 15490071,
    15013491, 14551575, 14103870, 13669939, 13249360, 12841720, 12446621, 12063679, 11692519, 11332778,
    10984105, 10646160, 10318612, 10001141, 9693439, 9395203, 9106143, 8825976, 8554430, 8291237, 8036143,
    7788897, 7549258, 7316991, 7091871, 6873677, 6662196, 6457222, 6258554, 6065999, 5879368, 5698479,
    5523155, 5353225, 5188524, 5028890, 4874167, 4724205, 4578856, 4437980, 4301437, 4169096, 4040826,
    3916503, 3796005, 3679214, 3566017, 3456302, 3349963, 3246895, 3146999, 3050176, 2956332, 2865375,
    2777217, 2691771, 2608954, 2528685, 2450885, 2375479, 2302393, 2231556, 2162898, 2096353, 2031855,
    1969341, 1908751, 1850025, 1793106, 1737938, 1684467, 1632641, 1582410, 1533725, 1486537, 1440801,
];

/// The probability that an allocation of `size` bytes is sampled at mean `rate`, scaled
/// to 2^32 - 1: sampled when a uniform random u32 is at most this (and it is not 0).
/// Integer arithmetic only, so the kernel side can run it; `rate` 0 samples everything.
#[inline(always)]
pub fn sample_threshold(size: u64, rate: u64) -> u32 {
    if rate == 0 {
        return u32::MAX;
    }
    // size / rate in 1/8192ths: table steps of 1/32, interpolated in 1/256ths.
    let x = size.saturating_mul(8192) / rate;
    let i = (x / 256) as usize;
    let frac = x % 256;
    if i >= 256 {
        return u32::MAX;
    }
    // The mask is a no-op that shows the verifier the index is in bounds.
    let (a, b) = (EXP_Q32[i & 255] as u64, EXP_Q32[(i & 255) + 1] as u64);
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
            let exact = libm_exp(-(i as f64) / 32.0) * f64::from(u32::MAX);
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
