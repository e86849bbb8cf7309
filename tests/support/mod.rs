//! Helpers for integration tests: real backends that announce their name,
//! a real tether on 127.0.0.1:0, and small HTTP/WebSocket clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A body type for test requests and backend responses.
pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// Builds a test backend.
pub fn backend(name: &str) -> BackendBuilder {
    BackendBuilder {
        name: name.to_string(),
        upgrade_status: None,
        response_delay: None,
    }
}

/// Options of a test backend.
pub struct BackendBuilder {
    name: String,
    upgrade_status: Option<StatusCode>,
    response_delay: Option<Duration>,
}

impl BackendBuilder {
    /// Answer WebSocket handshakes with this status instead of 101.
    pub fn refuse_upgrades_with(mut self, status: StatusCode) -> Self {
        self.upgrade_status = Some(status);
        self
    }

    /// Wait this long before answering plain requests.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.response_delay = Some(delay);
        self
    }

    /// Starts the backend on 127.0.0.1:0.
    pub async fn start(self) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let shared = Arc::new(BackendShared {
            name: self.name.clone(),
            upgrade_status: self.upgrade_status,
            response_delay: self.response_delay,
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            last_headers: Mutex::new(HeaderMap::new()),
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestBackend { addr, shared, task }
    }
}

struct BackendShared {
    name: String,
    upgrade_status: Option<StatusCode>,
    response_delay: Option<Duration>,
    connections: AtomicUsize,
    requests: AtomicUsize,
    last_headers: Mutex<HeaderMap>,
}

