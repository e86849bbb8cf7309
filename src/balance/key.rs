//! Which request value a hashing balancer hashes.

use std::net::IpAddr;

use http::Request;

use crate::config::types::Balance;
use crate::lookup;

/// Where the hash key of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The algorithm does not hash.
    None,
    /// The client's IP address.
    Source,
    /// The request path (without the query, as HAProxy's `balance uri`).
    Uri,
    /// A query parameter.
    UrlParam(String),
    /// A header (name in lower case).
    Header(http::HeaderName),
    /// A cookie.
    Cookie(String),
}

impl KeySource {
    /// The key source of `balance`, with `hash_key` naming the param/header/cookie.
    pub fn new(balance: Balance, hash_key: Option<&str>) -> Self {
        let key = hash_key.unwrap_or_default();
        match balance {
            Balance::Source => KeySource::Source,
            Balance::Uri => KeySource::Uri,
            Balance::UrlParam => KeySource::UrlParam(key.to_string()),
            Balance::Header => http::HeaderName::from_bytes(key.as_bytes())
                .map(KeySource::Header)
                .unwrap_or(KeySource::None),
            Balance::Cookie => KeySource::Cookie(key.to_string()),
            Balance::Roundrobin | Balance::Leastconn | Balance::Random => KeySource::None,
        }
    }

    /// The bytes to hash for `request`; `client_ip` holds the client address octets.
    /// `None` when the request lacks the key (an empty value counts as missing).
    pub fn extract<'a, B>(&self, request: &'a Request<B>, client_ip: &'a [u8]) -> Option<&'a [u8]> {
        let bytes = match self {
            KeySource::None => return None,
            KeySource::Source => client_ip,
            KeySource::Uri => request.uri().path().as_bytes(),
            KeySource::UrlParam(name) => lookup::query_param(request.uri(), name)?.as_bytes(),
            KeySource::Header(name) => request.headers().get(name)?.as_bytes(),
            KeySource::Cookie(name) => lookup::cookie(request.headers(), name)?.as_bytes(),
        };
        (!bytes.is_empty()).then_some(bytes)
    }
}

/// The octets of an IP address, on the stack: the `source` hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpOctets {
    bytes: [u8; 16],
    len: usize,
}

impl IpOctets {
    /// The octets as a slice (4 or 16 bytes).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The octets of `ip`; IPv4-mapped IPv6 is folded to IPv4 so a dual-stack
/// listener hashes one client the same way on both.
pub fn ip_octets_of(ip: IpAddr) -> IpOctets {
    let mut bytes = [0u8; 16];
    let len = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes.copy_from_slice(&v6.octets());
            16
        }
    };
    IpOctets { bytes, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_their_named_place() {
        let request = Request::builder()
            .uri("/chat/room?session_id=42&x=1")
            .header("x-user", "alice")
            .header("cookie", "sid=abc")
            .body(())
            .unwrap();
        let ip = [127, 0, 0, 2];
        let key = |source: KeySource| source.extract(&request, &ip).map(|b| b.to_vec());
        assert_eq!(key(KeySource::Source), Some(ip.to_vec()));
        assert_eq!(key(KeySource::Uri), Some(b"/chat/room".to_vec()));
        assert_eq!(key(KeySource::UrlParam("session_id".into())), Some(b"42".to_vec()));
        assert_eq!(
            key(KeySource::new(Balance::Header, Some("X-User"))),
            Some(b"alice".to_vec())
        );
        assert_eq!(key(KeySource::Cookie("sid".into())), Some(b"abc".to_vec()));
        assert_eq!(key(KeySource::UrlParam("missing".into())), None);
        assert_eq!(key(KeySource::None), None);
    }

    #[test]
    fn mapped_ipv4_hashes_like_ipv4() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_octets_of(v4), ip_octets_of(mapped));
        assert_eq!(ip_octets_of(v4).as_slice(), &[10, 1, 2, 3]);
    }
}
