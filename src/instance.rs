//! One running tether: its listeners, its snapshot, reloads, and how it stops.
//!
//! As in mini-redis, the library entry takes what the binary or a test
//! prepared and a shutdown future: `Tether::bind(&config)` binds every
//! frontend address (port 0 works, `local_addrs` tells what was chosen),
//! then `run(shutdown)` serves until the future resolves.
//!
//! Listening sockets use `SO_REUSEPORT`, so a new tether process can bind the
//! same ports while an old one drains (binary upgrade), a reload can open
//! a moved address before closing the old one, and each worker thread has a
//! socket of its own on every address (see [`crate::workers`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle as RuntimeHandle;
use tokio::sync::oneshot;

use crate::util::lock;
use crate::config::Config;
use crate::ws::control::{close_spread, TunnelControl};
use crate::ws::frames::CloseCode;
use crate::proxy::listener::accept_loop;
use crate::proxy::Shared;
use crate::snapshot::Snapshot;
use crate::state::{AdminState, ServerState};

/// Backlog of each listening socket: beyond it, new clients wait in the
/// kernel rather than consume tether's memory.
const LISTEN_BACKLOG: u32 = 1024;

/// Why tether could not start, or a reload was refused.
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
    /// The `[cluster]` settings could not be used.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The admin listener's address could not be bound.
    #[error("the admin listener cannot listen on {address}: {source}")]
    AdminBind {
        /// The address `[admin] bind` asked for.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// One bound address: which frontend it serves and how to close it.
struct Bound {
    frontend: Arc<str>,
    local: SocketAddr,
    /// One socket per worker (all on `local`), until `run` starts accepting on them.
    sockets: Vec<std::net::TcpListener>,
    /// Close the accept loops, one per worker (a reload removed the address).
    close: Vec<oneshot::Sender<()>>,
}

/// The listening sockets, keyed by (frontend, configured address), and the
/// worker runtimes that accept on them.
struct Listeners {
    bound: Mutex<HashMap<(Arc<str>, SocketAddr), Bound>>,
    /// The workers' runtimes: worker `i` accepts on socket `i` of every address.
    workers: Vec<RuntimeHandle>,
    /// Connections each worker accepted, for stats and tests.
    accepted: Vec<Arc<AtomicU64>>,
    /// Set once `run` started, so sockets a reload adds are served at once.
    running: std::sync::atomic::AtomicBool,
    /// Servers a reload removed, kept while they may still have tunnels, so a
    /// shutdown closes those tunnels too.
    retired: Mutex<Vec<Arc<ServerState>>>,
}

/// A tether instance with its listeners bound, ready to run.
pub struct Tether {
    handle: Handle,
}

/// A cheap handle to a running instance, for signals, reloads and tests.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    listeners: Arc<Listeners>,
}

