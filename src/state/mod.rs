//! Live per-server and per-frontend state shared by every snapshot that
//! names it: active connections, weight, health and counters, atomics so
//! the request path never takes a lock to read or update them.
//!
//! Data only: setters write and say what changed; nothing here spawns a
//! task or closes a connection. A change that calls for action is made
//! through [`Changes`], which reports it to `instance`.

pub mod admission;
mod changes;
pub mod health;
pub mod latency;
pub mod machine;
pub mod rebalance;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

pub use crate::config::types::AdminState;
use crate::util::clock::{monotonic_ms, unix_ms};
use crate::util::lock;
use crate::ws::control::{TunnelControl, TunnelRegistration, TunnelSet};
pub use changes::{ChangeReport, Changes, ServerChange};
use health::HealthStatus;
pub use rebalance::{RebalanceReading, RebalanceState};

/// Bytes and WebSocket messages carried to and from one server. Tunnels add
/// their deltas at most about once a second and when they end; HTTP
/// exchanges add theirs when they finish. Relaxed atomics: counters only.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes from clients to the server (request bodies, tunnel bytes).
    pub bytes_in: AtomicU64,
    /// Bytes from the server to clients (response bodies, tunnel bytes).
    pub bytes_out: AtomicU64,
    /// WebSocket messages from clients to the server.
    pub messages_in: AtomicU64,
    /// WebSocket messages from the server to clients.
    pub messages_out: AtomicU64,
}

impl Traffic {
    /// Adds deltas; zeros cost nothing.
    pub fn add(&self, bytes_in: u64, bytes_out: u64, messages_in: u64, messages_out: u64) {
        for (counter, delta) in [
            (&self.bytes_in, bytes_in),
            (&self.bytes_out, bytes_out),
            (&self.messages_in, messages_in),
            (&self.messages_out, messages_out),
        ] {
            if delta > 0 {
                counter.fetch_add(delta, Ordering::Relaxed);
            }
        }
    }
}

/// Histogram buckets of tunnel lifetimes, in seconds (a second to a day).
const TUNNEL_BUCKETS: [f64; 10] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0];

/// Histogram buckets of health-check latencies, in seconds.
const CHECK_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

/// Live counters of one frontend, carried across reloads by name.
#[derive(Debug, Default)]
pub struct FrontendState {
    /// Client connections open now.
    pub connections_open: AtomicU64,
    /// Client connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Requests (WebSocket handshakes included) received since start.
    pub requests: AtomicU64,
    /// `maxconn` and the per-address caps.
    pub admission: admission::Admission,
    /// TLS handshakes that failed or did not finish in time (TLS frontends).
    pub tls_handshake_failures: AtomicU64,
    /// How long the TLS handshakes that succeeded took (TLS frontends).
    pub tls_handshakes: latency::Latency,
    /// Tunnels tether closed with 1001 at their `websocket.max_lifetime`.
    pub lifetime_closes: AtomicU64,
    /// Client connections that spoke HTTP/2 (ALPN `h2` or h2c).
    pub http2_connections: AtomicU64,
    /// Requests received over HTTP/2 (part of `requests`).
    pub http2_requests: AtomicU64,
    /// WebSocket tunnels opened over HTTP/1.1 (`Upgrade: websocket`).
    pub websockets_http1: AtomicU64,
    /// WebSocket tunnels opened over HTTP/2 (RFC 8441 extended CONNECT).
    pub websockets_http2: AtomicU64,
}

impl FrontendState {
    /// Counts an accepted connection until the returned guard drops, if
    /// fewer than `maxconn` are open (always without a limit). Atomic:
    /// workers accept at the same time, and only one gets the last slot.
    pub fn try_connection_opened(self: &Arc<Self>, maxconn: Option<u64>) -> Option<FrontendConnection> {
        let limit = maxconn.unwrap_or(u64::MAX);
        self.connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()?;
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        Some(FrontendConnection {
            state: self.clone(),
            ip: None,
        })
    }
}

