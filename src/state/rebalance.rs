//! A backend's rebalancing as data: whether a round is shedding, the most a
//! server may hold now, what was shed so far and which servers are over.
//! The instance's rebalance loop writes it once a round; the data path reads
//! it (a client stuck to a server at or above the target is redispatched)
//! and so do the stats page, the API and `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ServerState;
use crate::util::lock;

/// The live rebalancing state of one backend, carried across reloads by name.
#[derive(Debug)]
pub struct RebalanceState {
    /// A round is in progress: some server was above `max_skew` × the mean
    /// after `settle`, and servers are shed down to the mean.
    active: AtomicBool,
    /// The most tunnels a server may hold now (cluster-wide): the mean
    /// during a round, `max_skew` × the mean otherwise; `u32::MAX` before the first round.
    target_max: AtomicU32,
    /// Tunnels closed by rebalancing since start.
    shed_total: AtomicU64,
    /// Ready servers holding more than `target_max` at the last round.
    over: Mutex<Vec<Arc<str>>>,
}

impl Default for RebalanceState {
    fn default() -> Self {
        Self {
            active: AtomicBool::new(false),
            target_max: AtomicU32::new(u32::MAX),
            shed_total: AtomicU64::new(0),
            over: Mutex::default(),
        }
    }
}

/// One reading of a backend's rebalancing, for the API and the stats page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceReading {
    /// A round is shedding.
    pub active: bool,
    /// The most tunnels a server may hold now (`u32::MAX`: not computed yet).
    pub target_max: u32,
    /// Tunnels shed since start.
    pub shed_total: u64,
    /// Servers above `target_max` at the last round.
    pub over: Vec<Arc<str>>,
}

impl RebalanceState {
    /// Records the outcome of a round.
    pub fn set_round(&self, active: bool, target_max: u32, over: Vec<Arc<str>>) {
        self.target_max.store(target_max, Ordering::Relaxed);
        self.active.store(active, Ordering::Release);
        *lock(&self.over) = over;
    }

    /// Counts `count` tunnels asked to close.
    pub fn count_shed(&self, count: u64) {
        self.shed_total.fetch_add(count, Ordering::Relaxed);
    }

    /// Tunnels shed since start.
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    /// Whether a client stuck to `server` must be balanced elsewhere (and
    /// re-pinned): a round is in progress and the server already holds its
    /// share, counted over the cluster. Two atomic loads when no round runs.
    pub fn redispatches_from(&self, server: &ServerState) -> bool {
        self.active.load(Ordering::Acquire)
            && server.active().saturating_add(server.remote_active()) >= self.target_max.load(Ordering::Relaxed)
    }

    /// Everything, read now.
    pub fn reading(&self) -> RebalanceReading {
        RebalanceReading {
            active: self.active.load(Ordering::Acquire),
            target_max: self.target_max.load(Ordering::Relaxed),
            shed_total: self.shed_total(),
            over: lock(&self.over).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_clients_are_redispatched_only_during_a_round_from_a_server_at_its_target() {
        let state = RebalanceState::default();
        let server = ServerState::new(1);
        server.active.store(80, Ordering::Relaxed);
        assert!(!state.redispatches_from(&server), "no round yet");
        state.set_round(true, 75, vec![Arc::from("s1")]);
        assert!(state.redispatches_from(&server));
        server.active.store(70, Ordering::Relaxed);
        assert!(!state.redispatches_from(&server));
        server.remote_active.store(5, Ordering::Relaxed);
        assert!(state.redispatches_from(&server), "the cluster's count decides");
        state.set_round(false, 90, Vec::new());
        assert!(!state.redispatches_from(&server));
    }
}
