//! Maglev hashing (`hash = "maglev"`): Google's lookup table (Eisenbud et al.,
//! "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016).
//!
//! A table of prime size `M` is filled once: every server with weight `w > 0`
//! walks its own permutation of the slots, `offset + j × skip (mod M)` with
//! `offset = hash_bytes(name) % M` and `skip = hash_bytes("<name>#skip") % (M − 1) + 1`
//! (`M` prime makes every permutation visit every slot), and servers take
//! turns claiming their next free slot until the table is full. A key goes to
//! `table[hash_bytes(key) % M]`: one division and one load, whatever the size
//! of the backend.
//!
//! **Weights.** Servers take turns in rounds, in name order. In round `r` a
//! server of weight `w` takes a turn only if it has taken at most
//! `r × w / w_max` turns so far, so the heaviest servers take one slot every
//! round and a server of half their weight one every other round, so slot
//! counts come out proportional to weight to within a turn or two (1:2:3 at
//! `M = 65,537`: within 0.1 %). This is Envoy's weighted Maglev.
//!
//! Servers are populated in name order, not config order, so the table
//! depends only on the set of `(name, weight)` pairs: two tether instances
//! with the same servers agree on every key whatever order they list them in.
//!
//! **Unavailable or full servers.** If the slot's server is unavailable (down,
//! weight 0, at `maxconn`, already tried) or over the load bound (see
//! [`Ring`](super::Ring) for `balance_factor`; the rule is the same), the following
//! slots are probed until one names an acceptable server. Slots of other
//! servers are untouched, so only the unavailable server's keys move, and
//! they spread over the others in proportion to their slots.

use super::ring::{LoadBound, LoadTotals};
use super::{first_acceptable, hash_bytes, Balancer, Candidates, RequestKey, RoundRobin, ServerId};
use crate::util::prime::is_prime;

/// Default lookup table size: a prime, and large enough (Google's paper uses
/// 65,537) that with up to a few hundred servers every server's share is
/// within a fraction of a percent of its weight.
pub const DEFAULT_TABLE_SIZE: usize = crate::config::types::defaults::MAGLEV_TABLE_SIZE;

/// The smallest prime at least `n`.
fn next_prime(n: usize) -> usize {
    let mut candidate = n.max(2);
    while !is_prime(candidate) {
        candidate += 1;
    }
    candidate
}

/// Maglev consistent hashing with weights and optional bounded loads.
///
/// Built once and immutable: a lookup is `table[hash % M]` with no lock (only
/// a request without the key takes the round-robin fallback's short lock).
#[derive(Debug)]
pub struct Maglev {
    /// `M` slots, each naming the server that owns it (empty when no server
    /// has weight); `u32` keeps the default table at 256 KiB.
    table: Vec<u32>,
    /// Number of distinct servers that own slots: probing stops after seeing
    /// them all instead of scanning the whole table.
    owners: usize,
    /// The load bound, when `balance_factor` is set.
    bound: Option<LoadBound>,
    /// Balances requests that lack the key (and keyed ones when no server has
    /// slots, so an operator who raises a zero weight at run time is heard).
    fallback: RoundRobin,
}

/// One server's walk through its permutation while the table fills.
struct Filler {
    /// The server.
    id: u32,
    /// Its configured weight (> 0).
    weight: u64,
    /// The next slot of its permutation to try.
    next: u64,
    /// Its step through the table, in `1..M`.
    skip: u64,
    /// Slots it has claimed so far.
    taken: u64,
}

impl Maglev {
    /// A table of `table_size` slots over `servers`, each `(name, weight)`,
    /// indexed in the given order (`ServerId` = position). Weight-0 servers get
    /// no slots. `table_size` should be a prime well above the number of
    /// servers (validate with [`crate::util::prime::is_prime`]); a size that is not prime is
    /// rounded up to the next prime rather than refused, since this function
    /// cannot fail. The table takes 4 bytes a slot, so validation should also
    /// cap the size. `balance_factor` turns bounded loads on, with the rule and
    /// reading of values documented on [`Ring`](super::Ring).
    pub fn new(servers: &[(&str, u32)], table_size: usize, balance_factor: Option<f64>) -> Self {
        let size = next_prime(table_size);
        let m = size as u64;
        let mut fillers: Vec<Filler> = servers
            .iter()
            .enumerate()
            .filter(|(_, (_, weight))| *weight > 0)
            .filter_map(|(id, (name, weight))| Some((u32::try_from(id).ok()?, name, weight)))
            .map(|(id, name, weight)| {
                let mut skip_label = Vec::with_capacity(name.len() + 5);
                skip_label.extend_from_slice(name.as_bytes());
                skip_label.extend_from_slice(b"#skip");
                Filler {
                    id,
                    weight: u64::from(*weight),
                    next: hash_bytes(name.as_bytes()) % m,
                    skip: hash_bytes(&skip_label) % (m - 1).max(1) + 1,
                    taken: 0,
                }
            })
            .collect();
        let name = |id: u32| servers[id as usize].0;
        fillers.sort_by(|a, b| name(a.id).cmp(name(b.id)).then(a.id.cmp(&b.id)));
        let owners = fillers.len();
        let table = if fillers.is_empty() {
            Vec::new()
        } else {
            populate(&mut fillers, size)
        };
        Self {
            table,
            owners,
            bound: balance_factor.and_then(LoadBound::new),
            fallback: RoundRobin::new(servers.len()),
        }
    }
}

