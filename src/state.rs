//! Live per-server state shared by every snapshot that names the server:
//! active connections, weight, health and counters, all atomics so the
//! request path never takes a lock to read or update them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::proxy::pool::Pool;

/// What tether knows about one server right now.
#[derive(Debug)]
pub struct ServerState {
    /// Requests in flight plus open WebSocket tunnels: what `leastconn` and `maxconn` count.
    pub active: AtomicU32,
    /// Open WebSocket tunnels only (a subset of `active`), for stats.
    pub tunnels: AtomicU32,
    /// Current weight; starts at the configured one, the admin API may change it.
    pub weight: AtomicU32,
    /// Whether the server may take traffic (health checks flip it).
    pub up: AtomicBool,
    /// Requests and tunnels ever dispatched to this server.
    pub dispatched: AtomicU64,
    /// Connect attempts that failed.
    pub connect_failures: AtomicU64,
    /// Idle keep-alive connections to this server.
    pub pool: Pool,
    /// Bumped when the server is taken out, so its tunnels close with 1012.
    tunnel_close: watch::Sender<u64>,
}

impl ServerState {
    /// A fresh state: up, nothing active.
    pub fn new(weight: u32) -> Self {
        Self {
            active: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            up: AtomicBool::new(true),
            dispatched: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            pool: Pool::default(),
            tunnel_close: watch::channel(0).0,
        }
    }

    /// Active requests and tunnels right now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Current weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Whether the server is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks the server up or down; returns whether that changed anything.
    /// Health checks and passive detection call this: it is the one place a
    /// server's availability flips.
    /// A server going down also closes its open tunnels (with 1012, so
    /// their clients reconnect to a healthy server).
    pub fn set_up(&self, up: bool) -> bool {
        let flipped = self.up.swap(up, Ordering::AcqRel) != up;
        if flipped && !up {
            self.close_tunnels();
        }
        flipped
    }

    /// Asks every open tunnel of this server to close with 1012.
    pub fn close_tunnels(&self) {
        self.tunnel_close.send_modify(|epoch| *epoch += 1);
    }

    /// Resolves when this server's tunnels must close. Registered at once,
    /// so a call to `close_tunnels` right after this returns is not missed.
    pub fn tunnels_must_close(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut epoch = self.tunnel_close.subscribe();
        async move {
            if epoch.changed().await.is_err() {
                // The state is gone, so is the server: nothing will ever ask again.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Takes one active slot if the server is under `maxconn`; the slot is
    /// given back when the returned guard drops. Exact under concurrency: two
    /// requests racing for the last slot cannot both get it.
    pub fn try_acquire(self: &Arc<Self>, maxconn: Option<u32>) -> Option<ActiveGuard> {
        let limit = maxconn.unwrap_or(u32::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        self.dispatched.fetch_add(1, Ordering::Relaxed);
        Some(ActiveGuard { state: self.clone() })
    }
}

/// One active slot on a server, released on drop. A WebSocket tunnel holds
/// its guard for its whole life, so `leastconn` sees long-lived connections.
#[derive(Debug)]
pub struct ActiveGuard {
    state: Arc<ServerState>,
}

impl ActiveGuard {
    /// The server this slot belongs to.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_stops_at_maxconn_and_guards_give_slots_back() {
        let state = Arc::new(ServerState::new(1));
        let a = state.try_acquire(Some(2)).expect("first slot");
        let _b = state.try_acquire(Some(2)).expect("second slot");
        assert!(state.try_acquire(Some(2)).is_none());
        drop(a);
        assert_eq!(state.active(), 1);
        assert!(state.try_acquire(Some(2)).is_some());
    }
}
