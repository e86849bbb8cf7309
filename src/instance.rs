//! One running tether: its listeners, its snapshot, and how it stops.
//!
//! As in mini-redis, the library entry takes what the binary or a test
//! prepared and a shutdown future: `Tether::bind(&config)` binds every
//! frontend address (port 0 works, `local_addrs` tells what was chosen),
//! then `run(shutdown)` serves until the future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::config::Config;
use crate::proxy::listener::accept_loop;
use crate::proxy::Shared;
use crate::snapshot::Snapshot;

/// Backlog of each listening socket: beyond it, new clients wait in the
/// kernel rather than consume tether's memory.
const LISTEN_BACKLOG: u32 = 1024;

/// Why tether could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A frontend address could not be bound.
    #[error("frontend `{frontend}` cannot listen on {address}: {source}")]
    Bind {
        /// The frontend's name.
        frontend: String,
        /// The address it asked for.
        address: SocketAddr,
        /// What the system said (address in use, permission denied, …).
        source: std::io::Error,
    },
}

/// A tether instance with its listeners bound, ready to run.
pub struct Tether {
    shared: Arc<Shared>,
    listeners: Vec<(usize, TcpListener)>,
}

/// A cheap handle to a running instance, for signals, reloads and tests.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Tether {
    /// Builds the snapshot from `config` and binds every frontend address.
    pub fn bind(config: &Config) -> Result<Tether, StartError> {
        let snapshot = Snapshot::build(config, None);
        let mut listeners = Vec::new();
        for (index, frontend) in snapshot.frontends.iter().enumerate() {
            for address in &frontend.binds {
                let listener = listen(*address).map_err(|source| StartError::Bind {
                    frontend: frontend.name.to_string(),
                    address: *address,
                    source,
                })?;
                listeners.push((index, listener));
            }
        }
        Ok(Tether {
            shared: Arc::new(Shared::new(snapshot)),
            listeners,
        })
    }

    /// The addresses frontend `name` actually listens on (useful after binding port 0).
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let snapshot = self.shared.snapshot.load();
        let Some(index) = snapshot.frontend_index(name) else {
            return Vec::new();
        };
        self.listeners
            .iter()
            .filter(|(i, _)| *i == index)
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    /// A handle to this instance.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then stops gracefully: no new
    /// connections, requests in flight finish, idle keep-alive connections
    /// close; whatever is still open after `shutdown_grace` is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        for (frontend, listener) in self.listeners {
            tokio::spawn(accept_loop(listener, self.shared.clone(), frontend));
        }
        shutdown.await;
        let grace = self.shared.snapshot.load().shutdown_grace;
        let open = self.shared.open.count();
        tracing::info!(open, grace = ?grace, "stopping: no new connections, waiting for open ones");
        self.shared.stop.begin_graceful();
        if tokio::time::timeout(grace, self.shared.open.wait_idle()).await.is_err() {
            tracing::warn!(
                open = self.shared.open.count(),
                "grace period over: closing what is still open"
            );
        }
        self.shared.stop.begin_hard();
        // Give closing tasks a moment to log their last lines.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.shared.open.wait_idle()).await;
        tracing::info!("stopped");
    }
}

impl Handle {
    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Swaps in a new configuration. Running requests and tunnels keep the
    /// snapshot they started with; server state carries over by name.
    /// Listener addresses are not changed by a reload.
    pub fn reload(&self, config: &Config) {
        let previous = self.shared.snapshot.load_full();
        let next = Snapshot::build(config, Some(&previous));
        self.shared.snapshot.store(Arc::new(next));
    }

    /// Open client connections and tunnels.
    pub fn open_connections(&self) -> usize {
        self.shared.open.count()
    }
}

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
