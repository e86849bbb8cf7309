//! `tether import` side by side with the real thing: the tutorial layouts
//! run in real HAProxy / NGINX with the original file (ports substituted)
//! and in tether with the imported one, over the same real backends, with
//! the same clients (30 WebSockets, then reconnects carrying their cookies,
//! then a dead server); both must behave the same: which backend group
//! requests reach, the spread, stickiness across reconnects, what a dead
//! server does.
//!
//! Needs `haproxy` and `nginx` (Debian packages, installed by `.ci/run`);
//! without them the tests are skipped, unless TETHER_REQUIRE_BALANCERS is
//! set (CI), when a missing binary fails them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tether_test_support::{
    backend, closed_port, connect_from, find_balancer, get_request, http_client, send, server_of, ws_handshake_on,
    BalancerKind, ExternalBalancer, TestBackend, TetherProcess,
};

/// The balancer's binary, or None (test skipped) when it is missing and not required.
fn balancer_binary(kind: BalancerKind) -> Option<String> {
    match find_balancer(kind) {
        Ok(bin) => Some(bin),
        Err(reason) if std::env::var_os("TETHER_REQUIRE_BALANCERS").is_none() => {
            eprintln!("skipped: {reason} (set TETHER_REQUIRE_BALANCERS=1 to make this a failure)");
            None
        }
        Err(reason) => panic!("TETHER_REQUIRE_BALANCERS is set but {reason}"),
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/import")
            .join(name),
    )
    .expect("fixture")
}

/// `text` with each `(from, to)` address replaced.
fn substitute(text: &str, pairs: &[(String, String)]) -> String {
    pairs.iter().fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// `tether import KIND` of `text` (through a file, as an operator does); it must translate completely.
fn import(kind: &str, text: &str) -> String {
    // One folder per call: the tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tether-side-by-side-{}-{kind}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("original.conf");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["import", kind])
        .arg(&file)
        .output()
        .expect("run tether import");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts the original in HAProxy/NGINX on a free port and the import in
/// tether; returns both listen addresses (HAProxy/NGINX first).
async fn start_both(
    kind: BalancerKind,
    bin: &str,
    original: &str,
    listen: &str,
    backends: &[(String, String)],
) -> (ExternalBalancer, TetherProcess) {
    let port = closed_port().await;
    let mut pairs = backends.to_vec();
    pairs.push((listen.to_string(), port.to_string()));
    let text = substitute(original, &pairs);
    let external = ExternalBalancer::start(kind, bin, &text, port).await;
    let kind_name = if kind == BalancerKind::Haproxy {
        "haproxy"
    } else {
        "nginx"
    };
    // The import's frontend binds what the original did; tether's test process moves it to a free port.
    let imported = import(kind_name, &text).replace(&port.to_string(), "127.0.0.1:0");
    let tether = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &imported).await;
    (external, tether)
}

/// One client's WebSocket: where it landed and the cookie it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Landing {
    server: String,
    cookie: Option<String>,
}

/// Opens one WebSocket per client (from `sources`, each a 127.0.0.x),
/// all held open until every one is up, then closed; `cookies` are sent
/// when given. Failures are counted, not fatal.
async fn wave(
    addr: SocketAddr,
    path: &str,
    sources: &[String],
    cookies: Option<&[Landing]>,
) -> Vec<Result<Landing, String>> {
    let mut open = Vec::new();
    let mut out = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let cookie = cookies.and_then(|c| c[i].cookie.clone());
        let stream = connect_from(source, addr).await;
        match ws_handshake_on(stream, &format!("ws://{addr}{path}"), cookie.as_deref()).await {
            Ok(handshake) => {
                out.push(Ok(Landing {
                    server: handshake.server,
                    cookie: handshake.set_cookie.or(cookie),
                }));
                open.push(handshake.ws);
            }
            Err(err) => out.push(Err(err)),
        }
    }
    for mut ws in open {
        let _ = ws.close(None).await;
    }
    // Let both balancers see the closes before the next wave counts connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    out
}

