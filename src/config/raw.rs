//! The serde shape of the TOML file: what an operator writes, with defaults,
//! as the parser read it (spans kept for errors). Nothing here does I/O.
//!
//! Values that can be checked alone (durations, addresses, regexes, enums,
//! route conditions) are parsed while deserialising, so the TOML parser
//! reports their line and column. Rules that relate several values are
//! checked in `validate`, which turns these types into the `model`; the
//! runtime never sees them.

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::address::Address;
use super::condition::Condition;
use super::duration::ConfigDuration;
use super::header_rules::RawHeaderRules;
use super::types::{
    AdminState, Balance, CheckKind, CookieMode, ForwardHeader, HashMethod, MatchSource, Preset, SameSite, SendProxy,
    StatusRange, TunnelEngine,
};

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads of the runtime; one per core when absent.
    pub workers: Option<Spanned<usize>>,
    /// How long a graceful stop waits for open connections before closing them.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: ConfigDuration,
    /// Public listeners with their routing rules.
    #[serde(default)]
    pub frontend: Vec<Frontend>,
    /// Groups of servers and how to balance between them.
    #[serde(default)]
    pub backend: Vec<Backend>,
    /// The admin listener: stats page, `/metrics` and the JSON API; none when absent.
    pub admin: Option<Spanned<Admin>>,
    /// Shared mode: several instances share stickiness, load and operator
    /// actions through Redis; every instance alone when absent.
    pub cluster: Option<Spanned<Cluster>>,
    /// The DNS resolver of `discover` and `resolve_interval`; the
    /// nameservers of `/etc/resolv.conf` when absent.
    pub resolver: Option<Spanned<Resolver>>,
    /// What the access log writes (`[log]`).
    #[serde(default)]
    pub log: Log,
    /// The JSON file that keeps servers added through the admin API and
    /// operator states across restarts when there is no `[cluster]`
    /// (written atomically, read at start); none when absent.
    pub state_file: Option<Spanned<String>>,
    /// OpenTelemetry spans over OTLP (`[tracing]`); none exported when absent.
    pub tracing: Option<Spanned<Tracing>>,
    /// How established tunnels move their bytes (`[tunnel]`).
    #[serde(default)]
    pub tunnel: Tunnel,
}

/// How established tunnels move their bytes (`[tunnel]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// `"epoll"` (default) or `"io_uring"`.
    #[serde(default)]
    pub engine: TunnelEngine,
}

/// OpenTelemetry spans of requests, handshakes and tunnels, exported over
/// OTLP/HTTP (`[tracing]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans
    /// are posted to `<otlp>/v1/traces`.
    pub otlp: Spanned<String>,
    /// Share of new traces sampled (0.0 to 1.0); a client's sampled or
    /// unsampled `traceparent` is followed whatever the ratio.
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: Spanned<f64>,
    /// The `service.name` of the spans.
    #[serde(default = "defaults::service_name")]
    pub service_name: Spanned<String>,
    /// The longest a finished span waits before its batch is sent.
    #[serde(default = "defaults::batch_delay")]
    pub batch_delay: Spanned<ConfigDuration>,
}

// --- DNS discovery (`[resolver]`, `discover`, `server_defaults`, `resolve_interval`) ---

/// The DNS resolver tether asks for discovered and re-resolved servers (`[resolver]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    /// `ip` or `ip:port` of each nameserver (port 53 when absent); at least one.
    pub nameservers: Spanned<Vec<Spanned<String>>>,
    /// How long one lookup may take.
    #[serde(default = "defaults::resolver_timeout")]
    pub timeout: Spanned<ConfigDuration>,
}

/// Servers found in DNS (`discover = { dns = … }` or `{ srv = … }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// A name whose every A/AAAA record is a server (with `port`).
    pub dns: Option<Spanned<String>>,
    /// An SRV name: each record gives a target, a port and a weight.
    pub srv: Option<Spanned<String>>,
    /// The servers' port with `dns`; SRV records carry their own.
    pub port: Option<Spanned<u16>>,
    /// Time between two lookups.
    #[serde(default = "defaults::discover_interval")]
    pub interval: Spanned<ConfigDuration>,
}

