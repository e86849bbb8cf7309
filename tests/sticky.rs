//! Stickiness through a real tether: inserted, prefixed and opaque cookies,
//! learned session ids, the Engine.IO preset, stale and hostile cookies.

use std::sync::atomic::Ordering;

use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderMap, StatusCode};
use tether_test_support::*;

/// GET with extra headers on a fresh connection.
async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap) {
    let mut client = http_client(addr).await;
    let mut request = get_request(path);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        request.headers_mut().insert(name, v.parse().unwrap());
    }
    let (status, headers, _) = send(&mut client, request).await;
    (status, headers)
}

fn set_cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}="))?.split(';').next())
}

async fn three() -> (TestBackend, TestBackend, TestBackend) {
    (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    )
}

/// Backend `pool` over `a`, `b`, `c` (cookie ids s1, s2, s3) with `sticky`.
fn sticky_pool(a: &TestBackend, b: &TestBackend, c: &TestBackend, sticky: Sticky) -> Backend {
    pool()
        .balance("roundrobin")
        .sticky(sticky)
        .server(Server::from(a).cookie("s1"))
        .server(Server::from(b).cookie("s2"))
        .server(Server::from(c).cookie("s3"))
}

/// [`sticky_pool`] behind the usual frontend.
fn insert_config(a: &TestBackend, b: &TestBackend, c: &TestBackend, sticky: Sticky) -> Config {
    Config::over(sticky_pool(a, b, c, sticky))
}

#[tokio::test]
async fn an_inserted_cookie_keeps_the_client_on_its_server() {
    let (a, b, c) = three().await;
    let sticky = Sticky::cookie("SERVERID").mode("insert").indirect(true).nocache(true);
    let tether = start_tether(&insert_config(&a, &b, &c, sticky)).await;
    let (status, headers) = get_with(tether.addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let first = headers["x-server"].to_str().unwrap().to_string();
    let all: Vec<_> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(all, vec![format!("SERVERID={first}; Path=/; HttpOnly")]);
    assert_eq!(headers[CACHE_CONTROL], "no-cache=\"set-cookie\"");
    let cookie = format!("SERVERID={first}; theme=dark");
    for _ in 0..12 {
        let (_, headers) = get_with(tether.addr, "/", &[("cookie", &cookie)]).await;
        assert_eq!(
            headers["x-server"],
            first.as_str(),
            "roundrobin would rotate; the cookie must win"
        );
        assert!(headers.get(SET_COOKIE).is_none(), "a valid cookie is not set again");
        assert_eq!(
            headers["x-seen-cookie"], "theme=dark",
            "indirect: the server never sees SERVERID"
        );
    }
}

#[tokio::test]
async fn the_websocket_handshake_response_carries_the_cookie_and_honours_it() {
    let (a, b, c) = three().await;
    let tether = start_tether(&insert_config(&a, &b, &c, Sticky::cookie("SERVERID"))).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    let name = next_text(&mut ws).await;
    let value = set_cookie_value(response.headers(), "SERVERID")
        .expect("Set-Cookie on the 101")
        .to_string();
    assert_eq!(value, name);
    for _ in 0..6 {
        let mut request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
        request
            .headers_mut()
            .insert(COOKIE, format!("SERVERID={value}").parse().unwrap());
        let (_, again) = ws_connect_with(request).await;
        assert_eq!(again, name);
    }
}

#[tokio::test]
async fn garbage_unknown_and_overlong_cookies_are_ignored_and_replaced() {
    let (a, b, c) = three().await;
    let tether = start_tether(&insert_config(&a, &b, &c, Sticky::cookie("SERVERID"))).await;
    let long = format!("SERVERID={}", "s1".repeat(200));
    for cookie in [
        "SERVERID=nonsense",
        "SERVERID=",
        "SERVERID=s9",
        long.as_str(),
        "SERVERID=%00%ff",
    ] {
        let (status, headers) = get_with(tether.addr, "/", &[("cookie", cookie)]).await;
        assert_eq!(status, StatusCode::OK, "{cookie}");
        let server = headers["x-server"].to_str().unwrap();
        assert_eq!(
            set_cookie_value(&headers, "SERVERID"),
            Some(server),
            "a fresh cookie for {cookie}"
        );
    }
}

#[tokio::test]
async fn a_cookie_for_a_dead_server_is_redispatched_and_re_set() {
    let (a, _b, c) = three().await;
    let dead = closed_port().await;
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .sticky(Sticky::cookie("SERVERID"))
            .server(Server::from(&a).cookie("s1"))
            .server(Server::new("gone", dead).cookie("gone"))
            .server(Server::from(&c).cookie("s3")),
    );
    let tether = start_tether(&config).await;
    for _ in 0..5 {
        let (status, headers) = get_with(tether.addr, "/", &[("cookie", "SERVERID=gone")]).await;
        assert_eq!(status, StatusCode::OK);
        let server = headers["x-server"].to_str().unwrap();
        assert_ne!(server, "gone");
        assert_eq!(
            set_cookie_value(&headers, "SERVERID"),
            Some(server),
            "re-stuck to its new server"
        );
    }
}

