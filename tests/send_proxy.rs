//! `send_proxy`: servers behind tether learn the real client address from a
//! PROXY protocol header (v1 or v2) at the start of each connection, for
//! plain HTTP and WebSocket handshakes; such connections are never shared
//! between clients; health checks send the header with `health.send_proxy`.
//!
//! The server here parses the header by hand (it is the peer under test,
//! so it does not reuse tether's own reader) and refuses connections
//! without one, as a server configured for the PROXY protocol does.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tether_test_support::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// What one PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    version: u8,
    source: SocketAddr,
    destination: SocketAddr,
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads a v1 or v2 PROXY header (TCP over IPv4/IPv6) from the start of `stream`.
async fn read_header(stream: &mut TcpStream) -> Option<Header> {
    let mut start = [0u8; 16];
    stream.read_exact(&mut start[..6]).await.ok()?;
    if &start[..6] == b"PROXY " {
        let mut line = b"PROXY ".to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() > 107 {
                return None;
            }
            line.push(stream.read_u8().await.ok()?);
        }
        let text = String::from_utf8(line).ok()?;
        let fields: Vec<&str> = text.trim_end().split(' ').collect();
        let [_, "TCP4" | "TCP6", src, dst, sport, dport] = fields[..] else {
            return None;
        };
        return Some(Header {
            version: 1,
            source: SocketAddr::new(src.parse().ok()?, sport.parse().ok()?),
            destination: SocketAddr::new(dst.parse().ok()?, dport.parse().ok()?),
        });
    }
    stream.read_exact(&mut start[6..]).await.ok()?;
    if &start[..12] != V2_SIGNATURE || start[12] != 0x21 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([start[14], start[15]]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = match (start[13], len) {
        (0x11, 12..) => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]));
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        (0x21, 36..) => {
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        _ => return None,
    };
    Some(Header {
        version: 2,
        source,
        destination,
    })
}

/// A server that requires a PROXY header on every connection, then speaks
/// HTTP/1.1: a plain request is answered with the header's source address
/// (and `x-connection`, the connection's number); a WebSocket handshake is
/// accepted and the source address is its first message.
struct ProxiedServer {
    addr: SocketAddr,
    headers: Arc<Mutex<Vec<Header>>>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxiedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxiedServer {
    async fn start() -> ProxiedServer {
        ProxiedServer::start_with(None).await
    }

    /// With `tls`, the TLS handshake comes after the PROXY header.
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> ProxiedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (seen, refusals) = (headers.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let mut number = 0usize;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                number += 1;
                let (seen, refusals, tls) = (seen.clone(), refusals.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some(header) = read_header(&mut stream).await else {
                        refusals.fetch_add(1, Ordering::SeqCst);
                        return; // no header: the connection is closed unanswered
                    };
                    seen.lock().unwrap().push(header);
                    match tls {
                        None => serve_connection(stream, header, number).await,
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                refusals.fetch_add(1, Ordering::SeqCst);
                                return;
                            };
                            serve_connection(stream, header, number).await;
                        }
                    }
                });
            }
        });
        ProxiedServer {
            addr,
            headers,
            refused,
            task,
        }
    }

    fn headers(&self) -> Vec<Header> {
        self.headers.lock().unwrap().clone()
    }
}

/// Serves HTTP/1.1 (with upgrades) on `stream`, whose PROXY header said `header`.
async fn serve_connection<S>(stream: S, header: Header, number: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| serve(req, header, number));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn serve(
    mut req: Request<Incoming>,
    header: Header,
    connection: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let source = header.source.to_string();
    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
        tokio::spawn(tether::demo::announce_and_echo(hyper::upgrade::on(&mut req), source));
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    Ok(Response::builder()
        .header("x-connection", connection.to_string())
        .body(Full::new(Bytes::from(source)))
        .unwrap())
}

/// A client connection to tether whose own address is known.
async fn client(tether: SocketAddr) -> (hyper::client::conn::http1::SendRequest<TestBody>, SocketAddr) {
    let stream = TcpStream::connect(tether).await.unwrap();
    let local = stream.local_addr().unwrap();
    (http_client_on(stream).await, local)
}

