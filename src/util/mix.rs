//! SplitMix64 (Steele, Lea and Flood, 2014): the one bit mixer of tether.
//! Its finaliser spreads hashes (`balance::hash_bytes`), turns a counter into
//! request ids, and its generator draws random choices and check jitter.
//! Not for secrets: it is fast and well spread, not unpredictable.

use std::sync::atomic::{AtomicU64, Ordering};

/// The generator's step: 2^64 divided by the golden ratio.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a bijection of `u64` that spreads every input
/// bit over every output bit.
pub fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `value` as a number in [0, 1), from its 53 high bits.
pub fn unit_of(value: u64) -> f64 {
    (value >> 11) as f64 / (1u64 << 53) as f64
}

/// A SplitMix64 generator owned by one task.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        finalize(self.0)
    }

    /// The next number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        unit_of(self.next_u64())
    }

    /// The next number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A SplitMix64 generator shared by threads without a lock: each draw
/// advances the state with one atomic add.
#[derive(Debug)]
pub struct AtomicSplitMix64(AtomicU64);

impl AtomicSplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// The next number.
    pub fn next_u64(&self) -> u64 {
        finalize(
            self.0
                .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
                .wrapping_add(GOLDEN_GAMMA),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_and_the_owned_generator_draw_the_same_sequence() {
        let mut owned = SplitMix64::new(42);
        let shared = AtomicSplitMix64::new(42);
        for _ in 0..10 {
            assert_eq!(owned.next_u64(), shared.next_u64());
        }
    }

    #[test]
    fn the_reference_sequence_from_seed_zero() {
        // First outputs of SplitMix64 seeded with 0 (the published test vector).
        let mut mix = SplitMix64::new(0);
        assert_eq!(mix.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn units_stay_below_one() {
        let mut mix = SplitMix64::new(7);
        assert!((0..1000).map(|_| mix.next_unit()).all(|u| (0.0..1.0).contains(&u)));
        assert!(unit_of(u64::MAX) < 1.0);
    }
}
