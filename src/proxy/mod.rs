//! The data path: accepting client connections, forwarding HTTP, upgrading
//! to WebSocket tunnels, and the upstream pool.

pub mod body;
mod choose;
pub mod client_addr;
pub mod conn;
pub mod context;
pub mod error;
pub mod exchange;
pub mod framing;
mod handoff;
pub mod headers;
pub mod http;
pub mod listener;
pub mod log;
pub mod pool;
mod trace;
pub mod tunnel;
pub mod upgrade;
mod wakes;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::snapshot::Snapshot;
use crate::state::Changes;

/// What every connection of one tether instance reads: the data path needs
/// nothing else (health checks, the admin listener and the cluster are
/// `instance`'s).
pub struct Shared {
    /// The configuration in force; each request loads it once and keeps it.
    /// Behind an `Arc` so the cluster's tasks read the same one.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Stop signals.
    pub stop: Stop,
    /// Open client connections and tunnels, so a graceful stop knows when all are done.
    pub open: Arc<Tracker>,
    /// Where passive health detection flips a server down (so `instance`
    /// closes its tunnels).
    pub changes: Changes,
    /// Idle keep-alive connections to the servers, by server.
    pub pools: pool::Pools,
    /// With `[cluster]`: the ACME challenge answers of orders made by other
    /// instances, asked by validations this process cannot answer itself.
    pub acme_answers: std::sync::OnceLock<Arc<dyn crate::tls::acme::ClusterAnswers>>,
    /// Starts the spans of requests and tunnels when `[tracing]` is
    /// configured (set at start; `None`: the data path does no tracing work).
    pub tracer: Option<crate::telemetry::Tracer>,
}

impl Shared {
    /// Shared state serving `snapshot`, reporting server changes to
    /// `changes`, its spans started by `tracer` (if tracing is on).
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, changes: Changes, tracer: Option<crate::telemetry::Tracer>) -> Self {
        Self {
            snapshot,
            stop: Stop::default(),
            open: Arc::new(Tracker::default()),
            changes,
            pools: pool::Pools::default(),
            acme_answers: std::sync::OnceLock::new(),
            tracer,
        }
    }
}

/// The two stages of stopping: `graceful` (stop accepting, finish what is
/// in flight) and `hard` (the grace period is over: close everything).
#[derive(Debug)]
pub struct Stop {
    graceful: watch::Sender<bool>,
    hard: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            graceful: watch::channel(false).0,
            hard: watch::channel(false).0,
        }
    }
}

impl Stop {
    /// Starts the graceful stage.
    pub fn begin_graceful(&self) {
        self.graceful.send_replace(true);
    }

    /// Starts the hard stage.
    pub fn begin_hard(&self) {
        self.graceful.send_replace(true);
        self.hard.send_replace(true);
    }

    /// Resolves once the graceful stage began.
    pub fn graceful(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_true(self.graceful.subscribe())
    }

    /// Resolves once the hard stage began.
    pub fn hard(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_true(self.hard.subscribe())
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, i.e. the instance was dropped: stop too.
    let _ = rx.wait_for(|stopping| *stopping).await;
}

/// Counts open connections and tunnels; `wait_idle` resolves when none are left.
#[derive(Debug, Default)]
pub struct Tracker {
    count: AtomicUsize,
    idle: Notify,
}

impl Tracker {
    /// Registers one open connection until the returned token drops.
    pub fn enter(self: &Arc<Self>) -> TrackerToken {
        self.count.fetch_add(1, Ordering::AcqRel);
        TrackerToken { tracker: self.clone() }
    }

    /// Open connections and tunnels now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when nothing is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One registered connection; unregisters on drop.
#[derive(Debug)]
pub struct TrackerToken {
    tracker: Arc<Tracker>,
}

impl Drop for TrackerToken {
    fn drop(&mut self) {
        if self.tracker.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}
