//! Routing rules seen from a client: the classic HAProxy WebSocket layout
//! (Socket.IO path, Upgrade header or `ws` host → `websockets`, the rest →
//! `web`), plus `all`, query, regex and first-match rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One backend per name, each with a single server of the same name + "1".
struct Layout {
    tether: RunningTether,
    /// Kept alive for the test's duration.
    _servers: Vec<TestBackend>,
}

/// Backends of the layout, in the order their `[[backend]]` tables appear.
const BACKENDS: [&str; 8] = ["websockets", "web", "api", "beta", "debug", "rooms", "cart", "shop"];

/// The classic layout plus rules exercising every condition kind.
fn routes(frontend: Frontend) -> Frontend {
    frontend
        .route(
            Route::to("websockets")
                .any(Condition::path_prefix("/socket.io"))
                .any(Condition::header("upgrade").equals("websocket"))
                .any(Condition::host_prefix("ws")),
        )
        .route(
            Route::to("api")
                .all(Condition::method("POST"))
                .all(Condition::path("/api")),
        )
        .route(Route::to("beta").any(Condition::query("version").equals("beta")))
        .route(Route::to("debug").any(Condition::query("debug")))
        .route(Route::to("rooms").any(Condition::path_regex("^/rooms/[0-9]+$")))
        .route(Route::to("cart").path_prefix("/shop/cart"))
        .route(Route::to("shop").path_prefix("/shop"))
}

async fn start_layout(default_backend: Option<&str>) -> Layout {
    let mut servers = Vec::new();
    let mut frontend = Frontend::new("public").bind("127.0.0.1:0");
    if let Some(default) = default_backend {
        frontend = frontend.default_backend(default);
    }
    let mut config = Config::new().shutdown_grace("2s").frontend(routes(frontend));
    for name in BACKENDS {
        let server = backend(&format!("{name}1")).start().await;
        config = config.backend(Backend::new(name).server(&server));
        servers.push(server);
    }
    Layout {
        tether: start_tether(&config).await,
        _servers: servers,
    }
}

/// A request with `method`, `path`, Host `host` and extra headers.
fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = if method == "POST" {
        Bytes::from_static(b"posted")
    } else {
        Bytes::new()
    };
    builder
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .unwrap()
}

/// The server (`x-server`) that answered `method path` with Host `host`.
async fn routed_to(addr: SocketAddr, method: &str, path: &str, host: &str) -> String {
    let mut client = http_client(addr).await;
    let (status, headers, _) = send(&mut client, request(method, path, host, &[])).await;
    assert_eq!(status, StatusCode::OK, "{method} {path} Host: {host}");
    headers["x-server"].to_str().unwrap().to_string()
}

/// Sends raw `head` on a fresh connection and returns the status code and
/// the response headers (names in lower case).
async fn raw_response(addr: SocketAddr, head: &str) -> (u16, HashMap<String, String>) {
    let reply = raw_exchange(addr, head.as_bytes()).await;
    parse_head(&reply)
}

fn parse_head(reply: &str) -> (u16, HashMap<String, String>) {
    let head = reply.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// Reads a response head byte by byte (so no WebSocket frame byte is consumed).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "closed during the head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn everything_unmatched_goes_to_the_default_backend() {
    init_logs();
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    assert_eq!(routed_to(addr, "GET", "/", "tether.test").await, "web1");
    assert_eq!(routed_to(addr, "GET", "/index.html", "www.example.com").await, "web1");
    assert_eq!(routed_to(addr, "GET", "/sockets", "tether.test").await, "web1");
}

#[tokio::test]
async fn socket_io_path_prefix_goes_to_websockets() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    let polling = "/socket.io/?EIO=4&transport=polling&t=abc";
    assert_eq!(routed_to(addr, "GET", polling, "tether.test").await, "websockets1");
    assert_eq!(routed_to(addr, "POST", polling, "tether.test").await, "websockets1");
    let (_, name) = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert_eq!(name, "websockets1");
}

#[tokio::test]
async fn upgrade_header_name_and_value_match_without_case() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    // A plain request carrying `UPGRADE: WebSocket` (no Connection: upgrade).
    let (status, headers) = raw_response(
        addr,
        "GET /plain HTTP/1.1\r\nHost: tether.test\r\nUPGRADE: WebSocket\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-server"], "websockets1");
    // A full handshake written in upper case.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHOST: tether.test\r\nCONNECTION: UPGRADE\r\nUPGRADE: WebSocket\r\n\
              SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    let (status, headers) = parse_head(&head);
    assert_eq!(status, 101, "{head}");
    assert_eq!(headers["x-server"], "websockets1");
    let mut ws: Ws = WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    assert_eq!(next_text(&mut ws).await, "websockets1");
    ws.send(Message::text("echo?")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo?");
    // Without the header, the same path is plain web traffic.
    assert_eq!(routed_to(addr, "GET", "/chat", "tether.test").await, "web1");
}

