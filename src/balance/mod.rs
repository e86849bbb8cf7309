//! Choosing a server: one algorithm per file, each a pure function of the
//! candidate set and a request key (no I/O, no sockets), behind `Balancer`.
//!
//! As in pingora, an algorithm sees the *full* server list and skips servers
//! that are not available, so a hash mapping stays stable while one is down.

mod hash;
mod key;
mod least_conn;
mod maglev;
mod random;
mod ring;
mod round_robin;

use std::sync::Arc;

use crate::config::types::Balance;
use crate::state::ServerState;

pub use hash::{hash_bytes, Hash};
pub use key::{ip_octets_of, IpOctets, KeySource};
pub use least_conn::LeastConn;
pub use maglev::{Maglev, DEFAULT_TABLE_SIZE};
pub use random::PowerOfTwo;
pub use ring::Ring;
pub use round_robin::RoundRobin;

/// Index of a server within its backend.
pub type ServerId = usize;

/// Chooses one server for a request among the candidates that are up and have room.
pub trait Balancer: Send + Sync {
    /// The chosen server, or `None` when no candidate is available.
    fn pick(&self, candidates: &Candidates<'_>, key: &RequestKey<'_>) -> Option<ServerId>;
}

/// How a hashing balance maps keys to servers: the config model's choice,
/// read as it is.
pub use crate::config::model::Hashing;

/// Builds the algorithm named in the config over `servers` (name, weight),
/// in `ServerId` order. Names seed the consistent structures, so instances
/// with the same config map every key the same way.
pub fn build(balance: Balance, hash: Hashing, servers: &[(&str, u32)]) -> Box<dyn Balancer> {
    match balance {
        Balance::Roundrobin => Box::new(RoundRobin::new(servers.len())),
        Balance::Leastconn => Box::new(LeastConn::default()),
        Balance::Source | Balance::Uri | Balance::UrlParam | Balance::Header | Balance::Cookie => match hash {
            Hashing::Map => Box::new(Hash::new(servers.len())),
            Hashing::Consistent { balance_factor } => Box::new(Ring::new(servers, balance_factor)),
            Hashing::Maglev {
                table_size,
                balance_factor,
            } => Box::new(Maglev::new(servers, table_size, balance_factor)),
        },
        Balance::Random => Box::new(PowerOfTwo::default()),
    }
}

/// What an algorithm may know about one server.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Live state: weight, health, active connections.
    pub state: Arc<ServerState>,
    /// The server's `maxconn`, if any.
    pub maxconn: Option<u32>,
    /// The backend's `slowstart` ramp, if any.
    pub slowstart: Option<std::time::Duration>,
}

/// The servers of a backend as an algorithm sees them, with the ones
/// already tried for this request excluded.
pub struct Candidates<'a> {
    servers: &'a [Candidate],
    excluded: &'a [ServerId],
}

impl<'a> Candidates<'a> {
    /// All `servers` of a backend, minus `excluded` (servers that failed this request).
    pub fn new(servers: &'a [Candidate], excluded: &'a [ServerId]) -> Self {
        Self { servers, excluded }
    }

    /// Number of servers in the backend, available or not.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the backend has no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Current weight of server `id` (0 means no new traffic), ramped during slow start.
    pub fn weight(&self, id: ServerId) -> u32 {
        let server = &self.servers[id];
        server.state.effective_weight(server.slowstart)
    }

    /// Active requests and tunnels of server `id`: this instance's live
    /// count plus, in a cluster, the other instances' (as of the last sync).
    pub fn active(&self, id: ServerId) -> u32 {
        let state = &self.servers[id].state;
        state.active().saturating_add(state.remote_active())
    }

    /// Whether server `id` can take this request: weight above 0, up, ready
    /// (not draining or in maintenance), under `maxconn`, and not already tried.
    pub fn is_available(&self, id: ServerId) -> bool {
        let server = &self.servers[id];
        server.state.weight() > 0
            && server.state.is_up()
            && server.state.admin() == crate::state::AdminState::Ready
            && server.maxconn.is_none_or(|max| server.state.active() < max)
            && !self.excluded.contains(&id)
    }

    /// The available servers, in order.
    pub fn available(&self) -> impl Iterator<Item = ServerId> + '_ {
        (0..self.servers.len()).filter(|id| self.is_available(*id))
    }
}