/// GET `/` on `sender`: the source address the server was told, and its connection number.
async fn ask(sender: &mut hyper::client::conn::http1::SendRequest<TestBody>) -> (String, String) {
    let (status, headers, body) = send(sender, get_request("/")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let connection = headers["x-connection"].to_str().unwrap().to_string();
    (String::from_utf8(body.to_vec()).unwrap(), connection)
}

fn over(server: &ProxiedServer, send_proxy: &str) -> Config {
    Config::over(pool().send_proxy(send_proxy).server(Server::new("p1", server.addr)))
}

#[tokio::test]
async fn http_requests_carry_the_client_address_in_v1_and_v2() {
    for (version, number) in [("v1", 1), ("v2", 2)] {
        let server = ProxiedServer::start().await;
        let tether = start_tether(&over(&server, version)).await;
        let (mut sender, local) = client(tether.addr).await;
        let (source, _) = ask(&mut sender).await;
        assert_eq!(source, local.to_string(), "{version}: the client's address and port");
        let headers = server.headers();
        assert_eq!(headers.len(), 1, "{version}: {headers:?}");
        assert_eq!(headers[0].version, number);
        assert_eq!(headers[0].source, local);
        assert_eq!(
            headers[0].destination, tether.addr,
            "{version}: the address the client reached"
        );
        assert_eq!(server.refused.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn a_websocket_handshake_carries_the_client_address() {
    for version in ["v1", "v2"] {
        let server = ProxiedServer::start().await;
        let tether = start_tether(&over(&server, version)).await;
        let stream = TcpStream::connect(tether.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
        let (mut ws, response) =
            tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .expect("handshake through tether");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(next_text(&mut ws).await, local.to_string(), "{version}");
        assert_eq!(server.headers()[0].source, local);
    }
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost`.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn the_header_comes_before_the_tls_handshake_of_a_tls_server() {
    let server = ProxiedServer::start_with(Some(tls_acceptor())).await;
    let backend = pool()
        .send_proxy("v2")
        .tls(BackendTls::new().verify(false))
        .server(Server::new("p1", server.addr));
    let tether = start_tether(&Config::over(backend)).await;
    let (mut sender, local) = client(tether.addr).await;
    assert_eq!(ask(&mut sender).await.0, local.to_string());
    assert_eq!(
        server.refused.load(Ordering::SeqCst),
        0,
        "the TLS handshake followed the header"
    );
}

#[tokio::test]
async fn a_server_own_setting_overrides_its_backend() {
    let server = ProxiedServer::start().await;
    let backend = pool()
        .send_proxy("v2")
        .server(Server::new("p1", server.addr).send_proxy("v1"));
    let tether = start_tether(&Config::over(backend)).await;
    let (mut sender, local) = client(tether.addr).await;
    assert_eq!(ask(&mut sender).await.0, local.to_string());
    assert_eq!(server.headers()[0].version, 1);
}

#[tokio::test]
async fn two_clients_never_share_an_upstream_connection() {
    let server = ProxiedServer::start().await;
    let tether = start_tether(&over(&server, "v2")).await;
    let (mut first, first_addr) = client(tether.addr).await;
    let (mut second, second_addr) = client(tether.addr).await;
    let (source, first_connection) = ask(&mut first).await;
    assert_eq!(source, first_addr.to_string());
    // The first client's upstream connection is idle now: the second client must not get it.
    let (source, second_connection) = ask(&mut second).await;
    assert_eq!(
        source,
        second_addr.to_string(),
        "the second client announced as the first"
    );
    assert_ne!(first_connection, second_connection);
    let (source, _) = ask(&mut first).await;
    assert_eq!(source, first_addr.to_string());
    assert!(
        server
            .headers()
            .iter()
            .all(|h| h.source == first_addr || h.source == second_addr),
        "{:?}",
        server.headers()
    );
}

/// Sends GETs until one is answered 200 (the server passed its checks) or `within` passes.
async fn comes_up(tether: SocketAddr, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let (mut sender, _) = client(tether).await;
        if send(&mut sender, get_request("/")).await.0 == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_health_check_with_send_proxy_passes_against_a_server_requiring_the_header() {
    for version in ["v1", "v2"] {
        let server = ProxiedServer::start().await;
        let health = Health::check("http").interval("100ms").rise(1).send_proxy(true);
        let backend = pool()
            .send_proxy(version)
            .health(health)
            .server(Server::new("p1", server.addr));
        let tether = start_tether(&Config::over(backend)).await;
        assert!(
            comes_up(tether.addr, Duration::from_secs(5)).await,
            "{version}: the checks never passed"
        );
        let check = server
            .headers()
            .into_iter()
            .find(|h| h.destination == server.addr)
            .expect("a check's header names the server as destination");
        assert!(check.source.ip().is_loopback(), "{check:?}");
        assert_eq!(server.refused.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn without_health_send_proxy_the_checks_of_such_a_server_fail() {
    let server = ProxiedServer::start().await;
    let health = Health::check("http").interval("100ms").rise(1);
    let backend = pool()
        .send_proxy("v2")
        .health(health)
        .server(Server::new("p1", server.addr));
    let tether = start_tether(&Config::over(backend)).await;
    assert!(!comes_up(tether.addr, Duration::from_millis(800)).await);
    assert!(
        server.refused.load(Ordering::SeqCst) > 0,
        "the checks came without a header"
    );
}

#[test]
fn health_send_proxy_needs_a_version() {
    let text = "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
                [[backend]]\nname = \"web\"\nhealth = { check = \"tcp\", send_proxy = true }\n\n\
                [[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
    match tether::config::parse(text, "t.toml") {
        Err(tether::config::ConfigError::Invalid { line, message, .. }) => {
            assert_eq!(line, 8, "{message}");
            assert!(message.contains("send_proxy = \"v1\""), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
