//! The immutable runtime model every request is decided from: frontends with
//! compiled rules, backends with their algorithm, servers with live state.
//!
//! A reload builds a new `Snapshot` and swaps it in; running requests and
//! tunnels keep the one they started with. Live per-server state is carried
//! from the old snapshot to the new one by backend and server name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::balance::{self, Balancer, Candidate, KeySource};
use crate::config::model;
use crate::config::types::ForwardHeader;
use crate::config::Config;
use crate::health::HealthCheck;
use crate::route::{Condition, Route};
use crate::state::ServerState;
use crate::sticky::{StickyPolicy, StuckMaxconn};

pub use crate::route::BackendId;

/// Everything a request needs to be routed and balanced.
pub struct Snapshot {
    /// Public listeners and their rules.
    pub frontends: Vec<Frontend>,
    /// Backends, referenced by index from routes.
    pub backends: Vec<Backend>,
    /// Worker threads requested (`None`: one per core).
    pub workers: Option<usize>,
    /// How long a graceful stop waits for open connections.
    pub shutdown_grace: Duration,
    /// The `[admin]` settings (users, allow-lists), if any.
    pub admin: Option<Arc<AdminSettings>>,
    /// Query parameters the access log writes as `REDACTED` (`[log] redact_query`).
    pub redact_query: Arc<[Box<str>]>,
    /// The access log's format and sink (`[log] access`, `log_format`); the
    /// sink carries over from the previous snapshot when it writes to the same place.
    pub access_log: Arc<crate::access_log::Logger>,
    /// What carries tunnels opened from this snapshot (`[tunnel] engine`).
    pub tunnel_engine: crate::config::TunnelEngine,
}

/// A public listener's routing and client-side settings.
pub struct Frontend {
    /// Name for logs (shared, so a log line costs no copy).
    pub name: Arc<str>,
    /// Addresses to listen on.
    pub binds: Vec<SocketAddr>,
    /// Ordered rules.
    pub routes: Vec<Route>,
    /// Backend when no rule matches.
    pub default_backend: Option<BackendId>,
    /// Forwarding headers to add.
    pub forward: Vec<ForwardHeader>,
    /// Live counters, carried across reloads by name.
    pub state: Arc<crate::state::FrontendState>,
    /// Origins allowed to open WebSockets (empty: any), unless a route says otherwise.
    pub allowed_origins: Vec<crate::origin::OriginPattern>,
    /// Request size limits.
    pub limits: Limits,
    /// Most connections open at once, if capped.
    pub maxconn: Option<u64>,
    /// Most connections per client address, if capped.
    pub per_ip_connections: Option<u32>,
    /// WebSocket handshakes allowed per client address, if limited.
    pub per_ip_rate: Option<crate::config::ConfigRate>,
    /// IPv6 clients are counted per network of this prefix length.
    pub per_ip_ipv6_prefix: u8,
    /// Idle, ping and ping-timeout settings of the frontend's tunnels.
    pub websocket_timers: Timers,
    /// Largest client frame and message payloads in tunnels, if limited.
    pub websocket_limits: Option<(u64, u64)>,
    /// Most client messages per period in each tunnel, if limited.
    pub websocket_max_messages: Option<crate::config::ConfigRate>,
    /// Peers whose `X-Forwarded-For` / PROXY header name the real client.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// Trusted peers send a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// Keep-alive idle limit between requests.
    pub client_timeout: Duration,
    /// Time allowed for a request head once it started arriving.
    pub http_request_timeout: Duration,
    /// Longest a request under way may move no byte on the client side.
    pub client_body_timeout: Duration,
    /// TLS termination: each connection accepted from now on shakes hands
    /// with these certificates (a reload replaces them for new connections only).
    pub tls: Option<crate::tls::ServerTls>,
    /// `redirect_https`: every request gets 308 to https, on this port (`None`: 443).
    pub redirect_https: Option<Option<u16>>,
    /// `Strict-Transport-Security` added to every response (TLS frontends only).
    pub hsts: Option<http::HeaderValue>,
    /// Whether clients may speak HTTP/2 (see the config model's `http2`).
    pub http2: bool,
}

