//! Least connections: the server with the fewest active requests and tunnels
//! relative to its weight; ties rotate so equal servers take turns.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{load_less, Balancer, Candidates, RequestKey, ServerId};

/// Fewest `active / weight`; the key is ignored.
#[derive(Debug, Default)]
pub struct LeastConn {
    /// Where the scan starts; advancing it makes ties rotate.
    next_start: AtomicUsize,
}

impl Balancer for LeastConn {
    fn pick(&self, candidates: &Candidates<'_>, _key: &RequestKey<'_>) -> Option<ServerId> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(ServerId, u32, u32)> = None;
        for offset in 0..n {
            let id = (start + offset) % n;
            if !candidates.is_available(id) {
                continue;
            }
            let (active, weight) = (candidates.active(id), candidates.weight(id));
            if best.is_none_or(|(_, a, w)| load_less(active, weight, a, w)) {
                best = Some((id, active, weight));
            }
        }
        best.map(|(id, _, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn the_least_loaded_server_wins() {
        let servers = servers(&[1, 1, 1]);
        set_active(&servers, 0, 5);
        set_active(&servers, 1, 2);
        set_active(&servers, 2, 7);
        let lc = LeastConn::default();
        for _ in 0..5 {
            assert_eq!(
                lc.pick(&Candidates::new(&servers, &[]), &RequestKey::default()),
                Some(1)
            );
        }
    }

    #[test]
    fn weight_divides_the_load() {
        let servers = servers(&[1, 4]);
        set_active(&servers, 0, 2);
        set_active(&servers, 1, 7); // 7/4 < 2/1
        let lc = LeastConn::default();
        assert_eq!(
            lc.pick(&Candidates::new(&servers, &[]), &RequestKey::default()),
            Some(1)
        );
    }

    #[test]
    fn ties_rotate() {
        let servers = servers(&[1, 1, 1]);
        let lc = LeastConn::default();
        let cands = Candidates::new(&servers, &[]);
        let picks: Vec<_> = (0..3)
            .map(|_| lc.pick(&cands, &RequestKey::default()).unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "{picks:?}");
    }

    #[test]
    fn keeps_long_lived_connections_even() {
        let servers = servers(&[1, 1, 1]);
        let lc = LeastConn::default();
        for _ in 0..300 {
            let id = lc
                .pick(&Candidates::new(&servers, &[]), &RequestKey::default())
                .unwrap();
            let guard = servers[id].state.try_acquire(None).unwrap();
            std::mem::forget(guard);
        }
        let counts: Vec<_> = servers.iter().map(|s| s.state.active()).collect();
        assert_eq!(counts, vec![100, 100, 100]);
    }
}
