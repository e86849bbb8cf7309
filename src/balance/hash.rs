//! Hash balancing for `source`, `uri`, `url_param`, `header` and `cookie`:
//! the key's hash modulo the total weight of the servers in rotation, so one
//! key always reaches one server while the set is unchanged. A request
//! without the key is balanced by round robin.

use super::{Balancer, Candidates, RequestKey, RoundRobin, ServerId};

/// Map-based hashing over weights (HAProxy's `hash-type map-based`).
#[derive(Debug)]
pub struct Hash {
    /// Used for requests that lack the key.
    fallback: RoundRobin,
}

impl Hash {
    /// A balancer for a backend of `servers` servers.
    pub fn new(servers: usize) -> Self {
        Self {
            fallback: RoundRobin::new(servers),
        }
    }
}

/// A well-mixed 64-bit hash of `bytes` (FNV-1a then the SplitMix64 finaliser),
/// fixed across builds and processes so several tether instances agree.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::util::mix::finalize(h)
}

/// The server whose weight slice contains `hash % total`, among the servers `include` accepts.
fn weighted_slot(candidates: &Candidates<'_>, hash: u64, include: impl Fn(ServerId) -> bool) -> Option<ServerId> {
    let total: u64 = (0..candidates.len())
        .filter(|id| include(*id))
        .map(|id| u64::from(candidates.weight(id)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut slot = hash % total;
    for id in (0..candidates.len()).filter(|id| include(*id)) {
        let weight = u64::from(candidates.weight(id));
        if slot < weight {
            return Some(id);
        }
        slot -= weight;
    }
    None
}

impl Balancer for Hash {
    fn pick(&self, candidates: &Candidates<'_>, key: &RequestKey<'_>) -> Option<ServerId> {
        let Some(input) = key.hash_input else {
            return self.fallback.pick(candidates, key);
        };
        let hash = hash_bytes(input);
        // Over every server in rotation first, so the mapping does not move
        // while a server is briefly down or full; then over the available ones.
        match weighted_slot(candidates, hash, |id| candidates.weight(id) > 0) {
            Some(id) if candidates.is_available(id) => Some(id),
            _ => weighted_slot(candidates, hash, |id| candidates.is_available(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn one_key_always_reaches_one_server() {
        let servers = servers(&[1, 1, 1]);
        let h = Hash::new(3);
        let cands = Candidates::new(&servers, &[]);
        for key in ["alice", "bob", "carol", "10.0.0.7"] {
            let first = h.pick(&cands, &RequestKey::hashed(key.as_bytes()));
            for _ in 0..20 {
                assert_eq!(h.pick(&cands, &RequestKey::hashed(key.as_bytes())), first);
            }
        }
    }

    #[test]
    fn keys_spread_by_weight() {
        let servers = servers(&[1, 3]);
        let h = Hash::new(2);
        let cands = Candidates::new(&servers, &[]);
        let mut counts = [0u32; 2];
        for i in 0..4000 {
            counts[h
                .pick(&cands, &RequestKey::hashed(format!("key-{i}").as_bytes()))
                .unwrap()] += 1;
        }
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn a_down_server_moves_only_its_own_keys() {
        let servers = servers(&[1, 1, 1]);
        let h = Hash::new(3);
        let before: Vec<_> = (0..300)
            .map(|i| {
                h.pick(
                    &Candidates::new(&servers, &[]),
                    &RequestKey::hashed(format!("k{i}").as_bytes()),
                )
            })
            .collect();
        set_down(&servers, 1);
        for (i, was) in before.iter().enumerate() {
            let now = h.pick(
                &Candidates::new(&servers, &[]),
                &RequestKey::hashed(format!("k{i}").as_bytes()),
            );
            if *was != Some(1) {
                assert_eq!(now, *was, "key k{i} moved although its server is up");
            } else {
                assert_ne!(now, Some(1));
            }
        }
    }

    #[test]
    fn a_missing_key_falls_back_to_round_robin() {
        let servers = servers(&[1, 1]);
        let h = Hash::new(2);
        let cands = Candidates::new(&servers, &[]);
        let a = h.pick(&cands, &RequestKey::default());
        let b = h.pick(&cands, &RequestKey::default());
        assert_ne!(a, b);
    }
}