/// The frontend's WebSocket timers for its tunnels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// Close with 1001 after this long without a byte either way (if shorter
    /// than the backend's `tunnel` timeout, which closes without a Close frame).
    pub idle: Option<Duration>,
    /// Ping a client that sent nothing for this long.
    pub ping_interval: Option<Duration>,
    /// How long a pinged client has to send anything before the tunnel is closed with 1001.
    pub ping_timeout: Option<Duration>,
    /// Longest a tunnel may stay open (`websocket.max_lifetime`); no limit when `None`.
    pub max_lifetime: Option<Duration>,
    /// How much shorter than `max_lifetime` one tunnel's own limit may be.
    pub lifetime_jitter: Duration,
}

impl Timers {
    /// One tunnel's lifetime limit for a draw `unit` in [0, 1): uniform in
    /// `[max_lifetime - lifetime_jitter, max_lifetime]`, so `max_lifetime`
    /// stays a hard bound (no tunnel is older) and tunnels opened together
    /// are closed spread over the jitter. `None` without `max_lifetime`.
    pub fn lifetime(&self, unit: f64) -> Option<Duration> {
        let max = self.max_lifetime?;
        let jitter = self.lifetime_jitter.min(max);
        Some(max - jitter.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

/// Size limits on what a client may send: the config model's, as they are.
pub use crate::config::model::Limits;

/// A group of servers with its algorithm.
pub struct Backend {
    /// Name for logs (shared, so a log line costs no copy).
    pub name: Arc<str>,
    /// The servers, in config order.
    pub servers: Vec<Server>,
    /// Server index by name (stick tables store names, which survive reloads).
    pub server_index: HashMap<Arc<str>, usize>,
    /// Stickiness, asked before the algorithm.
    pub sticky: Option<StickyPolicy>,
    /// What each algorithm sees of the servers (same order as `servers`).
    pub candidates: Vec<Candidate>,
    /// The algorithm.
    pub balancer: Box<dyn Balancer>,
    /// Where a hashing algorithm's key comes from.
    pub key_source: KeySource,
    /// Other servers to try after a failed connect.
    pub retries: u32,
    /// TCP connect limit.
    pub connect_timeout: Duration,
    /// Time for a server to start its response.
    pub server_timeout: Duration,
    /// Idle limit of a WebSocket tunnel.
    pub tunnel_timeout: Duration,
    /// Longest a response body may get no byte from its server.
    pub server_body_timeout: Duration,
    /// How long a request may wait for a free slot (zero: no queue).
    pub queue_timeout: Duration,
    /// How long a drained server's tunnels may stay open.
    pub drain_timeout: Duration,
    /// Over how long drained tunnels' closes are spread.
    pub drain_spread: Duration,
    /// A draining server still takes clients stuck to it.
    pub drain_sticky: bool,
    /// Over how long the tunnels of a server found down are closed.
    pub down_spread: Duration,
    /// Health checks; `None`: the servers are always up.
    pub health: Option<Arc<HealthCheck>>,
    /// Requests waiting in the queue for a slot now.
    pub queued: std::sync::atomic::AtomicU32,
    /// How long requests that queued for a server slot waited (carried across reloads).
    pub queue_waits: Arc<crate::state::latency::Latency>,
    /// Evening out tunnels after the server set changed; off when `None`.
    pub rebalance: Option<crate::config::model::Rebalance>,
    /// Where rebalancing stands (carried across reloads by backend name):
    /// a client stuck to a server it sheds from is balanced elsewhere.
    pub rebalance_state: Arc<crate::state::RebalanceState>,
    /// Headers set and removed on requests sent to the servers (before a route's own rules).
    pub request_headers: crate::config::HeaderRules,
    /// Headers set and removed on the servers' responses (before a route's own rules).
    pub response_headers: crate::config::HeaderRules,
}

/// One server of a backend.
pub struct Server {
    /// Name for logs (shared, so a log line costs no copy).
    pub name: Arc<str>,
    /// Where to connect.
    pub address: SocketAddr,
    /// `maxconn`, if any.
    pub maxconn: Option<u32>,
    /// Id in a stickiness cookie.
    pub cookie: Option<String>,
    /// Live state shared across snapshots.
    pub state: Arc<ServerState>,
    /// TLS toward the server (`tls = true`), with its SNI name; plain TCP when `None`.
    pub tls: Option<crate::tls::UpstreamTls>,
    /// The weight the config gives; written to the live state when the
    /// snapshot is applied (the admin API may change the live one later).
    pub configured_weight: u32,
    /// The admin state the config gives; applied like the weight (the
    /// config's wins at every load, as in HAProxy without a state file,
    /// unless a cluster peer's operator change is newer).
    pub configured_admin: crate::config::types::AdminState,
    /// Where it came from: the file, DNS or the admin API.
    pub source: crate::config::types::ServerSource,
    /// Deleted through the admin API and draining: no new client, not even
    /// a stuck one; it leaves the backend once it holds no connection.
    pub leaving: bool,
    /// The PROXY header written at the start of each connection to it; none when `None`.
    pub send_proxy: Option<crate::proxy_header::ProxyVersion>,
}

impl Server {
    /// The TLS name the server is reached with (`None`: plain TCP): when it
    /// changes, idle keep-alive connections speak the old setting.
    pub fn tls_name(&self) -> Option<&rustls::pki_types::ServerName<'static>> {
        self.tls.as_ref().map(|t| &t.server_name)
    }
}

/// The `[admin]` settings in force: the config model's, as they are.
pub use crate::config::model::Admin as AdminSettings;

impl Snapshot {
    /// Builds the runtime model from a validated config, reusing the live
    /// state of servers that `previous` already had (same backend and server name).
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
        let backends = config
            .backends
            .iter()
            .map(|b| build_backend(b, previous.and_then(|p| p.backend(&b.name))))
            .collect();
        let frontends = config
            .frontends
            .iter()
            .map(|f| Frontend {
                name: Arc::from(f.name.as_str()),
                binds: f.binds.clone(),
                routes: f
                    .routes
                    .iter()
                    .map(|r| Route {
                        backend: r.backend,
                        any: r.any.iter().map(Condition::from_config).collect(),
                        all: r.all.iter().map(Condition::from_config).collect(),
                        allowed_origins: r.allowed_origins.clone(),
                        request_headers: r.request_headers.clone(),
                        response_headers: r.response_headers.clone(),
                    })
                    .collect(),
                default_backend: f.default_backend,
                forward: f.forward_headers.clone(),
                state: previous
                    .and_then(|p| p.frontend(&f.name))
                    .map(|old| old.state.clone())
                    .unwrap_or_default(),
                trusted_proxies: f.trusted_proxies.clone(),
                allowed_origins: f.allowed_origins.clone(),
                websocket_limits: match (f.websocket.max_frame_size, f.websocket.max_message_size) {
                    (None, None) => None,
                    (frame, message) => Some((frame.unwrap_or(u64::MAX), message.unwrap_or(u64::MAX))),
                },
                websocket_max_messages: f.websocket.max_messages,
                limits: f.limits,
                maxconn: f.maxconn,
                per_ip_connections: f.per_ip.max_connections,
                per_ip_rate: f.per_ip.rate,
                per_ip_ipv6_prefix: f.per_ip.ipv6_prefix,
                websocket_timers: Timers {
                    idle: f.websocket.idle_timeout,
                    ping_interval: f.websocket.ping_interval,
                    ping_timeout: f.websocket.ping_timeout,
                    max_lifetime: f.websocket.max_lifetime,
                    lifetime_jitter: f.websocket.lifetime_jitter,
                },
                proxy_protocol: f.proxy_protocol,
                client_timeout: f.client_timeout,
                http_request_timeout: f.http_request_timeout,
                client_body_timeout: f.client_body_timeout,
                tls: f.tls.clone(),
                redirect_https: f.redirect_https.map(|r| r.port),
                hsts: f.hsts.clone(),
                http2: f.http2,
            })
            .collect();
        Snapshot {
            frontends,
            backends,
            workers: config.workers,
            shutdown_grace: config.shutdown_grace,
            admin: config.admin.clone().map(Arc::new),
            redact_query: config.log.redact_query.iter().map(|p| Box::from(p.as_str())).collect(),
            access_log: Arc::new(crate::access_log::Logger::resolve(
                config.log.format.as_ref(),
                config.log.access.as_ref(),
                previous.map(|p| &*p.access_log),
            )),
            tunnel_engine: config.tunnel_engine,
        }
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    /// The frontend named `name`.
    pub fn frontend(&self, name: &str) -> Option<&Frontend> {
        self.frontends.iter().find(|f| &*f.name == name)
    }

    /// The index of the frontend named `name`.
    pub fn frontend_index(&self, name: &str) -> Option<usize> {
        self.frontends.iter().position(|f| &*f.name == name)
    }
}

fn build_backend(config: &model::Backend, previous: Option<&Backend>) -> Backend {
    let health = config.health.as_ref().map(HealthCheck::from_config).map(Arc::new);
    let servers: Vec<Server> = config
        .servers
        .iter()
        .map(|s| {
            let name: Arc<str> = Arc::from(s.name.as_str());
            let state = previous
                .and_then(|p| {
                    p.servers
                        .iter()
                        .find(|old| *old.name == *name && old.address == s.address)
                })
                .map(|old| old.state.clone())
                // A new server with checks takes no traffic before one passed.
                .unwrap_or_else(|| match health {
                    Some(_) => Arc::new(ServerState::awaiting_first_check(s.weight)),
                    None => Arc::new(ServerState::new(s.weight)),
                });
            Server {
                name,
                address: s.address,
                configured_weight: s.weight,
                configured_admin: s.state,
                maxconn: s.maxconn,
                cookie: s.cookie.clone(),
                state,
                tls: s.tls.clone(),
                source: s.source,
                leaving: s.leaving,
                send_proxy: s.send_proxy,
            }
        })
        .collect();
    let candidates = servers
        .iter()
        .map(|s| Candidate {
            state: s.state.clone(),
            maxconn: s.maxconn,
            slowstart: config.slowstart,
        })
        .collect();
    let weights: Vec<(&str, u32)> = config.servers.iter().map(|s| (s.name.as_str(), s.weight)).collect();
    let server_index = servers.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    let sticky = config.sticky.as_ref().map(|sticky| {
        let ids: Vec<(&str, Option<&str>)> = config
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.cookie.as_deref()))
            .collect();
        let previous_table = previous.and_then(|p| p.sticky.as_ref()).and_then(|p| p.table.clone());
        StickyPolicy::build(
            sticky,
            &ids,
            previous_table,
            config.redispatch,
            StuckMaxconn::of(config.sticky_respects_maxconn, config.sticky_maxconn_margin),
        )
    });
    Backend {
        server_index,
        sticky,
        name: Arc::from(config.name.as_str()),
        balancer: balance::build(config.balance, config.hash, &weights),
        key_source: KeySource::new(config.balance, config.hash_key.as_deref()),
        servers,
        candidates,
        retries: config.retries,
        connect_timeout: config.connect_timeout,
        server_timeout: config.server_timeout,
        tunnel_timeout: config.tunnel_timeout,
        server_body_timeout: config.server_body_timeout,
        queue_timeout: config.queue_timeout,
        drain_timeout: config.drain_timeout,
        drain_spread: config.drain_spread,
        drain_sticky: config.drain_sticky,
        down_spread: config.down_spread,
        health,
        queued: std::sync::atomic::AtomicU32::new(0),
        queue_waits: previous.map(|p| p.queue_waits.clone()).unwrap_or_default(),
        rebalance: config.rebalance,
        rebalance_state: previous.map(|p| p.rebalance_state.clone()).unwrap_or_default(),
        request_headers: config.request_headers.clone(),
        response_headers: config.response_headers.clone(),
    }
}

