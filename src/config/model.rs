//! The validated model: what `config::parse` and `load_file` return and
//! `Snapshot::build` reads. Defaults are filled in, names are resolved to
//! indexes, addresses to socket addresses, TLS files to rustls objects, and
//! every choice is an enum; nothing here carries a span or a serde type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::condition::Condition;
pub use super::header_rules::HeaderRules;
use super::rate::ConfigRate;
pub use super::types::TunnelEngine;
use super::types::{AdminState, Balance, CookieMode, ForwardHeader, MatchSource, SameSite, ServerSource, StatusRange};
use crate::cidr::Cidr;
use crate::origin::OriginPattern;
use crate::proxy_header::ProxyVersion;
use crate::tls::{ServerTls, UpstreamTls};

/// Index of a backend in `Config::backends` (and in the snapshot built from it).
pub type BackendId = usize;

/// A whole configuration that passed every check. Cloned when servers
/// found in DNS are added to the file's (`discovery`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads; `None` asks for one per core (known only at start).
    pub workers: Option<usize>,
    /// How long a graceful stop waits for open connections.
    pub shutdown_grace: Duration,
    /// Public listeners, in file order.
    pub frontends: Vec<Frontend>,
    /// Backends, in file order; routes name them by index.
    pub backends: Vec<Backend>,
    /// The admin listener, if the file has `[admin]`.
    pub admin: Option<Admin>,
    /// Shared mode through Redis, if the file has `[cluster]`.
    pub cluster: Option<Cluster>,
    /// The DNS resolver of discovery and re-resolution (`[resolver]`); the system's when `None`.
    pub resolver: Option<Resolver>,
    /// What the access log writes.
    pub log: Log,
    /// Where servers added through the API and operator states are kept
    /// across restarts without a cluster (`state_file`); nowhere when `None`.
    pub state_file: Option<PathBuf>,
    /// OpenTelemetry export (`[tracing]`); no spans when `None`.
    pub tracing: Option<Tracing>,
    /// What carries established tunnels (`[tunnel] engine`).
    pub tunnel_engine: TunnelEngine,
}

/// Where and how spans are exported (`[tracing]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The OTLP/HTTP URL spans are posted to: the configured base with `/v1/traces`.
    pub traces_url: http::Uri,
    /// Share of new traces sampled, 0.0 to 1.0 (a client's `traceparent` decides for its own).
    pub sample_ratio: f64,
    /// The spans' `service.name`.
    pub service_name: String,
    /// The longest a finished span waits before its batch is posted.
    pub batch_delay: Duration,
}

// --- DNS discovery ---

/// The nameservers asked for discovered and re-resolved servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// Nameservers, asked in order (at least one).
    pub nameservers: Vec<SocketAddr>,
    /// Limit of one lookup.
    pub timeout: Duration,
}

/// Where a backend finds servers in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Discover {
    /// Every A/AAAA record of `name` is a server on `port`.
    Dns {
        /// The name looked up.
        name: String,
        /// The servers' port.
        port: u16,
        /// Time between lookups.
        interval: Duration,
    },
    /// Every SRV record of `name` gives a target (its A/AAAA records), a port and a weight.
    Srv {
        /// The SRV name (`_service._proto.name`).
        name: String,
        /// Time between lookups.
        interval: Duration,
    },
}

impl Discover {
    /// Time between two lookups.
    pub fn interval(&self) -> Duration {
        match self {
            Discover::Dns { interval, .. } | Discover::Srv { interval, .. } => *interval,
        }
    }
}

/// Settings given to every discovered server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerDefaults {
    /// Weight of an A/AAAA-discovered server (SRV records carry their own).
    pub weight: u32,
    /// `maxconn` of each, if capped.
    pub maxconn: Option<u32>,
}

/// A written server whose address is a host name looked up again every
/// `resolve_interval`: it joins the backend once the first lookup answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedServer {
    /// Its name, as written.
    pub name: String,
    /// The host name looked up.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Weight, as written.
    pub weight: u32,
    /// `maxconn`, as written.
    pub maxconn: Option<u32>,
    /// Cookie id, as written.
    pub cookie: Option<String>,
    /// Admin state, as written.
    pub state: AdminState,
    /// The PROXY header toward it (its own `send_proxy`, else the backend's).
    pub send_proxy: Option<ProxyVersion>,
}

