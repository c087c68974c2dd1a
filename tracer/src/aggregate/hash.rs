//! A hasher for addresses and ids. SipHash is needlessly slow for the live table's u64
//! keys, and a bare multiply keeps the alignment zeros of heap addresses in the low bits,
//! which hashbrown uses to pick buckets; a multiply plus xor-shift spreads them.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
        self.0 = h;
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

pub type AddrMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn aligned_addresses_spread_over_low_bits() {
        let build = BuildHasherDefault::<AddrHasher>::default();
        let buckets: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| build.hash_one(0x5555_0000_0000 + i * 16) & 1023).collect();
        // A bare multiply would leave 1024 / 16 = 64 buckets in use.
        assert!(buckets.len() > 500, "{} buckets", buckets.len());
    }
}