#[tokio::test]
async fn a_cookie_for_a_down_server_gets_503_without_redispatch() {
    let (a, b, c) = three().await;
    let config = Config::over(sticky_pool(&a, &b, &c, Sticky::cookie("SERVERID")).redispatch(false));
    let tether = start_tether(&config).await;
    let snapshot = tether.handle.snapshot();
    snapshot.backends[0].servers[1].state.up.store(false, Ordering::Relaxed);
    let (status, headers) = get_with(tether.addr, "/", &[("cookie", "SERVERID=s2")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("x-request-id"));
    let (status, _) = get_with(tether.addr, "/", &[("cookie", "SERVERID=s1")]).await;
    assert_eq!(status, StatusCode::OK, "other stuck clients are unaffected");
    let (status, headers) = get_with(tether.addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers["x-server"], "s2");
}

#[tokio::test]
async fn a_stuck_client_ignores_maxconn_unless_told_to_respect_it() {
    let (a, b, c) = three().await;
    let servers = |respect: Option<bool>| {
        let mut servers = pool()
            .balance("roundrobin")
            .sticky(Sticky::cookie("SERVERID"))
            .server(Server::from(&a).cookie("s1").maxconn(1))
            .server(Server::from(&b).cookie("s2"))
            .server(Server::from(&c).cookie("s3"));
        if let Some(respect) = respect {
            servers = servers.sticky_respects_maxconn(respect);
        }
        Config::over(servers)
    };
    for (extra, expect_s1) in [(None, true), (Some(true), false)] {
        let tether = start_tether(&servers(extra)).await;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut first = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
        first.headers_mut().insert(COOKIE, "SERVERID=s1".parse().unwrap());
        let (_ws, name) = ws_connect_with(first).await; // s1 now holds its one slot
        assert_eq!(name, "s1");
        let (status, headers) = get_with(tether.addr, "/", &[("cookie", "SERVERID=s1")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-server"] == "s1",
            expect_s1,
            "sticky_respects_maxconn = {extra:?}"
        );
    }
}

#[tokio::test]
async fn prefix_mode_prefixes_the_servers_cookie_and_hides_the_prefix_from_it() {
    let (a, b, c) = three().await;
    let tether = start_tether(&insert_config(&a, &b, &c, Sticky::cookie("JSESSIONID").mode("prefix"))).await;
    let (_, headers) = get_with(tether.addr, "/login?set_cookie=JSESSIONID=abc123", &[]).await;
    let server = headers["x-server"].to_str().unwrap().to_string();
    let value = set_cookie_value(&headers, "JSESSIONID").unwrap().to_string();
    assert_eq!(value, format!("{server}~abc123"));
    for _ in 0..6 {
        let (_, headers) = get_with(tether.addr, "/", &[("cookie", &format!("JSESSIONID={value}"))]).await;
        assert_eq!(headers["x-server"], server.as_str());
        assert_eq!(
            headers["x-seen-cookie"], "JSESSIONID=abc123",
            "the server never sees the prefix"
        );
    }
}

#[tokio::test]
async fn opaque_cookies_reveal_no_name_resist_forgery_and_work_across_instances() {
    let (a, b, c) = three().await;
    let sticky = Sticky::cookie("SERVERID")
        .opaque(true)
        .secret("a shared secret of some length");
    let config = insert_config(&a, &b, &c, sticky);
    let first = start_tether(&config).await;
    let second = start_tether(&config).await;
    let (_, headers) = get_with(first.addr, "/", &[]).await;
    let server = headers["x-server"].to_str().unwrap().to_string();
    let value = set_cookie_value(&headers, "SERVERID").unwrap().to_string();
    let parts: Vec<&str> = value.split('.').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() == 24
            && parts[2].len() == 16
            && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())),
        "value {value} must be an opaque digest, issue time and tag, not a server name like {server}"
    );
    for tether in [&first, &second] {
        let (_, headers) = get_with(tether.addr, "/", &[("cookie", &format!("SERVERID={value}"))]).await;
        assert_eq!(headers["x-server"], server.as_str());
        assert!(headers.get(SET_COOKIE).is_none());
    }
    let mut tampered = value.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    for forged in [format!("SERVERID={tampered}"), "SERVERID=s1".to_string()] {
        let (status, headers) = get_with(first.addr, "/", &[("cookie", &forged)]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            set_cookie_value(&headers, "SERVERID").is_some(),
            "{forged} is ignored and a real cookie set"
        );
    }
}