/// How a drained server's tunnels close: after `timeout`, spread over `spread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTiming {
    /// How long the tunnels may stay open after the drain began.
    pub timeout: Duration,
    /// Over how long their closes are spread.
    pub spread: Duration,
    /// Whether clients stuck to the server may come back until `timeout`
    /// (`drain_sticky`); if not, the drain is over as soon as it holds nothing.
    pub sticky: bool,
}

impl Backend {
    /// The backend's drain timing.
    pub fn drain_timing(&self) -> DrainTiming {
        DrainTiming {
            timeout: self.drain_timeout,
            spread: self.drain_spread,
            sticky: self.drain_sticky,
        }
    }
}

/// A server the new snapshot no longer has (removed, or moved to another
/// address): it is drained with its old backend's timing.
#[derive(Debug)]
pub struct RemovedServer {
    /// `backend/server`, for the log.
    pub name: String,
    /// Its live state (tunnels may still be open on it).
    pub state: Arc<ServerState>,
    /// How its tunnels close.
    pub drain: DrainTiming,
}

/// What a reload changes, computed purely from the running snapshot and
/// the new one, before anything is applied; logged after the swap.
#[derive(Debug, Default)]
pub struct Diff {
    /// Frontends new in this snapshot.
    pub frontends_added: Vec<Arc<str>>,
    /// Frontends it no longer has.
    pub frontends_removed: Vec<Arc<str>>,
    /// Backends new in this snapshot.
    pub backends_added: Vec<Arc<str>>,
    /// Backends it no longer has.
    pub backends_removed: Vec<Arc<str>>,
    /// `backend/server` of servers new in this snapshot.
    pub servers_added: Vec<String>,
    /// Servers it no longer has: they are drained.
    pub servers_removed: Vec<RemovedServer>,
    /// `backend/server` of carried-over servers whose configured weight,
    /// admin state, `maxconn`, cookie id or TLS setting changed.
    pub servers_changed: Vec<String>,
    /// Carried-over servers now reached with another TLS setting: their
    /// idle keep-alive connections speak the old one and must go.
    pub reached_differently: Vec<Arc<ServerState>>,
}

