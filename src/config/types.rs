//! Value types shared by the file's serde shape (`raw`) and the validated
//! model (`model`): the enums an operator names (`balance`, `hash`, `mode`,
//! `state`, …), status ranges, and the documented defaults other layers read.

use http::HeaderName;
use serde::{Deserialize, Deserializer};

/// A header telling the server who the client was (RFC 7239 and the de-facto `X-Forwarded-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ForwardHeader {
    /// `X-Forwarded-For`: the client address appended to any list already present.
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `X-Forwarded-Proto`: `http` or `https`.
    #[serde(rename = "x-forwarded-proto")]
    XForwardedProto,
    /// `X-Forwarded-Host`: the Host the client asked for.
    #[serde(rename = "x-forwarded-host")]
    XForwardedHost,
    /// `Forwarded` (RFC 7239 §4): `for=…;proto=…;host=…` appended.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// `send_proxy`: the PROXY protocol header written at the start of each
/// connection to a server (HAProxy's `send-proxy` / `send-proxy-v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendProxy {
    /// The text header.
    V1,
    /// The binary header.
    V2,
    /// No header (a server's way to opt out of its backend's setting).
    Off,
}

impl SendProxy {
    /// The header version to write, if any.
    pub fn version(self) -> Option<crate::proxy_header::ProxyVersion> {
        match self {
            SendProxy::V1 => Some(crate::proxy_header::ProxyVersion::V1),
            SendProxy::V2 => Some(crate::proxy_header::ProxyVersion::V2),
            SendProxy::Off => None,
        }
    }
}

/// What carries an established tunnel's bytes (`[tunnel] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelEngine {
    /// tokio's reactor: readiness through epoll, one syscall per read and write.
    #[default]
    Epoll,
    /// A per-worker io_uring: receives and sends of every tunnel of a worker
    /// submitted together (plain TCP on both sides; TLS tunnels stay on epoll).
    IoUring,
}

/// The balancing algorithm of a backend (HAProxy's `balance` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    Roundrobin,
    /// Fewest active connections relative to weight; WebSocket tunnels count for their whole life.
    Leastconn,
    /// Hash of the client IP address.
    Source,
    /// Hash of the request path.
    Uri,
    /// Hash of the query parameter named by `hash_key`.
    UrlParam,
    /// Hash of the header named by `hash_key`.
    Header,
    /// Hash of the cookie named by `hash_key`.
    Cookie,
    /// Power of two random choices on active connections.
    Random,
}

/// How a key's hash chooses a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMethod {
    /// Hash modulo the total weight: even, but most keys move when a server is added.
    #[default]
    Map,
    /// A ring with virtual nodes: adding or removing a server moves only its share of keys.
    Consistent,
    /// Google's Maglev lookup table: even spread, minimal disruption, O(1) lookup.
    Maglev,
}

/// How tether uses the stickiness cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieMode {
    /// tether sets its own cookie naming the server.
    #[default]
    Insert,
    /// tether prefixes the server's own session cookie with the server id (`s1~value`).
    Prefix,
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (requires `Secure` in browsers).
    None,
}

/// Stickiness presets for known protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Preset {
    /// Socket.IO / Engine.IO: the `sid` of the handshake response (and the
    /// `io` cookie) is learned and matched in `?sid=` and the `io` cookie.
    #[serde(rename = "engine.io")]
    EngineIo,
}

/// The kind of an active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 request whose status (and optionally body) is checked.
    Http,
    /// A WebSocket handshake that must get 101, followed by a Close frame.
    Websocket,
}

/// An inclusive range of HTTP status codes, written `200`, `"200"` or `"200-399"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest status that passes.
    pub low: u16,
    /// Highest status that passes.
    pub high: u16,
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let code = |part: &str| -> Result<u16, String> {
            part.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    format!(
                        "`{text}` is not a status or range of statuses: write \"200\" or \"200-399\" (codes 100-599)"
                    )
                })
        };
        let range = match text.split_once('-') {
            Some((low, high)) => StatusRange {
                low: code(low)?,
                high: code(high)?,
            },
            None => {
                let c = code(text)?;
                StatusRange { low: c, high: c }
            }
        };
        if range.low > range.high {
            return Err(format!(
                "`{text}` is an empty range: write the lower code first, like \"200-399\""
            ));
        }
        Ok(range)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RangeVisitor;
        impl serde::de::Visitor<'_> for RangeVisitor {
            type Value = StatusRange;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a status code such as 200 or a range such as \"200-399\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                StatusRange::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                StatusRange::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                StatusRange::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(RangeVisitor)
    }
}

/// The operator's intent for a server (HAProxy's admin states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic.
    #[default]
    Ready,
    /// Takes no new clients except those stuck to it (with `drain_sticky`);
    /// its tunnels are closed after `drain_timeout`, spread over `drain_spread`.
    Drain,
    /// Takes nothing; its tunnels are closed like a drain's.
    Maint,
}

impl AdminState {
    /// The state stored as `state as u8` (for an atomic).
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    /// The name used in config, logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// Where a server of a backend came from: shown by the admin API and the
/// stats page, and deciding which servers the API may delete (its own only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerSource {
    /// Written in the configuration file (with `resolve_interval`, its address comes from DNS).
    #[default]
    Config,
    /// Found in DNS by the backend's `discover`.
    Dns,
    /// Added through the admin API (`POST /api/v1/backends/{b}/servers`).
    Api,
}

impl ServerSource {
    /// The name used in the admin API and on the stats page.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Config => "config",
            ServerSource::Dns => "dns",
            ServerSource::Api => "api",
        }
    }
}

/// Where a request carries a learned session id (a `sticky.match` entry):
/// a table with exactly one of `cookie`, `url_param`, `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchSource {
    /// A cookie of this name.
    Cookie(String),
    /// A query parameter of this name.
    UrlParam(String),
    /// A header of this name.
    Header(HeaderName),
}

impl<'de> Deserialize<'de> for MatchSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::from_table::from_table::<_, MatchTable, _>(deserializer, "a table such as { cookie = \"io\" }")
    }
}

/// The table an operator writes for a `MatchSource`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchTable {
    cookie: Option<String>,
    url_param: Option<String>,
    header: Option<String>,
}

impl TryFrom<MatchTable> for MatchSource {
    type Error = String;

    fn try_from(table: MatchTable) -> Result<Self, String> {
        match (table.cookie, table.url_param, table.header) {
            (Some(cookie), None, None) => Ok(MatchSource::Cookie(cookie)),
            (None, Some(param), None) => Ok(MatchSource::UrlParam(param)),
            (None, None, Some(header)) => HeaderName::from_bytes(header.as_bytes())
                .map(MatchSource::Header)
                .map_err(|_| format!("`{header}` is not a valid header name")),
            _ => Err("each `match` entry needs exactly one of cookie, url_param, header".to_string()),
        }
    }
}

/// Documented defaults that the runtime layers read too.
pub mod defaults {
    use std::time::Duration;

    /// Slots of a Maglev table when `maglev_table_size` is not set: a prime,
    /// and large enough (Google's paper uses 65,537) that with up to a few
    /// hundred servers every server's share is within a fraction of a percent
    /// of its weight.
    pub const MAGLEV_TABLE_SIZE: usize = 65_537;

    /// Bytes of a health check's response body that `expect_body` is searched in.
    pub const CHECK_BODY_LIMIT: usize = 4096;
    /// The check timeout when none is given: this, or `interval` if shorter.
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
    /// The HTTP check's statuses when `expect_status` is absent.
    pub const EXPECT_STATUS: super::StatusRange = super::StatusRange { low: 200, high: 399 };
}