/// The access log's settings (`[log]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    /// Query parameters whose values are written as `REDACTED`.
    pub redact_query: Vec<String>,
    /// Where lines go (`None`: the process default, standard error).
    pub access: Option<crate::access_log::Destination>,
    /// How lines are written (`None`: the process default, `text` or `--log-format json`).
    pub format: Option<crate::access_log::Format>,
}

/// Let's Encrypt's production directory, the default `directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Which ACME challenge proves control of the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737), answered on the TLS frontend itself: no port 80 needed.
    TlsAlpn01,
    /// HTTP-01 (RFC 8555 §8.3), answered on any plain frontend (port 80).
    Http01,
}

/// A frontend's `tls.acme` block, checked.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The certificate's names, lowercase, in config order (the first names the cache files).
    pub domains: Vec<String>,
    /// The account's contact URL (`mailto:`), if given.
    pub contact: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM CA for the directory's HTTPS (else the system's roots).
    pub directory_ca: Option<std::path::PathBuf>,
    /// The cache directory (account key and certificates).
    pub cache: std::path::PathBuf,
    /// The challenge type answered.
    pub challenge: AcmeChallenge,
}

/// The admin listener's settings.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Its own address (loopback unless it has users).
    pub bind: SocketAddr,
    /// Who may log in; no login is asked when empty.
    pub users: Vec<AdminUser>,
    /// Client addresses allowed at all; every address when empty.
    pub allow: Vec<Cidr>,
    /// Client addresses that may read `/metrics` without logging in.
    pub metrics_allow: Vec<Cidr>,
    /// Host names it answers for besides its address and `localhost` (lowercase, no trailing dot).
    pub hosts: Vec<String>,
    /// Its TLS certificates; plain HTTP when `None`.
    pub tls: Option<ServerTls>,
}

impl Admin {
    /// Whether client address `ip` may use the admin listener at all.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// One admin login.
#[derive(Debug, Clone)]
pub struct AdminUser {
    /// The login name (no `:`).
    pub name: String,
    /// Its argon2 hash in PHC form.
    pub password_hash: String,
}

/// Several instances sharing state through Redis. Its `Debug` masks the
/// password (the URL's too) and the secret, so a logged config leaks neither.
#[derive(Clone)]
pub struct Cluster {
    /// `redis://…`, `rediss://…` or `redis+sentinel://…`, checked to be usable.
    pub redis: String,
    /// Password that wins over the URL's.
    pub password: Option<String>,
    /// CA of Redis's certificate (`rediss://` only); bundled roots when `None`.
    pub tls_ca_file: Option<PathBuf>,
    /// This instance's name; derived from host name and port at start when `None`.
    pub instance: Option<String>,
    /// Prefix of every Redis key and channel.
    pub prefix: String,
    /// Limit of every Redis call.
    pub timeout: Duration,
    /// Period of the load publication.
    pub sync_interval: Duration,
    /// Least period between two TTL refreshes of one stick entry.
    pub stick_refresh: Duration,
    /// Key signing every value written to Redis; unsigned data is ignored when set.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MASK: &str = "****";
        f.debug_struct("Cluster")
            .field("redis", &url_without_password(&self.redis))
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("instance", &self.instance)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("sync_interval", &self.sync_interval)
            .field("stick_refresh", &self.stick_refresh)
            .field("secret", &self.secret.as_ref().map(|_| MASK))
            .finish()
    }
}