/// Settings of every discovered server (`server_defaults`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDefaults {
    /// Weight of an A/AAAA-discovered server (SRV records carry their own).
    #[serde(default = "defaults::weight")]
    pub weight: Spanned<u32>,
    /// `maxconn` of each discovered server; unlimited when absent.
    pub maxconn: Option<Spanned<u32>>,
}

/// The access log's settings (`[log]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Query parameters whose values the access log replaces with `REDACTED`.
    #[serde(default = "defaults::redact_query")]
    pub redact_query: Vec<Spanned<String>>,
    /// Where lines go: `"stderr"` (default), `"stdout"`, `"off"` or a file.
    pub access: Option<Spanned<String>>,
    /// `"text"`, `"json"` or a template of `$field`s (default: `text`, or
    /// `json` with `--log-format json`).
    pub log_format: Option<Spanned<String>>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            redact_query: defaults::redact_query(),
            access: None,
            log_format: None,
        }
    }
}

/// Several tether instances sharing state through Redis (`[cluster]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[:password@]host:port[/db]`, `rediss://…` (TLS) or
    /// `redis+sentinel://[:password@]h1[:port],h2[:port]/master[/db]` (Sentinel).
    pub redis: Spanned<String>,
    /// Redis password, when it is not in the URL (wins over the URL's).
    pub password: Option<String>,
    /// PEM file of the certificate authority that signed Redis's certificate
    /// (`rediss://` with a private CA); the bundled public roots when absent.
    pub tls_ca_file: Option<Spanned<std::path::PathBuf>>,
    /// This instance's name among the others; host name + `:` + first frontend port when absent.
    pub instance: Option<Spanned<String>>,
    /// Prefix of every Redis key and channel tether uses (several clusters may share one Redis).
    #[serde(default = "defaults::cluster_prefix")]
    pub prefix: String,
    /// Limit of every Redis call; a slower call counts as failed and the request goes on without it.
    #[serde(default = "defaults::cluster_timeout")]
    pub timeout: Spanned<ConfigDuration>,
    /// How often each instance publishes its connection counts and reads the others'.
    #[serde(default = "defaults::cluster_sync_interval")]
    pub sync_interval: Spanned<ConfigDuration>,
    /// A stick entry in use has its Redis TTL refreshed at most this often (and at least 4 times per `idle_timeout`).
    #[serde(default = "defaults::cluster_stick_refresh")]
    pub stick_refresh: ConfigDuration,
    /// Shared secret every instance signs what it writes to Redis with (HMAC-SHA256)
    /// and verifies what it reads; unsigned or badly signed data is ignored.
    pub secret: Option<Spanned<String>>,
}

/// The admin listener's settings (`[admin]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ip:port` of its own listener, never shared with a frontend; without
    /// `users` it must be a loopback address.
    pub bind: Spanned<Address>,
    /// Who may log in (HTTP Basic); without users, no login is asked and only loopback is served.
    #[serde(default)]
    pub users: Vec<Spanned<AdminUser>>,
    /// Client addresses allowed at all; every address when empty.
    #[serde(default)]
    pub allow: Vec<crate::cidr::Cidr>,
    /// Client addresses (scrapers) that may read `/metrics` without a password.
    #[serde(default)]
    pub metrics_allow: Vec<crate::cidr::Cidr>,
    /// Host names (no port) the listener answers for, besides its address
    /// and `localhost`: any other `Host` is refused (DNS rebinding).
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// HTTPS for the listener: the same shape as a frontend's `tls`.
    pub tls: Option<Spanned<FrontendTls>>,
}

/// One admin user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    /// The login name.
    pub name: Spanned<String>,
    /// An argon2 hash in PHC form (`$argon2id$v=19$...`), as `tether hash-password` prints.
    pub password_hash: Spanned<String>,
}