/// One open client connection of a frontend; uncounted on drop.
#[derive(Debug)]
pub struct FrontendConnection {
    state: Arc<FrontendState>,
    /// The client key it is counted under (see `Admission::client_key`), when a per-address cap applies.
    ip: Option<IpAddr>,
}

impl FrontendConnection {
    /// Counts the connection for client address `ip` too, unless that
    /// address already holds `max` connections (then `false`: refuse it).
    pub fn count_for(&mut self, ip: IpAddr, max: u32) -> bool {
        if self.ip.is_some() {
            return true;
        }
        match self.state.admission.try_connect(ip, max) {
            Some(key) => {
                self.ip = Some(key);
                true
            }
            None => false,
        }
    }

    /// Keeps the connection counted after it changed hands (an HTTP
    /// connection that became a WebSocket tunnel), without counting a new accept.
    pub fn still_open(&self) -> FrontendConnection {
        self.state.connections_open.fetch_add(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            // Cannot be refused: the handover briefly counts the connection twice.
            self.state.admission.try_connect_key(ip, u32::MAX);
        }
        FrontendConnection {
            state: self.state.clone(),
            ip: self.ip,
        }
    }
}

impl FrontendConnection {
    /// Counts one more connection for the same client, if the frontend's
    /// `maxconn` and the address's cap `per_ip` leave room: a WebSocket on
    /// an HTTP/2 stream holds a server connection as a connection of its
    /// own would, so it counts as one (else many streams would slip past both caps).
    pub fn try_another(&self, maxconn: Option<u64>, per_ip: Option<u32>) -> Option<FrontendConnection> {
        let limit = maxconn.unwrap_or(u64::MAX);
        self.state
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()?;
        let mut another = FrontendConnection {
            state: self.state.clone(),
            ip: None,
        };
        if let Some(ip) = self.ip {
            // Dropping `another` un-counts it if the address has no room.
            if !self.state.admission.try_connect_key(ip, per_ip.unwrap_or(u32::MAX)) {
                return None;
            }
            another.ip = Some(ip);
        }
        Some(another)
    }
}

impl Drop for FrontendConnection {
    fn drop(&mut self) {
        self.state.connections_open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            self.state.admission.disconnect(ip);
        }
        self.state.admission.slot_freed();
    }
}

/// One reading of a server's counters, for the stats page, the JSON API and
/// `/metrics` (which list them from here rather than each by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerCounters {
    /// Requests in flight plus open tunnels.
    pub active: u32,
    /// `active` on the other instances of a cluster (last sync).
    pub remote_active: u32,
    /// Open WebSocket tunnels.
    pub tunnels: u32,
    /// Requests and tunnels ever dispatched.
    pub dispatched: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Bytes from clients to the server.
    pub bytes_in: u64,
    /// Bytes from the server to clients.
    pub bytes_out: u64,
    /// WebSocket messages from clients.
    pub messages_in: u64,
    /// WebSocket messages to clients.
    pub messages_out: u64,
    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// tether's own 502, 503 and 504 answers for this server, with their codes.
    pub gateway_errors: [(u16, u64); 3],
}

/// Where a drain (or maintenance) of a server stands, for the stats page and API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainProgress {
    /// The drain's deadline (`drain_timeout`) passed: its tunnels are being
    /// closed and stuck clients are balanced elsewhere.
    pub closing: bool,
    /// When (Unix ms) the server was left with no connection after the
    /// deadline: the drain is over and the server can be taken away.
    pub ended_unix_ms: Option<u64>,
}

/// The id the next server state gets.
static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(0);

