//! Latency histograms on `/metrics` and their p50/p99 in the admin API:
//! connect, WebSocket handshake and first-byte times per server, queue
//! wait per backend, TLS handshake time per frontend — recorded through
//! real sockets to backends that answer after a known delay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rustls_pki_types::ServerName;
use tether_test_support::*;
use tokio::net::TcpStream;

/// `config` with a loopback admin listener that serves `/metrics` and the API.
fn with_admin(config: Config) -> Config {
    // `get` sends `Host: tether.test`: the admin listener answers only for names it knows.
    config.admin(
        Admin::bind("127.0.0.1:0")
            .hosts(&["tether.test"])
            .metrics_allow(&["127.0.0.1/32"]),
    )
}

/// The `/metrics` text of the admin listener at `admin`.
async fn scrape(admin: SocketAddr) -> String {
    let (status, _, body) = get(admin, "/metrics").await;
    assert!(status.is_success(), "/metrics: {status}");
    String::from_utf8_lossy(&body).to_string()
}

/// The value of the line of `text` that starts with `name{` and has every
/// label of `labels` (`le="0.025"`, `backend="pool"`), in any order.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.split_once("} "))
        .find(|(set, _)| labels.iter().all(|l| set.split(',').any(|have| have == *l)))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name}{{{}}} not in /metrics:\n{text}", labels.join(",")))
}

/// Checks that every one of `count` samples of histogram `name` (series
/// with `labels`) took at least `at_least`: its `_count`, no sample in a
/// bucket below that, and a sum of at least `count × at_least`. `below`
/// is the largest bucket bound under `at_least`.
fn assert_all_at_least(text: &str, name: &str, labels: &[&str], count: u64, below: &str, at_least: Duration) {
    assert_eq!(
        sample(text, &format!("{name}_count"), labels),
        count as f64,
        "{name} count"
    );
    let mut le = labels.to_vec();
    let bound = format!("le=\"{below}\"");
    le.push(&bound);
    assert_eq!(
        sample(text, &format!("{name}_bucket"), &le),
        0.0,
        "{name}: no sample under {below}s"
    );
    let inf = ["le=\"+Inf\""];
    let all: Vec<&str> = labels.iter().copied().chain(inf).collect();
    assert_eq!(
        sample(text, &format!("{name}_bucket"), &all),
        count as f64,
        "{name} +Inf"
    );
    let sum = sample(text, &format!("{name}_sum"), labels);
    assert!(sum >= count as f64 * at_least.as_secs_f64(), "{name} sum {sum}");
}

const SERVER: [&str; 2] = ["backend=\"pool\"", "server=\"s1\""];

#[tokio::test]
async fn handshake_and_first_byte_times_count_every_exchange_and_hold_the_delay() {
    let delay = Duration::from_millis(30);
    let s1 = backend("s1").delay(delay).handshake_delay(delay).start().await;
    let tether = start_tether(&with_admin(Config::simple(Frontend::public(), pool().server(&s1)))).await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    let text = scrape(admin).await;
    assert_eq!(
        sample(&text, "tether_server_websocket_handshake_seconds_count", &SERVER),
        0.0
    );
    let (_, json) = admin_call(admin, Method::GET, "/api/v1/servers", None).await;
    assert!(json["servers"][0]["latency"]["handshake_p50_ms"].is_null(), "{json}");

    const N: u64 = 5;
    let mut open = Vec::new();
    for _ in 0..N {
        open.push(ws_connect(tether.addr, "/ws").await);
        let (status, _, _) = get(tether.addr, "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    let text = scrape(admin).await;
    let name = "tether_server_websocket_handshake_seconds";
    assert_all_at_least(&text, name, &SERVER, N, "0.025", delay);
    let name = "tether_server_first_byte_seconds";
    assert_all_at_least(&text, name, &SERVER, N, "0.025", delay);
    // Every handshake opens a connection of its own; plain requests may reuse one.
    let connects = sample(&text, "tether_server_connect_seconds_count", &SERVER);
    assert!(connects >= N as f64 && connects <= 2.0 * N as f64, "{connects}");
    let fast = sample(
        &text,
        "tether_server_connect_seconds_bucket",
        &[SERVER[0], SERVER[1], "le=\"1.0\""],
    );
    assert_eq!(fast, connects, "loopback connects take under a second");

    let (_, json) = admin_call(admin, Method::GET, "/api/v1/servers", None).await;
    let latency = &json["servers"][0]["latency"];
    for key in [
        "handshake_p50_ms",
        "handshake_p99_ms",
        "first_byte_p50_ms",
        "first_byte_p99_ms",
    ] {
        let ms = latency[key].as_f64().unwrap_or_else(|| panic!("{key}: {latency}"));
        // A 30 ms delay lands in the 25–50 ms bucket (50–100 ms on a slow machine).
        assert!((25.0..=100.0).contains(&ms), "{key} {ms}: {latency}");
    }
    let connect = latency["connect_p50_ms"].as_f64().expect("connect p50");
    assert!((0.0..1000.0).contains(&connect), "{latency}");
    tether.stop().await;
}

#[tokio::test]
async fn queue_wait_is_recorded_when_maxconn_makes_a_request_queue() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&with_admin(Config::simple(
        Frontend::public(),
        pool().queue_timeout("5s").server(Server::from(&s1).maxconn(1)),
    )))
    .await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    let backend_labels = ["backend=\"pool\""];
    let name = "tether_backend_queue_wait_seconds";
    let held = ws_connect(tether.addr, "/ws").await;
    let text = scrape(admin).await;
    assert_eq!(
        sample(&text, &format!("{name}_count"), &backend_labels),
        0.0,
        "nobody queued yet"
    );

    let addr = tether.addr;
    let waiting = tokio::spawn(async move { ws_connect(addr, "/ws").await.1 });
    let hold = Duration::from_millis(300);
    tokio::time::sleep(hold).await;
    drop(held);
    assert!(!waiting.await.unwrap().is_empty(), "the queued handshake got the slot");
    let text = scrape(admin).await;
    assert_all_at_least(&text, name, &backend_labels, 1, "0.25", Duration::from_millis(250));
    tether.stop().await;
}