#[tokio::test]
async fn a_learned_session_id_routes_by_cookie_or_url_param() {
    let (a, b, c) = three().await;
    let sticky = Sticky::learned()
        .learn_response_cookie("io")
        .match_cookie("io")
        .match_url_param("sid");
    let tether = start_tether(&insert_config(&a, &b, &c, sticky)).await;
    let (_, headers) = get_with(tether.addr, "/start?set_cookie=io=abc", &[]).await;
    let owner = headers["x-server"].to_str().unwrap().to_string();
    for i in 0..9 {
        let (_, headers) = if i % 2 == 0 {
            get_with(tether.addr, "/poll?sid=abc", &[]).await
        } else {
            get_with(tether.addr, "/poll", &[("cookie", "io=abc")]).await
        };
        assert_eq!(headers["x-server"], owner.as_str(), "request {i}");
    }
    let table = tether.handle.snapshot().backends[0]
        .sticky
        .as_ref()
        .unwrap()
        .table
        .clone()
        .unwrap();
    assert_eq!(table.len(), 1);
    // An unknown id is balanced normally and not stored.
    let _ = get_with(tether.addr, "/poll?sid=unknown", &[]).await;
    assert_eq!(table.len(), 1);
}

#[tokio::test]
async fn the_stick_table_survives_a_reload() {
    let (a, b, c) = three().await;
    let sticky = Sticky::learned().learn_response_cookie("io").match_url_param("sid");
    let config = insert_config(&a, &b, &c, sticky);
    let tether = start_tether(&config).await;
    let (_, headers) = get_with(tether.addr, "/start?set_cookie=io=xyz", &[]).await;
    let owner = headers["x-server"].to_str().unwrap().to_string();
    tether.handle.reload(&config.parse()).unwrap();
    for _ in 0..6 {
        let (_, headers) = get_with(tether.addr, "/poll?sid=xyz", &[]).await;
        assert_eq!(headers["x-server"], owner.as_str());
    }
}

#[tokio::test]
async fn the_engine_io_preset_learns_the_sid_from_the_handshake_body() {
    let (a, b, c) = three().await;
    let tether = start_tether(&insert_config(&a, &b, &c, Sticky::preset("engine.io"))).await;
    for _ in 0..3 {
        let mut client = http_client(tether.addr).await;
        let (status, headers, body) = send(&mut client, get_request("/socket.io/?EIO=4&transport=polling")).await;
        assert_eq!(status, StatusCode::OK);
        let owner = headers["x-server"].to_str().unwrap().to_string();
        let body = String::from_utf8_lossy(&body).to_string();
        let sid = body
            .split("\"sid\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        for _ in 0..6 {
            let (_, headers) = get_with(
                tether.addr,
                &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
                &[],
            )
            .await;
            assert_eq!(headers["x-server"], owner.as_str(), "polling with sid={sid}");
        }
        let (_, name) = ws_connect(tether.addr, &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}")).await;
        assert_eq!(name, owner, "the upgrade reaches the session's server");
    }
}

#[tokio::test]
async fn url_param_hashing_keeps_a_session_through_reconnects_and_moves_once_when_its_server_dies() {
    let (a, b, c) = three().await;
    let config = Config::over(pool().balance("url_param").hash_key("session_id").servers([&a, &b, &c]));
    let tether = start_tether(&config).await;
    let (_, first) = ws_connect(tether.addr, "/ws?session_id=player-42").await;
    for _ in 0..50 {
        let (_, name) = ws_connect(tether.addr, "/ws?session_id=player-42").await;
        assert_eq!(name, first);
    }
    let mut servers = vec![a, b, c];
    let index = servers.iter().position(|s| s.name() == first).unwrap();
    let dead = servers.remove(index);
    drop(dead);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_, moved) = ws_connect(tether.addr, "/ws?session_id=player-42").await;
    assert_ne!(moved, first);
    for _ in 0..20 {
        let (_, name) = ws_connect(tether.addr, "/ws?session_id=player-42").await;
        assert_eq!(name, moved, "after moving once it stays");
    }
}