/// What tether knows about one server right now.
#[derive(Debug)]
pub struct ServerState {
    /// Requests in flight plus open WebSocket tunnels: what `leastconn` and `maxconn` count.
    pub active: AtomicU32,
    /// Open WebSocket tunnels only (a subset of `active`), for stats.
    pub tunnels: AtomicU32,
    /// `active` of this server summed over the other instances of a cluster,
    /// as last read from Redis (0 without `[cluster]` or while Redis is
    /// unreachable). The sync task sets it; the algorithms add it to the
    /// local live count, so they stay pure and lock-free.
    pub remote_active: AtomicU32,
    /// Current weight; starts at the configured one, the admin API may change it.
    pub weight: AtomicU32,
    /// Whether the server may take traffic (health checks flip it).
    pub up: AtomicBool,
    /// Requests and tunnels ever dispatched to this server.
    pub dispatched: AtomicU64,
    /// Connect attempts that failed.
    pub connect_failures: AtomicU64,
    /// Bytes and WebSocket messages each way (shared with the tunnels that add to it).
    pub traffic: Arc<Traffic>,
    /// HTTP responses sent for exchanges with this server, by status class (1xx..5xx).
    pub responses: [AtomicU64; 5],
    /// Responses tether itself answered 502, 503 and 504 for this server.
    pub http_502: AtomicU64,
    pub http_503: AtomicU64,
    pub http_504: AtomicU64,
    /// How long tunnels to this server lasted.
    pub tunnel_durations: Histogram,
    /// How long active health checks of this server took.
    pub check_durations: Histogram,
    /// How long new connections to the server took (TCP connect, and the TLS handshake to a TLS server).
    pub connect_times: latency::Latency,
    /// From a WebSocket handshake's request head to tether's 101 for it.
    pub handshake_times: latency::Latency,
    /// From a plain HTTP request's head to the server's response head.
    pub first_byte_times: latency::Latency,
    /// When (Unix ms) the server last went up or down or changed admin state; start time if never.
    state_since_unix_ms: AtomicU64,
    /// A number no other server state of this process has, so engines
    /// key their own per-server data by it (the proxy's connection pools).
    id: u64,
    /// Health-check counters and the last result. A small mutex: only checker
    /// tasks and failed connects take it, never a request that goes well.
    health: Mutex<HealthStatus>,
    /// Set while passive failures are counted, so that a successful connect
    /// (every new upstream connection) reads one atomic and takes no lock.
    pub(crate) passive_pending: AtomicBool,
    /// The open tunnels, so a server taken out, drained or stopping can close them.
    open_tunnels: Arc<TunnelSet>,
    /// `AdminState` as a number, read on every pick.
    admin: AtomicU8,
    /// Bumped on every admin change, so a drain that was cancelled or
    /// superseded stops closing tunnels.
    admin_generation: AtomicU64,
    /// When the server last came up (`monotonic_ms`), for slow start; 0: not since start.
    up_since_ms: AtomicU64,
    /// The admin generation whose drain deadline (`drain_timeout`) has
    /// passed; 0: none. Stickiness to the server ends there.
    drain_closing_generation: AtomicU64,
    /// The admin generation whose drain ended (no connection left after the
    /// deadline), and when (Unix ms); 0: none.
    drain_ended_generation: AtomicU64,
    drain_ended_unix_ms: AtomicU64,
    /// Wakes requests queued for a slot when one is freed.
    freed: Notify,
}

