//! Surviving reconnect storms and operator actions: the maxconn queue,
//! draining with spread closes, maintenance, removal on reload.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::StatusCode;
use tether::state::AdminState;
use tether_test_support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_handshakes_queue_for_ten_slots_and_all_succeed() {
    let s1 = backend("s1").start().await;
    let config = Config::over(
        pool()
            .balance("leastconn")
            .queue_timeout("10s")
            .server(Server::from(&s1).maxconn(10)),
    );
    let tether = start_tether(&config).await;
    let addr = tether.addr;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        tasks.push(tokio::spawn(async move {
            let (mut ws, name) = ws_connect(addr, "/ws").await;
            // Hold the slot a little, so later handshakes must wait for it.
            tokio::time::sleep(Duration::from_millis(50 + i % 5 * 10)).await;
            ws.close(None).await.ok();
            while let Some(Ok(_)) = ws.next().await {}
            name
        }));
    }
    let started = Instant::now();
    for task in tasks {
        assert_eq!(task.await.expect("every queued handshake succeeds"), "s1");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(s1.requests() >= 50);
    let active_now = tether.handle.snapshot().backends[0].servers[0].state.active();
    assert_eq!(active_now, 0, "every slot given back");
}

// On the paused clock: the queue's deadline is tokio time, so the 300 ms pass
// without waiting (the sockets are in-process, on this one thread).
#[tokio::test(start_paused = true)]
async fn past_the_queue_timeout_the_client_gets_503_with_retry_after() {
    let s1 = backend("s1").start().await;
    let config = Config::over(
        pool()
            .balance("leastconn")
            .queue_timeout("300ms")
            .server(Server::from(&s1).maxconn(1)),
    );
    let tether = start_tether(&config).await;
    let (_held, _) = ws_connect(tether.addr, "/ws").await;
    let started = tokio::time::Instant::now();
    let (status, headers, body) = get(tether.addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited in the queue first"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry));
    assert!(String::from_utf8_lossy(&body).contains("maxconn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_takes_no_new_clients_and_closes_its_tunnels_spread_out() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::over(
        pool()
            .balance("leastconn")
            .drain_timeout("200ms")
            .drain_spread("3s")
            .server(&a)
            .server(&b),
    );
    let tether = start_tether(&config).await;
    let mut on_s1 = Vec::new();
    let mut on_s2 = Vec::new();
    while on_s1.len() < 150 || on_s2.len() < 150 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        if name == "s1" {
            on_s1.push(ws)
        } else {
            on_s2.push(ws)
        }
    }
    let state = tether.handle.snapshot().backends[0].servers[0].state.clone();
    assert!(tether.handle.set_admin(&state, AdminState::Drain));
    let drained_at = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            ws_connect(tether.addr, "/ws").await.1,
            "s2",
            "no new client lands on a draining server"
        );
    }
    let mut closes = Vec::new();
    let mut waits = Vec::new();
    for mut ws in on_s1 {
        waits.push(tokio::spawn(async move {
            let code = close_code(&mut ws, Duration::from_secs(6)).await;
            (code, Instant::now())
        }));
    }
    for wait in waits {
        let (code, at) = wait.await.unwrap();
        assert_eq!(code, Some(1012));
        closes.push(at.duration_since(drained_at));
    }
    // 150 closes over 200 ms + 3 s: no second may see more than about a third of them.
    for second in 0..4 {
        let lo = Duration::from_millis(200 + second * 1000);
        let in_window = closes
            .iter()
            .filter(|d| **d >= lo && **d < lo + Duration::from_secs(1))
            .count();
        assert!(in_window <= 65, "{in_window} closes in second {second}: not spread");
    }
    assert!(
        closes.iter().all(|d| *d >= Duration::from_millis(190)),
        "nothing closes before drain_timeout"
    );
    // A closed tunnel holds its slot until the client's Close or EOF (at most CLOSE_LINGER).
    let emptied = eventually(Duration::from_secs(3), async || state.active() == 0).await;
    assert!(
        emptied.is_some(),
        "{} still active on the drained server",
        state.active()
    );
    assert_eq!(on_s2.len(), 150);
    for ws in on_s2.iter_mut().take(5) {
        futures_util::SinkExt::send(ws, Message::text("alive")).await.unwrap();
        assert_eq!(next_text(ws).await, "alive");
    }
}

