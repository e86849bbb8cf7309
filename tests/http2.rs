//! HTTP/2 to clients: requests over h2 (ALPN on TLS, h2c with prior
//! knowledge on a plain frontend), WebSockets over HTTP/2 (RFC 8441
//! extended CONNECT bridged to an HTTP/1.1 upgrade), HTTP/2's own limits,
//! and the rapid-reset and CONTINUATION-flood attacks answered with GOAWAY.
//! The client is the `h2` crate (raw frames for the attacks).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tether::state::AdminState;
use tether_test_support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A TLS connection to tether offering `alpn`, trusting any certificate.
async fn tls_connect(addr: SocketAddr, alpn: &[&[u8]]) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = (*tether::tls::client::client_config(None, false).expect("client config")).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("tether.test").expect("name"), stream)
        .await
}

/// An HTTP/2 client over `io`, its connection driven by a task of its own.
async fn h2_client<T>(io: T) -> h2::client::SendRequest<Bytes>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.expect("h2 ready")
}

/// Sends a GET over h2 (its `:authority` is `tether.test`): status, headers, body.
async fn h2_get(
    client: &h2::client::SendRequest<Bytes>,
    scheme: &str,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::get(format!("{scheme}://tether.test{path}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let mut client = client.clone().ready().await.expect("ready");
    let (response, _) = client.send_request(request.body(()).unwrap(), true).expect("send");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("response in time")
        .expect("response");
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        body.flow_control().release_capacity(chunk.len()).expect("release");
        bytes.extend_from_slice(&chunk);
    }
    (parts.status, parts.headers, Bytes::from(bytes))
}

/// One HTTP/2 stream as a byte stream, for a WebSocket client over it.
struct H2Io {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    pending: Bytes,
}

impl AsyncRead for H2Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    self.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

type H2Ws = WebSocketStream<H2Io>;

/// Waits until the server's SETTINGS allowed extended CONNECT (RFC 8441 §3).
async fn extended_connect_allowed(client: &h2::client::SendRequest<Bytes>) -> bool {
    for _ in 0..100 {
        if client.is_extended_connect_protocol_enabled() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Opens a WebSocket over one stream of `client` (RFC 8441 extended
/// CONNECT): the response head and the socket.
async fn h2_websocket(
    client: &h2::client::SendRequest<Bytes>,
    scheme: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Option<H2Ws>) {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{scheme}://tether.test{path}"))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = client.clone().ready().await.expect("ready");
    let (response, send) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("send CONNECT");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("CONNECT answered in time")
        .expect("CONNECT response");
    let (parts, recv) = response.into_parts();
    if parts.status != StatusCode::OK {
        return (parts, None);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let io = H2Io {
        send,
        recv,
        pending: Bytes::new(),
    };
    let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
    (parts, Some(ws))
}

async fn next_ws_message(ws: &mut H2Ws) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn next_ws_text(ws: &mut H2Ws) -> String {
    match next_ws_message(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The close code tether (or the server) sent on `ws`, within `within`.
async fn ws_close_code(ws: &mut H2Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// The access-log lines of every test in this file.
fn access_lines() -> &'static Captured {
    captured_access_lines()
}

/// `config` with a loopback admin listener (for `/metrics`).
fn with_admin(config: Config) -> Config {
    config.admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
}

async fn frontend_metric(tether: &RunningTether, series: &str) -> u64 {
    let admin = tether.handle.admin_addr().expect("admin listener");
    metric(admin, series).await
}

#[tokio::test]
async fn a_tls_frontend_serves_requests_over_h2_with_routing_stickiness_and_forwarding() {
    let cert = SelfSigned::new();
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::new()
        .frontend(
            Frontend::public()
                .tls(cert.tls())
                .route(Route::to("other").path_prefix("/other"))
                .route(Route::to("dead").path_prefix("/dead")),
        )
        .backend(
            pool()
                .sticky(Sticky::cookie("SERVERID"))
                .server(Server::from(&s1).cookie("s1")),
        )
        .backend(Backend::new("other").server(&s2))
        .backend(Backend::new("dead").server(Server::new("gone", closed_port().await)));
    let tether = start_tether(&with_admin(config)).await;
    let tls = tls_connect(tether.addr, &[b"h2", b"http/1.1"]).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN picks h2");
    let client = h2_client(tls).await;
    let (status, headers, body) = h2_get(&client, "https", "/page?x=1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "s1");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("SERVERID=s1") && cookie.contains("Secure"),
        "{cookie}"
    );
    let forwarded = s1.last_headers();
    assert_eq!(forwarded["host"], "tether.test", ":authority becomes Host");
    assert_eq!(forwarded["x-forwarded-proto"], "https");
    // Several cookie fields (RFC 9113 §8.2.3) reach the server as one.
    let mut request = Request::get("https://tether.test/c");
    request = request.header("cookie", "a=1").header("cookie", "SERVERID=s1");
    let mut sender = client.clone().ready().await.unwrap();
    let (response, _) = sender.send_request(request.body(()).unwrap(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["x-seen-cookie"], "a=1; SERVERID=s1");
    // Routing by path, on the same connection.
    let (_, _, body) = h2_get(&client, "https", "/other/x", None).await;
    assert_eq!(body, "s2");
    // tether's own error statuses travel over h2 as well.
    let (status, _, _) = h2_get(&client, "https", "/dead", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        frontend_metric(
            &tether,
            "tether_frontend_protocol_requests_total{frontend=\"public\",protocol=\"h2\"}"
        )
        .await,
        4
    );
    assert_eq!(
        frontend_metric(&tether, "tether_frontend_http2_connections_total{frontend=\"public\"}").await,
        1
    );
    // An HTTP/1.1 client on the same frontend still gets HTTP/1.1.
    let tls = tls_connect(tether.addr, &[b"http/1.1"]).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tether.stop().await;
}

#[tokio::test]
async fn http2_false_on_a_tls_frontend_offers_http1_only() {
    let cert = SelfSigned::new();
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().tls(cert.tls()).http2(false),
        pool().server(&s1),
    ))
    .await;
    let tls = tls_connect(tether.addr, &[b"h2", b"http/1.1"]).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        tls_connect(tether.addr, &[b"h2"]).await.is_err(),
        "an h2-only client is refused in the handshake (RFC 7301 §3.2)"
    );
    tether.stop().await;
}

#[tokio::test]
async fn a_plain_frontend_speaks_h2c_with_prior_knowledge_only_when_asked() {
    let s1 = backend("s1").start().await;
    let off = start_tether(&Config::over(pool().server(&s1))).await;
    let stream = TcpStream::connect(off.addr).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        let (mut client, connection) = h2::client::handshake(stream).await?;
        tokio::spawn(connection);
        let (response, _) = client.send_request(Request::get("http://tether.test/").body(()).unwrap(), true)?;
        response.await
    })
    .await
    .expect("an answer in time");
    assert!(refused.is_err(), "h2c is off by default on a plain frontend");
    off.stop().await;

    let on = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let client = h2_client(TcpStream::connect(on.addr).await.unwrap()).await;
    let (status, _, body) = h2_get(&client, "http", "/", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"s1"[..]));
    assert_eq!(s1.last_headers()["x-forwarded-proto"], "http");
    // HTTP/1.1 still works on the same frontend.
    assert_eq!(server_of(on.addr, "/").await, "s1");
    on.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_websockets_on_one_h2_connection_each_reach_their_sticky_server() {
    let cert = SelfSigned::new();
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::simple(
        Frontend::public()
            .tls(cert.tls())
            .allowed_origins(&["https://tether.test"]),
        pool()
            .balance("roundrobin")
            .sticky(Sticky::cookie("SERVERID"))
            .server(Server::from(&s1).cookie("s1"))
            .server(Server::from(&s2).cookie("s2")),
    );
    let tether = start_tether(&with_admin(config)).await;
    let client = h2_client(tls_connect(tether.addr, &[b"h2"]).await.expect("TLS")).await;
    assert!(
        extended_connect_allowed(&client).await,
        "SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let origin = ("origin", "https://tether.test");
    let mut sockets = Vec::new();
    for sticky in ["s2", "s1", "s2", "s1"] {
        let cookie = format!("SERVERID={sticky}");
        let (parts, ws) = h2_websocket(
            &client,
            "https",
            "/ws",
            &[origin, ("cookie", &cookie), ("sec-websocket-protocol", "chat")],
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK, "the server's 101 becomes a 200");
        assert!(!parts.headers.contains_key("sec-websocket-accept"));
        assert_eq!(parts.headers["sec-websocket-protocol"], "chat");
        let mut ws = ws.expect("a WebSocket");
        assert_eq!(
            next_ws_text(&mut ws).await,
            sticky,
            "each stream reaches its sticky server"
        );
        sockets.push(ws);
    }
    let forwarded = s1.last_headers();
    assert_eq!(forwarded["upgrade"], "websocket");
    assert_eq!(
        forwarded["sec-websocket-key"].len(),
        24,
        "a key made for the server's leg"
    );
    // Plain requests share the connection with the tunnels.
    let (status, _, _) = h2_get(&client, "https", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    // Byte-exact echo on every tunnel at once.
    for (i, ws) in sockets.iter_mut().enumerate() {
        let payload: Vec<u8> = (0..70_000u32)
            .map(|b| (b.wrapping_mul(31).wrapping_add(i as u32)) as u8)
            .collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        match next_ws_message(ws).await {
            Message::Binary(echo) => assert!(echo[..] == payload[..], "echo differs"),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    // An Origin the frontend does not allow is refused, as on HTTP/1.1.
    let (parts, _) = h2_websocket(&client, "https", "/ws", &[("origin", "https://evil.test")]).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(
        frontend_metric(
            &tether,
            "tether_frontend_protocol_websockets_total{frontend=\"public\",protocol=\"h2\"}"
        )
        .await,
        4
    );
    assert_eq!(
        tether.handle.snapshot().backends[0].servers[0]
            .state
            .tunnels
            .load(Ordering::Relaxed),
        2
    );
    for mut ws in sockets {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    }
    let ended = eventually(Duration::from_secs(5), async || {
        tether.handle.snapshot().backends[0].servers[0]
            .state
            .tunnels
            .load(Ordering::Relaxed)
            == 0
    })
    .await;
    assert!(ended.is_some(), "the tunnels were counted out");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixteen_mebibyte_message_crosses_an_h2_websocket_byte_exact() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    assert!(extended_connect_allowed(&client).await);
    let (_, ws) = h2_websocket(&client, "http", "/ws", &[]).await;
    let mut ws = ws.expect("a WebSocket");
    assert_eq!(next_ws_text(&mut ws).await, "s1");
    let payload: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    match next_ws_message(&mut ws).await {
        Message::Binary(echo) => {
            assert_eq!(echo.len(), payload.len());
            assert!(echo[..] == payload[..], "the echoed 16 MiB differ");
        }
        other => panic!("expected the binary echo, got {other:?}"),
    }
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tether_closes_h2_websockets_itself_with_1009_and_1012_and_logs_the_protocol() {
    let captured = access_lines();
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::simple(
        Frontend::public().http2(true).websocket_max_message_size(1024),
        pool()
            .sticky(Sticky::cookie("SERVERID"))
            .drain_timeout("300ms")
            .drain_spread("100ms")
            .server(Server::from(&s1).cookie("s1"))
            .server(Server::from(&s2).cookie("s2")),
    );
    let tether = start_tether(&config).await;
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    assert!(extended_connect_allowed(&client).await);
    let (_, too_big) = h2_websocket(&client, "http", "/ws", &[("cookie", "SERVERID=s1")]).await;
    let mut too_big = too_big.expect("a WebSocket");
    let (_, drained) = h2_websocket(&client, "http", "/ws", &[("cookie", "SERVERID=s2")]).await;
    let mut drained = drained.expect("a WebSocket");
    let (_, kept) = h2_websocket(&client, "http", "/ws", &[("cookie", "SERVERID=s1")]).await;
    let mut kept = kept.expect("a WebSocket");
    assert_eq!(next_ws_text(&mut too_big).await, "s1");
    assert_eq!(next_ws_text(&mut drained).await, "s2");
    assert_eq!(next_ws_text(&mut kept).await, "s1");
    too_big.send(Message::binary(vec![7u8; 2048])).await.unwrap();
    assert_eq!(ws_close_code(&mut too_big, Duration::from_secs(5)).await, Some(1009));
    let state = tether.handle.snapshot().backends[0].servers[1].state.clone();
    assert!(tether.handle.set_admin(&state, AdminState::Drain));
    assert_eq!(ws_close_code(&mut drained, Duration::from_secs(5)).await, Some(1012));
    // The other streams of the connection go on.
    kept.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_ws_text(&mut kept).await, "still here");
    kept.close(None).await.unwrap();
    // The access log names the protocol of the handshake and of the tunnel.
    let closed_too_big = eventually(Duration::from_secs(5), async || {
        captured.lines().iter().any(|l| {
            l["kind"] == "tunnel" && l["protocol"] == "h2" && l["server"] == "s1" && l["close_code_out"] == 1009
        })
    })
    .await;
    assert!(
        closed_too_big.is_some(),
        "a tunnel line with protocol h2:\n{}",
        captured.text()
    );
    assert!(
        captured
            .lines()
            .iter()
            .any(|l| l["kind"] == "http" && l["protocol"] == "h2" && l["method"] == "CONNECT" && l["status"] == 200),
        "an http line for the extended CONNECT:\n{}",
        captured.text()
    );
    tether.stop().await;
}

#[tokio::test]
async fn a_websocket_on_an_h2_stream_counts_as_a_connection_for_the_per_address_cap() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().http2(true).per_ip_max_connections(2),
        pool().server(&s1),
    ))
    .await;
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    assert!(extended_connect_allowed(&client).await);
    // The connection is one, its first WebSocket the second.
    let (parts, first) = h2_websocket(&client, "http", "/ws", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let mut first = first.expect("a WebSocket");
    assert_eq!(next_ws_text(&mut first).await, "s1");
    let (parts, _) = h2_websocket(&client, "http", "/ws", &[]).await;
    assert_eq!(
        parts.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a third one is over the cap"
    );
    // Plain requests on the connection are not refused.
    let (status, _, _) = h2_get(&client, "http", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    // Once the first closes, there is room again.
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    let room = eventually(Duration::from_secs(5), async || {
        h2_websocket(&client, "http", "/ws", &[]).await.0.status == StatusCode::OK
    })
    .await;
    assert!(room.is_some(), "a WebSocket is let in once the first one ended");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_h2_websockets_with_1001_and_ends() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    assert!(extended_connect_allowed(&client).await);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (_, ws) = h2_websocket(&client, "http", "/ws", &[]).await;
        let mut ws = ws.expect("a WebSocket");
        assert_eq!(next_ws_text(&mut ws).await, "s1");
        sockets.push(ws);
    }
    let (stopped, ()) = tokio::join!(tether.stopped_within(Duration::from_secs(8)), async {
        for ws in sockets.iter_mut() {
            assert_eq!(ws_close_code(ws, Duration::from_secs(6)).await, Some(1001));
        }
    });
    assert!(stopped, "tether stopped with the h2 connection and its tunnels gone");
}

/// Writes one HTTP/2 frame header and payload into `out` (RFC 9113 §4.1).
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An HPACK block for `GET http://tether.test/` (static-table indexes and
/// one literal without indexing, RFC 7541 §6.2.2).
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 11];
    block.extend_from_slice(b"tether.test");
    block
}

/// A raw h2c connection that sent the preface and an empty SETTINGS.
async fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut hello, SETTINGS, 0, 0, &[]);
    stream.write_all(&hello).await.unwrap();
    stream
}

/// Reads frames until a GOAWAY (its error code) or the end of the connection (`None`).
async fn goaway_code(stream: &mut TcpStream) -> Option<u32> {
    let read = async {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.ok()?;
            if head[3] == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the connection answered in time")
}

/// Whether `stream` is closed by the peer (after anything still in flight).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_and_others_are_still_served() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let mut attacker = raw_h2c(tether.addr).await;
    // CVE-2023-44487: open a stream and cancel it at once, many times, in one burst.
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let stream = 2 * i + 1;
        frame(&mut burst, HEADERS, END_HEADERS | END_STREAM, stream, &get_block());
        frame(&mut burst, RST_STREAM, 0, stream, &8u32.to_be_bytes());
    }
    let _ = attacker.write_all(&burst).await;
    assert_eq!(goaway_code(&mut attacker).await, Some(ENHANCE_YOUR_CALM));
    assert!(closed(&mut attacker).await, "the attacker's connection is closed");
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    let (status, _, body) = h2_get(&client, "http", "/", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"s1"[..]));
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_one_by_one_after_tether_took_them_get_goaway_too() {
    let s1 = backend("s1").delay(Duration::from_secs(2)).start().await;
    let tether = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let mut attacker = raw_h2c(tether.addr).await;
    // The paced variant of CVE-2023-44487: each stream is taken (its
    // request is on its way to the server) before the client resets it.
    let mut goaway = None;
    for i in 0..300u32 {
        let stream = 2 * i + 1;
        let mut open = Vec::new();
        frame(&mut open, HEADERS, END_HEADERS | END_STREAM, stream, &get_block());
        if attacker.write_all(&open).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        let mut reset = Vec::new();
        frame(&mut reset, RST_STREAM, 0, stream, &8u32.to_be_bytes());
        if attacker.write_all(&reset).await.is_err() {
            break;
        }
        if let Ok(code) = tokio::time::timeout(Duration::from_millis(1), peek_goaway(&mut attacker)).await {
            goaway = code;
            break;
        }
    }
    let goaway = match goaway {
        Some(code) => Some(code),
        None => goaway_code(&mut attacker).await,
    };
    assert!(goaway.is_some(), "GOAWAY for the paced reset flood");
    assert!(closed(&mut attacker).await, "the attacker's connection is closed");
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    let (status, _, body) = h2_get(&client, "http", "/", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"s1"[..]));
    tether.stop().await;
}