/// Fills a table of `size` slots from non-empty `fillers`, by weighted turns.
fn populate(fillers: &mut [Filler], size: usize) -> Vec<u32> {
    const EMPTY: u32 = u32::MAX;
    let m = size as u64;
    let max_weight = fillers.iter().map(|f| f.weight).max().unwrap_or(1);
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    // The heaviest server takes a turn every round, so each round fills at
    // least one slot and the loop ends within `size` rounds.
    for round in 0u64.. {
        for filler in fillers.iter_mut() {
            if filler.taken * max_weight > round * filler.weight {
                continue;
            }
            // Its permutation covers every slot and the table is not full,
            // so this finds a free slot.
            loop {
                let slot = filler.next as usize;
                filler.next = (filler.next + filler.skip) % m;
                if table[slot] == EMPTY {
                    table[slot] = filler.id;
                    break;
                }
            }
            filler.taken += 1;
            filled += 1;
            if filled == size {
                return table;
            }
        }
    }
    table
}

impl Balancer for Maglev {
    fn pick(&self, candidates: &Candidates<'_>, key: &RequestKey<'_>) -> Option<ServerId> {
        let Some(input) = key.hash_input else {
            return self.fallback.pick(candidates, key);
        };
        if self.table.is_empty() {
            return self.fallback.pick(candidates, key);
        }
        let size = self.table.len();
        let start = (hash_bytes(input) % size as u64) as usize;
        let totals = self.bound.map(|_| LoadTotals::of(candidates));
        let acceptable = |id: ServerId| match (self.bound, totals) {
            (Some(bound), Some(totals)) => bound.admits(candidates, id, totals),
            _ => true,
        };
        // Fast path: the key's own slot, no allocation.
        let first = self.table[start] as ServerId;
        if first < candidates.len() && candidates.is_available(first) && acceptable(first) {
            return Some(first);
        }
        let order = (0..size).map(|probe| self.table[(start + probe) % size] as ServerId);
        first_acceptable(order, candidates, self.owners, acceptable)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ring::tests::bounded_load_walk;
    use super::super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn primes_are_told_apart() {
        let small: Vec<usize> = (0..40).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(655_373));
        assert!(!is_prime(65_536));
        assert!(!is_prime(25));
        assert!(!is_prime(65_537 * 3));
        assert_eq!(next_prime(65_536), 65_537);
    }

    #[test]
    fn a_size_that_is_not_prime_is_rounded_up() {
        let names = names("ws", 3);
        assert_eq!(Maglev::new(&spec(&names, &[1; 3]), 1000, None).table.len(), 1009);
        assert_eq!(Maglev::new(&spec(&names, &[1; 3]), 0, None).table.len(), 2);
    }

    #[test]
    fn one_key_always_reaches_one_server() {
        let names = names("ws", 5);
        let servers = servers(&[1; 5]);
        let maglev = Maglev::new(&spec(&names, &[1; 5]), DEFAULT_TABLE_SIZE, None);
        for key in ["alice", "bob", "carol", "10.0.0.7"] {
            let first = owner(&maglev, &servers, key);
            assert!(first.is_some());
            for _ in 0..20 {
                assert_eq!(owner(&maglev, &servers, key), first);
            }
        }
    }

    #[test]
    fn two_instances_with_the_same_servers_agree_whatever_the_order() {
        let names = names("ws", 6);
        let weights = [1, 2, 3, 1, 2, 3];
        let a = Maglev::new(&spec(&names, &weights), DEFAULT_TABLE_SIZE, None);
        let b = Maglev::new(&spec(&names, &weights), DEFAULT_TABLE_SIZE, None);
        let mut reversed = spec(&names, &weights);
        reversed.reverse();
        let c = Maglev::new(&reversed, DEFAULT_TABLE_SIZE, None);
        assert_eq!(a.table, b.table);
        assert!(a.table.iter().zip(&c.table).all(|(x, y)| *x == 5 - *y));
    }

