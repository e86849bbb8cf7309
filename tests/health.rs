//! Health checks seen from outside: each check kind takes a stopped server
//! out after `fall` failures and brings it back after `rise` passes; the
//! HTTP check's status range and body substring; a WebSocket check against a
//! server that answers 200; no traffic to a new server before a check passed;
//! passive detection from failed connects; checker tasks across reloads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tether::health::Flip;
use tether::state::ServerState;
use tether_test_support::*;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// What a switchable backend answers on `/health…` paths (HTTP and WebSocket).
struct Behaviour {
    status: u16,
    body: String,
}

/// The last check request a switchable backend saw.
#[derive(Debug, Clone)]
struct SeenCheck {
    method: String,
    path: String,
    host: String,
}

struct SwitchShared {
    name: String,
    behaviour: Mutex<Behaviour>,
    /// Requests to `/health…` (checks), HTTP or WebSocket.
    checks: AtomicUsize,
    /// Every other request (client traffic through tether).
    traffic: AtomicUsize,
    /// WebSocket Close frames received.
    closes: AtomicUsize,
    last_check: Mutex<Option<SeenCheck>>,
    /// WebSocket tasks, aborted with the server.
    websockets: Mutex<Vec<AbortHandle>>,
}

/// A backend on a fixed port that can be stopped (port closed, connections
/// cut) and started again on the same port, whose health answer can be
/// switched. Every response says `Connection: close`, so tether pools
/// nothing and each request is a fresh connect.
struct SwitchBackend {
    addr: SocketAddr,
    shared: Arc<SwitchShared>,
    accept: Option<JoinHandle<()>>,
}

impl SwitchBackend {
    async fn start(name: &str) -> SwitchBackend {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut backend = SwitchBackend {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            shared: Arc::new(SwitchShared {
                name: name.to_string(),
                behaviour: Mutex::new(Behaviour {
                    status: 200,
                    body: "status: ready".to_string(),
                }),
                checks: AtomicUsize::new(0),
                traffic: AtomicUsize::new(0),
                closes: AtomicUsize::new(0),
                last_check: Mutex::new(None),
                websockets: Mutex::new(Vec::new()),
            }),
            accept: None,
        };
        backend.resume().await;
        backend
    }

    /// Listens again on the same port (retrying while the port is briefly in use).
    async fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("rebind {}: {err}", self.addr),
            }
        };
        self.accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
    }

    /// Closes the port and cuts every connection, as a crashed process would.
    fn kill(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for task in self.shared.websockets.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Closes the port but keeps the WebSockets open: new connects are
    /// refused while the open tunnels still work.
    fn stop_listening(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }

    fn answer(&self, status: u16, body: &str) {
        *self.shared.behaviour.lock().unwrap() = Behaviour {
            status,
            body: body.to_string(),
        };
    }

    fn checks(&self) -> usize {
        self.shared.checks.load(Ordering::SeqCst)
    }

    fn traffic(&self) -> usize {
        self.shared.traffic.load(Ordering::SeqCst)
    }

    fn closes(&self) -> usize {
        self.shared.closes.load(Ordering::SeqCst)
    }

    fn last_check(&self) -> Option<SeenCheck> {
        self.shared.last_check.lock().unwrap().clone()
    }
}