#[tokio::test]
async fn a_keep_alive_upgrade_handshake_is_routed_to_websockets() {
    let layout = start_layout(Some("web")).await;
    let mut handshake = format!("ws://{}/chat/room-1", layout.tether.addr)
        .into_client_request()
        .unwrap();
    handshake
        .headers_mut()
        .insert("connection", "keep-alive, Upgrade".parse().unwrap());
    let (mut ws, name) = ws_connect_with(handshake).await;
    assert_eq!(name, "websockets1");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn host_prefix_ws_routes_without_case_and_ignores_the_port() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    assert_eq!(routed_to(addr, "GET", "/", "WS.example.com").await, "websockets1");
    assert_eq!(routed_to(addr, "GET", "/", "ws.example.com:8080").await, "websockets1");
    assert_eq!(routed_to(addr, "GET", "/", "wss2.example.com").await, "websockets1");
    assert_eq!(routed_to(addr, "GET", "/", "api.example.com").await, "web1");
    assert_eq!(routed_to(addr, "GET", "/", "www.example.com").await, "web1");
    // An absolute-form target's authority is the host (RFC 9112 §3.2.2).
    let (status, headers) = raw_response(
        addr,
        "GET http://WS.example.com/x HTTP/1.1\r\nHost: WS.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-server"], "websockets1");
}

#[tokio::test]
async fn all_conditions_must_hold_method_post_and_path_api() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    let mut client = http_client(addr).await;
    let (status, headers, body) = send(&mut client, request("POST", "/api", "tether.test", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-server"], "api1");
    assert_eq!(&body[..], b"posted");
    assert_eq!(routed_to(addr, "GET", "/api", "tether.test").await, "web1");
    assert_eq!(routed_to(addr, "POST", "/api/v2", "tether.test").await, "web1");
    assert_eq!(routed_to(addr, "POST", "/other", "tether.test").await, "web1");
}

#[tokio::test]
async fn query_parameter_present_or_equal_to_a_value() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    assert_eq!(
        routed_to(addr, "GET", "/app?version=beta", "tether.test").await,
        "beta1"
    );
    assert_eq!(routed_to(addr, "GET", "/app?a=1&version=beta&b=2", "t").await, "beta1");
    assert_eq!(
        routed_to(addr, "GET", "/app?version=stable", "tether.test").await,
        "web1"
    );
    assert_eq!(routed_to(addr, "GET", "/app?debug", "tether.test").await, "debug1");
    assert_eq!(
        routed_to(addr, "GET", "/app?x=1&debug=0", "tether.test").await,
        "debug1"
    );
    assert_eq!(routed_to(addr, "GET", "/app?debugging=1", "tether.test").await, "web1");
    assert_eq!(routed_to(addr, "GET", "/debug", "tether.test").await, "web1");
}

#[tokio::test]
async fn path_regex_matches_the_whole_pattern_only() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    assert_eq!(routed_to(addr, "GET", "/rooms/42", "tether.test").await, "rooms1");
    assert_eq!(routed_to(addr, "GET", "/rooms/7?x=1", "tether.test").await, "rooms1");
    assert_eq!(routed_to(addr, "GET", "/rooms/abc", "tether.test").await, "web1");
    assert_eq!(routed_to(addr, "GET", "/rooms/42/members", "tether.test").await, "web1");
}

#[tokio::test]
async fn the_first_matching_rule_wins() {
    let layout = start_layout(Some("web")).await;
    let addr = layout.tether.addr;
    assert_eq!(routed_to(addr, "GET", "/shop/cart/1", "tether.test").await, "cart1");
    assert_eq!(routed_to(addr, "GET", "/shop/items", "tether.test").await, "shop1");
    // Matches the websockets rule (host) and the api rule: websockets comes first.
    assert_eq!(routed_to(addr, "POST", "/api", "ws.example.com").await, "websockets1");
    // Matches the beta and debug rules: beta comes first.
    assert_eq!(routed_to(addr, "GET", "/?debug&version=beta", "t").await, "beta1");
}

#[tokio::test]
async fn without_default_backend_unmatched_requests_get_503_with_a_request_id() {
    let layout = start_layout(None).await;
    let addr = layout.tether.addr;
    let mut client = http_client(addr).await;
    let (status, headers, body) = send(&mut client, request("GET", "/", "tether.test", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let id = headers
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(&id), "body {body:?} does not name request id {id}");
    assert!(body.contains("503"), "{body}");
    // The connection stays usable, and matching requests still route.
    let (status, headers, _) = send(&mut client, request("GET", "/socket.io/", "tether.test", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-server"], "websockets1");
    // A second refusal carries a different id.
    let (status, again, _) = send(&mut client, request("GET", "/x", "tether.test", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(again["x-request-id"], id.as_str());
    // Matching rules beyond the first still work with no default.
    assert_eq!(routed_to(addr, "GET", "/rooms/1", "tether.test").await, "rooms1");
}