/// One public entry point: addresses to listen on and rules choosing a backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// Unique name used in logs and metrics.
    pub name: Spanned<String>,
    /// `ip:port` addresses to listen on (port 0 picks a free port).
    pub bind: Spanned<Vec<Spanned<Address>>>,
    /// Backend for requests that match no rule; without it they get 503.
    pub default_backend: Option<Spanned<String>>,
    /// Ordered rules; the first that matches chooses the backend.
    #[serde(default)]
    pub route: Vec<Route>,
    /// WebSocket handshakes must come from one of these origins (routes may
    /// override); empty allows every origin.
    #[serde(default)]
    pub allowed_origins: Vec<crate::origin::OriginPattern>,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Most client connections open at once (HTTP and tunnels); beyond it new
    /// connections wait in the kernel's accept backlog. Unlimited when absent.
    pub maxconn: Option<Spanned<u64>>,
    /// Caps per client address.
    #[serde(default)]
    pub per_ip: PerIp,
    /// Limits on WebSocket frames and messages from clients (closed with 1009 beyond).
    #[serde(default)]
    pub websocket: WebSocketLimits,
    /// Peers (load balancers, CDNs) whose `X-Forwarded-For` and PROXY headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// Trusted peers start every connection with a PROXY protocol v1 or v2 header.
    #[serde(default = "defaults::off")]
    pub proxy_protocol: Spanned<bool>,
    /// Which forwarding headers tether adds to requests sent to servers.
    #[serde(default = "defaults::forward_headers")]
    pub forward_headers: Vec<ForwardHeader>,
    /// Client-side timeouts.
    #[serde(default)]
    pub timeouts: FrontendTimeouts,
    /// TLS termination: the frontend speaks HTTPS / `wss://` with these certificates.
    pub tls: Option<Spanned<FrontendTls>>,
    /// A plain frontend answers every request with 308 to the same URL over https.
    #[serde(default = "defaults::off")]
    pub redirect_https: Spanned<bool>,
    /// The port put in `redirect_https` locations (443, the https default, when absent).
    pub https_port: Option<Spanned<u16>>,
    /// `Strict-Transport-Security` value added to every response of a TLS frontend.
    pub hsts: Option<Spanned<String>>,
    /// HTTP/2 to clients: ALPN `h2` on a TLS frontend (on when absent),
    /// h2c with prior knowledge on a plain one (off when absent).
    pub http2: Option<Spanned<bool>>,
}

impl Frontend {
    /// `http2` as written, else on for a TLS frontend and off for a plain one
    /// (h2c with prior knowledge is opt-in: plain clients rarely speak it).
    pub fn http2_enabled(&self) -> bool {
        self.http2.as_ref().map_or(self.tls.is_some(), |h| *h.get_ref())
    }
}

/// A TLS frontend's certificates: `cert` + `key` for one, `certificates` for
/// several (both may be given; the first listed is the default when the
/// client sends no SNI name or an unknown one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Option<Spanned<String>>,
    /// PEM file with the certificate's private key.
    pub key: Option<Spanned<String>>,
    /// More certificates, chosen by the SNI name of each handshake.
    #[serde(default)]
    pub certificates: Vec<Spanned<CertificateFiles>>,
    /// Certificates obtained and renewed by tether itself (ACME, RFC 8555);
    /// excludes `cert`, `key` and `certificates`.
    pub acme: Option<Spanned<Acme>>,
}

/// `tls = { acme = { domains = [...], contact = "mailto:..." } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The names the certificate is for (no wildcards: TLS-ALPN-01 and HTTP-01 cannot prove them).
    pub domains: Spanned<Vec<Spanned<String>>>,
    /// The account's contact, `mailto:` (the CA's expiry notices go there).
    pub contact: Option<Spanned<String>>,
    /// The ACME directory URL (Let's Encrypt production when absent).
    pub directory: Option<Spanned<String>>,
    /// A PEM CA that the directory's own HTTPS is verified with (a private ACME server).
    pub directory_ca: Option<Spanned<String>>,
    /// Where the account key and certificates are kept (0600).
    pub cache: Option<Spanned<String>>,
    /// `tls-alpn-01` (default: answered on this frontend) or `http-01` (answered on a plain frontend).
    pub challenge: Option<Spanned<String>>,
}

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM file with the private key.
    pub key: Spanned<String>,
}

/// TLS toward servers: `tls = true` (Mozilla's roots, verified), or a table
/// `{ ca = "ca.pem", verify = true, sni = "name" }`; `tls = false` turns a
/// backend's TLS off for one server.
#[derive(Debug, Default)]
pub struct UpstreamTlsSetting {
    /// Whether tether speaks TLS to the server.
    pub enabled: bool,
    /// PEM bundle of the CAs trusted to sign the server's certificate;
    /// Mozilla's roots (webpki-roots) when absent.
    pub ca: Option<Spanned<String>>,
    /// Whether the server's certificate is verified (chain and name).
    pub verify: bool,
    /// Name sent as SNI and checked in the certificate; the server's own
    /// `sni`, else its IP address, when absent.
    pub sni: Option<Spanned<String>>,
}