#[tokio::test]
async fn consistent_and_maglev_hashing_agree_across_instances_without_shared_state() {
    let (a, b, c) = three().await;
    for hash in ["consistent", "maglev"] {
        let config = Config::over(
            pool()
                .balance("url_param")
                .hash_key("room")
                .hash(hash)
                .balance_factor(1.25)
                .servers([&a, &b, &c]),
        );
        let first = start_tether(&config).await;
        let second = start_tether(&config).await;
        let mut used = std::collections::HashSet::new();
        for room in 0..30 {
            let path = format!("/?room=r{room}");
            let server = server_of(first.addr, &path).await;
            assert_eq!(server_of(second.addr, &path).await, server, "{hash}: room r{room}");
            assert_eq!(server_of(first.addr, &path).await, server, "{hash}: stable");
            used.insert(server);
        }
        assert_eq!(used.len(), 3, "{hash}: keys spread over every server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_clients_pass_maxconn_by_the_margin_only_then_are_redispatched_and_re_pinned() {
    let (a, b, c) = three().await;
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .sticky(Sticky::cookie("SERVERID"))
            .sticky_maxconn_margin(20)
            .server(Server::from(&a).cookie("s1").maxconn(5))
            .server(Server::from(&b).cookie("s2"))
            .server(Server::from(&c).cookie("s3")),
    );
    let tether = start_tether(&config).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stuck = || {
        let mut request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
        request.headers_mut().insert(COOKIE, "SERVERID=s1".parse().unwrap());
        request
    };
    let mut held = Vec::new();
    for i in 0..6 {
        let (ws, name) = ws_connect_with(stuck()).await;
        assert_eq!(name, "s1", "stuck client {i}: maxconn 5 + 20 % lets 6 in");
        held.push(ws);
    }
    let (status, headers) = get_with(tether.addr, "/", &[("cookie", "SERVERID=s1")]).await;
    assert_eq!(status, StatusCode::OK);
    let server = headers["x-server"].to_str().unwrap();
    assert_ne!(server, "s1", "past the margin a stuck client is redispatched");
    assert_eq!(
        set_cookie_value(&headers, "SERVERID"),
        Some(server),
        "and re-pinned to its new server"
    );
    held.truncate(4);
    let s1 = tether.handle.snapshot().backends[0].servers[0].state.clone();
    let freed = eventually(std::time::Duration::from_secs(3), async || s1.active() <= 4).await;
    assert!(freed.is_some(), "closed tunnels give their slots back");
    let (status, headers) = get_with(tether.addr, "/", &[("cookie", "SERVERID=s1")]).await;
    assert_eq!((status, headers["x-server"].to_str().unwrap()), (StatusCode::OK, "s1"));
}

#[tokio::test]
async fn a_cookie_for_another_server_never_re_points_a_learned_id() {
    let (a, b, c) = three().await;
    let sticky = Sticky::cookie("SERVERID")
        .learn_response_cookie("io")
        .match_cookie("io");
    let tether = start_tether(&insert_config(&a, &b, &c, sticky)).await;
    let (_, headers) = get_with(tether.addr, "/start?set_cookie=io=victim", &[]).await;
    let owner = headers["x-server"].to_str().unwrap().to_string();
    let other = if owner == "s2" { "s3" } else { "s2" };
    // Someone else sends the victim's id with a cookie for another server.
    let (_, headers) = get_with(
        tether.addr,
        "/poll",
        &[("cookie", &format!("SERVERID={other}; io=victim"))],
    )
    .await;
    assert_eq!(headers["x-server"], other, "the cookie picks the server");
    let table = tether.handle.snapshot().backends[0]
        .sticky
        .as_ref()
        .unwrap()
        .table
        .clone()
        .unwrap();
    assert_eq!(
        table.get("victim").as_deref(),
        Some(owner.as_str()),
        "the id was not re-pointed"
    );
    let (_, headers) = get_with(tether.addr, "/poll", &[("cookie", "io=victim")]).await;
    assert_eq!(headers["x-server"], owner.as_str(), "the victim stays on its server");
}
