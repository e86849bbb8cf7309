//! Balancing algorithms seen from a client: which server each request or
//! WebSocket reaches, counted by the name the server announces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use hyper::client::conn::http1::SendRequest;
use tether_test_support::*;

/// Three backends named s1, s2, s3.
async fn three_backends() -> Vec<TestBackend> {
    vec![
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    ]
}

/// Backend `pool` balanced by `balance` over `backends`, behind the usual frontend.
fn config_for(balance: &str, backends: &[TestBackend]) -> Config {
    Config::over(pool().balance(balance).servers(backends))
}

/// Sends `request` on `client` and returns the server that answered (`x-server`).
async fn served_by(client: &mut SendRequest<TestBody>, request: Request<TestBody>) -> String {
    let (status, headers, _) = send(client, request).await;
    assert_eq!(status, StatusCode::OK);
    headers["x-server"].to_str().unwrap().to_string()
}

/// A GET of `path` with one extra header.
fn get_with(path: &str, name: &str, value: &str) -> Request<TestBody> {
    let mut request = get_request(path);
    request.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    request
}

/// Active requests and tunnels tether counts on server `name` of backend `pool`.
fn active_on(tether: &RunningTether, name: &str) -> u32 {
    let snapshot = tether.handle.snapshot();
    let backend = snapshot.backend("pool").expect("backend pool");
    backend
        .servers
        .iter()
        .find(|s| &*s.name == name)
        .expect("server")
        .state
        .active()
}

/// Waits until tether counts `expected` active connections on server `name`.
async fn wait_active(tether: &RunningTether, name: &str, expected: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = active_on(tether, name);
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server {name} still has {now} active connections, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a Close and waits for the close handshake to finish.
async fn close_ws(mut ws: Ws) {
    ws.close(None).await.expect("send close");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = ws.next().await {
            if message.is_err() {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn roundrobin_weights_1_2_3_give_exactly_100_200_300_of_600_requests() {
    init_logs();
    let backends = three_backends().await;
    let servers = pool()
        .server(Server::from(&backends[0]).weight(1))
        .server(Server::from(&backends[1]).weight(2))
        .server(Server::from(&backends[2]).weight(3));
    let tether = start_tether(&Config::over(servers)).await;
    let mut client = http_client(tether.addr).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..600 {
        let name = served_by(&mut client, get_request(&format!("/r/{i}"))).await;
        *counts.entry(name).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [("s1", 100), ("s2", 200), ("s3", 300)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn leastconn_keeps_300_long_lived_websockets_within_one_per_server() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("leastconn", &backends)).await;
    let mut open: HashMap<String, Vec<Ws>> = HashMap::new();
    for _ in 0..300 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        open.entry(name).or_default().push(ws);
    }
    let counts: BTreeMap<&str, usize> = open.iter().map(|(n, v)| (n.as_str(), v.len())).collect();
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, count) in &counts {
        assert!(
            (99..=101).contains(count),
            "{name} holds {count} of 300 WebSockets: {counts:?}"
        );
    }
    // Every tunnel is still open and counted by tether.
    for name in ["s1", "s2", "s3"] {
        assert_eq!(active_on(&tether, name) as usize, counts[name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leastconn_keeps_300_websockets_opened_concurrently_within_one_per_server() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("leastconn", &backends)).await;
    let addr = tether.addr;
    let opening: Vec<_> = (0..300)
        .map(|_| tokio::spawn(async move { ws_connect(addr, "/ws").await }))
        .collect();
    let mut open: HashMap<String, Vec<Ws>> = HashMap::new();
    for task in opening {
        let (ws, name) = task.await.expect("open task");
        open.entry(name).or_default().push(ws);
    }
    let counts: BTreeMap<&str, usize> = open.iter().map(|(n, v)| (n.as_str(), v.len())).collect();
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, count) in &counts {
        assert!(
            (99..=101).contains(count),
            "{name} holds {count} of 300 WebSockets: {counts:?}"
        );
    }
}

#[tokio::test]
async fn leastconn_sends_new_websockets_to_the_server_whose_sockets_all_closed() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("leastconn", &backends)).await;
    let mut open: HashMap<String, Vec<Ws>> = HashMap::new();
    for _ in 0..90 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        open.entry(name).or_default().push(ws);
    }
    assert_eq!(open.len(), 3);
    let emptied = "s2";
    for ws in open.remove(emptied).unwrap() {
        close_ws(ws).await;
    }
    wait_active(&tether, emptied, 0).await;
    for i in 0..20 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        assert_eq!(name, emptied, "new WebSocket {i} should go to the emptied server");
        open.entry(name).or_default().push(ws);
    }
}

#[tokio::test]
async fn source_hash_keeps_each_client_address_on_one_server() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("source", &backends)).await;
    let mut reached = BTreeSet::new();
    for last in 2..=9 {
        let source = format!("127.0.0.{last}");
        let mut seen = BTreeSet::new();
        // Several connections (new source ports) with several requests each.
        for _ in 0..3 {
            let stream = connect_from(&source, tether.addr).await;
            let mut client = http_client_on(stream).await;
            for _ in 0..5 {
                seen.insert(served_by(&mut client, get_request("/")).await);
            }
        }
        assert_eq!(seen.len(), 1, "{source} reached {seen:?}");
        reached.extend(seen);
    }
    assert!(reached.len() > 1, "8 client addresses all reached {reached:?}");
}

