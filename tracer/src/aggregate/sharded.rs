//! The live heap table, sharded: one hash table doubling its size holds old and new
//! buckets at once, a third more memory than it needs at the worst moment. Sixty-four
//! shards double one at a time, so the table grows smoothly.

use super::hash::AddrMap;

const SHARDS: usize = 64;

pub(crate) struct ShardedMap<V> {
    shards: Vec<AddrMap<V>>,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| AddrMap::default()).collect(), len: 0 }
    }
}

impl<V> ShardedMap<V> {
    fn shard(addr: u64) -> usize {
        // Heap addresses are 16-byte aligned; fold in the page number too.
        (((addr >> 4) ^ (addr >> 12)) as usize) % SHARDS
    }

    pub fn insert(&mut self, addr: u64, value: V) -> Option<V> {
        let old = self.shards[Self::shard(addr)].insert(addr, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, addr: &u64) -> Option<V> {
        let old = self.shards[Self::shard(*addr)].remove(addr);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn contains_key(&self, addr: &u64) -> bool {
        self.shards[Self::shard(*addr)].contains_key(addr)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    pub fn clear(&mut self) {
        for shard in &mut self.shards {
            *shard = AddrMap::default();
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map() {
        let mut m = ShardedMap::default();
        for i in 0..10_000u64 {
            assert_eq!(m.insert(0x5000_0000 + i * 16, i), None);
        }
        assert_eq!(m.insert(0x5000_0000, 7), Some(0));
        assert_eq!(m.len(), 10_000);
        assert!(m.contains_key(&(0x5000_0000 + 16)));
        assert_eq!(m.remove(&0x5000_0000), Some(7));
        assert_eq!(m.remove(&0x5000_0000), None);
        assert_eq!(m.len(), 9_999);
        assert_eq!(m.iter().count(), 9_999);
        assert_eq!(m.values().copied().sum::<u64>(), (1..10_000u64).sum::<u64>());
        // Spread over the shards.
        assert!(m.shards.iter().all(|s| s.len() > 100));
        m.clear();
        assert_eq!(m.len(), 0);
    }
}
