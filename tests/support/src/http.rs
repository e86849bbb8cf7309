//! Small HTTP/1 and raw TCP clients.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A body type for test requests and backend responses.
pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// An HTTP/1 client connection to `addr`.
pub async fn http_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.expect("connect to tether");
    http_client_on(stream).await
}

/// An HTTP/1 client connection over `stream`.
pub async fn http_client_on(stream: TcpStream) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// Sends `req` and reads the whole response.
pub async fn send(
    client: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    client.ready().await.expect("client ready");
    let response = client.send_request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// A GET of `path` with an empty body.
pub fn get_request(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header(header::HOST, "tether.test")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

/// GET `path` on a fresh connection: status, headers, body.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut client = http_client(addr).await;
    send(&mut client, get_request(path)).await
}

/// One call to the admin listener at `addr` (loopback, no login): `method`
/// on `path` with an optional JSON `body`, sent with `Host` naming `addr`.
/// Returns the status and the JSON answer (`Null` when it is not JSON).
pub async fn admin_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut client = http_client(addr).await;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(body.unwrap_or_default().to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let (status, _, bytes) = send(&mut client, request).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// GET `path` on a fresh connection and return the backend name (`x-server`).
pub async fn server_of(addr: SocketAddr, path: &str) -> String {
    let (status, headers, _) = get(addr, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}");
    headers["x-server"].to_str().unwrap().to_string()
}

/// The value of the series `series` (name and labels as printed, e.g.
/// `tether_frontend_lifetime_closes_total{frontend="public"}`) in the
/// `/metrics` of the admin listener at `admin`; panics when it is absent.
pub async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let (status, _, body) = get(admin, "/metrics").await;
    assert!(status.is_success(), "/metrics: {status}");
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

/// Writes raw bytes on a new connection and reads until the peer closes or 5 s pass.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP connection to `addr` from source address `source` (127.0.0.x).
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .expect("bind source");
    socket.connect(addr).await.expect("connect from source")
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