/// The table form of `UpstreamTlsSetting`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTlsTable {
    ca: Option<Spanned<String>>,
    #[serde(default = "defaults::yes")]
    verify: bool,
    sni: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for UpstreamTlsSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingVisitor;
        impl<'de> serde::de::Visitor<'de> for SettingVisitor {
            type Value = UpstreamTlsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a table like { ca = \"ca.pem\", verify = true, sni = \"ws1.internal\" }")
            }
            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<Self::Value, E> {
                Ok(UpstreamTlsSetting {
                    enabled,
                    verify: true,
                    ..Default::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table = UpstreamTlsTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(UpstreamTlsSetting {
                    enabled: true,
                    ca: table.ca,
                    verify: table.verify,
                    sni: table.sni,
                })
            }
        }
        deserializer.deserialize_any(SettingVisitor)
    }
}

/// Limits on what a WebSocket client may send through a tunnel.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketLimits {
    /// Largest frame payload in bytes; unlimited when absent.
    pub max_frame_size: Option<u64>,
    /// Largest message payload (all its fragments) in bytes; unlimited when absent.
    pub max_message_size: Option<u64>,
    /// Close a tunnel that carried nothing either way for this long, with
    /// Close 1001 to the client; only the backend's `tunnel` timeout when absent.
    pub idle_timeout: Option<ConfigDuration>,
    /// Ping a client that sent nothing for this long (catches half-open connections).
    pub ping_interval: Option<ConfigDuration>,
    /// How long a pinged client has to send anything before tether closes
    /// the tunnel with 1001; defaults to `ping_interval`.
    pub ping_timeout: Option<ConfigDuration>,
    /// Most messages a client may send per period in one tunnel (`"100/s"`,
    /// a token bucket whose burst is the count); beyond it Close 1008.
    pub max_messages: Option<crate::config::ConfigRate>,
    /// Close every tunnel this long after it opened, with 1001 "max lifetime"
    /// at a frame boundary (Envoy's `max_connection_duration`); no limit when absent.
    pub max_lifetime: Option<Spanned<ConfigDuration>>,
    /// Each tunnel's own limit is drawn uniformly from
    /// `[max_lifetime - lifetime_jitter, max_lifetime]`, so tunnels opened
    /// together do not all reconnect together; needs `max_lifetime`.
    pub lifetime_jitter: Option<Spanned<ConfigDuration>>,
}

/// Caps per client address (the connection's peer, or the PROXY protocol
/// client; for the handshake rate, the client a trusted proxy names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerIp {
    /// Most connections one address may hold open; beyond it 429 and close.
    pub max_connections: Option<Spanned<u32>>,
    /// Most WebSocket handshakes per address and period (`"20/s"`); beyond it 429 with `Retry-After`.
    pub rate: Option<crate::config::ConfigRate>,
    /// IPv6 clients are counted per network of this prefix length (1 to
    /// 128; 64 when absent): one subscriber usually holds a whole /64.
    pub ipv6_prefix: Option<Spanned<u8>>,
}

