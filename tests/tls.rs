//! TLS: wss:// terminated by tether with certificates chosen by SNI and
//! swapped by reload, redirect to https, HSTS, and TLS toward servers. The
//! certificates come from a test CA made with rcgen in each test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A directory of test files, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test certificate authority whose leaves are written as PEM files.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Where `ca.pem` lives, with the leaves.
    dir: PathBuf,
}

/// A leaf certificate written to `<stem>.pem` / `<stem>.key`.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(dir: &Path, stem: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tether test CA {stem}"));
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write ca");
        TestCa {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), written under `stem`.
    fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let leaf = Leaf {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// A path as the text a config holds.
fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A frontend `tls` with `leaf`'s certificate and key.
fn tls_table(leaf: &Leaf) -> FrontendTls {
    FrontendTls::new(&path_text(&leaf.cert), &path_text(&leaf.key))
}

/// A client configuration trusting `ca` (a PEM file), or any certificate when `None`.
fn client_tls(ca: Option<&Path>) -> Arc<rustls::ClientConfig> {
    match ca {
        Some(ca) => tether::tls::client::client_config(Some(ca), true).expect("client config"),
        None => tether::tls::client::client_config(None, false).expect("client config"),
    }
}

/// A TLS connection to `addr`, asking for `name` (an IP address sends no SNI).
async fn tls_connect(addr: SocketAddr, name: &str, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// The leaf certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Opens `wss://<name>/ws` through tether at `addr`: the socket, the server's
/// announced name and the handshake response.
async fn wss_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> (Wss, String, tokio_tungstenite::tungstenite::handshake::client::Response) {
    let tls = tls_connect(addr, name, config).await;
    let request = format!("wss://{name}/ws").into_client_request().expect("request");
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket handshake over TLS");
    let announced = next_message(&mut ws).await;
    (ws, announced, response)
}

async fn next_message<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next_message(ws).await, text);
}

#[tokio::test]
async fn wss_is_terminated_and_the_server_sees_https() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let leaf = ca.leaf("site", &["tether.test"]);
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().tls(tls_table(&leaf)),
        pool()
            .sticky(Sticky::cookie("SERVERID"))
            .server(Server::from(&s1).cookie("s1")),
    ))
    .await;
    let (mut ws, name, response) = wss_connect(tether.addr, "tether.test", client_tls(Some(&dir.path("ca.pem")))).await;
    assert_eq!(name, "s1");
    echo(&mut ws, "hello over wss").await;
    let forwarded = s1.last_headers();
    assert_eq!(forwarded["x-forwarded-proto"], "https");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("SERVERID=s1") && cookie.contains("Secure"),
        "{cookie}"
    );
    // ALPN: an HTTP/1.1 client gets HTTP/1.1, an h2 client h2 (`http2`
    // is on by default on TLS frontends; tests/http2.rs turns it off).
    let tls = tls_connect(tether.addr, "tether.test", client_tls(Some(&dir.path("ca.pem")))).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h2_only = (*client_tls(Some(&dir.path("ca.pem")))).clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let stream = TcpStream::connect(tether.addr).await.expect("connect");
    let h2 = tokio_rustls::TlsConnector::from(Arc::new(h2_only))
        .connect(ServerName::try_from("tether.test").expect("name"), stream)
        .await
        .expect("an h2 client gets a session");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    ws.close(None).await.expect("close");
    tether.stop().await;
}