/// `url` with the password of its userinfo (`scheme://user:password@…`) shown as `****`.
fn url_without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:****{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// One public entry point.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// Unique name.
    pub name: String,
    /// Addresses to listen on (at least one).
    pub binds: Vec<SocketAddr>,
    /// Backend of requests that match no route; they get 503 when `None`.
    pub default_backend: Option<BackendId>,
    /// Ordered rules; the first that matches chooses the backend.
    pub routes: Vec<Route>,
    /// Origins allowed to open WebSockets (every origin when empty).
    pub allowed_origins: Vec<OriginPattern>,
    /// Request size limits.
    pub limits: Limits,
    /// Most client connections open at once; unlimited when `None`.
    pub maxconn: Option<u64>,
    /// Caps per client address.
    pub per_ip: PerIp,
    /// Limits and timers of WebSocket tunnels.
    pub websocket: WebSocket,
    /// Peers whose forwarding and PROXY headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Trusted peers start connections with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Forwarding headers added to requests sent to servers.
    pub forward_headers: Vec<ForwardHeader>,
    /// Keep-alive idle limit between requests.
    pub client_timeout: Duration,
    /// Time allowed for a request head once it started arriving.
    pub http_request_timeout: Duration,
    /// Longest a request under way may move no byte on the client side.
    pub client_body_timeout: Duration,
    /// TLS termination, with the certificates read from their files.
    pub tls: Option<ServerTls>,
    /// Automatic certificates for this frontend (its `tls` then serves them).
    pub acme: Option<AcmeSettings>,
    /// `redirect_https`: every request is redirected to https.
    pub redirect_https: Option<HttpsRedirect>,
    /// `Strict-Transport-Security` value (TLS frontends only).
    pub hsts: Option<HeaderValue>,
    /// Whether clients may speak HTTP/2 (ALPN `h2` with TLS, h2c with prior knowledge without).
    pub http2: bool,
}

/// Where `redirect_https` sends clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// The port written in the location; none (the https default, 443) when `None`.
    pub port: Option<u16>,
}

/// One routing rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// The backend chosen when the rule matches.
    pub backend: BackendId,
    /// At least one must hold (when not empty).
    pub any: Vec<Condition>,
    /// All must hold.
    pub all: Vec<Condition>,
    /// Origins allowed through this rule, overriding the frontend's; the frontend's when `None`.
    pub allowed_origins: Option<Vec<OriginPattern>>,
    /// Headers set and removed on requests through this rule (after the backend's).
    pub request_headers: HeaderRules,
    /// Headers set and removed on server responses through this rule (after the backend's).
    pub response_headers: HeaderRules,
}

/// Size limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, bytes.
    pub max_request_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target, bytes.
    pub max_uri: usize,
    /// Largest request body, bytes; unlimited when `None`.
    pub max_body: Option<u64>,
    /// HTTP/2: most concurrent streams per client connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: largest decoded request header list, bytes.
    pub http2_max_header_list_size: u32,
}

/// Caps per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerIp {
    /// Most connections one address may hold; unlimited when `None`.
    pub max_connections: Option<u32>,
    /// WebSocket handshakes per address and period; unlimited when `None`.
    pub rate: Option<ConfigRate>,
    /// IPv6 clients are counted per network of this prefix length (IPv4 per address).
    pub ipv6_prefix: u8,
}

/// Limits and timers of a frontend's WebSocket tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocket {
    /// Largest client frame payload; unlimited when `None`.
    pub max_frame_size: Option<u64>,
    /// Largest client message payload; unlimited when `None`.
    pub max_message_size: Option<u64>,
    /// Close a silent tunnel with 1001 after this long; only the backend's `tunnel` timeout when `None`.
    pub idle_timeout: Option<Duration>,
    /// Ping a client silent for this long; no pings when `None`.
    pub ping_interval: Option<Duration>,
    /// How long a pinged client has to answer (`ping_interval` unless given); `None` without pings.
    pub ping_timeout: Option<Duration>,
    /// Most client messages per period in one tunnel (Close 1008 beyond); unlimited when `None`.
    pub max_messages: Option<ConfigRate>,
    /// Longest a tunnel may stay open (Close 1001 "max lifetime" at the limit); unlimited when `None`.
    pub max_lifetime: Option<Duration>,
    /// How much shorter than `max_lifetime` a tunnel's own limit may be (zero without jitter).
    pub lifetime_jitter: Duration,
}