/// Size limits on what a client may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head in bytes (431 beyond; at least 8192).
    #[serde(default = "defaults::max_request_head")]
    pub max_request_head: Spanned<usize>,
    /// Most header fields in a request (431 beyond).
    #[serde(default = "defaults::max_headers")]
    pub max_headers: Spanned<usize>,
    /// Longest request target in bytes (414 beyond).
    #[serde(default = "defaults::max_uri")]
    pub max_uri: usize,
    /// Largest request body in bytes (413 beyond; a chunked body is counted as it streams); unlimited when absent.
    pub max_body: Option<u64>,
    /// HTTP/2: most streams one client connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[serde(default = "defaults::http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: Spanned<u32>,
    /// HTTP/2: largest decoded header list of a request, bytes
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`; also bounds CONTINUATION frames).
    #[serde(default = "defaults::http2_max_header_list_size")]
    pub http2_max_header_list_size: Spanned<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_head: defaults::max_request_head(),
            max_headers: defaults::max_headers(),
            max_uri: defaults::max_uri(),
            max_body: None,
            http2_max_concurrent_streams: defaults::http2_max_concurrent_streams(),
            http2_max_header_list_size: defaults::http2_max_header_list_size(),
        }
    }
}

/// Client-side timeouts of a frontend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTimeouts {
    /// How long a keep-alive connection may sit idle between requests.
    #[serde(default = "defaults::client")]
    pub client: ConfigDuration,
    /// How long the whole request head may take to arrive once it started.
    #[serde(default = "defaults::http_request")]
    pub http_request: ConfigDuration,
    /// How long a request under way may move no byte on the client side
    /// (request body not arriving, response not being read): then closed.
    #[serde(default = "defaults::client_body")]
    pub client_body: ConfigDuration,
}

impl Default for FrontendTimeouts {
    fn default() -> Self {
        Self {
            client: defaults::client(),
            http_request: defaults::http_request(),
            client_body: defaults::client_body(),
        }
    }
}

/// One routing rule: when its conditions hold, requests go to `backend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The backend chosen when the rule matches.
    pub backend: Spanned<String>,
    /// The rule matches if at least one of these holds (and all of `all`).
    #[serde(default)]
    pub any: Vec<Spanned<Condition>>,
    /// The rule matches only if every one of these holds (and one of `any`, if given).
    #[serde(default)]
    pub all: Vec<Spanned<Condition>>,
    /// WebSocket handshakes through this rule must come from one of these
    /// origins (overrides the frontend's list); others get 403.
    pub allowed_origins: Option<Vec<crate::origin::OriginPattern>>,
    /// Headers set and removed on requests through this rule, after the backend's rules.
    #[serde(default)]
    pub request_headers: RawHeaderRules,
    /// Headers set and removed on server responses through this rule, after the backend's rules.
    #[serde(default)]
    pub response_headers: RawHeaderRules,
}

/// A group of servers and how requests are spread over them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name used by routes, logs and metrics.
    pub name: Spanned<String>,
    /// The balancing algorithm.
    #[serde(default = "defaults::balance")]
    pub balance: Spanned<Balance>,
    /// The parameter, header or cookie name hashed by `url_param`, `header` and `cookie`.
    pub hash_key: Option<Spanned<String>>,
    /// How the hash of `source`/`uri`/`url_param`/`header`/`cookie` maps to a server.
    #[serde(default = "defaults::hash")]
    pub hash: Spanned<HashMethod>,
    /// With `hash = "consistent"` or `"maglev"`: no server takes more than this
    /// multiple of the average active connections (consistent hashing with bounded loads).
    pub balance_factor: Option<Spanned<f64>>,
    /// With `hash = "maglev"`: the lookup table size, a prime.
    pub maglev_table_size: Option<Spanned<usize>>,
    /// Stickiness: keeps a client on its server before the algorithm is asked.
    pub sticky: Option<Spanned<Sticky>>,
    /// A stuck client whose server is down or draining goes to another server
    /// (and is stuck there); without it the client gets 503.
    #[serde(default = "defaults::yes")]
    pub redispatch: bool,
    /// Whether clients already stuck to a server are refused by its `maxconn`.
    #[serde(default)]
    pub sticky_respects_maxconn: bool,
    /// Otherwise: how far past `maxconn` (in percent of it) stuck clients may
    /// go; beyond it they are balanced elsewhere and stuck there.
    #[serde(default = "defaults::sticky_maxconn_margin")]
    pub sticky_maxconn_margin: Spanned<u32>,
    /// How many other servers to try when connecting to one fails.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// How long a request may wait for a slot when every server is at `maxconn`
    /// (then 503 with `Retry-After`); the `connect` timeout when absent, `"0s"` for no queue.
    pub queue_timeout: Option<ConfigDuration>,
    /// A server that comes (back) up ramps its weight from ~5 % to full over this long.
    pub slowstart: Option<ConfigDuration>,
    /// How long a drained server's tunnels may stay open before tether closes them with 1012.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: ConfigDuration,
    /// Over how long those closes are spread, so clients do not reconnect all at once.
    #[serde(default = "defaults::drain_spread")]
    pub drain_spread: ConfigDuration,
    /// Whether a draining server still takes clients stuck to it.
    #[serde(default = "defaults::yes")]
    pub drain_sticky: bool,
    /// Over how long the tunnels of a server found down (by an active
    /// check) are closed with 1012, so their clients reconnect a few at a time.
    #[serde(default = "defaults::down_spread")]
    pub down_spread: ConfigDuration,
    /// Server-side timeouts.
    #[serde(default)]
    pub timeouts: BackendTimeouts,
    /// Active health checks (and passive detection); without them servers are always up.
    pub health: Option<Spanned<Health>>,
    /// TLS toward every server of the backend (a server's own `tls` wins).
    pub tls: Option<Spanned<UpstreamTlsSetting>>,
    /// A PROXY protocol header (`"v1"` or `"v2"`) at the start of every
    /// connection to the servers (a server's own `send_proxy` wins); none when absent.
    pub send_proxy: Option<Spanned<SendProxy>>,
    /// Headers set and removed on requests sent to the servers (after the forwarding headers).
    #[serde(default)]
    pub request_headers: RawHeaderRules,
    /// Headers set and removed on the servers' responses.
    #[serde(default)]
    pub response_headers: RawHeaderRules,
    /// The servers.
    #[serde(default)]
    pub server: Vec<Server>,
    /// Servers found in DNS, besides the written ones.
    pub discover: Option<Spanned<Discover>>,
    /// Settings of the servers `discover` finds (weight 1, no `maxconn` when absent).
    pub server_defaults: Option<Spanned<ServerDefaults>>,
    /// Written servers whose address is a host name are looked up again this often
    /// (by the `[resolver]`, not at load); resolved once at load when absent.
    pub resolve_interval: Option<Spanned<ConfigDuration>>,
    /// Evening out long-lived connections after the server set changed
    /// (`rebalance = { max_skew, rate, settle }`); off when absent.
    pub rebalance: Option<Spanned<Rebalance>>,
}

