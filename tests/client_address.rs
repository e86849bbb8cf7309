//! The real client behind trusted proxies: X-Forwarded-For and the PROXY protocol.

use http::StatusCode;
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `balance = "source"` over `servers`, behind `frontend`.
fn source_config(servers: &[&TestBackend], frontend: Frontend) -> Config {
    Config::simple(frontend, pool().balance("source").servers(servers.iter().copied()))
}

async fn server_from(source: &str, addr: std::net::SocketAddr, xff: &str) -> String {
    let mut client = http_client_on(connect_from(source, addr).await).await;
    let mut request = get_request("/");
    request.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
    let (status, headers, _) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::OK);
    headers["x-server"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_hashed() {
    let (a, b, c) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let tether = start_tether(&source_config(
        &[&a, &b, &c],
        Frontend::public().trusted_proxies(&["127.0.0.0/8"]),
    ))
    .await;
    let mut seen = std::collections::HashSet::new();
    for n in 1..=24 {
        let client = format!("198.51.100.{n}");
        let expected = server_from("127.0.0.2", tether.addr, &client).await;
        // Another proxy address, and a trusted hop appended: the same client, the same server.
        assert_eq!(server_from("127.0.0.3", tether.addr, &client).await, expected);
        assert_eq!(
            server_from("127.0.0.4", tether.addr, &format!("{client}, 127.0.0.9")).await,
            expected
        );
        seen.insert(expected);
    }
    assert!(
        seen.len() > 1,
        "different clients behind one proxy must spread: {seen:?}"
    );
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    let (a, b, c) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let tether = start_tether(&source_config(
        &[&a, &b, &c],
        Frontend::public().trusted_proxies(&["10.0.0.0/8"]),
    ))
    .await;
    let first = server_from("127.0.0.2", tether.addr, "198.51.100.1").await;
    for n in 2..=12 {
        assert_eq!(
            server_from("127.0.0.2", tether.addr, &format!("198.51.100.{n}")).await,
            first
        );
    }
}

async fn raw_from(source: &str, addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect_from(source, addr).await;
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&source_config(
        &[&s1],
        Frontend::public().trusted_proxies(&["127.0.0.1"]).proxy_protocol(true),
    ))
    .await;
    let v1 = [b"PROXY TCP4 198.51.100.7 127.0.0.1 51000 80\r\n".as_slice(), REQUEST].concat();
    let reply = raw_from("127.0.0.1", tether.addr, &v1).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(s1.last_headers()["x-forwarded-for"], "198.51.100.7");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12]); // PROXY, TCP over IPv4, 12 bytes
    v2.extend_from_slice(&[203, 0, 113, 9, 127, 0, 0, 1, 0xc3, 0x50, 0, 80]);
    v2.extend_from_slice(REQUEST);
    let reply = raw_from("127.0.0.1", tether.addr, &v2).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(s1.last_headers()["x-forwarded-for"], "203.0.113.9");

    let mut v2_ipv6 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_ipv6.extend_from_slice(&[0x21, 0x21, 0, 36]);
    let source: std::net::Ipv6Addr = "2001:db8::42".parse().unwrap();
    v2_ipv6.extend_from_slice(&source.octets());
    v2_ipv6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v2_ipv6.extend_from_slice(&[0x13, 0x88, 0, 80]);
    v2_ipv6.extend_from_slice(REQUEST);
    let reply = raw_from("127.0.0.1", tether.addr, &v2_ipv6).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(s1.last_headers()["x-forwarded-for"], "2001:db8::42");
}

#[tokio::test]
async fn proxy_headers_are_only_read_from_trusted_peers() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&source_config(
        &[&s1],
        Frontend::public().trusted_proxies(&["127.0.0.1"]).proxy_protocol(true),
    ))
    .await;
    // An untrusted peer's PROXY line is just a malformed request.
    let v1 = [b"PROXY TCP4 198.51.100.7 127.0.0.1 51000 80\r\n".as_slice(), REQUEST].concat();
    let reply = raw_from("127.0.0.2", tether.addr, &v1).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // An untrusted peer speaks plain HTTP.
    let reply = raw_from("127.0.0.2", tether.addr, REQUEST).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(s1.last_headers()["x-forwarded-for"], "127.0.0.2");
    // A trusted peer must send the header: without it the connection is closed unanswered.
    let reply = raw_from("127.0.0.1", tether.addr, REQUEST).await;
    assert_eq!(reply, "");
}
