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
//!
//! `servers` holds what the admin API's server adds and deletes, the state
//! file and the cluster's shared servers need of the instance.

mod acme_store;
mod rebalance;
mod servers;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle as RuntimeHandle;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{AdminShared, Context};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::discovery::{with_found, FoundSets};
use crate::dynamic::{with_api, ApiServers};
use crate::health::{BackendTargets, Checkers, Target};
use crate::proxy::listener::accept_loop;
use crate::proxy::tunnel::{CLOSE_BOUNDARY_WAIT, CLOSE_LINGER};
use crate::proxy::{Shared, Stop};
use crate::snapshot::{Diff, DrainTiming, Snapshot};
use crate::state::{AdminState, ChangeReport, Changes, ServerChange, ServerState};
use crate::util::clock::unix_ms;
use crate::util::lock;
use crate::ws::control::{close_spread, TunnelControl};
use crate::ws::frames::CloseCode;

/// Backlog of each listening socket: beyond it, new clients wait in the
/// kernel rather than consume tether's memory.
const LISTEN_BACKLOG: u32 = 1024;

/// Spread of the closes of a down server no snapshot names any more (the config default).
const DEFAULT_DOWN_SPREAD: Duration = Duration::from_secs(5);

/// Drain timing of a server no snapshot names any more (the config defaults).
const DEFAULT_DRAIN: DrainTiming = DrainTiming {
    timeout: Duration::from_secs(300),
    spread: Duration::from_secs(60),
    sticky: false,
};