/// `rebalance = { max_skew = 1.2, rate = "5/s", settle = "10s" }` of a backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// A server holding more than this many times the mean starts a round of sheds.
    #[serde(default = "defaults::rebalance_max_skew")]
    pub max_skew: Spanned<f64>,
    /// Most tunnels closed per period across the backend (the whole fleet under `[cluster]`).
    #[serde(default = "defaults::rebalance_rate")]
    pub rate: Spanned<crate::config::ConfigRate>,
    /// Quiet time after the server set changed before shedding starts; younger tunnels are never shed.
    #[serde(default = "defaults::rebalance_settle")]
    pub settle: Spanned<ConfigDuration>,
}

/// Stickiness settings of a backend. Cookie stickiness (`cookie`, `mode`, …)
/// and learned session ids (`learn`, `match`) may be combined; `preset`
/// fills in the learned-id settings of a known protocol.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// Name of the stickiness cookie (`insert`) or of the server's own session cookie (`prefix`).
    pub cookie: Option<String>,
    /// How the cookie is handled.
    #[serde(default)]
    pub mode: CookieMode,
    /// `insert`: remove tether's cookie from requests before they reach the server.
    #[serde(default)]
    pub indirect: bool,
    /// `insert`: mark responses that set the cookie uncacheable.
    #[serde(default)]
    pub nocache: bool,
    /// Cookie `Path` attribute.
    #[serde(default = "defaults::cookie_path")]
    pub path: String,
    /// Cookie `Domain` attribute.
    pub domain: Option<String>,
    /// Cookie `Max-Age`; a session cookie when absent.
    pub max_age: Option<ConfigDuration>,
    /// Cookie `HttpOnly` attribute.
    #[serde(default = "defaults::yes")]
    pub httponly: bool,
    /// Cookie `Secure` attribute; by default set on TLS frontends only.
    pub secure: Option<bool>,
    /// Cookie `SameSite` attribute.
    pub samesite: Option<SameSite>,
    /// The cookie value is a keyed hash of the server id, revealing no server name.
    #[serde(default)]
    pub opaque: bool,
    /// The key of `opaque` cookies; instances sharing it accept each other's cookies.
    pub secret: Option<String>,
    /// Learn session ids from servers' responses.
    pub learn: Option<Learn>,
    /// Where requests carry a learned session id.
    #[serde(default, rename = "match")]
    pub match_: Vec<MatchSource>,
    /// A learned id unused for this long is forgotten.
    #[serde(default = "defaults::sticky_idle")]
    pub idle_timeout: ConfigDuration,
    /// At most this many learned ids; the least recently used go first.
    #[serde(default = "defaults::sticky_entries")]
    pub max_entries: Spanned<usize>,
    /// Settings of a known protocol.
    pub preset: Option<Preset>,
}