impl ServerState {
    /// A fresh state: up, nothing active.
    pub fn new(weight: u32) -> Self {
        Self {
            active: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            remote_active: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            up: AtomicBool::new(true),
            dispatched: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            traffic: Arc::default(),
            responses: Default::default(),
            http_502: AtomicU64::new(0),
            http_503: AtomicU64::new(0),
            http_504: AtomicU64::new(0),
            tunnel_durations: Histogram::new(TUNNEL_BUCKETS),
            check_durations: Histogram::new(CHECK_BUCKETS),
            connect_times: latency::Latency::default(),
            handshake_times: latency::Latency::default(),
            first_byte_times: latency::Latency::default(),
            state_since_unix_ms: AtomicU64::new(unix_ms()),
            id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
            health: Mutex::new(HealthStatus::default()),
            passive_pending: AtomicBool::new(false),
            open_tunnels: Arc::new(TunnelSet::default()),
            admin: AtomicU8::new(AdminState::Ready as u8),
            admin_generation: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            drain_closing_generation: AtomicU64::new(0),
            drain_ended_generation: AtomicU64::new(0),
            drain_ended_unix_ms: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// A fresh state for a server of a backend with health checks: down
    /// until its first check passes, so it gets no traffic before that.
    pub fn awaiting_first_check(weight: u32) -> Self {
        let state = Self::new(weight);
        state.up.store(false, Ordering::Relaxed);
        state.health_lock().governed = true;
        state
    }

    /// A copy of the health-check counters and last results (for stats and tests).
    pub fn health(&self) -> HealthStatus {
        self.health_lock().clone()
    }

    /// The health-check state, for the checker and passive detection.
    pub(crate) fn health_lock(&self) -> MutexGuard<'_, HealthStatus> {
        lock(&self.health)
    }

    /// A new connection to the server was made: clears the passive failure
    /// count. One relaxed load when there is nothing to clear.
    pub fn connect_succeeded(&self) {
        if self.passive_pending.load(Ordering::Relaxed) && self.passive_pending.swap(false, Ordering::AcqRel) {
            self.health_lock().machine.passive_success();
        }
    }

    /// This state's process-unique id (it stays with the server across
    /// reloads, as the state does).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The operator's intent for this server.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Sets the operator's intent; returns the new admin generation if it
    /// changed. Data only: what a drain or maintenance calls for (closing
    /// the tunnels after `drain_timeout`) is `instance`'s, told through
    /// [`Changes::set_admin`].
    pub fn set_admin(&self, state: AdminState) -> Option<u64> {
        let changed = self.admin.swap(state as u8, Ordering::AcqRel) != state as u8;
        changed.then(|| {
            self.state_since_unix_ms.store(unix_ms(), Ordering::Relaxed);
            self.admin_generation.fetch_add(1, Ordering::AcqRel) + 1
        })
    }

    /// The number of admin changes so far: a drain started at one
    /// generation stops closing tunnels once another change happened.
    pub fn admin_generation(&self) -> u64 {
        self.admin_generation.load(Ordering::Acquire)
    }

    /// Records that the drain (or maintenance) started at admin `generation` reached its
    /// deadline: from now on stickiness to this server is not honoured, so
    /// clients its closed tunnels reconnect are balanced elsewhere. Returns
    /// false (and records nothing) if another admin change came since.
    pub fn mark_drain_closing(&self, generation: u64) -> bool {
        let current = self.admin() != AdminState::Ready && self.admin_generation() == generation;
        if current {
            self.drain_closing_generation.store(generation, Ordering::Release);
        }
        current
    }

    /// Records that the drain started at admin `generation` ended at
    /// `at_unix_ms` (the server holds no connection). Returns false (and
    /// records nothing) if another admin change came since.
    pub fn mark_drain_ended(&self, generation: u64, at_unix_ms: u64) -> bool {
        let current = self.admin() != AdminState::Ready && self.admin_generation() == generation;
        if current {
            self.drain_ended_unix_ms.store(at_unix_ms, Ordering::Relaxed);
            self.drain_ended_generation.store(generation, Ordering::Release);
        }
        current
    }

    /// Where the current drain (or maintenance) stands: whether its deadline
    /// passed and when it ended; `None` while the server is ready.
    pub fn drain_progress(&self) -> Option<DrainProgress> {
        let admin = self.admin();
        if admin == AdminState::Ready {
            return None;
        }
        let generation = self.admin_generation();
        let ended = self.drain_ended_generation.load(Ordering::Acquire) == generation;
        Some(DrainProgress {
            closing: self.drain_closing_generation.load(Ordering::Acquire) == generation,
            ended_unix_ms: ended.then(|| self.drain_ended_unix_ms.load(Ordering::Relaxed)),
        })
    }

    /// Whether stickiness to this server still holds: not once a drain's
    /// deadline has passed (HAProxy's drain keeps persistent clients for
    /// ever; tether lets them back only until `drain_timeout`, so a drain ends).
    pub fn takes_stuck_clients(&self) -> bool {
        match self.admin() {
            AdminState::Ready => true,
            AdminState::Drain => self.drain_closing_generation.load(Ordering::Acquire) != self.admin_generation(),
            AdminState::Maint => false,
        }
    }

    /// Sets the current weight (a reload or the admin API); returns the one before.
    pub fn set_weight(&self, weight: u32) -> u32 {
        self.weight.swap(weight, Ordering::Relaxed)
    }

    /// The close requests of this server's open tunnels.
    pub fn tunnels(&self) -> &TunnelSet {
        &self.open_tunnels
    }

    /// Registers a tunnel to this server, so it can be asked to close;
    /// `moved`: its client was moved here by rebalancing (never shed again).
    pub fn register_tunnel(&self, moved: bool) -> TunnelRegistration {
        self.open_tunnels.register(moved)
    }

    /// The open tunnels' controls (for a shutdown that spreads its closes).
    pub fn tunnel_controls(&self) -> Vec<Arc<TunnelControl>> {
        self.open_tunnels.controls()
    }

    /// The weight the algorithm should use now: the current weight, ramped
    /// up over `slowstart` after the server came (back) up, from about 1/20th.
    pub fn effective_weight(&self, slowstart: Option<Duration>) -> u32 {
        let weight = self.weight();
        let Some(ramp) = slowstart.filter(|r| !r.is_zero()) else {
            return weight;
        };
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if since == 0 || weight == 0 {
            return weight;
        }
        let elapsed = monotonic_ms().saturating_sub(since) as f64;
        let ramp_ms = ramp.as_millis() as f64;
        if elapsed >= ramp_ms {
            return weight;
        }
        let share = (0.05 + 0.95 * elapsed / ramp_ms).min(1.0);
        ((f64::from(weight) * share).ceil() as u32).clamp(1, weight)
    }

    /// Waits until a slot may have been freed on this server.
    pub fn slot_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Active requests and tunnels right now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Active requests and tunnels on the other instances of the cluster (last sync).
    pub fn remote_active(&self) -> u32 {
        self.remote_active.load(Ordering::Relaxed)
    }

    /// Current weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Whether the server is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Starts the slow-start ramp now, as if the (up) server had just come
    /// up: for a server that joins a running backend (found in DNS).
    pub fn ramp_from_now(&self) {
        if self.is_up() {
            self.up_since_ms.store(monotonic_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Marks the server up or down; returns whether that changed anything.
    /// Data only: that a server gone down must close its tunnels is
    /// `instance`'s, told through [`Changes::set_up`].
    pub fn set_up(&self, up: bool) -> bool {
        let flipped = self.up.swap(up, Ordering::AcqRel) != up;
        if flipped {
            self.state_since_unix_ms.store(unix_ms(), Ordering::Relaxed);
        }
        if flipped && up {
            // Never 0, which means "up since start" (no slow start then).
            self.up_since_ms.store(monotonic_ms().max(1), Ordering::Relaxed);
        }
        flipped
    }

    /// When (Unix ms) the server last went up or down or changed admin
    /// state; when its state was created if it never did.
    pub fn state_since_unix_ms(&self) -> u64 {
        self.state_since_unix_ms.load(Ordering::Relaxed)
    }

    /// Counts one HTTP response sent for an exchange with this server.
    pub fn count_response(&self, status: u16) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.responses[class as usize].fetch_add(1, Ordering::Relaxed);
        }
        let error = match status {
            502 => &self.http_502,
            503 => &self.http_503,
            504 => &self.http_504,
            _ => return,
        };
        error.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    /// Every counter, read now (relaxed: each is exact, the set is not one instant).
    pub fn counters(&self) -> ServerCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServerCounters {
            active: self.active(),
            remote_active: self.remote_active(),
            tunnels: self.tunnels.load(Ordering::Relaxed),
            dispatched: load(&self.dispatched),
            connect_failures: load(&self.connect_failures),
            bytes_in: load(&self.traffic.bytes_in),
            bytes_out: load(&self.traffic.bytes_out),
            messages_in: load(&self.traffic.messages_in),
            messages_out: load(&self.traffic.messages_out),
            responses: self.responses(),
            gateway_errors: [
                (502, load(&self.http_502)),
                (503, load(&self.http_503)),
                (504, load(&self.http_504)),
            ],
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
        // Cheap when nobody waits: one atomic read.
        self.state.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_the_weight_after_coming_back_up() {
        let state = ServerState::new(100);
        let ramp = Some(Duration::from_secs(10));
        assert_eq!(state.effective_weight(ramp), 100, "up since start: no ramp");
        state.set_up(false);
        state.set_up(true);
        assert_eq!(state.effective_weight(ramp), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(state.effective_weight(ramp), 53);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(state.effective_weight(ramp), 100);
        assert_eq!(state.effective_weight(None), 100);
    }

    #[test]
    fn responses_are_counted_by_class_and_gateway_errors_by_code() {
        let state = ServerState::new(1);
        for status in [101, 200, 204, 302, 404, 502, 503, 503, 504, 0, 600] {
            state.count_response(status);
        }
        assert_eq!(state.responses(), [1, 2, 1, 1, 4]);
        assert_eq!(state.http_502.load(Ordering::Relaxed), 1);
        assert_eq!(state.http_503.load(Ordering::Relaxed), 2);
        assert_eq!(state.http_504.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn state_changes_record_when() {
        let state = Arc::new(ServerState::new(1));
        let start = state.state_since_unix_ms();
        assert!(start > 0);
        std::thread::sleep(Duration::from_millis(3));
        assert!(state.set_admin(AdminState::Drain).is_some());
        let drained = state.state_since_unix_ms();
        assert!(drained > start);
        std::thread::sleep(Duration::from_millis(3));
        assert!(!state.set_up(true), "already up: no change, no new time");
        assert_eq!(state.state_since_unix_ms(), drained);
        assert!(state.set_up(false));
        assert!(state.state_since_unix_ms() > drained);
    }

    #[test]
    fn admin_state_changes_are_reported_once() {
        let state = Arc::new(ServerState::new(1));
        assert_eq!(state.set_admin(AdminState::Drain), Some(1));
        assert_eq!(state.set_admin(AdminState::Drain), None);
        assert_eq!(state.admin(), AdminState::Drain);
    }

    #[test]
    fn a_drain_past_its_deadline_refuses_stuck_clients_until_the_next_change() {
        let state = ServerState::new(1);
        assert_eq!(state.drain_progress(), None);
        let generation = state.set_admin(AdminState::Drain).unwrap();
        assert!(state.takes_stuck_clients(), "before the deadline");
        assert_eq!(
            state.drain_progress(),
            Some(DrainProgress {
                closing: false,
                ended_unix_ms: None
            })
        );
        assert!(
            !state.mark_drain_closing(generation + 1),
            "a stale generation records nothing"
        );
        assert!(state.mark_drain_closing(generation));
        assert!(!state.takes_stuck_clients());
        assert!(state.mark_drain_ended(generation, 1234));
        assert_eq!(
            state.drain_progress(),
            Some(DrainProgress {
                closing: true,
                ended_unix_ms: Some(1234)
            })
        );
        let ready = state.set_admin(AdminState::Ready).unwrap();
        assert!(state.takes_stuck_clients());
        assert_eq!(state.drain_progress(), None);
        assert!(!state.mark_drain_ended(ready, 99), "nothing ends while ready");
        let again = state.set_admin(AdminState::Drain).unwrap();
        assert!(state.takes_stuck_clients(), "a new drain starts over");
        assert_eq!(
            state.drain_progress(),
            Some(DrainProgress {
                closing: false,
                ended_unix_ms: None
            })
        );
        assert!(state.mark_drain_closing(again));
        assert!(!state.takes_stuck_clients());
    }

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