#[tokio::test]
async fn tls_handshakes_of_a_tls_frontend_are_timed() {
    let cert = SelfSigned::new();
    let s1 = backend("s1").start().await;
    let tether = start_tether(&with_admin(Config::simple(
        Frontend::public().tls(cert.tls()),
        pool().server(&s1),
    )))
    .await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    let client = tether::tls::client::client_config(None, false).expect("client config");
    const N: u64 = 3;
    for _ in 0..N {
        let stream = TcpStream::connect(tether.addr).await.expect("connect");
        tokio_rustls::TlsConnector::from(Arc::clone(&client))
            .connect(ServerName::try_from("tether.test").expect("name"), stream)
            .await
            .expect("TLS handshake");
    }
    let labels = ["frontend=\"public\""];
    let name = "tether_frontend_tls_handshake_seconds";
    let mut count = 0.0;
    // The server side may finish its handshake just after the client's.
    for _ in 0..50 {
        count = sample(&scrape(admin).await, &format!("{name}_count"), &labels);
        if count == N as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, N as f64);
    let text = scrape(admin).await;
    let inf = sample(
        &text,
        &format!("{name}_bucket"),
        &["frontend=\"public\"", "le=\"+Inf\""],
    );
    assert_eq!(inf, N as f64);
    tether.stop().await;
}

#[tokio::test]
async fn a_server_added_through_the_api_gets_its_histograms_and_a_deleted_one_loses_them() {
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let tether = start_tether(&with_admin(Config::simple(
        Frontend::public(),
        pool().balance("roundrobin").server(&s1),
    )))
    .await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    let name = "tether_server_websocket_handshake_seconds_count";
    let added = ["backend=\"pool\"", "server=\"s2\""];
    let series = "tether_server_websocket_handshake_seconds_count{backend=\"pool\",server=\"s2\"}";
    assert!(!scrape(admin).await.contains(series), "no s2 yet");

    let body = format!(r#"{{"name": "s2", "address": "{}"}}"#, s2.addr);
    let (status, created) = admin_call(admin, Method::POST, "/api/v1/backends/pool/servers", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        sample(&scrape(admin).await, name, &added),
        0.0,
        "s2's series appear at once"
    );
    let mut reached = Vec::new();
    for _ in 0..4 {
        let (ws, server) = ws_connect(tether.addr, "/ws").await;
        drop(ws);
        reached.push(server);
    }
    let on_s2 = reached.iter().filter(|s| *s == "s2").count();
    assert_eq!(on_s2, 2, "{reached:?}");
    assert_eq!(sample(&scrape(admin).await, name, &added), on_s2 as f64);

    let (status, deleted) = admin_call(admin, Method::DELETE, "/api/v1/backends/pool/servers/s2", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deleted}");
    let mut gone = false;
    for _ in 0..100 {
        if !scrape(admin).await.contains(series) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "s2's series leave with it");
    assert_eq!(sample(&scrape(admin).await, name, &SERVER), 2.0, "s1 keeps its own");
    tether.stop().await;
}
