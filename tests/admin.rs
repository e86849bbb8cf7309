//! The admin listener: login, the JSON API's every endpoint, a drain that
//! stops new connections, `/metrics` that parses and follows traffic, the
//! stats page, and the OpenAPI file kept in step with the router.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sha2::Digest;
use tether_test_support::*;

const USER: &str = "admin";
const PASSWORD: &str = "correct horse";

/// A loopback admin listener, with the user `USER` when `users`.
fn admin_section(users: bool) -> Admin {
    let admin = Admin::bind("127.0.0.1:0");
    if users {
        let hash = tether::admin::auth::hash_password(PASSWORD).expect("hash");
        admin.user(USER, &hash)
    } else {
        admin
    }
}

async fn three() -> (TestBackend, TestBackend, TestBackend) {
    (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    )
}

/// Backend `pool` over the three servers.
fn pool_of(servers: &(TestBackend, TestBackend, TestBackend)) -> Backend {
    let (a, b, c) = servers;
    pool().balance("roundrobin").servers([a, b, c])
}

/// `pool` behind the usual frontend, with `admin`.
fn config(pool: Backend, admin: Admin) -> Config {
    Config::over(pool).admin(admin)
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// One request to the admin listener; `auth` is the Authorization value.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut client = http_client(addr).await;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    let body = Full::new(Bytes::from(body.unwrap_or_default().to_string()))
        .map_err(|never| match never {})
        .boxed();
    send(&mut client, builder.body(body).unwrap()).await
}

/// A logged-in JSON call.
async fn api(addr: SocketAddr, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let auth = basic(USER, PASSWORD);
    let (status, _, bytes) = call(addr, method, path, Some(&auth), body).await;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: not JSON: {bytes:?}"));
    (status, value)
}

fn server<'a>(servers: &'a Value, name: &str) -> &'a Value {
    servers["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no server {name} in {servers}"))
}

