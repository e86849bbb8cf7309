//! Real Socket.IO through tether: three Node `socket.io@4` servers, thirty
//! `socket.io-client@4` clients with their default transports (long-polling
//! first, then the upgrade to WebSocket), each exchanging twenty acked events.
//!
//! The Node side lives in `tests/socketio/` (`server.js`, `client.js`); its
//! packages are installed with `npm ci --prefix tests/socketio`. Every Node
//! process is started here and killed when its handle drops; the servers also
//! exit when their stdin (held by the test) closes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tether_test_support::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Concurrent Socket.IO clients per run.
const CLIENTS: usize = 30;
/// Acked `echo` events each client sends after its upgrade to WebSocket.
const EVENTS: usize = 20;

/// `tests/socketio/`, after checking that `npm ci` was run there.
fn harness_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
    ensure_npm_packages(&dir, &["socket.io", "socket.io-client"]);
    dir
}

/// A `node` command for a script of the harness.
fn node(script: &str) -> Command {
    let dir = harness_dir();
    let mut command = Command::new("node");
    command.arg(dir.join(script)).current_dir(dir).kill_on_drop(true);
    command
}

/// One `tests/socketio/server.js` process.
struct SocketIoServer {
    /// The name it answers with (`hello`, and `server` in every ack).
    name: String,
    /// Where it listens.
    addr: SocketAddr,
    /// Killed on drop; its stdin stays open until then, so the server also
    /// exits if this test process dies without running destructors.
    _child: Child,
    /// Kept so the server never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

/// Starts a Socket.IO server named `name` on 127.0.0.1:0 and waits for its `LISTENING <port>`.
async fn socketio_server(name: &str) -> SocketIoServer {
    let mut child = node("server.js")
        .args(["--port", "0", "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): Node.js 18+ must be on PATH"));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .unwrap_or_else(|_| panic!("server {name}: no `LISTENING <port>` within 10 s"))
        .expect("read the server's stdout")
        .unwrap_or_else(|| panic!("server {name} exited before listening"));
    let port: u16 = line
        .strip_prefix("LISTENING ")
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("server {name}: expected `LISTENING <port>`, got {line:?}"));
    SocketIoServer {
        name: name.to_string(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _child: child,
        _stdout: stdout,
    }
}

/// Three Socket.IO servers, `s1`, `s2`, `s3`.
async fn three_servers() -> Vec<SocketIoServer> {
    let (s1, s2, s3) = tokio::join!(socketio_server("s1"), socketio_server("s2"), socketio_server("s3"));
    vec![s1, s2, s3]
}

/// A config routing `path_prefix = "/socket.io"` to backend `socketio`
/// (`balance`, plus `sticky` when given) over `servers`, cookie ids = names.
fn socketio_config(balance: &str, sticky: Option<Sticky>, servers: &[SocketIoServer]) -> Config {
    let mut socketio = Backend::new("socketio").balance(balance);
    if let Some(sticky) = sticky {
        socketio = socketio.sticky(sticky);
    }
    for server in servers {
        socketio = socketio.server(Server::new(&server.name, server.addr).cookie(&server.name));
    }
    Config::new()
        .shutdown_grace("1s")
        .frontend(
            Frontend::new("public")
                .bind("127.0.0.1:0")
                .route(Route::to("socketio").path_prefix("/socket.io")),
        )
        .backend(socketio)
}

/// The one JSON line `client.js` prints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// Clients started.
    clients: usize,
    /// Clients that connected, upgraded, got every ack from one server, and saw no error.
    ok: usize,
    /// Clients whose transport reached WebSocket.
    upgraded: usize,
    /// The first errors and unexpected disconnections, one line each.
    errors: Vec<String>,
    /// All errors and unexpected disconnections.
    error_count: usize,
    /// "Session ID unknown" answers and HTTP 400s seen.
    session_unknown: usize,
    /// For each server name, how many clients it answered.
    servers: BTreeMap<String, usize>,
    /// Clients answered by more than one server.
    mixed_servers: usize,
}

impl Report {
    /// The counts and the first few errors, for assertion messages.
    fn summary(&self) -> String {
        let mut text = format!(
            "{} clients, {} ok, {} upgraded, {} errors, {} session unknown, servers {:?}, {} mixed",
            self.clients,
            self.ok,
            self.upgraded,
            self.error_count,
            self.session_unknown,
            self.servers,
            self.mixed_servers
        );
        for error in self.errors.iter().take(8) {
            text.push_str("\n  ");
            text.push_str(error);
        }
        text
    }
}

/// Runs `client.js` against `addr` and returns its report; `cookies` is `jar` or `none`.
async fn run_clients(addr: SocketAddr, cookies: &str, timeout: Duration) -> Report {
    let mut command = node("client.js");
    command
        .args(["--url", &format!("http://{addr}")])
        .args(["--clients", &CLIENTS.to_string()])
        .args(["--events", &EVENTS.to_string()])
        .args(["--cookies", cookies])
        .args(["--timeout-ms", &timeout.as_millis().to_string()])
        .stdin(Stdio::null());
    let output = tokio::time::timeout(timeout + Duration::from_secs(10), command.output())
        .await
        .expect("client.js did not exit after its own timeout")
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): Node.js 18+ must be on PATH"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client.js failed ({}):\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("client.js printed no report:\n{stdout}\n{stderr}"));
    let report: Report = serde_json::from_str(line).unwrap_or_else(|e| panic!("client.js report {line:?}: {e}"));
    eprintln!("socket.io clients via {addr}, cookies {cookies}: {}", report.summary());
    report
}