impl Drop for SwitchBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<SwitchShared>) {
    // Connection tasks live in this set: aborting the loop drops it, which aborts them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| serve(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(shared: Arc<SwitchShared>, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if !path.starts_with("/health") {
        shared.traffic.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .header("x-server", shared.name.as_str())
            .header(header::CONNECTION, "close")
            .body(Full::new(Bytes::from(shared.name.clone())))
            .unwrap());
    }
    shared.checks.fetch_add(1, Ordering::SeqCst);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    *shared.last_check.lock().unwrap() = Some(SeenCheck {
        method: req.method().to_string(),
        path: req.uri().to_string(),
        host: host.to_string(),
    });
    let (status, body) = {
        let behaviour = shared.behaviour.lock().unwrap();
        (behaviour.status, behaviour.body.clone())
    };
    if let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() {
        if status == 200 {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let counting = shared.clone();
            let task = tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else { return };
                let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        counting.closes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            shared.websockets.lock().unwrap().push(task.abort_handle());
            return Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
    }
    Ok(Response::builder()
        .status(status)
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// The live state of server `name` of backend `pool`.
fn state(tether: &RunningTether, name: &str) -> Arc<ServerState> {
    let snapshot = tether.handle.snapshot();
    let backend = snapshot.backend("pool").expect("backend pool");
    let server = backend.servers.iter().find(|s| &*s.name == name).expect("server");
    server.state.clone()
}

/// How long a test waits for a state it expects.
const WAIT: Duration = Duration::from_secs(5);

/// The last flip of server `name`: which way, after how many results, by what.
fn last_flip(tether: &RunningTether, name: &str) -> (Flip, u32, &'static str, String) {
    let flip = state(tether, name).health().last_flip.expect("a flip");
    (flip.flip, flip.after, flip.check, flip.cause)
}

/// Kills and restarts server `s1` under a check of the given kind with
/// rise = 3 and fall = 2; returns the backend for kind-specific checks.
async fn a_killed_server_goes_down_after_fall_and_comes_back_after_rise(check: &str) -> SwitchBackend {
    init_logs();
    let stable = backend("s0").start().await;
    let mut s1 = SwitchBackend::start("s1").await;
    let health = Health::check(check).interval("50ms").rise(3).fall(2);
    let health = if check == "tcp" { health } else { health.path("/health") };
    let servers = pool().health(health).server(&stable).server(("s1", s1.addr));
    let tether = start_tether(&Config::over(servers)).await;
    let s1_state = state(&tether, "s1");
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up");
    assert_eq!(last_flip(&tether, "s1").0, Flip::Up);
    assert_eq!(last_flip(&tether, "s1").1, 1, "the first check decides alone");

    s1.kill();
    eventually(WAIT, async || !s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is down");
    let (flip, after, kind, cause) = last_flip(&tether, "s1");
    assert_eq!((flip, after, kind), (Flip::Down, 2, check), "{check}: {cause}");
    assert!(cause.contains("connect failed"), "{check}: {cause}");
    for i in 0..6 {
        assert_eq!(server_of(tether.addr, &format!("/down/{i}")).await, "s0", "{check}");
    }

    let checks_before = s1.checks();
    s1.resume().await;
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up again");
    let (flip, after, kind, _) = last_flip(&tether, "s1");
    assert_eq!((flip, after, kind), (Flip::Up, 3, check));
    if check != "tcp" {
        assert!(
            s1.checks() - checks_before >= 3,
            "{check}: up after fewer than rise checks"
        );
    }
    let mut reached = std::collections::BTreeSet::new();
    for i in 0..6 {
        reached.insert(server_of(tether.addr, &format!("/up/{i}")).await);
    }
    assert!(reached.contains("s1"), "{check}: s1 takes traffic again: {reached:?}");
    tether.stop().await;
    s1
}

#[tokio::test]
async fn a_tcp_check_takes_a_killed_server_out_after_fall_and_back_after_rise() {
    a_killed_server_goes_down_after_fall_and_comes_back_after_rise("tcp").await;
}

#[tokio::test]
async fn an_http_check_takes_a_killed_server_out_after_fall_and_back_after_rise() {
    let s1 = a_killed_server_goes_down_after_fall_and_comes_back_after_rise("http").await;
    let seen = s1.last_check().expect("a check request");
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/health"));
    assert_eq!(seen.host, s1.addr.to_string(), "Host defaults to the server address");
}

#[tokio::test]
async fn a_websocket_check_takes_a_killed_server_out_after_fall_and_back_after_rise() {
    let s1 = a_killed_server_goes_down_after_fall_and_comes_back_after_rise("websocket").await;
    assert!(
        s1.closes() > 0,
        "the WebSocket check ends its handshakes with a Close frame"
    );
}

#[tokio::test]
async fn an_http_check_passes_only_inside_the_status_range_with_the_body_substring() {
    init_logs();
    let s1 = SwitchBackend::start("s1").await;
    let health = Health::check("http")
        .path("/healthz?deep=1")
        .method("GET")
        .host("health.test")
        .expect_status("200-299")
        .expect_body("ready")
        .interval("50ms")
        .rise(1)
        .fall(1);
    let tether = start_tether(&Config::over(pool().health(health).server(("s1", s1.addr)))).await;
    let s1_state = state(&tether, "s1");
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up");
    let seen = s1.last_check().unwrap();
    assert_eq!(
        (seen.path.as_str(), seen.host.as_str()),
        ("/healthz?deep=1", "health.test")
    );

    // A redirect is outside 200-299 (although inside the default 200-399).
    s1.answer(302, "ready");
    eventually(WAIT, async || !s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is down on 302");
    let (_, _, kind, cause) = last_flip(&tether, "s1");
    assert_eq!(kind, "http");
    assert!(cause.contains("status 302 is not 200-299"), "{cause}");
    let (status, _, _) = get(tether.addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    s1.answer(201, "all ready");
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up on 201 with the substring");

    s1.answer(200, "starting");
    eventually(WAIT, async || !s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is down without the substring");
    let (_, _, _, cause) = last_flip(&tether, "s1");
    assert!(cause.contains("\"ready\""), "{cause}");

    // The substring may sit anywhere in the first 4 KiB.
    s1.answer(200, &format!("{}ready", "x".repeat(3000)));
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up with the substring late in the body");
    assert_eq!(server_of(tether.addr, "/").await, "s1");
}

#[tokio::test]
async fn a_websocket_check_fails_against_a_server_that_answers_200_instead_of_101() {
    init_logs();
    let refusing = backend("s1").refuse_upgrades_with(StatusCode::OK).start().await;
    let good = backend("s2").start().await;
    let health = Health::check("websocket").path("/ws").interval("50ms").rise(1).fall(1);
    let servers = pool()
        .health(health)
        .server(("s1", refusing.addr))
        .server(("s2", good.addr));
    let tether = start_tether(&Config::over(servers)).await;
    let (s1_state, s2_state) = (state(&tether, "s1"), state(&tether, "s2"));
    eventually(WAIT, async || s2_state.is_up())
        .await
        .expect("timed out waiting until s2 is up");
    eventually(WAIT, async || s1_state.health().checks >= 3)
        .await
        .expect("timed out waiting until s1 was checked three times");
    assert!(!s1_state.is_up(), "a 200 to a WebSocket handshake is a failed check");
    let health = s1_state.health();
    assert_eq!(health.failed_checks, health.checks);
    let failure = health.last_check.unwrap().failure.unwrap();
    assert!(failure.contains("status 200 is not 101"), "{failure}");
    for _ in 0..6 {
        let (_ws, name) = ws_connect(tether.addr, "/ws").await;
        assert_eq!(name, "s2");
    }
}

#[tokio::test]
async fn a_new_server_gets_no_traffic_before_its_first_check_passes() {
    init_logs();
    let s1 = SwitchBackend::start("s1").await;
    let s2 = SwitchBackend::start("s2").await;
    s2.answer(503, "warming up");
    let health = Health::check("http").path("/health").interval("50ms").rise(2).fall(2);
    let one = Config::over(pool().health(health.clone()).server(("s1", s1.addr)));
    let tether = start_tether(&one).await;
    let s1_state = state(&tether, "s1");
    assert!(!s1_state.is_up(), "a server with checks starts down");
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up");

    // Reload adds s2, whose checks fail: it never gets a request.
    let two = Config::over(pool().health(health).server(("s1", s1.addr)).server(("s2", s2.addr)));
    tether.handle.reload(&two.parse()).expect("reload");
    let s2_state = state(&tether, "s2");
    assert!(!s2_state.is_up(), "a new server is down until checked");
    assert!(s1_state.is_up(), "a server carried over keeps its state");
    assert!(Arc::ptr_eq(&s1_state, &state(&tether, "s1")));
    for i in 0..20 {
        assert_eq!(server_of(tether.addr, &format!("/r/{i}")).await, "s1");
    }
    eventually(WAIT, async || s2_state.health().checks >= 2)
        .await
        .expect("timed out waiting until s2 was checked");
    assert!(!s2_state.is_up());
    assert_eq!(s2.traffic(), 0);

    // Healthy now: rise applies (its first check already failed), then it takes traffic.
    s2.answer(200, "ok");
    eventually(WAIT, async || s2_state.is_up())
        .await
        .expect("timed out waiting until s2 is up");
    assert_eq!(last_flip(&tether, "s2").1, 2);
    let mut reached = std::collections::BTreeSet::new();
    for i in 0..6 {
        reached.insert(server_of(tether.addr, &format!("/later/{i}")).await);
    }
    assert!(reached.contains("s2"), "{reached:?}");

    // A new healthy server is up after its first check, not after `rise` intervals.
    let s3 = SwitchBackend::start("s3").await;
    let slow_rise = Health::check("http").path("/health").interval("2s").rise(5).fall(2);
    let three = Config::over(
        pool()
            .health(slow_rise)
            .server(("s1", s1.addr))
            .server(("s2", s2.addr))
            .server(("s3", s3.addr)),
    );
    tether.handle.reload(&three.parse()).expect("reload");
    let s3_state = state(&tether, "s3");
    assert!(!s3_state.is_up());
    let started = Instant::now();
    eventually(WAIT, async || s3_state.is_up())
        .await
        .expect("timed out waiting until s3 is up");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(last_flip(&tether, "s3").1, 1);
    assert!(s1_state.is_up() && s2_state.is_up(), "the reload kept s1 and s2 up");
}

/// Sends `n` GETs one after the other; all must succeed.
async fn get_all_ok(tether: &RunningTether, n: usize) {
    for i in 0..n {
        let (status, _, body) = get(tether.addr, &format!("/p/{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body:?}");
    }
}

#[tokio::test]
async fn with_observe_a_dead_server_is_out_after_fall_failed_connects_between_checks() {
    init_logs();
    for observe in [true, false] {
        let s1 = SwitchBackend::start("s1").await;
        let mut s2 = SwitchBackend::start("s2").await;
        // A 60 s interval: only the first checks run during the test.
        let health = Health::check("tcp").interval("60s").rise(1).fall(2).observe(observe);
        let servers = pool().health(health).server(("s1", s1.addr)).server(("s2", s2.addr));
        let tether = start_tether(&Config::over(servers)).await;
        let s2_state = state(&tether, "s2");
        eventually(WAIT, async || s2_state.is_up() && state(&tether, "s1").is_up())
            .await
            .expect("timed out waiting until both are up");
        get_all_ok(&tether, 4).await;
        assert!(s2.traffic() > 0);

        s2.kill();
        get_all_ok(&tether, 20).await;
        let failures = s2_state.connect_failures.load(Ordering::Relaxed);
        if observe {
            assert_eq!(failures, 2, "out after exactly `fall` failed connects");
            assert!(!s2_state.is_up());
            let (flip, after, kind, cause) = last_flip(&tether, "s2");
            assert_eq!((flip, after, kind), (Flip::Down, 2, "passive"));
            assert!(cause.contains("connect failed"), "{cause}");
            assert_eq!(s2_state.health().checks, 1, "no active check was needed");
        } else {
            assert!(
                failures >= 8,
                "without observe the dead server keeps being tried: {failures}"
            );
            assert!(s2_state.is_up());
        }
        tether.stop().await;
    }
}

#[tokio::test]
async fn a_good_connect_between_failed_ones_restarts_the_passive_count() {
    init_logs();
    let s1 = SwitchBackend::start("s1").await;
    let mut s2 = SwitchBackend::start("s2").await;
    let health = Health::check("tcp").interval("60s").rise(1).fall(3).observe(true);
    let servers = pool().health(health).server(("s1", s1.addr)).server(("s2", s2.addr));
    let tether = start_tether(&Config::over(servers)).await;
    let s2_state = state(&tether, "s2");
    eventually(WAIT, async || s2_state.is_up())
        .await
        .expect("timed out waiting until s2 is up");
    let failures = || s2_state.connect_failures.load(Ordering::Relaxed);
    // Two failed connects, then s2 answers again: the count starts over.
    s2.kill();
    while failures() < 2 {
        get_all_ok(&tether, 1).await;
    }
    s2.resume().await;
    let served = s2.traffic();
    while s2.traffic() == served {
        get_all_ok(&tether, 1).await;
    }
    assert_eq!(s2_state.health().machine.passive_failures(), 0);
    s2.kill();
    while failures() < 4 {
        get_all_ok(&tether, 1).await;
    }
    assert!(
        s2_state.is_up(),
        "2 + 2 failed connects with a good one between stay under fall = 3"
    );
    while failures() < 5 {
        get_all_ok(&tether, 1).await;
    }
    assert!(!s2_state.is_up(), "the third in a row takes it out");
}

#[tokio::test]
async fn checker_tasks_follow_reloads_and_stop_with_the_instance() {
    init_logs();
    let s1 = SwitchBackend::start("s1").await;
    let mut s2 = SwitchBackend::start("s2").await;
    s2.kill();
    let unchecked = pool().server(("s1", s1.addr)).server(("s2", s2.addr));
    let checked = Config::over(
        unchecked
            .clone()
            .health(Health::check("tcp").interval("50ms").rise(1).fall(1)),
    );
    let unchecked = Config::over(unchecked);
    let tether = start_tether(&checked).await;
    eventually(WAIT, async || tether.handle.health_checkers() == 2)
        .await
        .expect("timed out waiting until two checkers run");
    let s2_state = state(&tether, "s2");
    eventually(WAIT, async || !s2_state.is_up() && s2_state.health().checks > 0)
        .await
        .expect("timed out waiting until s2 is down");

    // Checks removed: no checker left, and the down server is up again.
    tether.handle.reload(&unchecked.parse()).expect("reload");
    assert_eq!(tether.handle.health_checkers(), 0);
    assert!(s2_state.is_up());
    let checks = s2_state.health().checks;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s2_state.health().checks, checks, "the old checkers stopped");

    // Checks back: the next check decides at once.
    tether.handle.reload(&checked.parse()).expect("reload");
    assert_eq!(tether.handle.health_checkers(), 2);
    eventually(WAIT, async || !s2_state.is_up())
        .await
        .expect("timed out waiting until s2 is down again");
    assert_eq!(last_flip(&tether, "s2").1, 1);

    let handle = tether.handle.clone();
    tether.stop().await;
    assert_eq!(handle.health_checkers(), 0, "checkers stop with the instance");
    let checks = s2_state.health().checks;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s2_state.health().checks, checks);
}

#[tokio::test]
async fn a_server_taken_out_by_failed_connects_keeps_its_tunnels_until_an_active_check_fails_too() {
    init_logs();
    let mut s1 = SwitchBackend::start("s1").await;
    // The first check runs at once, the next one about 3 s later.
    let health = Health::check("tcp").interval("3s").rise(1).fall(1).observe(true);
    let servers = pool().down_spread("0s").health(health).server(("s1", s1.addr));
    let tether = start_tether(&Config::over(servers)).await;
    let s1_state = state(&tether, "s1");
    eventually(WAIT, async || s1_state.is_up())
        .await
        .expect("timed out waiting until s1 is up");
    let request = format!("ws://{}/health/ws", tether.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("tunnel");
    // New connects are refused: one failed connect of live traffic takes s1 out.
    s1.stop_listening();
    let (status, _, _) = get(tether.addr, "/").await;
    assert!(status.is_server_error(), "{status}");
    assert!(!s1_state.is_up());
    assert_eq!(last_flip(&tether, "s1").2, "passive");
    // Failed connects may be load, not death: the open tunnel stays.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), ws.next()).await.is_err(),
        "the tunnel was closed on passive detection alone"
    );
    // The next active check fails too: now the tunnel is closed, with 1012,
    // and the server is told with a Close of its own.
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1012));
    eventually(WAIT, async || s1.closes() == 1)
        .await
        .expect("the server got no Close");
}