impl Diff {
    /// The changes from `previous` to `next`. Pure: reads both, touches neither.
    pub fn between(previous: &Snapshot, next: &Snapshot) -> Diff {
        let mut diff = Diff::default();
        let names = |frontends: &[Frontend]| frontends.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        let (old_fronts, new_fronts) = (names(&previous.frontends), names(&next.frontends));
        diff.frontends_added = new_fronts.iter().filter(|n| !old_fronts.contains(n)).cloned().collect();
        diff.frontends_removed = old_fronts.iter().filter(|n| !new_fronts.contains(n)).cloned().collect();
        for backend in &next.backends {
            let Some(old) = previous.backend(&backend.name) else {
                diff.backends_added.push(backend.name.clone());
                continue;
            };
            for server in &backend.servers {
                let name = format!("{}/{}", backend.name, server.name);
                match old.servers.iter().find(|s| Arc::ptr_eq(&s.state, &server.state)) {
                    None => diff.servers_added.push(name),
                    Some(before) => {
                        if before.tls_name() != server.tls_name() {
                            diff.reached_differently.push(server.state.clone());
                        }
                        if configured_differently(before, server) {
                            diff.servers_changed.push(name);
                        }
                    }
                }
            }
        }
        for backend in &previous.backends {
            if next.backend(&backend.name).is_none() {
                diff.backends_removed.push(backend.name.clone());
            }
            for server in &backend.servers {
                let kept = next
                    .backends
                    .iter()
                    .flat_map(|b| &b.servers)
                    .any(|s| Arc::ptr_eq(&s.state, &server.state));
                if !kept {
                    diff.servers_removed.push(RemovedServer {
                        name: format!("{}/{}", backend.name, server.name),
                        state: server.state.clone(),
                        drain: backend.drain_timing(),
                    });
                }
            }
        }
        diff
    }