#[tokio::test]
async fn a_draining_server_still_takes_stuck_clients_and_maint_takes_nothing() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::over(
        pool()
            .sticky(Sticky::cookie("SERVERID"))
            .server(Server::from(&a).cookie("s1"))
            .server(Server::from(&b).cookie("s2")),
    );
    let tether = start_tether(&config).await;
    let state = tether.handle.snapshot().backends[0].servers[0].state.clone();
    tether.handle.set_admin(&state, AdminState::Drain);
    let stuck = |addr| async move {
        let mut client = http_client(addr).await;
        let mut request = get_request("/");
        request.headers_mut().insert("cookie", "SERVERID=s1".parse().unwrap());
        send(&mut client, request).await.1["x-server"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        stuck(tether.addr).await,
        "s1",
        "drain_sticky: stuck clients still reach it"
    );
    for _ in 0..4 {
        assert_eq!(server_of(tether.addr, "/").await, "s2");
    }
    tether.handle.set_admin(&state, AdminState::Maint);
    assert_eq!(
        stuck(tether.addr).await,
        "s2",
        "maint: even stuck clients are redispatched"
    );
    tether.handle.set_admin(&state, AdminState::Ready);
    let names: std::collections::HashSet<_> =
        futures_util::future::join_all((0..4).map(|_| server_of(tether.addr, "/")))
            .await
            .into_iter()
            .collect();
    assert_eq!(names.len(), 2, "ready again: back in rotation");
}