/// Servers and how many clients each got.
fn spread(landings: &[Result<Landing, String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for landing in landings.iter().flatten() {
        *counts.entry(landing.server.clone()).or_insert(0) += 1;
    }
    counts
}

fn ok(landings: Vec<Result<Landing, String>>, who: &str) -> Vec<Landing> {
    landings
        .into_iter()
        .map(|l| l.unwrap_or_else(|e| panic!("{who}: a handshake failed: {e}")))
        .collect()
}

/// Waits until `addr` routes `/` to a server (tether checks servers before they take traffic).
async fn until_serving(addr: SocketAddr, path: &str) {
    let started = std::time::Instant::now();
    loop {
        let probe = tokio::time::timeout(Duration::from_secs(2), async {
            let stream = connect_from("127.0.0.1", addr).await;
            ws_handshake_on(stream, &format!("ws://{addr}{path}"), None).await
        })
        .await;
        if let Ok(Ok(mut handshake)) = probe {
            let _ = handshake.ws.close(None).await;
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{addr} never served {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts named backends; their addresses replace `written` in the original file.
async fn backends(names: &[&str], written: &[&str]) -> (Vec<Option<TestBackend>>, Vec<(String, String)>) {
    let mut started = Vec::new();
    let mut pairs = Vec::new();
    for (name, written) in names.iter().zip(written) {
        let b = backend(name).start().await;
        pairs.push((written.to_string(), b.addr.to_string()));
        started.push(Some(b));
    }
    (started, pairs)
}

/// What one balancer did with the Socket.IO layout.
#[derive(Debug, PartialEq, Eq)]
struct SocketIoBehaviour {
    /// Backend group of `/`, `/socket.io/`, a WebSocket to another path, and `/` for host `ws.example.com`.
    groups: [&'static str; 4],
    /// Clients per server for 30 WebSockets opened one after another, all held open.
    spread: Vec<usize>,
    /// Reconnects (with the cookie) that reached the same server.
    stuck: usize,
    /// After ws2 died: failed reconnects, clients of ws1/ws3 still on their server,
    /// clients of ws2 moved to a live server with a cookie naming it.
    failed_after_death: usize,
    kept_after_death: usize,
    moved_after_death: usize,
}

/// The server that answers `GET /` for `host`.
async fn server_for_host(addr: SocketAddr, host: &str) -> String {
    let mut request = get_request("/");
    request.headers_mut().insert("host", host.parse().expect("a host"));
    let (status, headers, _) = send(&mut http_client(addr).await, request).await;
    assert_eq!(status.as_u16(), 200, "GET / for {host}");
    headers["x-server"].to_str().unwrap_or_default().to_string()
}

fn group(server: &str) -> &'static str {
    match server {
        s if s.starts_with("web") => "web",
        s if s.starts_with("ws") => "websockets",
        _ => "other",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_socketio_layout_behaves_the_same_through_tether() {
    let Some(bin) = balancer_binary(BalancerKind::Haproxy) else {
        return;
    };
    let (mut servers, pairs) = backends(
        &["web1", "web2", "ws1", "ws2", "ws3"],
        &[
            "127.0.0.1:8101",
            "127.0.0.1:8102",
            "127.0.0.1:8201",
            "127.0.0.1:8202",
            "127.0.0.1:8203",
        ],
    )
    .await;
    let (haproxy, tether) = start_both(
        BalancerKind::Haproxy,
        &bin,
        &fixture("haproxy-socketio.cfg"),
        "127.0.0.1:8080",
        &pairs,
    )
    .await;
    let path = "/socket.io/?EIO=4&transport=websocket";
    let balancers = [("haproxy", haproxy.addr), ("tether", tether.addr)];
    for (_, addr) in balancers {
        until_serving(addr, path).await;
    }
    let clients: Vec<String> = vec!["127.0.0.1".to_string(); 30];
    let mut first = Vec::new();
    for (who, addr) in balancers {
        let other = wave(addr, "/chat", &clients[..1], None).await;
        let groups = [
            group(&server_of(addr, "/").await),
            group(&server_of(addr, "/socket.io/?EIO=4&transport=polling&t=1").await),
            group(&ok(other, who)[0].server),
            group(&server_for_host(addr, "ws.example.com").await),
        ];
        let landings = ok(wave(addr, path, &clients, None).await, who);
        let again = ok(wave(addr, path, &clients, Some(&landings)).await, who);
        let stuck = landings
            .iter()
            .zip(&again)
            .filter(|(a, b)| a.server == b.server)
            .count();
        let mut counts: Vec<usize> = spread(&landings.iter().cloned().map(Ok).collect::<Vec<_>>())
            .into_values()
            .collect();
        counts.sort_unstable();
        first.push((who, addr, groups, counts, stuck, landings));
    }
    // ws2 dies; both balancers' checks (inter 2s, fall 3) notice it.
    servers[3] = None;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut behaviours = Vec::new();
    for (who, addr, groups, counts, stuck, landings) in first {
        let after = wave(addr, path, &clients, Some(&landings)).await;
        let failed = after.iter().filter(|l| l.is_err()).count();
        let mut kept = 0;
        let mut moved = 0;
        for (before, now) in landings.iter().zip(after.iter().flatten()) {
            if before.server != "ws2" && now.server == before.server {
                kept += 1;
            }
            let cookie_names_it = now.cookie.as_deref().is_some_and(|c| c.ends_with(&now.server[2..]));
            if before.server == "ws2" && now.server != "ws2" && cookie_names_it {
                moved += 1;
            }
        }
        behaviours.push((
            who,
            SocketIoBehaviour {
                groups,
                spread: counts,
                stuck,
                failed_after_death: failed,
                kept_after_death: kept,
                moved_after_death: moved,
            },
        ));
    }
    let expected = SocketIoBehaviour {
        groups: ["web", "websockets", "websockets", "websockets"],
        spread: vec![10, 10, 10],
        stuck: 30,
        failed_after_death: 0,
        kept_after_death: 20,
        moved_after_death: 10,
    };
    for (who, behaviour) in &behaviours {
        eprintln!("{who}: {behaviour:?}");
    }
    assert_eq!(behaviours[0].1, expected, "HAProxy: {}", haproxy.logs());
    assert_eq!(behaviours[1].1, behaviours[0].1, "tether behaves as HAProxy does");
    drop(servers);
}

/// What one balancer did with a source-hashing layout, per client address.
#[derive(Debug, PartialEq, Eq)]
struct HashBehaviour {
    /// How many servers got clients, and the sorted counts.
    spread: Vec<usize>,
    /// Reconnects that reached the same server.
    stable: usize,
    /// After the dead server: failed reconnects, clients elsewhere that did
    /// not move, clients of the dead server that moved to a live one.
    failed_after_death: usize,
    kept_after_death: usize,
    moved_after_death: usize,
}

/// Runs the 30-client waves of a hashing layout on both; `dead` picks the server to kill from both first waves.
async fn hash_side_by_side(
    fixture_name: &str,
    path: &str,
    sources: Vec<String>,
    dead: impl Fn(&[Vec<Landing>]) -> String,
) -> Vec<(String, HashBehaviour, usize)> {
    let Some(bin) = balancer_binary(BalancerKind::Nginx) else {
        return Vec::new();
    };
    let names = ["s1", "s2", "s3"];
    let (mut servers, pairs) = backends(&names, &["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]).await;
    let (nginx, tether) = start_both(
        BalancerKind::Nginx,
        &bin,
        &fixture(fixture_name),
        "127.0.0.1:8080",
        &pairs,
    )
    .await;
    let balancers = [("nginx", nginx.addr), ("tether", tether.addr)];
    for (_, addr) in balancers {
        until_serving(addr, path).await;
    }
    let mut firsts = Vec::new();
    let mut stables = Vec::new();
    for (who, addr) in balancers {
        let landings = ok(wave(addr, path, &sources, None).await, who);
        let again = ok(wave(addr, path, &sources, None).await, who);
        stables.push(
            landings
                .iter()
                .zip(&again)
                .filter(|(a, b)| a.server == b.server)
                .count(),
        );
        firsts.push(landings);
    }
    let victim = dead(&firsts);
    let index = names.iter().position(|n| *n == victim).expect("a server name");
    servers[index] = None;
    let mut out = Vec::new();
    for (((who, addr), landings), stable) in balancers.into_iter().zip(firsts).zip(stables) {
        let after = wave(addr, path, &sources, None).await;
        let failed = after.iter().filter(|l| l.is_err()).count();
        let mut kept = 0;
        let mut moved = 0;
        for (before, now) in landings.iter().zip(after.iter().flatten()) {
            kept += usize::from(before.server != victim && now.server == before.server);
            moved += usize::from(before.server == victim && now.server != victim);
        }
        let mut counts: Vec<usize> = spread(&landings.iter().cloned().map(Ok).collect::<Vec<_>>())
            .into_values()
            .collect();
        counts.sort_unstable();
        let on_victim = landings.iter().filter(|l| l.server == victim).count();
        out.push((
            who.to_string(),
            HashBehaviour {
                spread: counts,
                stable,
                failed_after_death: failed,
                kept_after_death: kept,
                moved_after_death: moved,
            },
            on_victim,
        ));
    }
    drop(servers);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ip_hash_layout_behaves_the_same_through_tether() {
    // 30 clients of one address: ip_hash (NGINX: first three octets;
    // tether: the whole address) sends all of them to one server.
    let sources = vec!["127.0.0.1".to_string(); 30];
    let results = hash_side_by_side("nginx-ip-hash.conf", "/ws", sources, |firsts| {
        firsts[0][0].server.clone()
    })
    .await;
    let [(_, nginx, nginx_on), (_, tether, tether_on)] = results.as_slice() else {
        return;
    };
    for (who, b, on_victim) in [("NGINX", nginx, nginx_on), ("tether", tether, tether_on)] {
        assert_eq!(b.spread, [30], "{who}: one address, one server: {b:?}");
        assert_eq!(b.stable, 30, "{who}: every reconnect reaches the same server");
        assert_eq!(b.failed_after_death, 0, "{who}: {b:?}");
        // The dead server is NGINX's choice; tether's hash may have chosen another.
        assert_eq!(
            b.kept_after_death,
            30 - on_victim,
            "{who}: clients elsewhere stay: {b:?}"
        );
        assert_eq!(
            b.moved_after_death, *on_victim,
            "{who}: the dead server's clients move: {b:?}"
        );
    }
    assert_eq!(*nginx_on, 30, "NGINX's server was the one killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_hash_remote_addr_consistent_layout_behaves_the_same_through_tether() {
    // 30 client addresses: each keeps its server; when one server dies only its clients move.
    let sources: Vec<String> = (0..30).map(|i| format!("127.0.0.{}", 10 + i)).collect();
    let results = hash_side_by_side("nginx-hash-consistent.conf", "/chat", sources, |firsts| {
        // A server that has clients through both balancers, so the death is observed by both.
        let on = |landings: &[Landing], s: &str| landings.iter().any(|l| l.server == s);
        ["s1", "s2", "s3"]
            .into_iter()
            .find(|s| on(&firsts[0], s) && on(&firsts[1], s))
            .unwrap_or("s1")
            .to_string()
    })
    .await;
    let [(_, nginx, nginx_on), (_, tether, tether_on)] = results.as_slice() else {
        return;
    };
    for (who, b, on_victim) in [("NGINX", nginx, nginx_on), ("tether", tether, tether_on)] {
        eprintln!("{who}: {b:?}, {on_victim} on the dead server");
        assert!(b.spread.len() >= 2, "{who} spreads the addresses: {b:?}");
        assert_eq!(b.stable, 30, "{who}: every address keeps its server");
        assert!(*on_victim > 0, "{who}: the dead server had clients");
        assert_eq!(b.failed_after_death, 0, "{who}: {b:?}");
        assert_eq!(
            b.kept_after_death,
            30 - on_victim,
            "{who}: the other clients did not move"
        );
        assert_eq!(
            b.moved_after_death, *on_victim,
            "{who}: the dead server's clients moved"
        );
    }
}