/// `[tunnel] engine = "io_uring"` carries plain TCP only: a wss tunnel stays
/// on epoll (the test's thread has no ring socket) and works as before.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn under_the_io_uring_engine_a_wss_tunnel_stays_on_epoll_and_works() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let leaf = ca.leaf("site", &["tether.test"]);
    let s1 = backend("s1").start().await;
    let config = Config::simple(Frontend::public().tls(tls_table(&leaf)), pool().server(&s1)).tunnel_engine("io_uring");
    let tether = start_tether(&config).await;
    let (mut ws, name, _) = wss_connect(tether.addr, "tether.test", client_tls(Some(&dir.path("ca.pem")))).await;
    assert_eq!(name, "s1");
    for text in ["over wss", "and again"] {
        echo(&mut ws, text).await;
    }
    assert_eq!(
        tether::uring::sockets_on_this_thread(),
        0,
        "a TLS tunnel's sockets are not on the ring"
    );
    ws.close(None).await.expect("close");
    tether.stop().await;
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_and_the_first_is_the_default() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let a = ca.leaf("a", &["a.test"]);
    let b = ca.leaf("b", &["b.test"]);
    let wild = ca.leaf("wild", &["*.w.test"]);
    let s1 = backend("s1").start().await;
    let tls = [&a, &b, &wild].iter().fold(FrontendTls::none(), |tls, l| {
        tls.certificate(&path_text(&l.cert), &path_text(&l.key))
    });
    let tether = start_tether(&Config::simple(Frontend::public().tls(tls), pool().server(&s1))).await;
    let verified = client_tls(Some(&dir.path("ca.pem")));
    let any = client_tls(None);
    for (name, expected) in [
        ("a.test", &a),
        ("b.test", &b),
        ("x.w.test", &wild),
        ("unknown.test", &a),
        ("127.0.0.1", &a),
    ] {
        // Names a certificate covers pass full verification; the others get the default.
        let config = if expected.der == a.der && name != "a.test" {
            any.clone()
        } else {
            verified.clone()
        };
        let stream = tls_connect(tether.addr, name, config).await;
        assert!(presented(&stream) == expected.der, "SNI {name} got another certificate");
    }
    let (mut ws, server, _) = wss_connect(tether.addr, "b.test", verified).await;
    assert_eq!(server, "s1");
    echo(&mut ws, "b").await;
    tether.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_connections_and_keeps_open_tunnels() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let first = ca.leaf("site", &["tether.test"]);
    let s1 = backend("s1").start().await;
    let config = Config::simple(Frontend::public().tls(tls_table(&first)), pool().server(&s1));
    let config_path = dir.path("tether.toml");
    std::fs::write(&config_path, config.toml()).expect("write config");
    let tether = start_tether(&config).await;
    tether.handle.set_config_path(config_path.clone());
    let trust = client_tls(Some(&dir.path("ca.pem")));
    let (mut open, _, _) = wss_connect(tether.addr, "tether.test", trust.clone()).await;
    echo(&mut open, "before").await;

    // New files at the same paths, then the reload a SIGHUP does.
    let second = ca.leaf("site", &["tether.test"]);
    assert!(first.der != second.der);
    tether.handle.reload_config_file().expect("reload");
    let fresh = tls_connect(tether.addr, "tether.test", trust.clone()).await;
    assert!(
        presented(&fresh) == second.der,
        "a new connection still got the old certificate"
    );
    echo(&mut open, "after the reload").await;

    // A broken certificate file is refused: the running one stays.
    std::fs::write(&second.cert, "not a certificate").expect("break the cert");
    let err = tether
        .handle
        .reload_config_file()
        .expect_err("a bad certificate is refused");
    assert!(err.contains("tether.toml:") && err.contains("tls `cert`"), "{err}");
    let (mut ws, _, _) = wss_connect(tether.addr, "tether.test", trust).await;
    echo(&mut ws, "still served").await;
    echo(&mut open, "and the first tunnel too").await;
    tether.stop().await;
}

/// A WebSocket echo server speaking TLS with `leaf`: announces `name`, then echoes.
async fn tls_echo_backend(leaf: &Leaf, name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let tls = tether::tls::ServerTls::load(&[(leaf.cert.as_path(), leaf.key.as_path())]).expect("backend tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = tls.acceptor();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if ws.send(Message::text(name)).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Retries a plain `ws://` handshake through tether until it succeeds (the
/// server waits for its first health check) or 10 s pass.
async fn ws_when_up(addr: SocketAddr) -> (Ws, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((mut ws, _)) => {
                let name = next_text(&mut ws).await;
                return (ws, name);
            }
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("no WebSocket through tether in 10 s: {err}"),
        }
    }
}

#[tokio::test]
async fn websockets_reach_a_tls_server_and_a_wrong_ca_gives_502() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let other_ca = TestCa::new(&dir.0, "other-ca");
    let leaf = ca.leaf("backend", &["backend.test", "127.0.0.1"]);
    let (backend_addr, _backend) = tls_echo_backend(&leaf, "tls-backend").await;

    // Verified against the CA, by the `sni` name, with health checks over TLS too.
    let ca_path = dir.path("ca.pem");
    let good = start_tether(&Config::over(
        pool()
            .tls(BackendTls::new().ca(&path_text(&ca_path)))
            .health(Health::check("websocket").path("/ws").interval("100ms").rise(1))
            .server(Server::new("s1", backend_addr).sni("backend.test")),
    ))
    .await;
    let (mut ws, name) = ws_when_up(good.addr).await;
    assert_eq!(name, "tls-backend");
    ws.send(Message::text("through TLS")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "through TLS");

    // Without `sni` the IP address is the name checked (the leaf has it).
    let by_ip = start_tether(&Config::over(
        pool()
            .tls(BackendTls::new().ca(&path_text(&ca_path)))
            .server(("s1", backend_addr)),
    ))
    .await;
    let (_, name) = ws_connect(by_ip.addr, "/ws").await;
    assert_eq!(name, "tls-backend");

    // A CA that did not sign the server's certificate: 502 at once, no hang.
    let wrong = start_tether(&Config::over(
        pool()
            .tls(BackendTls::new().ca(&path_text(&dir.path("other-ca.pem"))))
            .retries(0)
            .server(Server::new("s1", backend_addr).sni("backend.test")),
    ))
    .await;
    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{}/ws", wrong.addr)),
    )
    .await
    .expect("an answer, not a hang");
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY)
        }
        other => panic!("expected 502, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(other_ca);

    // `verify = false` accepts the certificate whoever signed it.
    let unverified = start_tether(&Config::over(
        pool().tls(BackendTls::new().verify(false)).server(("s1", backend_addr)),
    ))
    .await;
    let (_, name) = ws_connect(unverified.addr, "/ws").await;
    assert_eq!(name, "tls-backend");
    for tether in [good, by_ip, wrong, unverified] {
        tether.stop().await;
    }
}

