//! Request ids and access-log lines (one per HTTP exchange, one per finished
//! tunnel): what a line says, handed to the instance's `access_log::Logger`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Method, Uri};

use super::tunnel::TunnelEnd;
use crate::access_log::{Kind, Logger, Record};

use crate::util::mix::{finalize, GOLDEN_GAMMA};

/// The header carrying tether's request id in its own responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The target access-log lines are named after (`TETHER_LOG=tether::access=off` silences them).
pub const ACCESS_TARGET: &str = crate::access_log::TARGET;

/// A per-process unique id for one request, shown in error responses and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    /// The next id: a bijective mix of a counter and a per-process random salt,
    /// so ids never repeat within a process and do not reveal request counts.
    pub fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SALT: OnceLock<u64> = OnceLock::new();
        let salt = *SALT.get_or_init(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::process::id())
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId(finalize(salt.wrapping_add(count.wrapping_mul(GOLDEN_GAMMA))))
    }
}

impl RequestId {
    /// The id as a number (well mixed: usable as a random value).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The protocol a client connection speaks (for log lines and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (ALPN `h2` or h2c with prior knowledge).
    Http2,
}

impl Protocol {
    /// The name written in logs and metrics labels (the ALPN names).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::Http2 => "h2",
        }
    }
}

/// What an access-log line says about one HTTP exchange.
#[derive(Debug)]
pub struct HttpLog {
    /// The request's id.
    pub request_id: RequestId,
    /// The client's address.
    pub client: SocketAddr,
    /// The frontend that accepted it.
    pub frontend: Arc<str>,
    /// The backend chosen, once known.
    pub backend: Option<Arc<str>>,
    /// The server chosen, once known.
    pub server: Option<Arc<str>>,
    /// Request method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// Response status sent to the client.
    pub status: u16,
    /// When the request head was received.
    pub started: Instant,
    /// Request body bytes read from the client.
    pub bytes_in: Arc<AtomicU64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Why the exchange ended early, if it did.
    pub error: Option<String>,
    /// Query parameters whose values the line writes as `REDACTED`.
    pub redact_query: Arc<[Box<str>]>,
    /// The client connection's protocol.
    pub protocol: Protocol,
    /// Where and how the line is written (the request's snapshot's).
    pub access: Arc<Logger>,
    /// The request's W3C trace id, when `[tracing]` is on (set when the line is written).
    pub trace_id: Option<u128>,
}

impl HttpLog {
    /// Writes the line (nothing when the access log is off).
    pub fn emit(&self) {
        if !self.access.enabled() {
            return;
        }
        let uri = RedactedUri {
            uri: &self.uri,
            names: &self.redact_query,
        };
        self.access.log(&Record {
            kind: Kind::Http,
            protocol: self.protocol.as_str(),
            request_id: self.request_id.as_u64(),
            client: self.client,
            frontend: &self.frontend,
            backend: self.backend.as_deref(),
            server: self.server.as_deref(),
            method: Some(self.method.as_str()),
            uri: Some(&uri),
            status: Some(self.status),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
            duration_us: micros_since(self.started),
            error: Some(self.error.as_deref().unwrap_or("-")),
            messages_in: None,
            messages_out: None,
            close_code_in: None,
            close_code_out: None,
            close: None,
            trace_id: self.trace_id,
        });
    }
}