/// A running test backend.
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<BackendShared>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// TCP connections it accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
    /// Requests (and handshakes) it served.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
    /// Headers of the last request it received.
    pub fn last_headers(&self) -> HeaderMap {
        self.shared.last_headers.lock().unwrap().clone()
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Behaviour: WebSocket handshakes → 101 (name as first message, then echo);
/// `/status/NNN` → that status; POST/PUT → the body streamed back;
/// anything else → 200 with the name as body. Every response has `x-server`;
/// a request with `x-close` gets `Connection: close`; `?set_cookie=N=V` sets
/// that cookie; the request's `Cookie` comes back as `x-seen-cookie`; an
/// Engine.IO handshake (`?EIO=4&transport=polling` without `sid`) gets
/// `0{"sid":"<name>-sid-<n>",…}`.
async fn serve(shared: Arc<BackendShared>, mut req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    *shared.last_headers.lock().unwrap() = req.headers().clone();
    let name = shared.name.clone();
    let mut builder = Response::builder().header("x-server", name.as_str());
    if req.headers().contains_key("x-close") {
        // hyper closes the connection after a response marked `Connection: close`.
        builder = builder.header(header::CONNECTION, "close");
    }
    if let Some(cookie) = req.headers().get(header::COOKIE) {
        builder = builder.header("x-seen-cookie", cookie.clone());
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    for pair in query.split('&') {
        if let Some(cookie) = pair.strip_prefix("set_cookie=") {
            builder = builder.header(header::SET_COOKIE, format!("{cookie}; Path=/"));
        }
    }
    let engine_io_handshake = query.contains("EIO=") && query.contains("transport=polling") && !query.contains("sid=");
    if engine_io_handshake && req.headers().get(header::SEC_WEBSOCKET_KEY).is_none() {
        let n = shared.requests.load(Ordering::SeqCst);
        let body =
            format!(r#"0{{"sid":"{name}-sid-{n}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}}"#);
        return Ok(builder
            .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
            .body(full(body))
            .unwrap());
    }
    if let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() {
        if let Some(status) = shared.upgrade_status {
            return Ok(builder
                .status(status)
                .body(full(format!("{name} refuses upgrades")))
                .unwrap());
        }
        let protocol = req
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string());
        let extensions = req.headers().get(header::SEC_WEBSOCKET_EXTENSIONS).cloned();
        tokio::spawn(tether::demo::announce_and_echo(
            hyper::upgrade::on(&mut req),
            name.clone(),
        ));
        let mut response = builder
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
        if let Some(protocol) = protocol {
            response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(extensions) = extensions {
            response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        return Ok(response.body(full(Bytes::new())).unwrap());
    }
    if let Some(delay) = shared.response_delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = req.uri().path().strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        return Ok(builder
            .status(status)
            .body(full(format!("{name} says {status}")))
            .unwrap());
    }
    if req.method() == http::Method::POST || req.method() == http::Method::PUT {
        let body = req.into_body().boxed();
        return Ok(builder.body(body).unwrap());
    }
    Ok(builder.body(full(name)).unwrap())
}

/// A tether running in this test's runtime.
pub struct RunningTether {
    /// The first address of the first frontend.
    pub addr: SocketAddr,
    /// Its handle.
    pub handle: tether::Handle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningTether {
    /// Stops it gracefully and waits (up to 10 s) for `run` to end.
    pub async fn stop(self) {
        self.stopped_within(Duration::from_secs(10)).await;
    }

    /// Stops it gracefully; true if `run` ended, without a panic, within `limit`.
    pub async fn stopped_within(mut self, limit: Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => matches!(tokio::time::timeout(limit, task).await, Ok(Ok(()))),
            None => false,
        }
    }
}

impl Drop for RunningTether {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts tether with `toml` (frontend binds should be "127.0.0.1:0").
pub async fn start_tether(toml: &str) -> RunningTether {
    start_tether_on(toml, vec![tokio::runtime::Handle::current()]).await
}

/// Starts tether with `toml`, one worker per runtime in `workers` (see
/// `Tether::bind_on`); `run` goes on this test's runtime.
pub async fn start_tether_on(toml: &str, workers: Vec<tokio::runtime::Handle>) -> RunningTether {
    let config = tether::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    let tether = tether::Tether::bind_on(&config, workers).expect("bind tether");
    let first = config.frontend[0].name.get_ref().clone();
    let addr = tether.local_addrs(&first)[0];
    let handle = tether.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tether.run(async move {
        let _ = stopped.await;
    }));
    RunningTether {
        addr,
        handle,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A config with one frontend (`public`) whose default backend `pool` holds
/// `servers`; `backend_extra` and `server_extra` are inserted verbatim.
pub fn simple_config(balance: &str, backend_extra: &str, servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut text = format!(
        "shutdown_grace = \"2s\"\n[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"pool\"\n\n\
         [[backend]]\nname = \"pool\"\nbalance = \"{balance}\"\n{backend_extra}\n"
    );
    for (name, addr, extra) in servers {
        text.push_str(&format!(
            "[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n"
        ));
    }
    text
}

/// `config` with `keys` added to its (first) frontend, after `default_backend`.
pub fn with_frontend_keys(config: &str, keys: &str) -> String {
    config.replacen(
        "default_backend = \"pool\"\n",
        &format!("default_backend = \"pool\"\n{keys}\n"),
        1,
    )
}

/// One frontend with `frontend_extra` over one server `s1` at `addr`.
pub fn single_server_config(frontend_extra: &str, addr: SocketAddr) -> String {
    with_frontend_keys(&simple_config("roundrobin", "", &[("s1", addr, "")]), frontend_extra)
}

/// An HTTP/1 client connection to `addr`.
pub async fn http_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.expect("connect to tether");
    http_client_on(stream).await
}

/// An HTTP/1 client connection over `stream`.
pub async fn http_client_on(stream: TcpStream) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// Sends `req` and reads the whole response.
pub async fn send(
    client: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    client.ready().await.expect("client ready");
    let response = client.send_request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// A GET of `path` with an empty body.
pub fn get_request(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header(header::HOST, "tether.test")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

/// GET `path` on a fresh connection: status, headers, body.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut client = http_client(addr).await;
    send(&mut client, get_request(path)).await
}

/// GET `path` on a fresh connection and return the backend name (`x-server`).
pub async fn server_of(addr: SocketAddr, path: &str) -> String {
    let (status, headers, _) = get(addr, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}");
    headers["x-server"].to_str().unwrap().to_string()
}

/// A WebSocket client stream.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `addr` + `path`; returns it and the name the server announced.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> (Ws, String) {
    let request = format!("ws://{addr}{path}").into_client_request().expect("request");
    ws_connect_with(request).await
}

/// Opens a WebSocket with a prepared handshake request.
pub async fn ws_connect_with(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> (Ws, String) {
    let (mut ws, _response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    let name = next_text(&mut ws).await;
    (ws, name)
}

/// The next text message.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The code of the next Close frame the client sees (other messages are
/// skipped); `None` for a bare close or an error. Panics if nothing comes within `within`.
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the client was left hanging")
}

/// Writes raw bytes on a new connection and reads until the peer closes or 5 s pass.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP connection to `addr` from source address `source` (127.0.0.x).
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .expect("bind source");
    socket.connect(addr).await.expect("connect from source")
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Runs `test` with logs from tether visible under `--nocapture` (TETHER_LOG=debug).
pub fn init_logs() {
    let filter = std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Makes sure the npm packages of a Node test harness are installed, running
/// `npm ci` in `dir` once if any is missing (the registry is reachable from
/// developer machines and CI; `.ci/run` also installs them up front).
pub fn ensure_npm_packages(dir: &std::path::Path, packages: &[&str]) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let missing = |p: &&str| !dir.join("node_modules").join(p).join("package.json").is_file();
    if packages.iter().any(missing) {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "`npm ci --prefix {}` failed ({status:?}): Node.js 18+ and npm are needed for this test",
            dir.display()
        );
    }
    for package in packages {
        assert!(!missing(package), "{package} is still missing in {}", dir.display());
    }
}

/// `tether run` in a process of its own, its config in a temporary folder.
pub struct TetherProcess {
    /// The process; killed if still running when this drops.
    pub child: tokio::process::Child,
    /// The frontend's address (127.0.0.1 and the port it was given).
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl TetherProcess {
    /// Starts `tether run` with `config`, whose frontend binds `127.0.0.1:0`,
    /// moved to a free port; returns once that port accepts.
    pub async fn start(config: &str) -> TetherProcess {
        let port = closed_port().await.port();
        let dir = std::env::temp_dir().join(format!("tether-process-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("tether.toml");
        std::fs::write(
            &config_path,
            config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("TETHER_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start tether");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tether did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TetherProcess { child, addr, dir }
    }

    /// Sends SIGTERM (the graceful stop).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("tether is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }
}

impl Drop for TetherProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects every log line written (give it to a `tracing_subscriber` as its writer).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// The lines written so far that are JSON objects.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