/// How often a drain looks whether its server holds no connection any more.
const DRAIN_END_POLL: Duration = Duration::from_millis(100);

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
    /// The state file (`state_file`) could not be read.
    #[error(transparent)]
    StateFile(#[from] crate::dynamic::state_file::StateFileError),
    /// The span pipeline of `[tracing]` could not be set up.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TelemetryError),
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

/// Everything one instance owns; the data path sees only `shared`.
struct Inner {
    /// What every connection reads: the snapshot, stop signals, open count.
    shared: Arc<Shared>,
    /// The listening sockets and worker runtimes.
    listeners: Listeners,
    /// The health checker tasks, replaced with the snapshot on reload.
    checkers: Checkers,
    /// The admin listener's socket and login limits.
    admin: AdminShared,
    /// Membership of a cluster (`[cluster]`), set once at bind; unset when alone.
    cluster: OnceLock<Arc<Cluster>>,
    /// Reports of server changes that call for action, until `run` takes
    /// them to act on (closing tunnels, drain timers).
    reports: Mutex<Option<mpsc::UnboundedReceiver<ChangeReport>>>,
    /// The ACME task of each frontend with `tls.acme` (keyed by frontend and settings), while `run` runs.
    acme_tasks: Mutex<HashMap<String, AbortOnDrop>>,
    /// The configuration file, so `reload_config_file` can read it again.
    config_path: Mutex<Option<PathBuf>>,
    /// Reloads through `reload_config_file` that succeeded.
    reloads_ok: AtomicU64,
    /// Reloads through `reload_config_file` that were refused.
    reloads_failed: AtomicU64,
    /// Held for a whole reload, so two (a signal and an API call) cannot
    /// interleave their builds, binds and swaps.
    reloading: Mutex<()>,
    /// DNS discovery: the configuration as the file gives it, the servers
    /// found for it, and the wake-up of the lookup loop after a reload.
    discovery: Discovery,
    /// Servers added through the admin API and the state file.
    api: servers::ApiState,
    /// The span pipeline of `[tracing]` and the settings it started with
    /// (a reload cannot change them: see `swap_in`).
    tracing: Option<(crate::telemetry::Pipeline, crate::telemetry::Settings)>,
}

/// What DNS discovery needs of the instance: the snapshot is built from
/// `file` with `found` added (`discovery::with_found`).
struct Discovery {
    /// The configuration of the last (re)load, without found servers.
    file: Mutex<Arc<Config>>,
    /// The last known set of each lookup.
    found: Mutex<FoundSets>,
    /// Tells the lookup loop the configuration changed.
    wake: Arc<tokio::sync::Notify>,
}

/// A tether instance with its listeners bound, ready to run.
pub struct Tether {
    handle: Handle,
}

/// A cheap handle to a running instance, for signals, reloads and tests.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
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
        let (changes, reports) = Changes::channel();
        let api = servers::ApiState::load(config)?;
        let mut snapshot = Snapshot::build(&with_api(config, &lock(&api.servers)), None);
        let cluster = match &config.cluster {
            Some(settings) => {
                let settings = settings.clone();
                Some(Arc::new(Cluster::new(settings, changes.clone())?))
            }
            None => None,
        };
        if let Some(cluster) = &cluster {
            cluster.share_tables(&mut snapshot);
        }
        let tracing = match config.tracing.as_ref().map(tracing_settings) {
            Some(settings) => Some((crate::telemetry::Pipeline::start(&settings)?, settings)),
            None => None,
        };
        let tracer = tracing.as_ref().map(|(pipeline, _)| pipeline.tracer().clone());
        let listeners = Listeners {
            bound: Mutex::default(),
            accepted: workers.iter().map(|_| Arc::default()).collect(),
            workers,
            running: Default::default(),
            retired: Mutex::default(),
        };
        let snapshot = Arc::new(snapshot);
        let handle = Handle {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(
                    Arc::new(ArcSwap::new(snapshot.clone())),
                    changes.clone(),
                    tracer,
                )),
                listeners,
                checkers: Checkers::new(changes),
                admin: AdminShared::default(),
                cluster: OnceLock::new(),
                reports: Mutex::new(Some(reports)),
                acme_tasks: Mutex::default(),
                config_path: Mutex::default(),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
                reloading: Mutex::new(()),
                discovery: Discovery {
                    file: Mutex::new(Arc::new(config.clone())),
                    found: Mutex::default(),
                    wake: Arc::default(),
                },
                api,
                tracing,
            }),
        };
        handle.sync_listeners(&snapshot)?;
        announce_tunnel_engine(config.tunnel_engine);
        if let Some(cluster) = cluster {
            let port = snapshot
                .frontends
                .first()
                .and_then(|f| handle.local_addrs(&f.name).first().map(|a| a.port()))
                .unwrap_or(0);
            cluster.resolve_instance(port);
            // Validations of another instance's ACME order are answered from Redis.
            let answers = acme_store::RedisStore {
                cluster: cluster.clone(),
            };
            let _ = handle.inner.shared.acme_answers.set(Arc::new(answers));
            let _ = handle.inner.cluster.set(cluster);
        }
        handle.apply_intended_states(&snapshot, None);
        crate::admin::bind(&handle).map_err(|source| StartError::AdminBind {
            address: snapshot.admin.as_ref().map_or(([0, 0, 0, 0], 0).into(), |a| a.bind),
            source,
        })?;
        Ok(Tether { handle })
    }

    /// The addresses frontend `name` actually listens on (useful after binding port 0).
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.handle.local_addrs(name)
    }

    /// The address the admin listener is bound to, if `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.handle.admin_addr()
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
        let inner = &handle.inner;
        let shared = &inner.shared;
        // Server changes (down, drain, maint) are acted on until this function ends.
        let _acting = lock(&inner.reports)
            .take()
            .map(|reports| AbortOnDrop(tokio::spawn(act_on_changes(reports, shared.snapshot.clone()))));
        inner.listeners.running.store(true, Ordering::SeqCst);
        handle.start_accepting();
        // Health checks run on their own tasks until this function ends.
        let _checkers = inner.checkers.start(|| check_targets(&shared.snapshot.load()));
        // The admin listener (stats page, /metrics, API) stops with the graceful stop.
        let _admin = crate::admin::start(Arc::new(handle.clone()));
        // Cluster tasks (Redis sync, shared operator changes) run until this function ends.
        let cluster_tasks = inner
            .cluster
            .get()
            .map(|cluster| cluster.start(shared.snapshot.clone(), handle.server_sink()));
        // DNS lookups of `discover` and `resolve_interval` run until this function ends.
        let _discovery = handle.start_discovery();
        // Servers deleted through the API leave once drained, until this function ends.
        let _deletions = handle.start_deletions();
        // Rebalancing rounds (backends with `rebalance`) run until this function ends.
        let _rebalance = AbortOnDrop(tokio::spawn(rebalance::rebalance_loop(
            shared.snapshot.clone(),
            inner.cluster.get().cloned(),
        )));
        // Automatic certificates are kept (ordered, renewed) until this function ends.
        handle.sync_acme();
        let _acme = StopAcme(&handle);
        shutdown.await;
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
        // Give closing tasks time to send their Close frames (at a frame
        // boundary, waited for up to `CLOSE_BOUNDARY_WAIT`), finish both
        // sides cleanly (up to `CLOSE_LINGER`) and log their last lines.
        let last_closes = CLOSE_BOUNDARY_WAIT + CLOSE_LINGER + Duration::from_millis(500);
        let _ = tokio::time::timeout(last_closes, shared.open.wait_idle()).await;
        if let Some(cluster) = inner.cluster.get() {
            drop(cluster_tasks);
            cluster.leave(&shared.snapshot.load()).await;
        }
        if let Some((pipeline, _)) = &inner.tracing {
            // The spans of the last requests and tunnels go out before the end.
            pipeline.shutdown().await;
        }
        tracing::info!("stopped");
    }
}