/// A group of servers and how requests are spread over them.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// The balancing algorithm.
    pub balance: Balance,
    /// The parameter, header or cookie hashed by `url_param`, `header`, `cookie` (`None` for the others).
    pub hash_key: Option<String>,
    /// How a hashing balance maps keys to servers.
    pub hash: Hashing,
    /// Stickiness, asked before the algorithm.
    pub sticky: Option<Sticky>,
    /// A stuck client whose server is unavailable goes to another one.
    pub redispatch: bool,
    /// Stuck clients are refused by `maxconn` too.
    pub sticky_respects_maxconn: bool,
    /// Otherwise stuck clients may exceed `maxconn` by this percent of it.
    pub sticky_maxconn_margin: u32,
    /// Other servers to try after a failed connect.
    pub retries: u32,
    /// How long a request waits for a slot (the connect timeout unless given; zero: no queue).
    pub queue_timeout: Duration,
    /// A server coming up ramps its weight over this long; at once when `None`.
    pub slowstart: Option<Duration>,
    /// How long a drained server's tunnels may stay open.
    pub drain_timeout: Duration,
    /// Over how long their closes are spread.
    pub drain_spread: Duration,
    /// A draining server still takes clients stuck to it.
    pub drain_sticky: bool,
    /// Over how long the tunnels of a server found down are closed.
    pub down_spread: Duration,
    /// TCP connect limit.
    pub connect_timeout: Duration,
    /// Time for a server to start its response.
    pub server_timeout: Duration,
    /// Idle limit of a WebSocket tunnel.
    pub tunnel_timeout: Duration,
    /// Longest a response body may get no byte from its server.
    pub server_body_timeout: Duration,
    /// Active health checks; servers are always up when `None`.
    pub health: Option<Health>,
    /// The servers, in file order (none only with `discover` or `resolve_interval`).
    pub servers: Vec<Server>,
    /// Servers found in DNS, if any.
    pub discover: Option<Discover>,
    /// Settings of discovered servers.
    pub server_defaults: ServerDefaults,
    /// How often `named_servers` are looked up again; `None`: names resolved at load.
    pub resolve_interval: Option<Duration>,
    /// Written servers with a host name, with `resolve_interval` (not in `servers`).
    pub named_servers: Vec<NamedServer>,
    /// Evening out long-lived connections after scale-out; off when `None`.
    pub rebalance: Option<Rebalance>,
    /// The PROXY header toward servers without their own `send_proxy` (discovered and API servers too).
    pub send_proxy: Option<ProxyVersion>,
    /// Headers set and removed on requests sent to the servers (after the forwarding headers).
    pub request_headers: HeaderRules,
    /// Headers set and removed on the servers' responses.
    pub response_headers: HeaderRules,
}

/// `rebalance`: when a server holds more than `max_skew` times the mean of
/// the backend's ready servers, its oldest tunnels are closed with 1012 (at
/// most `rate`), `settle` after the server set last changed, down to the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebalance {
    /// The skew over the mean that starts a round (above 1.0).
    pub max_skew: f64,
    /// Most sheds per period (`count` per `per`: one second or one minute).
    pub rate: crate::config::ConfigRate,
    /// Quiet time after the server set changed; tunnels younger than this are never shed.
    pub settle: Duration,
}

impl Rebalance {
    /// The rate as sheds per second (for the API).
    pub fn rate_per_s(&self) -> f64 {
        f64::from(self.rate.count) / self.rate.per.as_secs_f64().max(f64::EPSILON)
    }
}

/// How a hashing balance maps a key's hash to a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hashing {
    /// Hash modulo the total weight.
    Map,
    /// A ring with virtual nodes.
    Consistent {
        /// Bound on a server's load as a multiple of the average; unbounded when `None`.
        balance_factor: Option<f64>,
    },
    /// Google's Maglev lookup table.
    Maglev {
        /// The table size, a prime (default 65537).
        table_size: usize,
        /// Bound on a server's load as a multiple of the average; unbounded when `None`.
        balance_factor: Option<f64>,
    },
}

/// One backend server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Unique name within the backend.
    pub name: String,
    /// Where to connect, resolved.
    pub address: SocketAddr,
    /// Relative share of new traffic (0 to `MAX_WEIGHT`).
    pub weight: u32,
    /// Most active requests and tunnels; unlimited when `None`.
    pub maxconn: Option<u32>,
    /// Its id in a stickiness cookie; derived from the name when `None`.
    pub cookie: Option<String>,
    /// The operator's intent.
    pub state: AdminState,
    /// TLS toward the server (its own `tls` or the backend's), with its SNI name; plain TCP when `None`.
    pub tls: Option<UpstreamTls>,
    /// Where it came from (the file, DNS, the admin API).
    pub source: ServerSource,
    /// Deleted through the API and draining: it takes no new client, not
    /// even a stuck one, and leaves the backend once it holds no connection.
    pub leaving: bool,
    /// The PROXY header written at the start of each connection (its own
    /// `send_proxy`, else the backend's); none when `None`.
    pub send_proxy: Option<ProxyVersion>,
}