/// Where a server hands out a session id.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learn {
    /// A cookie the server sets (`Set-Cookie: io=…`).
    pub response_cookie: Option<String>,
    /// A response header carrying the id.
    pub response_header: Option<String>,
}

/// Server-side timeouts of a backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTimeouts {
    /// How long a TCP connect to a server may take before trying another.
    #[serde(default = "defaults::connect")]
    pub connect: ConfigDuration,
    /// How long a server may take to start its response (504 after that).
    #[serde(default = "defaults::server")]
    pub server: ConfigDuration,
    /// How long a WebSocket tunnel may carry no byte in either direction.
    #[serde(default = "defaults::tunnel")]
    pub tunnel: ConfigDuration,
    /// How long a response body under way may get no byte from its server: then closed.
    #[serde(default = "defaults::server_body")]
    pub server_body: ConfigDuration,
}

impl Default for BackendTimeouts {
    fn default() -> Self {
        Self {
            connect: defaults::connect(),
            server: defaults::server(),
            tunnel: defaults::tunnel(),
            server_body: defaults::server_body(),
        }
    }
}

/// Health checks of a backend's servers. Keys that do not apply to the
/// `check` kind are refused in `validate`, so they are options here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// What a check does; required (an option so its absence gets a helpful error).
    pub check: Option<Spanned<CheckKind>>,
    /// `http`/`websocket`: the request target (path and query); `/` when absent.
    pub path: Option<Spanned<String>>,
    /// `http`: the request method; `GET` when absent.
    pub method: Option<Spanned<String>>,
    /// `http`/`websocket`: the Host header; the server's `ip:port` when absent.
    pub host: Option<Spanned<String>>,
    /// `http`: the statuses that pass; `200-399` when absent.
    pub expect_status: Option<Spanned<StatusRange>>,
    /// `http`: a substring the first few KiB of the body must contain.
    pub expect_body: Option<Spanned<String>>,
    /// Time between two checks of one server (each jittered by ±10 %).
    #[serde(default = "defaults::check_interval")]
    pub interval: Spanned<ConfigDuration>,
    /// How long one check may take; the smaller of 1s and `interval` when absent.
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// Consecutive passed checks that bring a down server up.
    #[serde(default = "defaults::rise")]
    pub rise: Spanned<u32>,
    /// Consecutive failed checks (and failed connects, with `observe`) that take an up server down.
    #[serde(default = "defaults::fall")]
    pub fall: Spanned<u32>,
    /// Count connect failures and timeouts of live traffic toward `fall`.
    #[serde(default = "defaults::off")]
    pub observe: Spanned<bool>,
    /// Start each check's connection with the PROXY header of the server's
    /// `send_proxy` version (the check's own addresses).
    #[serde(default = "defaults::off")]
    pub send_proxy: Spanned<bool>,
}

/// One backend server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Unique name within the backend.
    pub name: Spanned<String>,
    /// `host:port` as written; a host name is resolved after validation (`resolve`).
    pub address: Spanned<Address>,
    /// Relative share of new traffic; 0 takes no new traffic.
    #[serde(default = "defaults::weight")]
    pub weight: Spanned<u32>,
    /// At most this many active requests and tunnels at once; unlimited when absent.
    pub maxconn: Option<Spanned<u32>>,
    /// The id this server is known by in a stickiness cookie.
    pub cookie: Option<String>,
    /// `ready`, `drain` (no new clients but stuck ones) or `maint` (nothing).
    #[serde(default)]
    pub state: AdminState,
    /// TLS toward this server (overrides the backend's `tls`).
    pub tls: Option<Spanned<UpstreamTlsSetting>>,
    /// With TLS: the name sent as SNI and checked in the server's certificate
    /// (the address is an IP, so tether cannot know the name otherwise).
    pub sni: Option<Spanned<String>>,
    /// The PROXY header toward this server (`"v1"`, `"v2"`, or `"off"`),
    /// overriding the backend's `send_proxy`.
    pub send_proxy: Option<Spanned<SendProxy>>,
}