    #[test]
    fn table_slots_follow_weights_to_a_fraction_of_a_percent() {
        let names = names("app", 3);
        let weights = [1, 2, 3];
        let maglev = Maglev::new(&spec(&names, &weights), DEFAULT_TABLE_SIZE, None);
        let mut slots = [0usize; 3];
        for id in &maglev.table {
            slots[*id as usize] += 1;
        }
        for (id, weight) in weights.iter().enumerate() {
            let expected = DEFAULT_TABLE_SIZE as f64 * f64::from(*weight) / 6.0;
            let off = (slots[id] as f64 - expected).abs() / expected;
            assert!(off < 0.001, "server {id}: {slots:?}");
        }
    }

    #[test]
    fn weights_one_two_three_are_respected_within_three_percent() {
        // The table is exact to a slot; what remains is the sampling noise
        // of 30,000 keys (one sigma ≈ 1.3 % of the weight-1 share).
        let names = names("app", 3);
        let weights = [1, 2, 3];
        let maglev = Maglev::new(&spec(&names, &weights), DEFAULT_TABLE_SIZE, None);
        let servers = servers(&weights);
        let mut counts = [0u32; 3];
        for k in 0..30_000 {
            counts[owner(&maglev, &servers, &format!("key-{k}")).expect("a server")] += 1;
        }
        for (id, weight) in weights.iter().enumerate() {
            let expected = 30_000.0 * f64::from(*weight) / 6.0;
            let off = (f64::from(counts[id]) - expected).abs() / expected;
            assert!(off <= 0.03, "server {id}: {counts:?}, {:.1} % off", off * 100.0);
        }
    }

    #[test]
    fn weight_zero_servers_get_no_slots() {
        let names = names("ws", 3);
        let maglev = Maglev::new(&spec(&names, &[1, 0, 2]), 1009, None);
        assert!(maglev.table.iter().all(|id| *id != 1));
        assert_eq!(maglev.owners, 2);
    }

    #[test]
    fn a_down_server_moves_only_its_own_keys() {
        let names = names("ws", 4);
        let servers = servers(&[1; 4]);
        assert_down_server_moves_only_its_keys(
            &Maglev::new(&spec(&names, &[1; 4]), DEFAULT_TABLE_SIZE, None),
            &servers,
        );
    }

    #[test]
    fn all_servers_down_gives_none() {
        let names = names("ws", 3);
        let servers = servers(&[1; 3]);
        let maglev = Maglev::new(&spec(&names, &[1; 3]), 1009, Some(1.25));
        for id in 0..3 {
            set_down(&servers, id);
        }
        assert_eq!(owner(&maglev, &servers, "alice"), None);
    }

    #[test]
    fn a_full_server_sends_the_key_to_the_next_slot_of_another_server() {
        let names = names("ws", 3);
        let servers = servers(&[1; 3]);
        let maglev = Maglev::new(&spec(&names, &[1; 3]), DEFAULT_TABLE_SIZE, Some(1.25));
        let start = (hash_bytes(b"alice") % DEFAULT_TABLE_SIZE as u64) as usize;
        let home = maglev.table[start] as ServerId;
        let next = (1..DEFAULT_TABLE_SIZE)
            .map(|probe| maglev.table[(start + probe) % DEFAULT_TABLE_SIZE] as ServerId)
            .find(|id| *id != home)
            .expect("another server");
        // 6 active over 3 servers: bound ceil(1.25 × 7 / 3) = 3, home holds 6.
        set_active(&servers, home, 6);
        assert_eq!(owner(&maglev, &servers, "alice"), Some(next));
        let unbounded = Maglev::new(&spec(&names, &[1; 3]), DEFAULT_TABLE_SIZE, None);
        assert_eq!(owner(&unbounded, &servers, "alice"), Some(home));
    }

    #[test]
    fn bounded_loads_hold_on_every_connect_over_ten_thousand_steps() {
        let names = names("ws", 5);
        let maglev = Maglev::new(&spec(&names, &[1; 5]), DEFAULT_TABLE_SIZE, Some(1.25));
        bounded_load_walk(&maglev, &[1; 5], 7, 10_000, false);
    }

    #[test]
    fn bounded_loads_hold_for_every_server_while_only_connecting() {
        let names = names("ws", 4);
        let maglev = Maglev::new(&spec(&names, &[1; 4]), DEFAULT_TABLE_SIZE, Some(1.25));
        bounded_load_walk(&maglev, &[1; 4], 11, 3_000, true);
    }