/// Stickiness of a backend: a cookie, learned session ids, or both.
#[derive(Debug, Clone)]
pub struct Sticky {
    /// Cookie stickiness, when `cookie` is set.
    pub cookie: Option<StickyCookie>,
    /// Response cookie to learn ids from (`io` by default with the Engine.IO preset).
    pub learn_cookie: Option<String>,
    /// Response header to learn ids from.
    pub learn_header: Option<HeaderName>,
    /// Where requests carry learned ids, tried in order (the Engine.IO
    /// preset adds `?sid=` and the `io` cookie after the operator's own).
    pub matches: Vec<MatchSource>,
    /// `preset = "engine.io"`: learn the `sid` of Engine.IO handshakes.
    pub engine_io: bool,
    /// A learned id unused for this long is forgotten.
    pub idle_timeout: Duration,
    /// Most learned ids kept.
    pub max_entries: usize,
}

/// The stickiness cookie and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    /// The cookie's name.
    pub name: String,
    /// Whether tether inserts its own cookie or prefixes the server's.
    pub mode: CookieMode,
    /// `insert`: the cookie is removed before requests reach the server.
    pub indirect: bool,
    /// `insert`: responses setting it are marked uncacheable.
    pub nocache: bool,
    /// `Path` attribute.
    pub path: String,
    /// `Domain` attribute, if any.
    pub domain: Option<String>,
    /// `Max-Age` attribute; a session cookie when `None`.
    pub max_age: Option<Duration>,
    /// `HttpOnly` attribute.
    pub httponly: bool,
    /// `Secure`: always or never; on TLS frontends only when `None`.
    pub secure: Option<bool>,
    /// `SameSite` attribute, if any.
    pub samesite: Option<SameSite>,
    /// `opaque`: the secret the server ids are hashed with; plain ids when `None`.
    pub opaque_secret: Option<String>,
}

/// Health checks of a backend's servers.
#[derive(Debug, Clone)]
pub struct Health {
    /// What one check does.
    pub check: Check,
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Limit of one check (the smaller of 1s and `interval` unless given).
    pub timeout: Duration,
    /// Consecutive passes that bring a server up.
    pub rise: u32,
    /// Consecutive failures that take it down.
    pub fall: u32,
    /// Failed connects of live traffic count toward `fall`.
    pub observe: bool,
    /// Checks start with the PROXY header of each server's `send_proxy` version.
    pub send_proxy: bool,
}

/// What one health check does, with the keys of its kind.
#[derive(Debug, Clone)]
pub enum Check {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 request.
    Http(HttpCheck),
    /// A WebSocket handshake.
    WebSocket {
        /// The request target.
        path: String,
        /// The Host header; the server's `ip:port` when `None`.
        host: Option<String>,
    },
}

/// The request and expectations of an HTTP check.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// The method sent.
    pub method: Method,
    /// The request target (path and query).
    pub path: String,
    /// The Host header; the server's `ip:port` when `None`.
    pub host: Option<String>,
    /// Statuses that pass.
    pub expect_status: StatusRange,
    /// A substring the first `CHECK_BODY_LIMIT` bytes of the body must contain, if any.
    pub expect_body: Option<String>,
}

impl Check {
    /// The kind's name, as in the config and in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Tcp => "tcp",
            Check::Http(_) => "http",
            Check::WebSocket { .. } => "websocket",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_debug_shows_neither_password_nor_secret() {
        let cluster = Cluster {
            redis: "redis+sentinel://:hunter2@h1:26379,h2/mymaster/0".into(),
            password: Some("s3cret-pass".into()),
            tls_ca_file: None,
            instance: Some("a".into()),
            prefix: "tether:".into(),
            timeout: Duration::from_secs(1),
            sync_interval: Duration::from_secs(1),
            stick_refresh: Duration::from_secs(1),
            secret: Some("signing-key".into()),
        };
        let shown = format!("{cluster:?}");
        for hidden in ["hunter2", "s3cret-pass", "signing-key"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(
            shown.contains("redis+sentinel://:****@h1:26379,h2/mymaster/0"),
            "{shown}"
        );
        assert_eq!(url_without_password("redis://user@h/0"), "redis://user@h/0");
        assert_eq!(url_without_password("rediss://u:p@h:6380"), "rediss://u:****@h:6380");
    }
}
