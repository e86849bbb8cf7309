//! Power of two random choices: two random available servers, the less
//! loaded (active ÷ weight) wins. Nearly as even as least connections,
//! without every balancer instance herding onto the same least-loaded server.

use super::{load_less, Balancer, Candidates, RequestKey, ServerId};
use crate::util::mix::AtomicSplitMix64;

/// Power of two choices; the key is ignored.
#[derive(Debug)]
pub struct PowerOfTwo {
    /// Lock-free and good enough for choosing servers.
    random: AtomicSplitMix64,
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            random: AtomicSplitMix64::new(RandomState::new().hash_one(0x7e7e_u64)),
        }
    }
}

impl PowerOfTwo {
    fn next(&self) -> u64 {
        self.random.next_u64()
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&self, candidates: &Candidates<'_>, _key: &RequestKey<'_>) -> Option<ServerId> {
        let count = candidates.available().count();
        if count == 0 {
            return None;
        }
        let first = (self.next() % count as u64) as usize;
        let second = if count > 1 {
            (first + 1 + (self.next() % (count as u64 - 1)) as usize) % count
        } else {
            first
        };
        let nth = |n: usize| candidates.available().nth(n);
        let (a, b) = (nth(first)?, nth(second)?);
        let b_lighter = load_less(
            candidates.active(b),
            candidates.weight(b),
            candidates.active(a),
            candidates.weight(a),
        );
        Some(if b_lighter { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn spreads_over_every_server() {
        let servers = servers(&[1, 1, 1, 1]);
        let p2c = PowerOfTwo::default();
        let cands = Candidates::new(&servers, &[]);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[p2c.pick(&cands, &RequestKey::default()).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn never_picks_the_busiest_of_several() {
        let servers = servers(&[1, 1, 1]);
        set_active(&servers, 2, 50);
        let p2c = PowerOfTwo::default();
        let cands = Candidates::new(&servers, &[]);
        for _ in 0..200 {
            assert_ne!(p2c.pick(&cands, &RequestKey::default()), Some(2));
        }
    }

    #[test]
    fn excluded_servers_are_skipped() {
        let servers = servers(&[1, 1]);
        let p2c = PowerOfTwo::default();
        let cands = Candidates::new(&servers, &[0]);
        for _ in 0..50 {
            assert_eq!(p2c.pick(&cands, &RequestKey::default()), Some(1));
        }
    }
}