/// Reads frames as they come; resolves with the GOAWAY's code when one
/// arrives, `None` at the end of the connection (cancel-safe enough for a
/// short timeout: a frame cut by it is only lost to the attacker).
async fn peek_goaway(stream: &mut TcpStream) -> Option<u32> {
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        if head[3] == GOAWAY && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
}

#[tokio::test]
async fn a_continuation_flood_gets_goaway_and_others_are_still_served() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(Frontend::public().http2(true), pool().server(&s1))).await;
    let mut attacker = raw_h2c(tether.addr).await;
    // CVE-2024-27316: a header block that never ends, in endless CONTINUATION frames.
    let mut flood = Vec::new();
    frame(&mut flood, HEADERS, END_STREAM, 1, &get_block());
    for _ in 0..2000 {
        frame(
            &mut flood,
            CONTINUATION,
            0,
            1,
            &[0x40, 1, b'x', 4, b'a', b'b', b'c', b'd'],
        );
    }
    let _ = attacker.write_all(&flood).await;
    let code = goaway_code(&mut attacker).await;
    assert!(
        matches!(code, Some(c) if c != 0),
        "GOAWAY with an error for the flood, got {code:?}"
    );
    assert!(closed(&mut attacker).await, "the attacker's connection is closed");
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    let (status, _, body) = h2_get(&client, "http", "/", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"s1"[..]));
    tether.stop().await;
}