    /// Whether the reload changes nothing in the frontend, backend and server tables.
    pub fn is_empty(&self) -> bool {
        self.frontends_added.is_empty()
            && self.frontends_removed.is_empty()
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.servers_added.is_empty()
            && self.servers_removed.is_empty()
            && self.servers_changed.is_empty()
    }
}

/// Whether the config says something else of a carried-over server.
fn configured_differently(before: &Server, after: &Server) -> bool {
    before.configured_weight != after.configured_weight
        || before.configured_admin != after.configured_admin
        || before.maxconn != after.maxconn
        || before.cookie != after.cookie
        || before.tls_name() != after.tls_name()
        || before.leaving != after.leaving
        || before.send_proxy != after.send_proxy
}

impl std::fmt::Display for Diff {
    /// `frontends +a -b; backends +c; servers +web/s3 -web/s1 ~web/s2`, or
    /// `no change to frontends, backends or servers`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no change to frontends, backends or servers");
        }
        let removed: Vec<&str> = self.servers_removed.iter().map(|r| r.name.as_str()).collect();
        let groups = [
            (
                "frontends",
                signed('+', &self.frontends_added)
                    .chain(signed('-', &self.frontends_removed))
                    .collect(),
            ),
            (
                "backends",
                signed('+', &self.backends_added)
                    .chain(signed('-', &self.backends_removed))
                    .collect(),
            ),
            (
                "servers",
                signed('+', &self.servers_added)
                    .chain(signed('-', &removed))
                    .chain(signed('~', &self.servers_changed))
                    .collect::<Vec<String>>(),
            ),
        ];
        let parts: Vec<String> = groups
            .into_iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(label, items)| format!("{label} {}", items.join(" ")))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// Each of `names` with `sign` before it.
