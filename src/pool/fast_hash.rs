//! The hash the pool's tables use: FxHash's multiply-and-rotate, much cheaper than
//! the standard library's SipHash for the short keys a pool has (request numbers and
//! ids), tens of thousands of times per burst. Request ids come from the daemon, not
//! from whoever could pick colliding keys, so HashDoS resistance buys nothing here.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    #[test]
    fn spreads_small_numbers_and_tells_strings_apart() {
        let build = BuildHasherDefault::<FastHasher>::default();
        let hash = |k: &dyn Fn(&mut FastHasher)| {
            let mut h = build.build_hasher();
            k(&mut h);
            h.finish()
        };
        let numbers: std::collections::HashSet<u64> = (0u32..10_000).map(|n| hash(&|h| n.hash(h))).collect();
        assert_eq!(numbers.len(), 10_000);
        // hashbrown reads its control byte from the top 7 bits: they must vary too.
        let tops: std::collections::HashSet<u64> = (0u32..1000).map(|n| hash(&|h| n.hash(h)) >> 57).collect();
        assert!(tops.len() > 64, "{}", tops.len());
        assert_ne!(hash(&|h| "request-1".hash(h)), hash(&|h| "request-2".hash(h)));
    }
}

#[cfg(test)]
mod map_tests {
    use super::FastMap;

    #[test]
    fn holds_what_was_put_in() {
        let mut m: FastMap<u32, u32> = FastMap::default();
        for i in 0..600 {
            m.insert(i, i);
        }
        assert_eq!(m.len(), 600);
        m.remove(&5);
        assert_eq!(m.len(), 599);
    }
}