#[tokio::test]
async fn http2_limits_are_announced_and_enforced() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public()
            .http2(true)
            .http2_max_concurrent_streams(3)
            .http2_max_header_list_size(4096),
        pool().server(&s1),
    ))
    .await;
    let client = h2_client(TcpStream::connect(tether.addr).await.unwrap()).await;
    // The first exchange brings the server's SETTINGS in.
    let (status, _, _) = h2_get(&client, "http", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(client.current_max_send_streams(), 3, "SETTINGS_MAX_CONCURRENT_STREAMS");
    // A header list over the limit gets 431; the connection stays usable.
    let big = "v".repeat(8192);
    let mut sender = client.clone().ready().await.unwrap();
    let (response, _) = sender
        .send_request(
            Request::get("http://tether.test/")
                .header("x-big", big)
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("in time")
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let (status, _, _) = h2_get(&client, "http", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    tether.stop().await;
}

/// The page: opens `wss://<its host>/ws`, reads the server's name, has a
/// message echoed, and writes both into the DOM.
const WEBSOCKET_PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
const ws = new WebSocket("wss://" + location.host + "/ws");
let server = null;
ws.onmessage = (e) => {
  if (server === null) { server = e.data; ws.send("echo over h2"); }
  else { out.textContent = "server=" + server + " echo=" + e.data; ws.close(); }
};
ws.onerror = () => { out.textContent = "error"; };
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_headless_chromium_opens_wss_over_h2_through_tether() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let cert = SelfSigned::new();
    let s1 = backend("s1").decline_extensions().start().await;
    let (page, _page_task) = page_server(WEBSOCKET_PAGE).await;
    let config = Config::new()
        .frontend(
            Frontend::public()
                .tls(cert.tls())
                .route(Route::to("pages").path_prefix("/page")),
        )
        .backend(pool().server(&s1))
        .backend(Backend::new("pages").server(Server::new("page", page)));
    let tether = start_tether(&with_admin(config)).await;
    let report = browser_page_out(&binary, &format!("https://tether.test:{}/page", tether.addr.port())).await;
    assert_eq!(
        report["out"], "server=s1 echo=echo over h2",
        "the page's WebSocket worked: {report}"
    );
    let h2 = |series: &str| format!("{series}{{frontend=\"public\",protocol=\"h2\"}}");
    assert!(
        frontend_metric(&tether, &h2("tether_frontend_protocol_requests_total")).await >= 1,
        "the page came over h2"
    );
    assert_eq!(
        frontend_metric(&tether, &h2("tether_frontend_protocol_websockets_total")).await,
        1,
        "the wss:// WebSocket rode the h2 connection (RFC 8441)"
    );
    tether.stop().await;
}
