//! What the health checks know of one server, kept in its `ServerState` as
//! plain data: the rise/fall machine, counts and the latest results. The
//! checks themselves (probes, checker tasks) are the `health` module's.

use std::time::{Duration, Instant};

use super::machine::{Flip, Machine};

/// Health of one server as the checks see it, kept in its `ServerState`.
#[derive(Debug, Clone, Default)]
pub struct HealthStatus {
    /// Consecutive results.
    pub machine: Machine,
    /// Whether health checks govern this server now (its backend has them).
    pub governed: bool,
    /// Checks run since tether started.
    pub checks: u64,
    /// Of those, the ones that failed.
    pub failed_checks: u64,
    /// The latest check result.
    pub last_check: Option<CheckReport>,
    /// The latest flip.
    pub last_flip: Option<FlipReport>,
    /// Passive detection took the server down and its tunnels were kept
    /// open: failed connects may be load, not death. The next failed active
    /// check confirms it and has them closed.
    pub tunnels_kept: bool,
}

/// One check result.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// When the check ended.
    pub at: Instant,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// One flip of a server's availability.
#[derive(Debug, Clone)]
pub struct FlipReport {
    /// When it happened.
    pub at: Instant,
    /// Which way.
    pub flip: Flip,
    /// What decided: the check kind (`tcp`, `http`, `websocket`) or `passive`.
    pub check: &'static str,
    /// Consecutive results that caused it (1 for a server's first check).
    pub after: u32,
    /// The last result's cause, for a flip down.
    pub cause: String,
}

impl HealthStatus {
    /// Records that the server flipped, as decided by `check` (a check kind,
    /// `passive` or `none`) after `after` consecutive results, and returns
    /// the report to log.
    pub fn record_flip(&mut self, flip: Flip, check: &'static str, after: u32, cause: String) -> FlipReport {
        let report = FlipReport {
            at: Instant::now(),
            flip,
            check,
            after,
            cause,
        };
        self.last_flip = Some(report.clone());
        report
    }
}
