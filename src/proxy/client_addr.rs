//! Who the client really is when tether sits behind other proxies:
//! `trusted_proxies` CIDRs, `X-Forwarded-For` (rightmost untrusted hop), and
//! the PROXY protocol v1/v2 header (haproxy.org/download/2.9/doc/proxy-protocol.txt),
//! each believed only when the peer is trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cidr::Cidr;

/// Whether any block of `trusted` contains `ip`.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client behind a trusted `peer`: walking `X-Forwarded-For` from the
/// right, the first address that is not itself a trusted proxy. An untrusted
/// peer is the client, whatever the header says.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { return peer };
        for item in text.split(',') {
            match parse_hop(item) {
                Some(ip) => hops.push(ip),
                None => return peer, // a garbled list is not believed at all
            }
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !is_trusted(trusted, hop) {
            break;
        }
    }
    client
}

fn parse_hop(item: &str) -> Option<IpAddr> {
    let item = item.trim().trim_matches('"');
    if let Ok(ip) = item.parse() {
        return Some(ip);
    }
    if let Ok(addr) = item.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    item.strip_prefix('[')?.split(']').next()?.parse().ok()
}

/// Why a PROXY protocol header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed before the header was complete.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a PROXY v1 or v2 header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// The header is malformed.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// RFC-style limit of a v1 line, CRLF included.
const V1_MAX: usize = 107;
/// tether reads at most this much of a v2 header's addresses and TLVs.
const V2_MAX_BODY: usize = 4096;

/// Reads a PROXY v1 or v2 header from the start of `stream`, consuming
/// exactly its bytes. Returns the original client's address, or `None` for
/// `LOCAL`/`UNKNOWN` headers (health checks of the proxy in front).
/// Generic over the reader so the fuzz target can feed it in-memory bytes.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 8];
    stream.read_exact(&mut start).await?;
    if start == V2_SIGNATURE[..8] {
        let mut rest = [0u8; 8];
        stream.read_exact(&mut rest).await?;
        if rest[..4] != V2_SIGNATURE[8..] {
            return Err(ProxyHeaderError::Missing);
        }
        let (version_command, family) = (rest[4], rest[5]);
        let len = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
        if version_command >> 4 != 2 {
            return Err(ProxyHeaderError::Malformed("version is not 2"));
        }
        if len > V2_MAX_BODY {
            return Err(ProxyHeaderError::Malformed("header too long"));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        if version_command & 0x0f == 0 {
            return Ok(None); // LOCAL
        }
        return match family >> 4 {
            1 if body.len() >= 12 => {
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]]))))
            }
            2 if body.len() >= 36 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[..16]);
                let port = u16::from_be_bytes([body[32], body[33]]);
                Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)))
            }
            0 => Ok(None),
            _ => Err(ProxyHeaderError::Malformed("unsupported address family")),
        };
    }
    if &start[..6] != b"PROXY " {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = start.to_vec();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        stream.read_exact(&mut byte).await?;
        line.push(byte[0]);
    }
    parse_v1(&line[..line.len() - 2])
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("v1 line is not text"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, source_port, _destination_port] => {
            let ip: IpAddr = source
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("bad source address"))?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(ProxyHeaderError::Malformed("address does not match the family"));
            }
            let port: u16 = source_port
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyHeaderError::Malformed(
            "v1 line is not `PROXY TCP4|TCP6 src dst sport dport`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9, 10.0.0.5".parse().unwrap(),
        );
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(outsider, &h, &trusted),
            outsider,
            "an untrusted peer's header is ignored"
        );
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), peer, "a garbled list is ignored");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn v1_lines_parse() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 443").unwrap(),
            Some("198.51.100.7:51000".parse().unwrap())
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80").unwrap(),
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN").unwrap(), None);
        assert!(parse_v1(b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4").is_err());
    }
}
