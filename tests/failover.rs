//! Failures seen from a client: dead servers retried elsewhere, 502 when all
//! are dead, 503 when none has room or weight, 504 when a server is too slow.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tether_test_support::*;

/// A WebSocket handshake sent as a plain hyper request, so a refusal can be read.
fn handshake_request(path: &str) -> Request<TestBody> {
    let mut request = get_request(path);
    let headers = request.headers_mut();
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
    headers.insert("sec-websocket-version", "13".parse().unwrap());
    request
}

/// Sends a WebSocket handshake on a fresh connection and returns the response.
async fn handshake(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let mut client = http_client(addr).await;
    let (status, headers, body) = send(&mut client, handshake_request(path)).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Checks that tether wrote this error itself: the status, an `x-request-id`
/// header, and a body naming that id.
fn assert_tether_error((status, headers, body): (StatusCode, HeaderMap, String), expected: StatusCode) -> String {
    assert_eq!(status, expected, "body: {body}");
    let id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on the {status} response: {headers:?}"))
        .to_str()
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    assert!(body.contains(&id), "the body {body:?} does not name request id {id}");
    body
}

/// GET `path` on a fresh connection, the body as text.
async fn get_text(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let (status, headers, body) = get(addr, path).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Connect failures tether recorded for server `name` of backend `pool`.
fn connect_failures(tether: &RunningTether, name: &str) -> u64 {
    let snapshot = tether.handle.snapshot();
    let backend = snapshot.backend("pool").expect("backend pool");
    let server = backend.servers.iter().find(|s| &*s.name == name).expect("server");
    server.state.connect_failures.load(Ordering::Relaxed)
}

/// Active requests and tunnels on all servers of backend `pool`.
fn total_active(tether: &RunningTether) -> u32 {
    let snapshot = tether.handle.snapshot();
    let backend = snapshot.backend("pool").expect("backend pool");
    backend.servers.iter().map(|s| s.state.active()).sum()
}

/// Waits until tether counts `expected` active connections over the backend.
async fn wait_total_active(tether: &RunningTether, expected: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while total_active(tether) != expected {
        assert!(
            Instant::now() < deadline,
            "still {} active connections, expected {expected}",
            total_active(tether)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_closed_server_port_costs_60_requests_nothing_they_are_retried_elsewhere() {
    init_logs();
    for balance in ["roundrobin", "leastconn", "random"] {
        let s1 = backend("s1").start().await;
        let s2 = backend("s2").start().await;
        let dead = closed_port().await;
        let servers = pool().balance(balance).server(&s1).server(("dead", dead)).server(&s2);
        let tether = start_tether(&Config::over(servers)).await;
        let mut reached = BTreeSet::new();
        for i in 0..60 {
            let (status, headers, body) = get_text(tether.addr, &format!("/r/{i}")).await;
            assert_eq!(status, StatusCode::OK, "{balance}: request {i}: {body}");
            reached.insert(headers["x-server"].to_str().unwrap().to_string());
        }
        // The same on one keep-alive client connection.
        let mut client = http_client(tether.addr).await;
        for i in 0..60 {
            let (status, headers, body) = send(&mut client, get_request(&format!("/k/{i}"))).await;
            assert_eq!(status, StatusCode::OK, "{balance}: keep-alive request {i}: {body:?}");
            reached.insert(headers["x-server"].to_str().unwrap().to_string());
        }
        drop(client);
        assert_eq!(reached, BTreeSet::from(["s1".to_string(), "s2".to_string()]));
        assert!(
            connect_failures(&tether, "dead") > 0,
            "{balance}: the dead server was never tried, so no retry was tested"
        );
        tether.stop().await;
    }
}

#[tokio::test]
async fn source_clients_hashed_to_a_closed_server_are_served_by_another() {
    let s1 = backend("s1").start().await;
    let s2 = backend("s2").start().await;
    let dead = closed_port().await;
    let servers = pool().balance("source").server(&s1).server(("dead", dead)).server(&s2);
    let tether = start_tether(&Config::over(servers)).await;
    for last in 2..=13 {
        let source = format!("127.0.0.{last}");
        let mut seen = BTreeSet::new();
        for _ in 0..2 {
            let mut client = http_client_on(connect_from(&source, tether.addr).await).await;
            for i in 0..3 {
                let (status, headers, body) = send(&mut client, get_request("/")).await;
                assert_eq!(status, StatusCode::OK, "{source} request {i}: {body:?}");
                seen.insert(headers["x-server"].to_str().unwrap().to_string());
            }
        }
        assert_eq!(seen.len(), 1, "{source} reached {seen:?}");
    }
    assert!(
        connect_failures(&tether, "dead") > 0,
        "no client address hashed to the dead server, so no retry was tested"
    );
}

#[tokio::test]
async fn a_post_body_is_delivered_whole_after_a_retry() {
    let s1 = backend("s1").start().await;
    let dead = closed_port().await;
    let servers = pool().balance("leastconn").server(("dead", dead)).server(&s1);
    let tether = start_tether(&Config::over(servers)).await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..6 {
        let mut client = http_client(tether.addr).await;
        let request = Request::post("/upload")
            .header("host", "tether.test")
            .body(
                Full::new(Bytes::from(payload.clone()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
        let (status, _, body) = send(&mut client, request).await;
        assert_eq!(status, StatusCode::OK, "POST {i}");
        assert!(body[..] == payload[..], "POST {i}: the echoed body differs");
    }
    assert!(connect_failures(&tether, "dead") > 0);
}

#[tokio::test]
async fn a_closed_server_port_costs_30_websocket_handshakes_nothing() {
    for balance in ["roundrobin", "leastconn"] {
        let s1 = backend("s1").start().await;
        let s2 = backend("s2").start().await;
        let dead = closed_port().await;
        let servers = pool().balance(balance).server(("dead", dead)).server(&s1).server(&s2);
        let tether = start_tether(&Config::over(servers)).await;
        let mut open = Vec::new();
        let mut reached = BTreeSet::new();
        for _ in 0..30 {
            let (ws, name) = ws_connect(tether.addr, "/ws").await;
            reached.insert(name);
            open.push(ws);
        }
        assert_eq!(reached, BTreeSet::from(["s1".to_string(), "s2".to_string()]));
        assert!(connect_failures(&tether, "dead") > 0, "{balance}");
        drop(open);
    }
}

#[tokio::test]
async fn every_server_port_closed_gives_502_naming_the_request_id() {
    let servers = pool()
        .server(("a", closed_port().await))
        .server(("b", closed_port().await))
        .server(("c", closed_port().await));
    let tether = start_tether(&Config::over(servers)).await;
    let body = assert_tether_error(get_text(tether.addr, "/").await, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("502"), "{body}");
    assert_tether_error(handshake(tether.addr, "/ws").await, StatusCode::BAD_GATEWAY);
    for name in ["a", "b", "c"] {
        assert!(connect_failures(&tether, name) > 0, "server {name} not tried");
    }
}

#[tokio::test]
async fn maxconn_1_on_both_servers_refuses_a_third_client_with_503_until_one_closes() {
    let s1 = backend("s1").start().await;
    let s2 = backend("s2").start().await;
    let servers = pool()
        .server(Server::from(&s1).maxconn(1))
        .server(Server::from(&s2).maxconn(1));
    // A short queue: the 503 comes once it times out (queueing itself is tested in tests/draining.rs).
    let tether = start_tether(&Config::over(servers.queue_timeout("100ms"))).await;
    let (first, first_name) = ws_connect(tether.addr, "/ws").await;
    let (_second, second_name) = ws_connect(tether.addr, "/ws").await;
    assert_ne!(first_name, second_name, "maxconn = 1 puts one tunnel on each");

    assert_tether_error(handshake(tether.addr, "/ws").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_tether_error(get_text(tether.addr, "/").await, StatusCode::SERVICE_UNAVAILABLE);

    let mut first = first;
    first.close(None).await.unwrap();
    drop(first);
    wait_total_active(&tether, 1).await;

    let (status, headers, _) = get_text(tether.addr, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-server"].to_str().unwrap(), first_name);
    let (_third, third_name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(third_name, first_name);
    assert_tether_error(get_text(tether.addr, "/").await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_idle_keep_alive_client_connection_holds_no_maxconn_slot() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(Server::from(&s1).maxconn(1)))).await;
    let mut idle = http_client(tether.addr).await;
    let (status, _, _) = send(&mut idle, get_request("/first")).await;
    assert_eq!(status, StatusCode::OK);
    wait_total_active(&tether, 0).await;
    let (status, _, body) = get_text(tether.addr, "/other-client").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = send(&mut idle, get_request("/again")).await;
    assert_eq!(status, StatusCode::OK);
}

// On the paused clock: tether's server timeout and the slow backend's delay
// are both tokio time, and everything runs in-process on this one thread.
#[tokio::test(start_paused = true)]
async fn a_server_slower_than_the_server_timeout_gives_504() {
    let slow = backend("slow").delay(Duration::from_secs(2)).start().await;
    let tether = start_tether(&Config::over(pool().server_timeout("300ms").server(&slow))).await;
    let started = tokio::time::Instant::now();
    let body = assert_tether_error(get_text(tether.addr, "/").await, StatusCode::GATEWAY_TIMEOUT);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "504 came after {waited:?}, expected about 300ms"
    );
    assert!(body.contains("slow"), "the body names the server: {body}");
    // The slot was given back: tether is not still counting the request.
    wait_total_active(&tether, 0).await;
}

#[tokio::test]
async fn a_backend_whose_servers_all_have_weight_0_gives_503() {
    let s1 = backend("s1").start().await;
    let s2 = backend("s2").start().await;
    for balance in ["roundrobin", "leastconn", "random", "source"] {
        let servers = pool()
            .balance(balance)
            .server(Server::from(&s1).weight(0))
            .server(Server::from(&s2).weight(0));
        let tether = start_tether(&Config::over(servers)).await;
        assert_tether_error(get_text(tether.addr, "/").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_tether_error(handshake(tether.addr, "/ws").await, StatusCode::SERVICE_UNAVAILABLE);
        tether.stop().await;
    }
    assert_eq!(s1.connections() + s2.connections(), 0);
}

/// A server that reads a request head and hangs up without answering (a server dying mid-handshake).
async fn hang_up_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_handshake_the_server_drops_unanswered_is_sent_to_another_server() {
    let s2 = backend("s2").start().await;
    let dropper = hang_up_server().await;
    let servers = pool().server(("dropper", dropper)).server(&s2);
    let tether = start_tether(&Config::over(servers)).await;
    for _ in 0..10 {
        let (_ws, name) = ws_connect(tether.addr, "/ws").await;
        assert_eq!(name, "s2");
    }
    // A plain request is not replayed (it may have had effects): the client gets 502.
    let (status, _, _) = get(tether.addr, "/").await;
    let (status2, _, _) = get(tether.addr, "/").await;
    assert!(status == StatusCode::BAD_GATEWAY || status2 == StatusCode::BAD_GATEWAY);
}