#[tokio::test]
async fn config_state_drain_and_maint_apply_at_start() {
    let (a, b, c) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let config = Config::over(
        pool()
            .server(Server::from(&a).state("drain"))
            .server(Server::from(&b).state("maint"))
            .server(&c),
    );
    let tether = start_tether(&config).await;
    for _ in 0..6 {
        assert_eq!(server_of(tether.addr, "/").await, "s3");
    }
    // Through the TOML text on purpose: a bad value is an error naming the file.
    let bad = config.toml().replace("state = \"maint\"", "state = \"sleeping\"");
    assert_ne!(bad, config.toml(), "the text has the state to replace");
    let err = tether::config::parse(&bad, "bad.toml").unwrap_err().to_string();
    assert!(err.contains("bad.toml:") && err.contains("ready"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_returning_server_from_a_trickle_to_its_share() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::over(
        pool()
            .slowstart("10s")
            .server(Server::from(&a).weight(20))
            .server(Server::from(&b).weight(20)),
    );
    let tether = start_tether(&config).await;
    let state = tether.handle.snapshot().backends[0].servers[0].state.clone();
    state.set_up(false);
    state.set_up(true);
    let share = |picks: &[String]| picks.iter().filter(|n| *n == "s1").count();
    let mut early = Vec::new();
    for _ in 0..42 {
        early.push(server_of(tether.addr, "/").await);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let mut late = Vec::new();
    for _ in 0..40 {
        late.push(server_of(tether.addr, "/").await);
    }
    assert!(
        share(&early) <= 3,
        "just back: about 1/21 of the traffic, got {}",
        share(&early)
    );
    assert_eq!(share(&late), 20, "after the ramp: its full half");
    assert_eq!(state.dispatched.load(Ordering::Relaxed) as usize, share(&early) + 20);
}

/// A WebSocket handshake to `/ws` carrying `cookie`.
fn handshake_with_cookie(
    addr: std::net::SocketAddr,
    cookie: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert(http::header::COOKIE, cookie.parse().unwrap());
    request
}

/// A GET of `path` carrying `cookie`: the status, the server that answered and its `Set-Cookie`s.
async fn get_with_cookie(addr: std::net::SocketAddr, path: &str, cookie: &str) -> (StatusCode, String, Vec<String>) {
    let mut client = http_client(addr).await;
    let mut request = get_request(path);
    request
        .headers_mut()
        .insert(http::header::COOKIE, cookie.parse().unwrap());
    let (status, headers, _) = send(&mut client, request).await;
    let server = headers
        .get("x-server")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookies = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (status, server, cookies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_for_sticky_clients_once_its_deadline_passed_and_the_api_says_when() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .sticky(Sticky::cookie("SERVERID"))
            .drain_timeout("300ms")
            .drain_spread("100ms")
            .server(Server::from(&a).cookie("s1"))
            .server(Server::from(&b).cookie("s2")),
    )
    .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]));
    let tether = start_tether(&config).await;
    let (mut first, name) = ws_connect_with(handshake_with_cookie(tether.addr, "SERVERID=s1")).await;
    assert_eq!(name, "s1");
    let state = tether.handle.snapshot().backends[0].servers[0].state.clone();
    assert!(tether.handle.set_admin(&state, AdminState::Drain));
    // Before the deadline a stuck client still gets its server (drain_sticky).
    let (mut early, name) = ws_connect_with(handshake_with_cookie(tether.addr, "SERVERID=s1")).await;
    assert_eq!(name, "s1", "drain_sticky lets a stuck client back before drain_timeout");
    assert_eq!(close_code(&mut first, Duration::from_secs(3)).await, Some(1012));
    assert_eq!(close_code(&mut early, Duration::from_secs(3)).await, Some(1012));
    // The clients reconnect with their cookie: balanced elsewhere, with a fresh cookie.
    let (mut again, name) = ws_connect_with(handshake_with_cookie(tether.addr, "SERVERID=s1")).await;
    assert_eq!(
        name, "s2",
        "stickiness to a server past its drain deadline is not honoured"
    );
    let (status, server, cookies) = get_with_cookie(tether.addr, "/", "SERVERID=s1").await;
    assert_eq!((status, server.as_str()), (StatusCode::OK, "s2"));
    assert!(
        cookies.iter().any(|c| c.starts_with("SERVERID=s2")),
        "a fresh cookie for the new server: {cookies:?}"
    );
    let ended = eventually(Duration::from_secs(3), async || {
        state.drain_progress().and_then(|p| p.ended_unix_ms).is_some()
    })
    .await;
    assert!(ended.is_some(), "the drain ends: {:?}", state.drain_progress());
    assert_eq!(state.active(), 0, "a drain ends with nothing on the server");
    let admin = tether.handle.admin_addr().expect("admin listener");
    let (status, _, body) = get(admin, "/api/v1/servers").await;
    assert_eq!(status, StatusCode::OK);
    let servers: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let s1 = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "s1")
        .unwrap();
    assert_eq!(s1["drain"]["closing"], true, "{s1}");
    assert!(s1["drain"]["ended_unix_ms"].as_u64().is_some(), "{s1}");
    let s2 = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "s2")
        .unwrap();
    assert!(s2["drain"].is_null(), "a ready server has no drain: {s2}");
    again.close(None).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_id_of_a_server_past_its_drain_deadline_is_re_pointed() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .sticky(Sticky::learned().learn_response_cookie("io").match_cookie("io"))
            .drain_timeout("200ms")
            .drain_spread("0s")
            .server(&a)
            .server(&b),
    );
    let tether = start_tether(&config).await;
    let (_, owner, _) = get_with_cookie(tether.addr, "/start?set_cookie=io=abc", "x=1").await;
    let snapshot = tether.handle.snapshot();
    let backend = &snapshot.backends[0];
    let index = backend.servers.iter().position(|s| *s.name == *owner).unwrap();
    let state = backend.servers[index].state.clone();
    for _ in 0..3 {
        assert_eq!(get_with_cookie(tether.addr, "/poll", "io=abc").await.1, owner);
    }
    assert!(tether.handle.set_admin(&state, AdminState::Drain));
    assert_eq!(
        get_with_cookie(tether.addr, "/poll", "io=abc").await.1,
        owner,
        "before the deadline the id still leads to its server"
    );
    let closing = eventually(Duration::from_secs(3), async || {
        state.drain_progress().is_some_and(|p| p.closing)
    })
    .await;
    assert!(closing.is_some());
    let (_, moved, _) = get_with_cookie(tether.addr, "/poll", "io=abc").await;
    assert_ne!(moved, owner, "past the deadline the id is balanced elsewhere");
    for _ in 0..3 {
        assert_eq!(
            get_with_cookie(tether.addr, "/poll", "io=abc").await.1,
            moved,
            "and re-pointed there"
        );
    }
    let table = backend.sticky.as_ref().unwrap().table.clone().unwrap();
    assert_eq!(table.get("abc").as_deref(), Some(moved.as_str()));
}