/// Microseconds since `started` (lines write them as milliseconds, `0.359`).
fn micros_since(started: Instant) -> u64 {
    started.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// What a log line writes in place of a redacted parameter's value.
pub const REDACTED: &str = "REDACTED";

/// A request target as the access log writes it: the values of the named
/// query parameters (session ids, tokens) replaced by [`REDACTED`]. A name
/// matches after percent-decoding, so `s%69d=` is caught as `sid=`.
pub struct RedactedUri<'a> {
    /// The target.
    pub uri: &'a Uri,
    /// The parameter names to redact.
    pub names: &'a [Box<str>],
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(query) = self.uri.query().filter(|_| !self.names.is_empty()) else {
            return fmt::Display::fmt(self.uri, f);
        };
        if let (Some(scheme), Some(authority)) = (self.uri.scheme_str(), self.uri.authority()) {
            write!(f, "{scheme}://{authority}")?;
        }
        f.write_str(self.uri.path())?;
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _)) if self.names.iter().any(|n| decoded_equals(name, n)) => {
                    write!(f, "{name}={REDACTED}")?
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// Whether `raw` (a query parameter name as sent: `+` for space, `%XX`
/// escapes) decodes to `name`.
fn decoded_equals(raw: &str, name: &str) -> bool {
    let (mut raw, mut name) = (raw.as_bytes(), name.as_bytes());
    loop {
        let (byte, rest) = match raw {
            [] => return name.is_empty(),
            [b'%', hi, lo, rest @ ..] => match (char::from(*hi).to_digit(16), char::from(*lo).to_digit(16)) {
                (Some(hi), Some(lo)) => ((hi * 16 + lo) as u8, rest),
                _ => (b'%', &raw[1..]),
            },
            [b'+', rest @ ..] => (b' ', rest),
            [byte, rest @ ..] => (*byte, rest),
        };
        match name.split_first() {
            Some((first, others)) if *first == byte => name = others,
            _ => return false,
        }
        raw = rest;
    }
}

/// What an access-log line says about one finished WebSocket tunnel.
pub struct TunnelLog<'a> {
    /// The handshake's request id.
    pub request_id: RequestId,
    /// The client's address.
    pub client: SocketAddr,
    /// Frontend, backend and server names.
    pub frontend: &'a str,
    /// The backend.
    pub backend: &'a str,
    /// The server.
    pub server: &'a str,
    /// How long the tunnel was open.
    pub open_for: std::time::Duration,
    /// What the tunnel reported when it ended: bytes and messages each
    /// way, close codes, why it ended.
    pub end: &'a TunnelEnd,
    /// The protocol carrying the tunnel on the client side (HTTP/1.1
    /// upgrade or an HTTP/2 stream).
    pub protocol: Protocol,
    /// Where and how the line is written (the handshake's snapshot's).
    pub access: &'a Logger,
    /// The handshake's W3C trace id, when `[tracing]` is on.
    pub trace_id: Option<u128>,
}

impl TunnelLog<'_> {
    /// Writes the line (nothing when the access log is off).
    pub fn emit(&self) {
        if !self.access.enabled() {
            return;
        }
        self.access.log(&Record {
            kind: Kind::Tunnel,
            protocol: self.protocol.as_str(),
            request_id: self.request_id.as_u64(),
            client: self.client,
            frontend: self.frontend,
            backend: Some(self.backend),
            server: Some(self.server),
            method: None,
            uri: None,
            status: None,
            bytes_in: self.end.client_to_server,
            bytes_out: self.end.server_to_client,
            duration_us: self.open_for.as_micros().try_into().unwrap_or(u64::MAX),
            error: None,
            messages_in: Some(self.end.messages_in),
            messages_out: Some(self.end.messages_out),
            close_code_in: self.end.close_code_in,
            close_code_out: self.end.close_code_out,
            close: Some(&self.end.reason),
            trace_id: self.trace_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_query_parameters_are_redacted_even_when_escaped() {
        let names: Vec<Box<str>> = vec!["sid".into(), "token".into()];
        let show = |uri: &str| {
            RedactedUri {
                uri: &uri.parse().unwrap(),
                names: &names,
            }
            .to_string()
        };
        assert_eq!(
            show("/socket.io/?EIO=4&transport=polling&sid=abc123&t=1"),
            "/socket.io/?EIO=4&transport=polling&sid=REDACTED&t=1"
        );
        assert_eq!(
            show("/a?s%69d=abc&token=x&sidx=1&sid"),
            "/a?s%69d=REDACTED&token=REDACTED&sidx=1&sid"
        );
        assert_eq!(show("http://h.example/a?sid=1"), "http://h.example/a?sid=REDACTED");
        assert_eq!(show("/plain"), "/plain");
        let none: Vec<Box<str>> = Vec::new();
        let uri: Uri = "/a?sid=1".parse().unwrap();
        assert_eq!(
            RedactedUri {
                uri: &uri,
                names: &none
            }
            .to_string(),
            "/a?sid=1"
        );
    }

    #[test]
    fn request_ids_are_unique_and_sixteen_hex_digits() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| RequestId::next()).collect();
        assert_eq!(ids.len(), 10_000);
        let text = RequestId::next().to_string();
        assert_eq!(text.len(), 16);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