    #[test]
    fn bounded_loads_follow_weights() {
        let names = names("ws", 3);
        let weights = [1, 2, 3];
        let maglev = Maglev::new(&spec(&names, &weights), DEFAULT_TABLE_SIZE, Some(1.25));
        bounded_load_walk(&maglev, &weights, 13, 5_000, false);
    }

    #[test]
    fn a_missing_key_falls_back_to_round_robin() {
        let names = names("ws", 2);
        let servers = servers(&[1, 1]);
        let maglev = Maglev::new(&spec(&names, &[1, 1]), 1009, None);
        let cands = Candidates::new(&servers, &[]);
        let picks: Vec<_> = (0..4).map(|_| maglev.pick(&cands, &RequestKey::default())).collect();
        assert_eq!(picks, vec![Some(0), Some(1), Some(0), Some(1)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Removing one of N servers moves all of its keys and few of the
        /// others. Maglev trades a little disruption for its even spread, and
        /// weights cost more of it (a removal shifts the turns of the lighter
        /// servers): over 1,000 random cases each (N in 3..20, M = 65,537,
        /// 2,000 keys) at most 2.2 % of the other keys moved with equal
        /// weights and 9.2 % with weights 1..=3 (the earlier 1.5 % bound came
        /// from 300 lucky cases and failed in CI at 136 of 1,524).
        #[test]
        fn removing_a_server_moves_its_keys_and_almost_no_others(
            n in 3usize..20,
            removed in any::<prop::sample::Index>(),
            prefix in "[a-z]{1,8}",
            weights in prop::collection::vec(1u32..4, 20),
        ) {
            let all = names(&prefix, n);
            let weights = &weights[..n];
            let removed = removed.index(n);
            let before = Maglev::new(&spec(&all, weights), DEFAULT_TABLE_SIZE, None);
            let before = owners_by_name(&before, &all, &servers(weights), 2000);
            let (mut rest, mut rest_w) = (all.clone(), weights.to_vec());
            rest.remove(removed);
            rest_w.remove(removed);
            let after = Maglev::new(&spec(&rest, &rest_w), DEFAULT_TABLE_SIZE, None);
            let after = owners_by_name(&after, &rest, &servers(&rest_w), 2000);
            let (mut others, mut others_moved) = (0u32, 0u32);
            for (was, now) in before.iter().zip(&after) {
                if *was == all[removed] {
                    prop_assert_ne!(now, was);
                } else {
                    others += 1;
                    others_moved += u32::from(now != was);
                }
            }
            let equal = weights.iter().all(|w| *w == weights[0]);
            let limit = if equal { 0.03 } else { 0.12 } * f64::from(others);
            prop_assert!(f64::from(others_moved) <= limit, "{} of {} others moved", others_moved, others);
        }

        /// Adding a server to N equal ones moves at most 1.3/(N+1) of the keys.
        /// Over 300 random cases (5,000 keys) the ratio moved / (keys/(N+1))
        /// was 1.03 in the median, 1.18 at p99, 1.22 at most (sampling noise
        /// plus the few keys Maglev shuffles between the old servers).
        #[test]
        fn adding_a_server_moves_about_one_share_of_keys(
            n in 3usize..20,
            prefix in "[a-z]{1,8}",
        ) {
            let all = names(&prefix, n + 1);
            let before = Maglev::new(&spec(&all[..n], &vec![1; n]), DEFAULT_TABLE_SIZE, None);
            let before = owners_by_name(&before, &all[..n], &servers(&vec![1; n]), 5000);
            let after = Maglev::new(&spec(&all, &vec![1; n + 1]), DEFAULT_TABLE_SIZE, None);
            let after = owners_by_name(&after, &all, &servers(&vec![1; n + 1]), 5000);
            let moved = before.iter().zip(&after).filter(|(was, now)| was != now).count();
            let limit = 1.3 * 5000.0 / (n as f64 + 1.0);
            prop_assert!(moved as f64 <= limit, "{} moved, limit {:.0}", moved, limit);
        }

        /// Short random connect/disconnect sequences over random sizes.
        #[test]
        fn bounded_loads_hold_under_random_traffic(n in 2usize..8, seed in any::<u64>()) {
            let all = names("ws", n);
            let maglev = Maglev::new(&spec(&all, &vec![1; n]), 1009, Some(1.25));
            bounded_load_walk(&maglev, &vec![1; n], seed, 400, false);
        }
    }
}