/// Every client kept its session on one server, over polling and WebSocket,
/// and the clients were spread over all of `servers`.
fn assert_every_session_kept(report: &Report, servers: &[SocketIoServer]) {
    let summary = report.summary();
    assert_eq!(report.clients, CLIENTS, "{summary}");
    assert!(report.errors.is_empty() && report.error_count == 0, "{summary}");
    assert_eq!(report.session_unknown, 0, "{summary}");
    assert_eq!(report.ok, CLIENTS, "{summary}");
    assert_eq!(report.upgraded, CLIENTS, "{summary}");
    assert_eq!(report.mixed_servers, 0, "{summary}");
    for server in servers {
        assert!(
            report.servers.get(&server.name).copied().unwrap_or(0) > 0,
            "server {} got no client: {summary}",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_without_stickiness_breaks_and_the_test_can_tell() {
    init_logs();
    let servers = three_servers().await;
    let tether = start_tether(&socketio_config("roundrobin", None, &servers)).await;
    let report = run_clients(tether.addr, "jar", Duration::from_secs(3)).await;
    assert_eq!(report.clients, CLIENTS, "{}", report.summary());
    assert!(
        report.session_unknown > 0 || !report.errors.is_empty() || report.ok < report.clients,
        "round robin without stickiness must lose Engine.IO sessions, yet the harness saw none: {}",
        report.summary()
    );
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_with_cookie_stickiness_never_loses_a_session() {
    init_logs();
    let servers = three_servers().await;
    let sticky = Sticky::cookie("SERVERID").mode("insert").indirect(true).nocache(true);
    let tether = start_tether(&socketio_config("leastconn", Some(sticky), &servers)).await;
    let report = run_clients(tether.addr, "jar", Duration::from_secs(15)).await;
    assert_every_session_kept(&report, &servers);
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_engine_io_preset_needs_no_cookies() {
    init_logs();
    let servers = three_servers().await;
    let sticky = Sticky::preset("engine.io");
    let tether = start_tether(&socketio_config("leastconn", Some(sticky), &servers)).await;
    let report = run_clients(tether.addr, "none", Duration::from_secs(15)).await;
    assert_every_session_kept(&report, &servers);
    tether.stop().await;
}

/// The page of the browser test: a Socket.IO client (the script the servers
/// serve themselves) with its default transports, long-polling then the
/// upgrade to WebSocket; once connected and upgraded it sends an acked `echo` and writes
/// what it saw into `#out`.
const SOCKETIO_PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre>
<script src="/socket.io/socket.io.js"></script><script>
const out = document.getElementById("out");
const socket = io();
let hello = null;
socket.on("hello", (name) => { hello = name; });
// The upgrade may finish before or after `connect`: wait for both.
const waiting = setInterval(() => {
  if (!socket.connected || socket.io.engine.transport.name !== "websocket") return;
  clearInterval(waiting);
  socket.emit("echo", "over h2", (ack) => {
    out.textContent = `hello=${hello} transport=${socket.io.engine.transport.name} ack=${ack.server}:${ack.payload}`;
  });
}, 50);
socket.on("connect_error", (err) => { out.textContent = "error " + err.message; });
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_socketio_over_h2_polls_then_upgrades_on_its_sticky_server() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let servers = three_servers().await;
    let cert = SelfSigned::new();
    let (page, _page_task) = page_server(SOCKETIO_PAGE).await;
    let mut socketio = Backend::new("socketio")
        .balance("roundrobin")
        .sticky(Sticky::cookie("SERVERID").mode("insert").indirect(true).nocache(true));
    for server in &servers {
        socketio = socketio.server(Server::new(&server.name, server.addr).cookie(&server.name));
    }
    let config = Config::new()
        .shutdown_grace("1s")
        .frontend(
            Frontend::new("public")
                .bind("127.0.0.1:0")
                .default_backend("pages")
                .tls(cert.tls())
                .route(Route::to("socketio").path_prefix("/socket.io")),
        )
        .backend(socketio)
        .backend(Backend::new("pages").server(Server::new("page", page)))
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]));
    let tether = start_tether(&config).await;
    let report = browser_page_out(&binary, &format!("https://tether.test:{}/", tether.addr.port())).await;
    let out = report["out"].as_str().unwrap_or_default().to_string();
    // Round robin over three servers: without stickiness the polls and the
    // upgrade would reach servers that do not know the session.
    let hello = out
        .strip_prefix("hello=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("the page connected: {report}"));
    assert_eq!(
        out,
        format!("hello={hello} transport=websocket ack={hello}:over h2"),
        "polling then WebSocket, all on one server: {report}"
    );
    let admin = tether.handle.admin_addr().expect("admin listener");
    let h2 = |series: &str| format!("{series}{{frontend=\"public\",protocol=\"h2\"}}");
    assert!(
        metric(admin, &h2("tether_frontend_protocol_requests_total")).await >= 3,
        "the page, the script and the polls came over h2"
    );
    assert_eq!(
        metric(admin, &h2("tether_frontend_protocol_websockets_total")).await,
        1,
        "the upgrade rode the h2 connection (RFC 8441)"
    );
    tether.stop().await;
}