/// The span pipeline's settings from `[tracing]`.
fn tracing_settings(tracing: &crate::config::model::Tracing) -> crate::telemetry::Settings {
    crate::telemetry::Settings {
        traces_url: tracing.traces_url.clone(),
        sample_ratio: tracing.sample_ratio,
        service_name: tracing.service_name.clone(),
        batch_delay: tracing.batch_delay,
    }
}

/// Aborts a task when dropped (when `run` returns or is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

/// Stops the ACME tasks when `run` returns or is cancelled.
struct StopAcme<'a>(&'a Handle);

impl Drop for StopAcme<'_> {
    fn drop(&mut self) {
        self.0.stop_acme();
    }
}

impl Handle {
    /// Keeps one ACME task per frontend with `tls.acme` in the file in
    /// force: started at `run` and for frontends a reload adds or changes,
    /// stopped for those it removes; an unchanged one keeps its task (and
    /// its certificate slot).
    fn sync_acme(&self) {
        let config = lock(&self.inner.discovery.file).clone();
        let snapshot = self.inner.shared.snapshot.load();
        let mut tasks = lock(&self.inner.acme_tasks);
        let wanted: HashMap<String, _> = config
            .frontends
            .iter()
            .filter_map(|f| {
                let settings = f.acme.clone()?;
                let slot = snapshot.frontend(&f.name)?.tls.as_ref()?.acme.as_ref()?.slot.clone();
                let key = format!("{}|{settings:?}", f.name);
                Some((key, (f.name.clone(), settings, slot)))
            })
            .collect();
        tasks.retain(|key, _| wanted.contains_key(key));
        for (key, (name, settings, slot)) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let shared = self.inner.cluster.get().map(|cluster| {
                Arc::new(acme_store::RedisStore {
                    cluster: cluster.clone(),
                }) as Arc<dyn crate::acme::SharedStore>
            });
            // On the caller's runtime (`run`, the API, a signal), else the first worker's.
            let runtime =
                tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.inner.listeners.workers[0].clone());
            let task = runtime.spawn(crate::acme::run(name.into(), settings, slot, shared));
            tasks.insert(key, AbortOnDrop(task));
        }
    }

    /// Stops every ACME task (when `run` ends).
    fn stop_acme(&self) {
        lock(&self.inner.acme_tasks).clear();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Handle {
    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.shared.snapshot.load_full()
    }

    /// The addresses frontend `name` listens on.
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let bound = lock(&self.inner.listeners.bound);
        let mut addrs: Vec<SocketAddr> = bound
            .iter()
            .filter(|((f, _), _)| &**f == name)
            .map(|(_, b)| b.local)
            .collect();
        addrs.sort();
        addrs
    }

    /// The address the admin listener is bound to, if `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin.local_addr()
    }

    /// Marks a server up or down as a health check does (one gone down has
    /// its tunnels closed with 1012, spread over its backend's
    /// `down_spread`); returns whether it flipped.
    pub fn set_up(&self, server: &Arc<ServerState>, up: bool) -> bool {
        self.inner.shared.changes.set_up(server, up)
    }

    /// Sets a server's admin state as the admin API does (a drain closes
    /// its tunnels after `drain_timeout`); returns whether it changed.
    pub fn set_admin(&self, server: &Arc<ServerState>, state: AdminState) -> bool {
        self.inner.shared.changes.set_admin(server, state)
    }

    /// Swaps in a new, already validated configuration, all or nothing:
    /// the new snapshot is built without touching the running one (server
    /// state and stick tables carry over by name), its diff computed, and
    /// the addresses it adds bound; if one cannot be, nothing changed and
    /// the error is returned. Then the snapshot is swapped, the diff
    /// applied (weights and admin states, removed servers drained, checkers
    /// restarted, removed addresses closed) and logged. Running requests and
    /// tunnels keep the snapshot they started with.
    ///
    /// Servers found in DNS stay (the new file's own lookups are planned
    /// again, and a changed `discover` drops the old name's servers), and
    /// so do servers added through the API.
    pub fn reload(&self, config: &Config) -> Result<(), StartError> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let combined = self.compose(config, &lock(&inner.discovery.found), &lock(&inner.api.servers));
        let engine_before = inner.shared.snapshot.load().tunnel_engine;
        self.swap_in(&combined, false)?;
        if config.tunnel_engine != engine_before {
            announce_tunnel_engine(config.tunnel_engine);
        }
        // A reload (SIGHUP after log rotation) opens the access log's file anew.
        self.reopen_access_log();
        if config.state_file != inner.api.state_file {
            tracing::warn!("`state_file` changed: restart tether to use the new one (this process keeps its own)");
        }
        *lock(&inner.discovery.file) = Arc::new(config.clone());
        inner.discovery.wake.notify_one();
        if inner.listeners.running.load(Ordering::SeqCst) {
            self.sync_acme();
        }
        Ok(())
    }

    /// The DNS lookup loop (`discovery::dns::run`) over the file's
    /// configuration, applying each change of the found servers.
    fn start_discovery(&self) -> AbortOnDrop {
        let source = self.clone();
        let target = self.clone();
        AbortOnDrop(tokio::spawn(crate::discovery::dns::run(
            move || lock(&source.inner.discovery.file).clone(),
            self.inner.discovery.wake.clone(),
            move |found| target.apply_found(found),
        )))
    }

    /// Servers found in DNS changed: the snapshot is rebuilt from the file's
    /// configuration with them, through the reload path (serialised with
    /// reloads): live states of unchanged servers carry over, servers gone
    /// are drained, new ones start their `slowstart` ramp.
    fn apply_found(&self, found: FoundSets) {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let file = lock(&inner.discovery.file).clone();
        let combined = self.compose(&file, &found, &lock(&inner.api.servers));
        *lock(&inner.discovery.found) = found;
        if let Err(err) = self.swap_in(&combined, true) {
            tracing::error!(cause = %err, "servers found in DNS could not be applied");
        }
    }

    /// The configuration a snapshot is built from: the file's, with the
    /// servers found in DNS, then those added through the API.
    fn compose(&self, file: &Config, found: &FoundSets, api: &ApiServers) -> Config {
        with_api(&with_found(file, found), api)
    }

    /// Build, diff, bind, swap and apply `config` (the reload lock held);
    /// with `ramp_new` (a server set changed at run time: DNS, the API),
    /// servers new in it start their slow-start ramp, and only they and
    /// those starting or stopping to leave take their intended states.
    fn swap_in(&self, config: &Config, ramp_new: bool) -> Result<(), StartError> {
        let inner = &self.inner;
        let previous = self.snapshot();
        let mut next = Snapshot::build(config, Some(&previous));
        // Operator changes to the others stay.
        let mut fresh = Vec::new();
        let mut only: Option<Vec<Arc<ServerState>>> = None;
        if ramp_new {
            let before = |state: &Arc<ServerState>| {
                previous
                    .backends
                    .iter()
                    .flat_map(|b| b.servers.iter())
                    .find(|s| Arc::ptr_eq(&s.state, state))
            };
            let mut touched = Vec::new();
            for server in next.backends.iter().flat_map(|b| b.servers.iter()) {
                match before(&server.state) {
                    None => fresh.push(server.state.clone()),
                    Some(old) if old.leaving != server.leaving => touched.push(server.state.clone()),
                    Some(_) => {}
                }
            }
            touched.extend(fresh.iter().cloned());
            only = Some(touched);
        }
        for state in &fresh {
            state.ramp_from_now();
        }
        if let Some(cluster) = inner.cluster.get() {
            cluster.share_tables(&mut next);
            if config.cluster.is_none() {
                tracing::warn!("[cluster] was removed from the configuration: restart tether to leave the cluster");
            }
        } else if config.cluster.is_some() {
            tracing::warn!("[cluster] was added to the configuration: restart tether to join the cluster");
        }
        if let Some(workers) = config.workers {
            let running = inner.listeners.workers.len();
            if workers != running {
                tracing::warn!(
                    workers,
                    running,
                    "`workers` changed: restart tether to apply it (this process keeps its workers)"
                );
            }
        }
        let wanted = config.tracing.as_ref().map(tracing_settings);
        if wanted.as_ref() != inner.tracing.as_ref().map(|(_, running)| running) {
            tracing::warn!(
                "[tracing] changed: restart tether to apply it (this process keeps its span export as it started)"
            );
        }
        let diff = Diff::between(&previous, &next);
        let next = Arc::new(next);
        self.sync_listeners(&next)?;
        inner.shared.snapshot.store(next.clone());
        // Only now: an accept loop looks its frontend up in the snapshot in
        // force when it starts, and ends at once if it is not there (a loop
        // started before the swap closed the socket a reload had just bound).
        if inner.listeners.running.load(Ordering::SeqCst) {
            self.start_accepting();
        }
        self.apply(&next, diff, only.as_deref());
        Ok(())
    }

    /// The side effects of a reload, after the swap: the config's (or the
    /// cluster's) weights and admin states, idle connections that speak an
    /// old TLS setting, checker tasks, drains of removed servers, the log.
    /// With `only`, just those servers take their intended states.
    fn apply(&self, snapshot: &Snapshot, diff: Diff, only: Option<&[Arc<ServerState>]>) {
        let inner = &self.inner;
        self.apply_intended_states(snapshot, only);
        for state in &diff.reached_differently {
            inner.shared.pools.clear(state);
        }
        // Checker tasks of the old snapshot stop; the new one's start (state carries over by name).
        // Loaded under the checkers' lock, so a concurrent reload cannot leave stale checkers.
        inner.checkers.refresh(|| check_targets(&inner.shared.snapshot.load()));
        let mut retired = lock(&inner.listeners.retired);
        retired.retain(|state| state.tunnels.load(Ordering::Relaxed) > 0);
        for removed in &diff.servers_removed {
            if let Some(generation) = removed.state.set_admin(AdminState::Drain) {
                tracing::info!(server = %removed.name, "server removed by reload: draining");
                // No snapshot names it: no client can be stuck to it any more.
                let timing = DrainTiming {
                    sticky: false,
                    ..removed.drain
                };
                self.spawn_drain(removed.state.clone(), generation, timing);
            }
            inner.shared.pools.forget(&removed.state);
            retired.push(removed.state.clone());
        }
        drop(retired);
        tracing::info!(changes = %diff, "configuration applied");
    }

    /// Writes each server's intended weight and admin state to its live
    /// state: the cluster's latest operator change if there is one (it
    /// wins, as it did before the reload), else the state file's, else the
    /// config's; a server deleted through the API drains whatever they say.
    /// Each frontend's live admission state learns its IPv6 client prefix.
    fn apply_intended_states(&self, snapshot: &Snapshot, only: Option<&[Arc<ServerState>]>) {
        let inner = &self.inner;
        for frontend in &snapshot.frontends {
            frontend.state.admission.set_ipv6_prefix(frontend.per_ip_ipv6_prefix);
        }
        let cluster = inner.cluster.get();
        for backend in &snapshot.backends {
            for server in &backend.servers {
                if only.is_some_and(|only| !only.iter().any(|s| Arc::ptr_eq(s, &server.state))) {
                    continue;
                }
                let (admin, weight) = if server.leaving {
                    (AdminState::Drain, server.configured_weight)
                } else {
                    cluster
                        .and_then(|c| c.operator_state(&backend.name, &server.name))
                        .or_else(|| self.stored_operator_state(&backend.name, &server.name))
                        .unwrap_or((server.configured_admin, server.configured_weight))
                };
                server.state.set_weight(weight);
                inner.shared.changes.set_admin(&server.state, admin);
            }
        }
    }

    /// Starts closing `server`'s tunnels after its drain timeout, on the
    /// instance's first worker.
    fn spawn_drain(&self, server: Arc<ServerState>, generation: u64, timing: DrainTiming) {
        if let Some(runtime) = self.inner.listeners.workers.first() {
            runtime.spawn(drain_tunnels(server, generation, timing));
        }
    }

    /// The controls of every open tunnel, on current and removed servers.
    fn tunnel_controls(&self) -> Vec<Arc<TunnelControl>> {
        let snapshot = self.snapshot();
        let retired = lock(&self.inner.listeners.retired).clone();
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
        self.inner
            .listeners
            .accepted
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Open client connections and tunnels.
    pub fn open_connections(&self) -> usize {
        self.inner.shared.open.count()
    }

    /// Health checker tasks running now (one per server of each backend with checks).
    pub fn health_checkers(&self) -> usize {
        self.inner.checkers.running()
    }

    /// Opens the access log's file again (after log rotation: SIGUSR1, and
    /// every reload); nothing for standard error, standard output or off.
    pub fn reopen_access_log(&self) {
        self.snapshot().access_log.reopen();
    }

    /// Remembers the configuration file, so `reload_config_file` (and `POST /api/v1/reload`) can read it again.
    pub fn set_config_path(&self, path: PathBuf) {
        *lock(&self.inner.config_path) = Some(path);
    }

    /// Reads the configuration file again and reloads it; on any error the
    /// running configuration stays and the error's text is returned. Counted
    /// in `tether_config_reloads_total`.
    pub fn reload_config_file(&self) -> Result<(), String> {
        let inner = &self.inner;
        let path = lock(&inner.config_path).clone();
        let result = match path {
            None => Err("tether was not started from a configuration file: there is nothing to reload".to_string()),
            Some(path) => crate::config::load_file(&path)
                .map_err(|err| err.to_string())
                .and_then(|config| self.reload(&config).map_err(|err| err.to_string()))
                .map(|()| tracing::info!(file = %path.display(), "configuration reloaded")),
        };
        match &result {
            Ok(()) => inner.reloads_ok.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                tracing::error!(cause = %err, "reload refused: the running configuration stays");
                inner.reloads_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        result
    }

    /// Binds what `snapshot` lists and is not bound yet, then closes what it no
    /// longer lists. Binding happens first, so a failure changes nothing.
    /// The new sockets are accepted on by `start_accepting`, once `snapshot`
    /// is the one in force.
    fn sync_listeners(&self, snapshot: &Snapshot) -> Result<(), StartError> {
        let wanted: Vec<(Arc<str>, SocketAddr)> = snapshot
            .frontends
            .iter()
            .flat_map(|f| f.binds.iter().map(|a| (f.name.clone(), *a)))
            .collect();
        let listeners = &self.inner.listeners;
        let mut bound = lock(&listeners.bound);
        let mut fresh = Vec::new();
        for key in &wanted {
            if bound.contains_key(key) || fresh.iter().any(|(k, _)| k == key) {
                continue;
            }
            let sockets = listen_group(key.1, listeners.workers.len()).map_err(|source| StartError::Bind {
                frontend: key.0.to_string(),
                address: key.1,
                source,
            })?;
            fresh.push((key.clone(), sockets));
        }
        for (key, sockets) in fresh {
            let local = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(key.1);
            if listeners.running.load(Ordering::SeqCst) {
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
        Ok(())
    }

    /// Starts an accept loop on every bound socket that has none yet, each
    /// on its worker's runtime.
    fn start_accepting(&self) {
        let workers = &self.inner.listeners.workers;
        let mut bound = lock(&self.inner.listeners.bound);
        for entry in bound.values_mut() {
            for (index, socket) in entry.sockets.drain(..).enumerate() {
                let (close, closed) = oneshot::channel::<()>();
                entry.close.push(close);
                let removed = async move {
                    let _ = closed.await;
                };
                let shared = self.inner.shared.clone();
                let frontend = entry.frontend.clone();
                let accepted = self.inner.listeners.accepted[index].clone();
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

/// The servers a health checker should watch: every server of every
/// backend, with the backend's checks (`None`: released from checks).
fn check_targets(snapshot: &Snapshot) -> Vec<BackendTargets> {
    snapshot
        .backends
        .iter()
        .map(|backend| BackendTargets {
            backend: backend.name.clone(),
            settings: backend.health.clone(),
            servers: backend
                .servers
                .iter()
                .map(|server| Target {
                    name: server.name.clone(),
                    address: server.address,
                    tls: server.tls.clone(),
                    send_proxy: server.send_proxy,
                    state: server.state.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Acts on the server changes reported through [`Changes`]: a server gone
/// down has its tunnels asked to close (1012, so their clients reconnect to
/// a healthy server), spread over its backend's `down_spread` so they do not
/// all reconnect at the same instant (stopped if it comes back up); a
/// drained or maintained one has them closed after its backend's
/// `drain_timeout`, spread over `drain_spread`.
async fn act_on_changes(mut reports: mpsc::UnboundedReceiver<ChangeReport>, snapshot: Arc<ArcSwap<Snapshot>>) {
    while let Some((server, change)) = reports.recv().await {
        match change {
            ServerChange::WentDown => {
                let spread = down_spread_of(&snapshot.load(), &server);
                let controls = server.tunnel_controls();
                tokio::spawn(async move {
                    close_spread(controls, CloseCode::ServiceRestart, spread, || !server.is_up()).await;
                });
            }
            // The new generation alone cancels a drain in progress.
            ServerChange::Admin {
                state: AdminState::Ready,
                ..
            } => {}
            ServerChange::Admin { state, generation } => {
                let timing = drain_timing_of(&snapshot.load(), &server);
                // Only a drain lets stuck clients back; maintenance takes nobody.
                let timing = DrainTiming {
                    sticky: timing.sticky && state == AdminState::Drain,
                    ..timing
                };
                tokio::spawn(drain_tunnels(server, generation, timing));
            }
        }
    }
}

/// The `down_spread` of the backend `server` belongs to in `snapshot`.
fn down_spread_of(snapshot: &Snapshot, server: &Arc<ServerState>) -> Duration {
    snapshot
        .backends
        .iter()
        .find(|b| b.servers.iter().any(|s| Arc::ptr_eq(&s.state, server)))
        .map_or(DEFAULT_DOWN_SPREAD, |b| b.down_spread)
}

/// The drain timing of the backend `server` belongs to in `snapshot`; a
/// server deleted through the API drains as a server removed by a reload
/// does (no stuck client comes back).
fn drain_timing_of(snapshot: &Snapshot, server: &Arc<ServerState>) -> DrainTiming {
    snapshot
        .backends
        .iter()
        .find_map(|b| {
            let found = b.servers.iter().find(|s| Arc::ptr_eq(&s.state, server))?;
            let timing = b.drain_timing();
            Some(DrainTiming {
                sticky: timing.sticky && !found.leaving,
                ..timing
            })
        })
        .unwrap_or(DEFAULT_DRAIN)
}

/// Runs a drain (or maintenance) of `server` started at admin `generation`,
/// until another admin change supersedes it: after the drain timeout, stuck
/// clients are no longer let back and the tunnels are closed evenly over the
/// spread; the drain ends when the server holds no connection (and, with
/// `drain_sticky`, the deadline has passed: until then stuck clients may
/// come back). The end is recorded in the server's state for the API.
async fn drain_tunnels(server: Arc<ServerState>, generation: u64, timing: DrainTiming) {
    let current = || server.admin_generation() == generation;
    let deadline = tokio::time::Instant::now() + timing.timeout;
    if !timing.sticky {
        // Nobody new comes to a drained server: it may be empty before the deadline.
        while tokio::time::Instant::now() < deadline && current() {
            if server.active() == 0 {
                server.mark_drain_ended(generation, unix_ms());
                break;
            }
            tokio::time::sleep(DRAIN_END_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }
    tokio::time::sleep_until(deadline).await;
    if !server.mark_drain_closing(generation) {
        return;
    }
    close_spread(
        server.tunnel_controls(),
        CloseCode::ServiceRestart,
        timing.spread,
        current,
    )
    .await;
    while current() && server.drain_progress().is_some_and(|p| p.ended_unix_ms.is_none()) {
        if server.active() == 0 {
            server.mark_drain_ended(generation, unix_ms());
            break;
        }
        tokio::time::sleep(DRAIN_END_POLL).await;
    }
}

impl Context for Handle {
    fn snapshot(&self) -> Arc<Snapshot> {
        Handle::snapshot(self)
    }

    fn admin(&self) -> &AdminShared {
        &self.inner.admin
    }

    fn stop(&self) -> &Stop {
        &self.inner.shared.stop
    }

    fn changes(&self) -> &Changes {
        &self.inner.shared.changes
    }

    fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get()
    }

    fn reload_config_file(&self) -> Result<(), String> {
        Handle::reload_config_file(self)
    }

    fn reloads(&self) -> (u64, u64) {
        (
            self.inner.reloads_ok.load(Ordering::Relaxed),
            self.inner.reloads_failed.load(Ordering::Relaxed),
        )
    }

    fn open_connections(&self) -> usize {
        Handle::open_connections(self)
    }

    fn accepted_per_worker(&self) -> Vec<u64> {
        Handle::accepted_per_worker(self)
    }

    fn add_server(&self, backend: &str, body: &[u8], user: &str) -> Result<String, crate::dynamic::Refusal> {
        Handle::add_server(self, backend, body, user)
    }

    fn delete_server(&self, backend: &str, server: &str, user: &str) -> Result<(), crate::dynamic::Refusal> {
        Handle::delete_server(self, backend, server, user)
    }

    fn operator_changed(&self, backend: &str, server: &str) {
        Handle::remember_operator_state(self, backend, server);
    }
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

/// Says what will carry tunnels when it is io_uring (at start, and when a
/// reload changes the engine): a kernel that refuses io_uring is a warning,
/// not a failure, and its tunnels stay on epoll as without the key.
fn announce_tunnel_engine(engine: crate::config::TunnelEngine) {
    if engine != crate::config::TunnelEngine::IoUring {
        return;
    }
    #[cfg(target_os = "linux")]
    match crate::uring::probe() {
        Ok(()) => tracing::info!("tunnels between plain TCP sockets are carried by io_uring ([tunnel] engine)"),
        Err(err) => tracing::warn!(
            cause = %err,
            "[tunnel] engine = \"io_uring\", but this kernel refuses io_uring: tunnels stay on epoll"
        ),
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!("[tunnel] engine = \"io_uring\" needs Linux: tunnels stay on epoll");
}
