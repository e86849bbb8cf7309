//! The one road from "a server's live state changed" to "act on it".
//!
//! `ServerState`'s setters only write data. Some changes call for action:
//! a server gone down must close its tunnels (1012, so the clients
//! reconnect elsewhere), a drained one must close them after its backend's
//! `drain_timeout`. Whoever makes such a change (health checks, passive
//! detection in the proxy, the admin API, cluster operations) makes it
//! through [`Changes`], which writes the data and reports the change on a
//! channel; `instance` receives the reports and does what they call for.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{AdminState, ServerState};

/// A change of a server's live state that calls for action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChange {
    /// The server went down: its tunnels should close.
    WentDown,
    /// The operator's intent changed; `generation` is the server's admin
    /// generation right after the change (a later change supersedes it).
    Admin {
        /// The new admin state.
        state: AdminState,
        /// The admin generation the change produced.
        generation: u64,
    },
}

/// One reported change: the server and what happened to it.
pub type ChangeReport = (Arc<ServerState>, ServerChange);

/// Makes changes to servers' live state and reports those that call for
/// action. Cheap to clone; without a receiver, reports are dropped.
#[derive(Debug, Clone)]
pub struct Changes {
    /// Where reports go: `instance`'s task that acts on them.
    reports: mpsc::UnboundedSender<ChangeReport>,
}

impl Changes {
    /// A sender and the receiver that `instance` reads.
    pub fn channel() -> (Changes, mpsc::UnboundedReceiver<ChangeReport>) {
        let (reports, receiver) = mpsc::unbounded_channel();
        (Changes { reports }, receiver)
    }

    /// A sender whose reports nobody reads (unit tests of data changes).
    pub fn unobserved() -> Changes {
        Changes::channel().0
    }

    /// Marks `server` up or down; returns whether it flipped. A flip down
    /// is reported, so `instance` closes the server's tunnels.
    pub fn set_up(&self, server: &Arc<ServerState>, up: bool) -> bool {
        let flipped = server.set_up(up);
        if flipped && !up {
            self.report(server, ServerChange::WentDown);
        }
        flipped
    }

    /// Marks `server` down for new traffic only, without reporting it:
    /// passive detection (failed connects of live traffic may mean a server
    /// under load, not a dead one) leaves its tunnels open until an active
    /// check confirms, with [`Changes::confirm_down`]. Returns whether it flipped.
    pub fn set_down_keeping_tunnels(&self, server: &Arc<ServerState>) -> bool {
        server.set_up(false)
    }

    /// An active check confirmed that `server`, marked down by passive
    /// detection, is gone: reported as gone down (if it still is), so
    /// `instance` closes its tunnels.
    pub fn confirm_down(&self, server: &Arc<ServerState>) {
        if !server.is_up() {
            self.report(server, ServerChange::WentDown);
        }
    }

    /// Sets the operator's intent for `server`; returns whether it changed.
    /// The change is reported, so `instance` starts (or, by the new
    /// generation, cancels) the drain of its tunnels.
    pub fn set_admin(&self, server: &Arc<ServerState>, state: AdminState) -> bool {
        let Some(generation) = server.set_admin(state) else {
            return false;
        };
        self.report(server, ServerChange::Admin { state, generation });
        true
    }

    /// Reports `change` of `server` (ignored when no one listens any more).
    fn report(&self, server: &Arc<ServerState>, change: ServerChange) {
        let _ = self.reports.send((server.clone(), change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_flip_down_and_real_admin_changes_are_reported() {
        let (changes, mut reports) = Changes::channel();
        let server = Arc::new(ServerState::new(1));
        assert!(!changes.set_up(&server, true), "already up");
        assert!(changes.set_up(&server, false));
        assert!(changes.set_up(&server, true));
        assert!(changes.set_down_keeping_tunnels(&server), "flipped, not reported");
        changes.confirm_down(&server);
        assert!(changes.set_up(&server, true));
        changes.confirm_down(&server);
        assert!(changes.set_admin(&server, AdminState::Drain));
        assert!(!changes.set_admin(&server, AdminState::Drain));
        let mut seen = Vec::new();
        while let Ok((reported, change)) = reports.try_recv() {
            assert!(Arc::ptr_eq(&reported, &server));
            seen.push(change);
        }
        assert_eq!(
            seen,
            vec![
                ServerChange::WentDown,
                ServerChange::WentDown,
                ServerChange::Admin {
                    state: AdminState::Drain,
                    generation: 1
                }
            ]
        );
    }
}