#[tokio::test]
async fn the_admin_listener_asks_for_a_login_and_refuses_a_wrong_password() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true))).await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    for path in ["/", "/metrics", "/api/v1/servers"] {
        let (status, headers, _) = call(admin, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without login");
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm=\"tether admin\""), "{challenge}");
    }
    let (status, _, body) = call(admin, Method::GET, "/api/v1/servers", Some(&basic(USER, "wrong")), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("wrong"), "{error}");
    let (status, _, _) = call(
        admin,
        Method::GET,
        "/api/v1/servers",
        Some(&basic("root", PASSWORD)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "unknown user");
    let (status, body) = api(admin, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["servers"].as_array().unwrap().len(), 3);
    tether.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_address() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let wrong = basic(USER, "guess");
    for _ in 0..tether::admin::auth::MAX_FAILURES {
        let (status, _, _) = call(admin, Method::GET, "/api/v1/servers", Some(&wrong), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, _) = call(
        admin,
        Method::GET,
        "/api/v1/servers",
        Some(&basic(USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(headers.contains_key(header::RETRY_AFTER));
    tether.stop().await;
}

#[tokio::test]
async fn every_api_endpoint_answers_with_json() {
    let servers = three().await;
    let dir = std::env::temp_dir().join(format!("tether-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tether.toml");
    let with_sticky = pool_of(&servers).sticky(Sticky::preset("engine.io"));
    let config_of = |pool: Backend| config(pool, admin_section(true));
    let text = config_of(with_sticky.clone()).toml();
    std::fs::write(&file, &text).unwrap();
    let tether = start_tether(&text).await;
    tether.handle.set_config_path(file.clone());
    let admin = tether.handle.admin_addr().unwrap();

    let (status, body) = api(admin, Method::GET, "/api/v1/frontends", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["frontends"][0]["name"], "public");
    assert_eq!(body["frontends"][0]["default_backend"], "pool");

    let (status, body) = api(admin, Method::GET, "/api/v1/backends", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["backends"][0]["name"], "pool");
    assert_eq!(body["backends"][0]["servers"].as_array().unwrap().len(), 3);

    let (status, body) = api(admin, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server(&body, "s1")["state"], "up");
    assert_eq!(server(&body, "s1")["weight"], 1);

    // Sticky entries: learn one Engine.IO sid through the frontend.
    let (status, _, handshake) = get(tether.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, StatusCode::OK);
    let handshake: Value = serde_json::from_slice(&handshake[1..]).expect("Engine.IO handshake");
    let sid = handshake["sid"].as_str().expect("sid").to_string();
    let (status, body) = api(
        admin,
        Method::GET,
        "/api/v1/backends/pool/sticky?offset=0&limit=10",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1);
    // The live session id is not shown: the first 12 hex digits of its SHA-256 are.
    assert!(!body.to_string().contains(&sid), "{body}");
    let digest: String = sha2::Sha256::digest(sid.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(body["entries"][0]["key_hash"], digest[..12], "{body}");
    let (status, body) = api(admin, Method::GET, "/api/v1/backends/pool/sticky?offset=1", None).await;
    assert_eq!((status, body["entries"].as_array().unwrap().len()), (StatusCode::OK, 0));
    let (status, body) = api(admin, Method::GET, "/api/v1/backends/pool/sticky?limit=x", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    for (verb, state) in [
        ("drain", "drain"),
        ("maint", "maint"),
        ("enable", "up"),
        ("disable", "maint"),
    ] {
        let path = format!("/api/v1/backends/pool/servers/s2/{verb}");
        let (status, body) = api(admin, Method::POST, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{verb}: {body}");
        assert_eq!(body["state"], state, "{verb}");
    }
    api(admin, Method::POST, "/api/v1/backends/pool/servers/s2/enable", None).await;

    let weight = "/api/v1/backends/pool/servers/s3/weight";
    let (status, body) = api(admin, Method::PUT, weight, Some(r#"{ "weight": 7 }"#)).await;
    assert_eq!((status, &body["weight"]), (StatusCode::OK, &Value::from(7)));
    let (status, body) = api(admin, Method::PUT, weight, Some(r#"{ "weight": 100000 }"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("weight"), "{body}");

    let (status, body) = api(admin, Method::POST, "/api/v1/backends/pool/servers/nope/drain", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (status, _) = api(admin, Method::POST, "/api/v1/backends/nope/servers/s1/drain", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api(admin, Method::GET, "/api/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api(admin, Method::GET, "/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Reload: the file gains a fourth server; then a broken file is refused with its error.
    let s4 = backend("s4").start().await;
    std::fs::write(&file, config_of(with_sticky.server(&s4)).toml()).unwrap();
    let (status, body) = api(admin, Method::POST, "/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = api(admin, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(body["servers"].as_array().unwrap().len(), 4);
    // A bad key goes through the TOML text on purpose: the reload refuses it, naming it.
    std::fs::write(&file, format!("{text}wieght = 3\n")).unwrap();
    let (status, body) = api(admin, Method::POST, "/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("wieght"), "{body}");

    // A browser on another site cannot act with the remembered login.
    let mut client = http_client(admin).await;
    let request = Request::post("/api/v1/backends/pool/servers/s1/drain")
        .header(header::HOST, admin.to_string())
        .header(header::ORIGIN, "http://evil.example")
        .header(header::AUTHORIZATION, basic(USER, PASSWORD))
        .body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, _, _) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let _ = std::fs::remove_dir_all(&dir);
    tether.stop().await;
}

#[tokio::test]
async fn a_drain_through_the_api_stops_new_connections_to_that_server() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let (status, body) = api(admin, Method::POST, "/api/v1/backends/pool/servers/s2/drain", None).await;
    assert_eq!((status, &body["state"]), (StatusCode::OK, &Value::from("drain")));
    let before = servers.1.requests();
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(server_of(tether.addr, "/").await);
    }
    for _ in 0..3 {
        let (_ws, name) = ws_connect(tether.addr, "/ws").await;
        seen.insert(name);
    }
    assert_eq!(seen, BTreeSet::from(["s1".to_string(), "s3".to_string()]));
    assert_eq!(servers.1.requests(), before, "the drained server got nothing new");
    api(admin, Method::POST, "/api/v1/backends/pool/servers/s2/enable", None).await;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        seen.insert(server_of(tether.addr, "/").await);
    }
    assert!(seen.contains("s2"), "enabled again: {seen:?}");
    tether.stop().await;
}

/// Parses the text exposition into `series{labels} → value`, checking every line's shape.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && metric.starts_with("tether_"),
            "bad metric name: {line}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        series.insert(name.to_string(), value);
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    series
}

#[tokio::test]
async fn metrics_parse_and_follow_traffic() {
    let servers = three().await;
    let admin = admin_section(true).metrics_allow(&["127.0.0.1/32"]);
    let tether = start_tether(&config(pool_of(&servers), admin)).await;
    let admin = tether.handle.admin_addr().unwrap();
    // 127.0.0.1 is a scraper address: no login needed for /metrics only.
    let (status, headers, body) = call(admin, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let before = parse_exposition(std::str::from_utf8(&body).unwrap());
    let s1 = r#"{backend="pool",server="s1"}"#;
    for name in [
        "tether_server_up",
        "tether_server_active_connections",
        "tether_tunnels_open",
        "tether_server_weight",
        "tether_server_dispatched_total",
        "tether_server_connect_failures_total",
    ] {
        assert!(before.contains_key(&format!("{name}{s1}")), "{name} missing");
    }
    assert_eq!(before[&format!("tether_server_up{s1}")], 1.0);
    assert_eq!(before[r#"tether_config_reloads_total{result="success"}"#], 0.0);
    let (status, _, _) = call(admin, Method::GET, "/api/v1/servers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API still needs a login");

    for _ in 0..6 {
        server_of(tether.addr, "/").await;
    }
    let (mut ws, name) = ws_connect(tether.addr, "/ws").await;
    let labels = format!(r#"{{backend="pool",server="{name}"}}"#);
    let (_, _, body) = call(admin, Method::GET, "/metrics", None, None).await;
    let after = parse_exposition(std::str::from_utf8(&body).unwrap());
    let dispatched = |m: &HashMap<String, f64>| -> f64 {
        ["s1", "s2", "s3"]
            .iter()
            .map(|s| m[&format!(r#"tether_server_dispatched_total{{backend="pool",server="{s}"}}"#)])
            .sum()
    };
    assert_eq!(dispatched(&after) - dispatched(&before), 7.0);
    assert_eq!(after[&format!("tether_tunnels_open{labels}")], 1.0);
    assert_eq!(after[&format!("tether_server_active_connections{labels}")], 1.0);
    ws.close(None).await.unwrap();
    drop(ws);
    let mut open = 1.0;
    for _ in 0..50 {
        let (_, _, body) = call(admin, Method::GET, "/metrics", None, None).await;
        open = parse_exposition(std::str::from_utf8(&body).unwrap())[&format!("tether_tunnels_open{labels}")];
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0, "the closed tunnel is gone from the gauge");
    tether.stop().await;
}

/// Scrapes `/metrics` (from a `metrics_allow` address) and parses it.
async fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, _, body) = call(admin, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    parse_exposition(std::str::from_utf8(&body).unwrap())
}

/// Sums the series of `metric` whose label text contains every one of `labels`.
fn sum_of(series: &HashMap<String, f64>, metric: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(name, _)| name.split('{').next() == Some(metric) && labels.iter().all(|l| name.contains(l)))
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn responses_bytes_messages_and_tunnel_durations_move_with_traffic() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let servers = three().await;
    let admin = admin_section(true).metrics_allow(&["127.0.0.1/32"]);
    let tether = start_tether(&config(pool_of(&servers), admin)).await;
    let admin = tether.handle.admin_addr().unwrap();
    let before = scrape(admin).await;
    for metric in [
        "tether_requests_total",
        "tether_server_error_responses_total",
        "tether_server_bytes_total",
        "tether_websocket_messages_total",
        "tether_tunnel_duration_seconds_count",
    ] {
        assert!(
            before.keys().any(|k| k.starts_with(&format!("{metric}{{"))),
            "{metric} missing"
        );
    }
    let s1 = r#"backend="pool",server="s1""#;
    assert_eq!(before[&format!(r#"tether_requests_total{{{s1},code="2xx"}}"#)], 0.0);
    assert_eq!(
        before[&format!(r#"tether_server_bytes_total{{{s1},direction="out"}}"#)],
        0.0
    );

    for _ in 0..6 {
        server_of(tether.addr, "/").await;
    }
    let (status, _, _) = get(tether.addr, "/status/503").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let after_http = scrape(admin).await;
    assert_eq!(sum_of(&after_http, "tether_requests_total", &["code=\"2xx\""]), 6.0);
    assert_eq!(sum_of(&after_http, "tether_requests_total", &["code=\"5xx\""]), 1.0);
    assert_eq!(
        sum_of(&after_http, "tether_server_error_responses_total", &["code=\"503\""]),
        1.0
    );
    assert!(sum_of(&after_http, "tether_server_bytes_total", &["direction=\"out\""]) >= 12.0);

    // An open tunnel's messages show up while it is open (reported about once a second).
    let (mut ws, name) = ws_connect(tether.addr, "/ws").await;
    let label = format!(r#"server="{name}""#);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("hello {i}"));
    }
    let mut live = HashMap::new();
    for _ in 0..60 {
        live = scrape(admin).await;
        if sum_of(&live, "tether_websocket_messages_total", &[&label, "direction=\"in\""]) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sum_of(&live, "tether_websocket_messages_total", &[&label, "direction=\"in\""]),
        3.0,
        "messages in, counted while the tunnel is open"
    );
    // The server's announcement and three echoes.
    assert_eq!(
        sum_of(&live, "tether_websocket_messages_total", &[&label, "direction=\"out\""]),
        4.0
    );
    assert!(sum_of(&live, "tether_server_bytes_total", &[&label, "direction=\"in\""]) > 0.0);
    assert_eq!(sum_of(&live, "tether_requests_total", &[&label, "code=\"1xx\""]), 1.0);
    assert_eq!(sum_of(&live, "tether_tunnel_duration_seconds_count", &[&label]), 0.0);

    // The JSON API shows the same counters.
    let (status, json) = api(admin, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, StatusCode::OK);
    let entry = server(&json, &name);
    assert_eq!(entry["messages_in"], 3);
    assert_eq!(entry["messages_out"], 4);
    assert!(entry["bytes_in"].as_u64().unwrap() > 0);
    assert!(entry["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(entry["responses"]["1xx"], 1);
    assert!(entry["errors"]["connect"].is_u64());
    let since = entry["since_unix_ms"].as_u64().unwrap();
    assert!(since > 0);

    ws.close(None).await.unwrap();
    drop(ws);
    let mut ended = HashMap::new();
    for _ in 0..100 {
        ended = scrape(admin).await;
        if sum_of(&ended, "tether_tunnel_duration_seconds_count", &[&label]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sum_of(&ended, "tether_tunnel_duration_seconds_count", &[&label]), 1.0);
    assert_eq!(
        sum_of(
            &ended,
            "tether_tunnel_duration_seconds_bucket",
            &[&label, "le=\"+Inf\""]
        ),
        1.0,
        "{:?}",
        ended
            .keys()
            .filter(|k| k.contains("tunnel_duration"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sum_of(&ended, "tether_websocket_messages_total", &[&label, "direction=\"in\""]),
        3.0,
        "the end adds nothing twice"
    );

    // A drain records when the state changed.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let path = format!("/api/v1/backends/pool/servers/{name}/drain");
    let (status, drained) = api(admin, Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(drained["since_unix_ms"].as_u64().unwrap() > since, "{drained}");
    tether.stop().await;
}

#[tokio::test]
async fn without_users_the_loopback_listener_needs_no_login_and_shows_the_page() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(false))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let (status, headers, body) = call(admin, Method::GET, "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = String::from_utf8_lossy(&body);
    for needle in ["s1", "s2", "s3", "pool", "name=\"viewport\"", "/api/v1/backends"] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    let (status, _, _) = call(
        admin,
        Method::POST,
        "/api/v1/backends/pool/servers/s1/drain",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tether.stop().await;
}

#[tokio::test]
async fn an_address_outside_allow_is_refused() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true).allow(&["10.0.0.0/8"]))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let (status, _, body) = call(
        admin,
        Method::GET,
        "/api/v1/servers",
        Some(&basic(USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("allow"));
    tether.stop().await;
}

#[tokio::test]
async fn the_admin_listener_stops_with_the_instance() {
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(false))).await;
    let admin = tether.handle.admin_addr().unwrap();
    tether.stop().await;
    let refused = tokio::net::TcpStream::connect(admin).await;
    assert!(refused.is_err(), "nothing listens on the admin address after the stop");
}

/// Reads `docs/openapi.yaml`'s `paths:` as (METHOD, path) pairs (two-space
/// indented paths, four-space indented methods).
fn openapi_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).expect("openapi");
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut current = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            current = Some(format!("/{}", path.trim_matches(['"', '\''])));
        } else if let Some(method) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "post", "put", "delete", "patch"].contains(&method) {
                let path = current.clone().expect("a method under a path");
                routes.insert((method.to_uppercase(), path));
            }
        }
    }
    routes
}

#[test]
fn the_openapi_file_lists_exactly_the_routes_of_the_router() {
    let router: BTreeSet<(String, String)> = tether::admin::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = openapi_routes();
    let missing: Vec<_> = router.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&router).collect();
    assert!(missing.is_empty(), "routes missing from docs/openapi.yaml: {missing:?}");
    assert!(
        extra.is_empty(),
        "docs/openapi.yaml lists routes the router lacks: {extra:?}"
    );
}

// ---------------------------------------------------------------------------
// REAL BROWSER: headless Chromium (Debian package `chromium`) loads the stats
// page of a running tether and the test reads the DOM its script rendered.
// Skipped, with the reason printed, only when no Chromium binary is found;
// with TETHER_REQUIRE_BROWSER=1 (CI) a missing browser fails the test instead.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn browser_headless_chromium_shows_the_servers_their_tunnels_and_the_chart() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let servers = three().await;
    // Without users the loopback listener asks for no login.
    let tether = start_tether(&config(pool_of(&servers), admin_section(false))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        tunnels.push(ws_connect(tether.addr, "/ws").await);
    }
    let names: BTreeSet<String> = tunnels.iter().map(|(_, name)| name.clone()).collect();
    assert_eq!(names.len(), 3, "roundrobin spreads three tunnels over three servers");
    let url = format!("http://{admin}/");
    let profile = std::env::temp_dir().join(format!("tether-chromium-{}", std::process::id()));

    let dom = run_chromium(&binary, &profile, &["--dump-dom".to_string()], &url).await;
    // Only the page's script draws the chart and the rate lines: their
    // presence shows it ran and polled the API.
    assert!(dom.contains("open tunnels, last 5 min"), "the chart is drawn:\n{dom}");
    assert!(dom.contains("<polyline"), "the chart has lines:\n{dom}");
    assert!(dom.contains("new conns"), "the cards are the script's:\n{dom}");
    for name in ["s1", "s2", "s3"] {
        let card = format!(r#"data-server="{name}""#);
        let at = dom.find(&card).unwrap_or_else(|| panic!("no card for {name}:\n{dom}"));
        let rest = &dom[at..];
        let tunnels_cell = rest.find(r#"<dd class="tunnels">"#).expect("tunnels cell");
        assert!(
            rest[tunnels_cell..].starts_with(r#"<dd class="tunnels">1</dd>"#),
            "{name} shows its open tunnel:\n{}",
            &rest[..rest.len().min(600)]
        );
        assert!(rest.contains(r#"<span class="state up">up</span>"#), "{name} is up");
        // Its handshake went through: a p50 from the histogram, in milliseconds.
        let latency = rest
            .find(r#"<dd class="latency">handshake p50 "#)
            .expect("latency cell");
        let value = &rest[latency + r#"<dd class="latency">handshake p50 "#.len()..];
        let number: String = value.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        assert!(
            number.parse::<f64>().is_ok() && value[number.len()..].starts_with(" ms"),
            "{name} shows its handshake p50:\n{}",
            &rest[..rest.len().min(1200)]
        );
    }

    // A screenshot a person can look at.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("stats-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &binary,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100".to_string(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot at {}", shot.display());
    println!("stats page screenshot: {}", shot.display());
    let _ = std::fs::remove_dir_all(&profile);
    drop(tunnels);
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_a_logged_in_operator_drains_a_server_from_the_page() {
    let binary = match chromium() {
        Ok(binary) => binary,
        Err(reason) if std::env::var_os("TETHER_REQUIRE_BROWSER").is_none() => {
            println!("SKIPPED browser test: {reason}");
            return;
        }
        Err(reason) => panic!("TETHER_REQUIRE_BROWSER is set but {reason}"),
    };
    let harness = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    ensure_npm_packages(&harness, &["playwright-core"]);
    let servers = three().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        tunnels.push(ws_connect(tether.addr, "/ws").await);
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("stats-page-drained.png");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(harness.join("drain.mjs"))
            .arg(format!("http://{admin}/"))
            .args([USER, PASSWORD, "s2"])
            .arg(&shot)
            .env("CHROMIUM", &binary)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "browser report {line:?}: {e}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(report["error"].is_null(), "{report}");
    for name in ["s1", "s2", "s3"] {
        assert_eq!(
            report["servers"][name]["tunnels"], 1,
            "{name} shows its open tunnel: {report}"
        );
        assert_eq!(report["servers"][name]["state"], "up", "{report}");
    }
    assert_eq!(report["drained"], true, "the page shows s2 draining: {report}");
    assert_eq!(report["apiState"], "drain", "the API agrees: {report}");
    let state = tether.handle.snapshot().backends[0].servers[1].state.admin();
    assert_eq!(state, tether::state::AdminState::Drain);
    let (_, name) = ws_connect(tether.addr, "/ws").await;
    assert_ne!(name, "s2", "a drained server takes no new tunnel");
    assert!(std::fs::read(&shot).expect("screenshot").starts_with(b"\x89PNG"));
    println!("screenshot after the drain: {}", shot.display());
}

/// The stats page opened as `http://user:pass@host/` (its fetches are built
/// from `location.origin`), its add-server form (and the API's reason shown
/// for a refused name), the Delete button of a server added by API, and the
/// rebalance line of a backend JSON that has a `rebalance` field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_the_stats_page_adds_and_deletes_servers_with_credentials_in_its_url() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let servers = three().await;
    let fourth = backend("s4").start().await;
    let tether = start_tether(&config(pool_of(&servers), admin_section(true))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let url = format!("http://{USER}:{}@{admin}/", PASSWORD.replace(' ', "%20"));
    let args = [
        url,
        "pool".into(),
        "s4".into(),
        fourth.addr.to_string(),
        "2".into(),
        "s1".into(),
    ];
    let report = run_browser_script("servers.mjs", &args, &binary, Duration::from_secs(60)).await;
    assert!(report["error"].is_null(), "{report}");
    assert!(
        report["status"]
            .as_str()
            .unwrap_or_default()
            .starts_with("live: refreshed"),
        "the page polls the API although its URL carries credentials: {report}"
    );
    assert_eq!(report["cards"], serde_json::json!(["s1", "s2", "s3"]), "{report}");
    assert_eq!(
        report["sources"],
        serde_json::json!(["config", "config", "config"]),
        "{report}"
    );
    assert_eq!(
        report["addedSource"], "api",
        "the added server appears with its source: {report}"
    );
    assert_eq!(
        report["apiAfterAdd"]["weight"], 2,
        "the form's weight reached the API: {report}"
    );
    assert_eq!(report["apiAfterAdd"]["address"], fourth.addr.to_string(), "{report}");
    assert_eq!(
        report["deleteButtons"],
        serde_json::json!(["s4"]),
        "only the API server can be deleted: {report}"
    );
    let dialog = report["dialogs"][0].as_str().unwrap_or_default();
    assert!(dialog.contains("s1"), "a refused name shows the API's reason: {report}");
    assert_eq!(report["deletedGone"], true, "{report}");
    assert!(
        report["apiAfterDelete"].is_null(),
        "the deleted server left the API: {report}"
    );
    let (status, servers_now) = api(admin, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        servers_now["servers"].as_array().map(Vec::len),
        Some(3),
        "{servers_now}"
    );
    assert_eq!(
        report["rebalanceBefore"], 0,
        "no rebalance line without the field: {report}"
    );
    assert_eq!(
        report["rebalanceActive"], "rebalancing: shed 12 so far, target \u{2264} 76 per server (over: s1)",
        "{report}"
    );
    assert_eq!(report["rebalanceInactiveHidden"], true, "{report}");
    tether.stop().await;
}

#[tokio::test]
async fn frontend_counters_and_the_backend_queue_are_reported() {
    let servers = three().await;
    let (a, b, c) = &servers;
    let full = pool()
        .balance("roundrobin")
        .queue_timeout("2s")
        .server(Server::from(a).maxconn(1))
        .server(Server::from(b).maxconn(1))
        .server(Server::from(c).maxconn(1));
    let tether = start_tether(&config(full, admin_section(false))).await;
    let admin = tether.handle.admin_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_connect(tether.addr, "/ws").await);
    }
    // A fourth handshake waits in the queue.
    let addr = tether.addr;
    let waiting = tokio::spawn(async move { ws_connect(addr, "/ws").await.1 });
    let mut queued = 0;
    for _ in 0..50 {
        let (_, _, body) = call(admin, Method::GET, "/api/v1/backends", None, None).await;
        let json: Value = serde_json::from_slice(&body).unwrap();
        queued = json["backends"][0]["queued"].as_u64().unwrap();
        if queued == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(queued, 1, "the waiting handshake shows in the queue");
    let (_, _, metrics) = call(admin, Method::GET, "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics.contains("tether_backend_queued{backend=\"pool\"} 1"),
        "{metrics}"
    );
    held.pop();
    assert!(
        !waiting.await.unwrap().is_empty(),
        "the queued handshake got the freed slot"
    );
    // Two tunnels stay open (the fourth client closed its own when its task ended).
    let mut front = Value::Null;
    for _ in 0..50 {
        let (_, _, body) = call(admin, Method::GET, "/api/v1/frontends", None, None).await;
        let json: Value = serde_json::from_slice(&body).unwrap();
        front = json["frontends"][0].clone();
        if front["connections_open"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(front["connections_open"], 2, "{front}");
    assert_eq!(
        front["connections_accepted"], 4,
        "four WebSocket clients, nothing else on this port: {front}"
    );
    assert_eq!(front["requests"], 4, "{front}");
    let (_, _, metrics) = call(admin, Method::GET, "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics.contains("tether_frontend_requests_total{frontend=\"public\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_frontend_connections_open{frontend=\"public\"}"),
        "{metrics}"
    );
}