#[tokio::test]
async fn url_param_hash_keeps_each_session_id_on_one_server_and_spreads_ids() {
    let backends = three_backends().await;
    let tether = start_tether(&Config::over(
        pool().balance("url_param").hash_key("session_id").servers(&backends),
    ))
    .await;
    let mut client = http_client(tether.addr).await;
    let mut reached = BTreeSet::new();
    for id in 0..20 {
        let mut seen = BTreeSet::new();
        for n in 0..8 {
            let path = format!("/chat?n={n}&session_id=user-{id}&x=1");
            seen.insert(served_by(&mut client, get_request(&path)).await);
        }
        assert_eq!(seen.len(), 1, "session_id=user-{id} reached {seen:?}");
        reached.extend(seen);
    }
    assert!(reached.len() > 1, "20 session ids all reached {reached:?}");
}

#[tokio::test]
async fn url_param_hash_without_the_param_falls_back_to_round_robin() {
    let backends = three_backends().await;
    let tether = start_tether(&Config::over(
        pool().balance("url_param").hash_key("session_id").servers(&backends),
    ))
    .await;
    let mut client = http_client(tether.addr).await;
    let mut reached = BTreeSet::new();
    for path in ["/chat", "/chat?other=1", "/chat?session_id=", "/", "/x", "/y"] {
        reached.insert(served_by(&mut client, get_request(path)).await);
    }
    assert!(reached.len() > 1, "requests without the key all reached {reached:?}");
}

#[tokio::test]
async fn header_hash_keeps_each_user_on_one_server_and_spreads_users() {
    let backends = three_backends().await;
    let tether = start_tether(&Config::over(
        pool().balance("header").hash_key("x-user").servers(&backends),
    ))
    .await;
    let mut client = http_client(tether.addr).await;
    let mut reached = BTreeSet::new();
    for user in 0..20 {
        let mut seen = BTreeSet::new();
        for n in 0..8 {
            let request = get_with(&format!("/p/{n}"), "x-user", &format!("user-{user}"));
            seen.insert(served_by(&mut client, request).await);
        }
        assert_eq!(seen.len(), 1, "x-user: user-{user} reached {seen:?}");
        reached.extend(seen);
    }
    assert!(reached.len() > 1, "20 users all reached {reached:?}");

    // Without the header the request is still served, round robin.
    let mut keyless = BTreeSet::new();
    for _ in 0..6 {
        keyless.insert(served_by(&mut client, get_request("/")).await);
    }
    assert!(keyless.len() > 1, "keyless requests all reached {keyless:?}");
}

#[tokio::test]
async fn cookie_hash_keeps_each_sid_on_one_server_and_spreads_sids() {
    let backends = three_backends().await;
    let tether = start_tether(&Config::over(
        pool().balance("cookie").hash_key("sid").servers(&backends),
    ))
    .await;
    let mut client = http_client(tether.addr).await;
    let mut reached = BTreeSet::new();
    for sid in 0..20 {
        let mut seen = BTreeSet::new();
        for n in 0..8 {
            let cookie = format!("theme=dark-{n}; sid=abc{sid}; lang=en");
            let request = get_with("/", "cookie", &cookie);
            seen.insert(served_by(&mut client, request).await);
        }
        assert_eq!(seen.len(), 1, "sid=abc{sid} reached {seen:?}");
        reached.extend(seen);
    }
    assert!(reached.len() > 1, "20 sids all reached {reached:?}");
    let (status, _, _) = send(&mut client, get_with("/", "cookie", "theme=dark")).await;
    assert_eq!(status, StatusCode::OK, "a request without the cookie is served");
}

#[tokio::test]
async fn random_spreads_300_requests_over_all_three_servers() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("random", &backends)).await;
    let mut client = http_client(tether.addr).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        *counts
            .entry(served_by(&mut client, get_request("/")).await)
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, count) in &counts {
        assert!(*count >= 50, "{name} got only {count} of 300: {counts:?}");
    }
}

#[tokio::test]
async fn a_server_with_weight_0_gets_no_traffic_under_any_algorithm() {
    let backends = three_backends().await;
    for (balance, hash_key) in [
        ("roundrobin", None),
        ("leastconn", None),
        ("random", None),
        ("source", None),
        ("url_param", Some("session_id")),
    ] {
        let mut servers = pool()
            .balance(balance)
            .server(Server::from(&backends[0]).weight(0))
            .server(&backends[1])
            .server(&backends[2]);
        if let Some(key) = hash_key {
            servers = servers.hash_key(key);
        }
        let tether = start_tether(&Config::over(servers)).await;
        let mut client = http_client(tether.addr).await;
        let mut ws_open = Vec::new();
        for i in 0..60 {
            let name = served_by(&mut client, get_request(&format!("/?session_id=k{i}"))).await;
            assert_ne!(name, "s1", "{balance}: request {i} reached the weight-0 server");
        }
        for i in 0..10 {
            let (ws, name) = ws_connect(tether.addr, &format!("/ws?session_id=w{i}")).await;
            assert_ne!(name, "s1", "{balance}: WebSocket {i} reached the weight-0 server");
            ws_open.push(ws);
        }
        for ws in ws_open {
            close_ws(ws).await;
        }
        drop(client);
        tether.stop().await;
    }
    assert_eq!(backends[0].requests(), 0);
    assert_eq!(backends[0].connections(), 0);
}

#[tokio::test]
async fn a_websocket_tunnel_counts_as_active_on_its_server_until_it_closes() {
    let backends = three_backends().await;
    let tether = start_tether(&config_for("leastconn", &backends)).await;
    let (mut ws, name) = ws_connect(tether.addr, "/ws").await;
    assert!(["s1", "s2", "s3"].contains(&name.as_str()));
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    assert_eq!(active_on(&tether, &name), 1);
    close_ws(ws).await;
    wait_active(&tether, &name, 0).await;
}