impl Tether {
    /// Builds the snapshot from `config` and binds every frontend address;
    /// connections are served on the runtime this is called from.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Tether, StartError> {
        Self::bind_on(config, vec![RuntimeHandle::current()])
    }

    /// Like [`Tether::bind`], with one worker per runtime in `workers`: every
    /// frontend address gets one `SO_REUSEPORT` socket per worker, and
    /// worker `i` accepts on its socket and serves those connections on
    /// `workers[i]`. Health checks, the admin listener and cluster sync run
    /// on the runtime `run` is awaited on.
    ///
    /// # Panics
    /// If `workers` is empty, or outside a tokio runtime.
    pub fn bind_on(config: &Config, workers: Vec<RuntimeHandle>) -> Result<Tether, StartError> {
        assert!(!workers.is_empty(), "tether needs at least one worker runtime");
        let mut snapshot = Snapshot::build(config, None);
        let cluster = match &config.cluster {
            Some(settings) => {
                let settings = crate::cluster::ClusterSettings::from_config(settings.get_ref());
                Some(Arc::new(crate::cluster::Cluster::new(settings)?))
            }
            None => None,
        };
        if let Some(cluster) = &cluster {
            cluster.share_tables(&mut snapshot);
        }
        let listeners = Arc::new(Listeners {
            bound: Mutex::default(),
            accepted: workers.iter().map(|_| Arc::default()).collect(),
            workers,
            running: Default::default(),
            retired: Mutex::default(),
        });
        let handle = Handle {
            shared: Arc::new(Shared::new(snapshot)),
            listeners,
        };
        handle.sync_listeners(&handle.snapshot())?;
        if let Some(cluster) = cluster {
            let port = handle
                .snapshot()
                .frontends
                .first()
                .and_then(|f| handle.local_addrs(&f.name).first().map(|a| a.port()))
                .unwrap_or(0);
            cluster.resolve_instance(port);
            let _ = handle.shared.cluster.set(cluster);
        }
        crate::admin::bind(&handle).map_err(|source| StartError::AdminBind {
            address: handle
                .snapshot()
                .admin
                .as_ref()
                .map_or(([0, 0, 0, 0], 0).into(), |a| a.bind),
            source,
        })?;
        Ok(Tether { handle })
    }

    /// The addresses frontend `name` actually listens on (useful after binding port 0).
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.handle.local_addrs(name)
    }

    /// A handle to this instance.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves until `shutdown` resolves, then stops gracefully: no new
    /// connections, requests in flight finish, idle keep-alive connections
    /// close, tunnels get Close 1001 spread over `shutdown_grace`; whatever
    /// is still open at its end is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let handle = self.handle;
        handle.listeners.running.store(true, Ordering::SeqCst);
        handle.start_accepting();
        // Health checks run on their own tasks until this function ends.
        let _checkers = handle.shared.checkers.start(&handle.shared.snapshot);
        // The admin listener (stats page, /metrics, API) stops with the graceful stop.
        let _admin = crate::admin::start(&handle);
        // Cluster tasks (Redis sync, shared operator changes) run until this function ends.
        let cluster_tasks = handle
            .shared
            .cluster
            .get()
            .map(|cluster| cluster.start(handle.shared.clone()));
        shutdown.await;
        let shared = &handle.shared;
        let grace = shared.snapshot.load().shutdown_grace;
        let open = shared.open.count();
        tracing::info!(open, grace = ?grace, "stopping: no new connections, waiting for open ones");
        shared.stop.begin_graceful();
        // Tunnels get Close 1001 one after another over most of the grace
        // period, so their clients do not all reconnect at the same instant.
        let closing = tokio::spawn(close_spread(
            handle.tunnel_controls(),
            CloseCode::GoingAway,
            grace.mul_f64(0.8),
            || true,
        ));
        if tokio::time::timeout(grace, shared.open.wait_idle()).await.is_err() {
            tracing::warn!(
                open = shared.open.count(),
                "grace period over: closing what is still open"
            );
        }
        closing.abort();
        for control in handle.tunnel_controls() {
            control.request(CloseCode::GoingAway);
        }
        shared.stop.begin_hard();
        // Give closing tasks a moment to send their Close frames and log their last lines.
        let _ = tokio::time::timeout(Duration::from_millis(500), shared.open.wait_idle()).await;
        if let Some(cluster) = shared.cluster.get() {
            drop(cluster_tasks);
            cluster.leave(&shared.snapshot.load()).await;
        }
        tracing::info!("stopped");
    }
}