#[tokio::test]
async fn redirect_https_answers_308_and_tls_frontends_send_hsts() {
    let s1 = backend("s1").start().await;
    let plain = start_tether(&Config::simple(
        Frontend::public().redirect_https(true).https_port(8443),
        pool().server(&s1),
    ))
    .await;
    let mut client = http_client(plain.addr).await;
    let request = Request::get("/chat/room?id=7")
        .header(header::HOST, "example.test:8080")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, headers, _) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "https://example.test:8443/chat/room?id=7");
    assert_eq!(s1.requests(), 0, "a redirected request never reaches a server");
    let default_port = start_tether(&Config::simple(
        Frontend::public().redirect_https(true),
        pool().server(&s1),
    ))
    .await;
    let (status, headers, _) = get(default_port.addr, "/x").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "https://tether.test/x");

    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let leaf = ca.leaf("site", &["tether.test"]);
    let secure = start_tether(&Config::simple(
        Frontend::public()
            .tls(tls_table(&leaf))
            .hsts("max-age=31536000; includeSubDomains"),
        pool().server(&s1),
    ))
    .await;
    let tls = tls_connect(secure.addr, "tether.test", client_tls(Some(&dir.path("ca.pem")))).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http over tls");
    tokio::spawn(connection);
    let response = sender.send_request(get_request("/page")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000; includeSubDomains"
    );
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"s1");
    for tether in [plain, default_port, secure] {
        tether.stop().await;
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed_and_others_are_served() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let leaf = ca.leaf("site", &["tether.test"]);
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().tls(tls_table(&leaf)).http_request_timeout("500ms"),
        pool().server(&s1),
    ))
    .await;
    // Silent after connecting: closed at the `http_request` timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(tether.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("tether closes a silent client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // Plain HTTP to the TLS port: not TLS, closed (after at most an alert).
    let mut garbage = TcpStream::connect(tether.addr).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut out))
        .await
        .expect("tether closes a client that does not speak TLS")
        .ok();
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "answered in plain HTTP"
    );

    // Half a handshake (a ClientHello cut short) is closed too.
    let mut cut = TcpStream::connect(tether.addr).await.expect("connect");
    cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), cut.read_to_end(&mut answer))
        .await
        .expect("tether closes a client stuck mid-handshake");
    // Closed (a clean end or a reset) without a handshake going on: no
    // ServerHello, at most a TLS alert record (content type 21).
    assert!(
        read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "a cut ClientHello got {answer:?}"
    );

    let (mut ws, name, _) = wss_connect(tether.addr, "tether.test", client_tls(Some(&dir.path("ca.pem")))).await;
    assert_eq!(name, "s1");
    echo(&mut ws, "still serving").await;
    assert_eq!(tether.handle.open_connections(), 1, "the refused clients are gone");
    let failures = &tether.handle.snapshot().frontends[0].state.tls_handshake_failures;
    assert_eq!(
        failures.load(Ordering::Relaxed),
        3,
        "tether_tls_handshake_failures_total"
    );
    tether.stop().await;
}

#[tokio::test]
async fn the_proxy_header_comes_before_the_tls_handshake() {
    let dir = TempDir::new();
    let ca = TestCa::new(&dir.0, "ca");
    let leaf = ca.leaf("site", &["tether.test"]);
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public()
            .tls(tls_table(&leaf))
            .trusted_proxies(&["127.0.0.1"])
            .proxy_protocol(true),
        pool().server(&s1),
    ))
    .await;
    let mut stream = TcpStream::connect(tether.addr).await.expect("connect");
    stream
        .write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 51000 443\r\n")
        .await
        .expect("PROXY header");
    let tls = tokio_rustls::TlsConnector::from(client_tls(Some(&dir.path("ca.pem"))))
        .connect(ServerName::try_from("tether.test").expect("name"), stream)
        .await
        .expect("TLS after the PROXY header");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http over tls");
    tokio::spawn(connection);
    let response = sender.send_request(get_request("/")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let forwarded = s1.last_headers();
    assert_eq!(forwarded["x-forwarded-for"], "198.51.100.7");
    assert_eq!(forwarded["x-forwarded-proto"], "https");
    tether.stop().await;
}