fn signed<T: AsRef<str>>(sign: char, names: &[T]) -> impl Iterator<Item = String> + '_ {
    names.iter().map(move |name| format!("{sign}{}", name.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_reads_as_signed_names_per_table() {
        assert_eq!(
            Diff::default().to_string(),
            "no change to frontends, backends or servers"
        );
        let diff = Diff {
            backends_added: vec![Arc::from("api")],
            servers_added: vec!["api/a1".into()],
            servers_removed: vec![RemovedServer {
                name: "web/s1".into(),
                state: Arc::new(ServerState::new(1)),
                drain: DrainTiming {
                    timeout: Duration::from_secs(1),
                    spread: Duration::ZERO,
                    sticky: true,
                },
            }],
            servers_changed: vec!["web/s2".into()],
            ..Diff::default()
        };
        assert_eq!(diff.to_string(), "backends +api; servers +api/a1 -web/s1 ~web/s2");
    }

    #[test]
    fn a_tunnels_lifetime_is_drawn_within_the_jitter_below_the_maximum() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let timers = Timers {
            max_lifetime: Some(minutes(30)),
            lifetime_jitter: minutes(5),
            ..Timers::default()
        };
        assert_eq!(timers.lifetime(0.0), Some(minutes(30)));
        assert_eq!(timers.lifetime(0.5), Some(Duration::from_secs(27 * 60 + 30)));
        let shortest = timers.lifetime(0.999_999).unwrap();
        assert!(shortest >= minutes(25) && shortest < minutes(25) + Duration::from_millis(1));
        assert_eq!(Timers::default().lifetime(0.3), None, "no limit unless configured");
        let fixed = Timers {
            max_lifetime: Some(minutes(1)),
            ..Timers::default()
        };
        assert_eq!(
            fixed.lifetime(0.7),
            Some(minutes(1)),
            "without jitter every tunnel gets the maximum"
        );
    }
}