impl Handle {
    /// The state shared by this instance's connections (for the admin listener).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The addresses frontend `name` listens on.
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let bound = lock(&self.listeners.bound);
        let mut addrs: Vec<SocketAddr> = bound
            .iter()
            .filter(|((f, _), _)| &**f == name)
            .map(|(_, b)| b.local)
            .collect();
        addrs.sort();
        addrs
    }

    /// Swaps in a new, already validated configuration. Addresses it adds
    /// are bound first: if one cannot be, nothing changes and the error is
    /// returned. Then the snapshot is swapped (server state and stick tables
    /// carry over by name), removed addresses stop accepting, and servers
    /// that disappeared are drained. Running requests and tunnels keep the
    /// snapshot they started with.
    pub fn reload(&self, config: &Config) -> Result<(), StartError> {
        let previous = self.shared.snapshot.load_full();
        let mut next = Snapshot::build(config, Some(&previous));
        let cluster = self.shared.cluster.get();
        if let Some(cluster) = cluster {
            cluster.share_tables(&mut next);
            // The build reset admin states and weights to the config's; the cluster's operator changes win.
            cluster.reapply(&next);
            if config.cluster.is_none() {
                tracing::warn!("[cluster] was removed from the configuration: restart tether to leave the cluster");
            }
        } else if config.cluster.is_some() {
            tracing::warn!("[cluster] was added to the configuration: restart tether to join the cluster");
        }
        if let Some(workers) = config.workers.as_ref().map(|w| *w.get_ref()) {
            let running = self.listeners.workers.len();
            if workers != running {
                tracing::warn!(
                    workers,
                    running,
                    "`workers` changed: restart tether to apply it (this process keeps its workers)"
                );
            }
        }
        let next = Arc::new(next);
        self.sync_listeners(&next)?;
        self.shared.snapshot.store(next.clone());
        // Checker tasks of the old snapshot stop; the new one's start (state carries over by name).
        self.shared.checkers.refresh(&self.shared.snapshot);
        let removed = drain_removed_servers(&previous, &next);
        let mut retired = lock(&self.listeners.retired);
        retired.retain(|state| state.tunnels.load(Ordering::Relaxed) > 0);
        retired.extend(removed);
        Ok(())
    }

    /// The controls of every open tunnel, on current and removed servers.
    fn tunnel_controls(&self) -> Vec<Arc<TunnelControl>> {
        let snapshot = self.snapshot();
        let retired = lock(&self.listeners.retired).clone();
        snapshot
            .backends
            .iter()
            .flat_map(|b| b.servers.iter().map(|s| s.state.clone()))
            .chain(retired)
            .flat_map(|state| state.tunnel_controls())
            .collect()
    }

    /// Connections each worker accepted since start (worker 0 first): how
    /// evenly the kernel spreads clients over the workers' sockets.
    pub fn accepted_per_worker(&self) -> Vec<u64> {
        self.listeners
            .accepted
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Open client connections and tunnels.
    pub fn open_connections(&self) -> usize {
        self.shared.open.count()
    }

    /// Health checker tasks running now (one per server of each backend with checks).
    pub fn health_checkers(&self) -> usize {
        self.shared.checkers.running()
    }

    /// Binds what `snapshot` lists and is not bound yet, then closes what it no
    /// longer lists. Binding happens first, so a failure changes nothing.
    fn sync_listeners(&self, snapshot: &Snapshot) -> Result<(), StartError> {
        let wanted: Vec<(Arc<str>, SocketAddr)> = snapshot
            .frontends
            .iter()
            .flat_map(|f| f.binds.iter().map(|a| (f.name.clone(), *a)))
            .collect();
        let mut bound = lock(&self.listeners.bound);
        let mut fresh = Vec::new();
        for key in &wanted {
            if bound.contains_key(key) || fresh.iter().any(|(k, _)| k == key) {
                continue;
            }
            let sockets = listen_group(key.1, self.listeners.workers.len()).map_err(|source| StartError::Bind {
                frontend: key.0.to_string(),
                address: key.1,
                source,
            })?;
            fresh.push((key.clone(), sockets));
        }
        for (key, sockets) in fresh {
            let local = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(key.1);
            if self.listeners.running.load(Ordering::SeqCst) {
                tracing::info!(frontend = %key.0, address = %local, "listening (added by reload)");
            }
            bound.insert(
                key.clone(),
                Bound {
                    frontend: key.0.clone(),
                    local,
                    sockets,
                    close: Vec::new(),
                },
            );
        }
        bound.retain(|key, entry| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(frontend = %key.0, address = %entry.local, "no longer listening");
                for close in entry.close.drain(..) {
                    let _ = close.send(());
                }
            }
            keep
        });
        drop(bound);
        if self.listeners.running.load(Ordering::SeqCst) {
            self.start_accepting();
        }
        Ok(())
    }

    /// Starts an accept loop on every bound socket that has none yet, each
    /// on its worker's runtime.
    fn start_accepting(&self) {
        let workers = &self.listeners.workers;
        let mut bound = lock(&self.listeners.bound);
        for entry in bound.values_mut() {
            for (index, socket) in entry.sockets.drain(..).enumerate() {
                let (close, closed) = oneshot::channel::<()>();
                entry.close.push(close);
                let removed = async move {
                    let _ = closed.await;
                };
                let shared = self.shared.clone();
                let frontend = entry.frontend.clone();
                let accepted = self.listeners.accepted[index].clone();
                let local = entry.local;
                workers[index].spawn(async move {
                    // Registered with the reactor of the worker that accepts on it.
                    match TcpListener::from_std(socket) {
                        Ok(listener) => accept_loop(listener, shared, frontend, removed, accepted).await,
                        Err(err) => {
                            tracing::error!(frontend = %frontend, address = %local, worker = index, cause = %err, "cannot accept")
                        }
                    }
                });
            }
        }
    }
}

/// Servers of `previous` whose state `next` does not carry over (removed, or
/// moved to another address) are drained: their tunnels close after `drain_timeout`.
fn drain_removed_servers(previous: &Snapshot, next: &Snapshot) -> Vec<Arc<ServerState>> {
    let mut removed = Vec::new();
    for backend in &previous.backends {
        for server in &backend.servers {
            let kept = next
                .backends
                .iter()
                .flat_map(|b| &b.servers)
                .any(|s| Arc::ptr_eq(&s.state, &server.state));
            if !kept {
                if server.state.set_admin(AdminState::Drain) {
                    tracing::info!(backend = %backend.name, server = %server.name, "server removed by reload: draining");
                }
                removed.push(server.state.clone());
            }
        }
    }
    removed
}

/// `count` listening sockets on `address` (`SO_REUSEPORT`): the first picks
/// the port when `address` has port 0, the others join it.
fn listen_group(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = listen(address)?;
    let local = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(listen(local)?);
    }
    Ok(sockets)
}

/// A listening socket on `address`, not yet tied to a runtime.
fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    // Registered with a runtime only when its worker starts accepting.
    socket.listen(LISTEN_BACKLOG)?.into_std()
}
