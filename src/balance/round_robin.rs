//! Smooth weighted round robin (the NGINX algorithm): over any window of
//! `sum(weights)` picks each server gets exactly its weight, interleaved
//! rather than in bursts.

use std::sync::Mutex;

use super::{Balancer, Candidates, RequestKey, ServerId};
use crate::util::lock;

/// Smooth weighted round robin; the key is ignored.
#[derive(Debug)]
pub struct RoundRobin {
    /// Each server's running "current weight". A short lock per request (not
    /// per message) keeps the sequence exact under concurrency.
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    /// A balancer for a backend of `servers` servers.
    pub fn new(servers: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; servers]),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _key: &RequestKey<'_>) -> Option<ServerId> {
        let mut current = lock(&self.current);
        if current.len() < candidates.len() {
            current.resize(candidates.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<ServerId> = None;
        for id in candidates.available() {
            let weight = i64::from(candidates.weight(id));
            current[id] += weight;
            total += weight;
            if best.is_none_or(|b| current[id] > current[b]) {
                best = Some(id);
            }
        }
        let chosen = best?;
        current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn counts(balancer: &RoundRobin, cands: &Candidates<'_>, picks: usize, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[balancer.pick(cands, &RequestKey::default()).expect("a server")] += 1;
        }
        counts
    }

    #[test]
    fn weights_one_two_three_give_exact_shares() {
        let servers = servers(&[1, 2, 3]);
        let cands = Candidates::new(&servers, &[]);
        let rr = RoundRobin::new(3);
        assert_eq!(counts(&rr, &cands, 600, 3), vec![100, 200, 300]);
    }

    #[test]
    fn picks_are_interleaved_not_bursts() {
        let servers = servers(&[5, 1, 1]);
        let cands = Candidates::new(&servers, &[]);
        let rr = RoundRobin::new(3);
        let seq: Vec<_> = (0..7)
            .map(|_| rr.pick(&cands, &RequestKey::default()).unwrap())
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn down_and_zero_weight_servers_are_skipped() {
        let servers = servers(&[1, 0, 1]);
        set_down(&servers, 2);
        let cands = Candidates::new(&servers, &[]);
        let rr = RoundRobin::new(3);
        assert_eq!(counts(&rr, &cands, 10, 3), vec![10, 0, 0]);
        set_down(&servers, 0);
        assert_eq!(rr.pick(&cands, &RequestKey::default()), None);
    }
}