/// The part of a request a hashing algorithm hashes, already extracted.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestKey<'a> {
    /// Bytes to hash; `None` when the request lacks the key (round robin then).
    pub hash_input: Option<&'a [u8]>,
}

impl<'a> RequestKey<'a> {
    /// A key hashing `bytes`.
    pub fn hashed(bytes: &'a [u8]) -> Self {
        Self {
            hash_input: Some(bytes),
        }
    }
}

/// Walks servers in `order` (ring points or Maglev slots, owners repeating)
/// and returns the first distinct one that is available and `acceptable`;
/// stops once all `owners` distinct servers were seen. If every available
/// server fails `acceptable` (only through races on the load counters), the
/// first available one is returned rather than none.
pub(crate) fn first_acceptable(
    order: impl Iterator<Item = ServerId>,
    candidates: &Candidates<'_>,
    owners: usize,
    acceptable: impl Fn(ServerId) -> bool,
) -> Option<ServerId> {
    let mut seen = vec![false; candidates.len()];
    let mut seen_count = 0;
    let mut spill = None;
    for id in order {
        let Some(slot) = seen.get_mut(id) else {
            // A candidate list shorter than the config: skip unknown ids.
            continue;
        };
        if *slot {
            continue;
        }
        *slot = true;
        seen_count += 1;
        if candidates.is_available(id) {
            if acceptable(id) {
                return Some(id);
            }
            spill = spill.or(Some(id));
        }
        if seen_count == owners {
            break;
        }
    }
    spill
}

/// Compares `active_a / weight_a` with `active_b / weight_b` without division.
pub(crate) fn load_less(active_a: u32, weight_a: u32, active_b: u32, weight_b: u32) -> bool {
    u64::from(active_a) * u64::from(weight_b) < u64::from(active_b) * u64::from(weight_a)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Candidates with the given weights, all up and idle.
    pub fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .map(|w| Candidate {
                state: Arc::new(ServerState::new(*w)),
                maxconn: None,
                slowstart: None,
            })
            .collect()
    }

    /// Sets the active count of server `id`.
    pub fn set_active(servers: &[Candidate], id: ServerId, active: u32) {
        servers[id].state.active.store(active, Ordering::Relaxed);
    }

    /// Server names `"<prefix>-<i>"` for `i` in `0..n`.
    pub fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    /// `(name, weight)` pairs as `Ring::new` and `Maglev::new` take them.
    pub fn spec<'a>(names: &'a [String], weights: &[u32]) -> Vec<(&'a str, u32)> {
        names.iter().map(String::as_str).zip(weights.iter().copied()).collect()
    }

    /// The server `balancer` picks for `key` over `servers`.
    pub fn owner(balancer: &dyn Balancer, servers: &[Candidate], key: &str) -> Option<ServerId> {
        balancer.pick(&Candidates::new(servers, &[]), &RequestKey::hashed(key.as_bytes()))
    }

    /// Name of the owner of each of `keys` keys, so structures over different
    /// server lists can be compared.
    pub fn owners_by_name(
        balancer: &dyn Balancer,
        names: &[String],
        servers: &[Candidate],
        keys: usize,
    ) -> Vec<String> {
        (0..keys)
            .map(|k| names[owner(balancer, servers, &format!("key-{k}")).expect("a server")].clone())
            .collect()
    }

    /// Asserts that marking one of 4 equal servers down moves only its own
    /// keys, and spreads them over more than one other server.
    pub fn assert_down_server_moves_only_its_keys(balancer: &dyn Balancer, servers: &[Candidate]) {
        let before: Vec<_> = (0..2000).map(|k| owner(balancer, servers, &format!("k{k}"))).collect();
        set_down(servers, 1);
        let mut moved_to = [0u32; 4];
        for (k, was) in before.iter().enumerate() {
            let now = owner(balancer, servers, &format!("k{k}")).expect("a server");
            if *was == Some(1) {
                moved_to[now] += 1;
            } else {
                assert_eq!(Some(now), *was, "key k{k} moved although its server is up");
            }
        }
        assert_eq!(moved_to[1], 0);
        assert!(moved_to.iter().filter(|n| **n > 0).count() >= 2, "{moved_to:?}");
    }

    /// Marks server `id` down.
    pub fn set_down(servers: &[Candidate], id: ServerId) {
        servers[id].state.up.store(false, Ordering::Relaxed);
    }
}