/// The serde defaults of the keys an operator may leave out (documented in
/// `docs/config.md`).
mod defaults {
    use super::{ConfigDuration, ForwardHeader};
    use std::time::Duration;

    pub(crate) fn cluster_prefix() -> String {
        "tether:".to_string()
    }
    pub(crate) fn cluster_timeout() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_millis(50)))
    }
    pub(crate) fn cluster_sync_interval() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(1)))
    }
    pub(crate) fn cluster_stick_refresh() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(10))
    }

    pub(crate) fn rebalance_max_skew() -> toml::Spanned<f64> {
        toml::Spanned::new(0..0, 1.2)
    }
    pub(crate) fn rebalance_rate() -> toml::Spanned<crate::config::ConfigRate> {
        toml::Spanned::new(
            0..0,
            crate::config::ConfigRate {
                count: 5,
                per: Duration::from_secs(1),
            },
        )
    }
    pub(crate) fn rebalance_settle() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(10)))
    }

    pub(crate) fn sample_ratio() -> toml::Spanned<f64> {
        toml::Spanned::new(0..0, 1.0)
    }
    pub(crate) fn service_name() -> toml::Spanned<String> {
        toml::Spanned::new(0..0, "tether".to_string())
    }
    pub(crate) fn batch_delay() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(5)))
    }
    pub(crate) fn resolver_timeout() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(2)))
    }
    pub(crate) fn discover_interval() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(5)))
    }

    pub(crate) fn shutdown_grace() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    pub(crate) fn client() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    pub(crate) fn http_request() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(10))
    }
    pub(crate) fn connect() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(3))
    }
    pub(crate) fn server() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    pub(crate) fn tunnel() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(3600))
    }
    pub(crate) fn client_body() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(60))
    }
    pub(crate) fn server_body() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(60))
    }
    pub(crate) fn redact_query() -> Vec<toml::Spanned<String>> {
        vec![toml::Spanned::new(0..0, "sid".to_string())]
    }
    pub(crate) fn balance() -> toml::Spanned<super::Balance> {
        toml::Spanned::new(0..0, super::Balance::Roundrobin)
    }
    pub(crate) fn hash() -> toml::Spanned<super::HashMethod> {
        toml::Spanned::new(0..0, super::HashMethod::Map)
    }
    pub(crate) fn max_request_head() -> toml::Spanned<usize> {
        toml::Spanned::new(0..0, 32 * 1024)
    }
    pub(crate) fn max_headers() -> toml::Spanned<usize> {
        toml::Spanned::new(0..0, 100)
    }
    pub(crate) fn http2_max_concurrent_streams() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 100)
    }
    pub(crate) fn http2_max_header_list_size() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 32 * 1024)
    }
    pub(crate) fn max_uri() -> usize {
        8 * 1024
    }
    pub(crate) fn off() -> toml::Spanned<bool> {
        toml::Spanned::new(0..0, false)
    }
    pub(crate) fn drain_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(300))
    }
    pub(crate) fn drain_spread() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(60))
    }
    pub(crate) fn sticky_maxconn_margin() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 10)
    }
    pub(crate) fn down_spread() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(5))
    }
    pub(crate) fn yes() -> bool {
        true
    }
    pub(crate) fn cookie_path() -> String {
        "/".to_string()
    }
    pub(crate) fn sticky_idle() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30 * 60))
    }
    pub(crate) fn sticky_entries() -> toml::Spanned<usize> {
        toml::Spanned::new(0..0, 100_000)
    }
    pub(crate) fn retries() -> u32 {
        3
    }
    pub(crate) fn check_interval() -> toml::Spanned<ConfigDuration> {
        toml::Spanned::new(0..0, ConfigDuration(Duration::from_secs(2)))
    }
    pub(crate) fn rise() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 2)
    }
    pub(crate) fn fall() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 3)
    }
    pub(crate) fn weight() -> toml::Spanned<u32> {
        toml::Spanned::new(0..0, 1)
    }
    pub(crate) fn forward_headers() -> Vec<ForwardHeader> {
        vec![
            ForwardHeader::XForwardedFor,
            ForwardHeader::XForwardedProto,
            ForwardHeader::XForwardedHost,
        ]
    }
}
