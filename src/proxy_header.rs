//! The PROXY protocol header tether writes toward servers (`send_proxy`),
//! as HAProxy's `send-proxy` / `send-proxy-v2` do
//! (haproxy.org/download/2.9/doc/proxy-protocol.txt): one pure encoder,
//! used by the proxy's connects and by health checks. The frontend's reader
//! is `proxy::client_addr::read_proxy_header`.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// Which version of the header a server expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n` (§2.1).
    V1,
    /// The binary header (§2.2).
    V2,
}

/// The v2 signature (§2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header announcing a TCP connection from `source` (the client) to
/// `destination` (the address the client reached). When the two are of
/// different families (an IPv4 client on an IPv6 listener), both are sent
/// as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`), since one header carries
/// one family.
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        ProxyVersion::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut header = Vec::with_capacity(52);
            header.extend_from_slice(&V2_SIGNATURE);
            // Version 2, command PROXY.
            header.push(0x21);
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    header.push(0x11); // AF_INET, STREAM
                    header.extend_from_slice(&12u16.to_be_bytes());
                    header.extend_from_slice(&s.octets());
                    header.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    header.push(0x21); // AF_INET6, STREAM
                    header.extend_from_slice(&36u16.to_be_bytes());
                    header.extend_from_slice(&v6(s).octets());
                    header.extend_from_slice(&v6(d).octets());
                }
            }
            header.extend_from_slice(&source.port().to_be_bytes());
            header.extend_from_slice(&destination.port().to_be_bytes());
            header
        }
    }
}

/// Both addresses in one family: canonical (an IPv4-mapped IPv6 address is
/// IPv4), then both IPv6 if they still differ.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canonical(source), canonical(destination));
    if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        (
            SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port()),
            SocketAddr::new(IpAddr::V6(v6(d.ip())), d.port()),
        )
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn v1_is_one_text_line() {
        assert_eq!(
            encode(ProxyVersion::V1, addr("192.0.2.7:51000"), addr("198.51.100.1:443")),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n"
        );
        assert_eq!(
            encode(ProxyVersion::V1, addr("[2001:db8::7]:51000"), addr("[2001:db8::1]:80")),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n"
        );
    }

    #[test]
    fn v2_ipv4_is_the_signature_then_12_address_bytes() {
        let header = encode(ProxyVersion::V2, addr("192.0.2.7:51000"), addr("198.51.100.1:443"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1]);
        expected.extend_from_slice(&51000u16.to_be_bytes());
        expected.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(header, expected);
    }

    #[test]
    fn v2_ipv6_carries_36_address_bytes() {
        let header = encode(ProxyVersion::V2, addr("[2001:db8::7]:1"), addr("[::1]:2"));
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(&header[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &header[16..32],
            &"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&header[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            encode(ProxyVersion::V1, addr("192.0.2.7:1"), addr("[2001:db8::1]:2")),
            b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1 2\r\n"
        );
        assert_eq!(
            encode(ProxyVersion::V1, addr("[::ffff:192.0.2.7]:1"), addr("127.0.0.1:2")),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n"
        );
    }

    #[test]
    fn the_frontend_reader_would_accept_what_is_written() {
        // Round trip through the same rules the reader applies: v1 fits its 107-byte limit.
        let longest = encode(
            ProxyVersion::V1,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert!(longest.len() <= 107, "{}", longest.len());
    }
}
