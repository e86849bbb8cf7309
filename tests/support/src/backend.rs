//! Test backends: real HTTP/WebSocket servers on 127.0.0.1:0 that announce
//! their name, so a test can tell which server a request reached.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::http::TestBody;

/// Builds a test backend.
pub fn backend(name: &str) -> BackendBuilder {
    BackendBuilder {
        name: name.to_string(),
        upgrade_status: None,
        response_delay: None,
        handshake_delay: None,
        decline_extensions: false,
    }
}

/// Options of a test backend.
pub struct BackendBuilder {
    name: String,
    upgrade_status: Option<StatusCode>,
    response_delay: Option<Duration>,
    handshake_delay: Option<Duration>,
    decline_extensions: bool,
}

impl BackendBuilder {
    /// Accept WebSocket handshakes without any extension (a browser offers
    /// `permessage-deflate; client_max_window_bits`, which the usual echo
    /// of the offer would not answer validly).
    pub fn decline_extensions(mut self) -> Self {
        self.decline_extensions = true;
        self
    }

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

    /// Wait this long before answering WebSocket handshakes.
    pub fn handshake_delay(mut self, delay: Duration) -> Self {
        self.handshake_delay = Some(delay);
        self
    }

    /// Starts the backend on 127.0.0.1:0.
    pub async fn start(self) -> TestBackend {
        self.start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the backend on `addr` (another loopback address, like
    /// 127.0.0.2, and a chosen port for servers found in DNS).
    pub async fn start_on(self, addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let shared = Arc::new(BackendShared {
            name: self.name.clone(),
            upgrade_status: self.upgrade_status,
            response_delay: self.response_delay,
            handshake_delay: self.handshake_delay,
            decline_extensions: self.decline_extensions,
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
    handshake_delay: Option<Duration>,
    decline_extensions: bool,
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
        if let Some(delay) = shared.handshake_delay {
            tokio::time::sleep(delay).await;
        }
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
        let extensions = req
            .headers()
            .get(header::SEC_WEBSOCKET_EXTENSIONS)
            .filter(|_| !shared.decline_extensions)
            .cloned();
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

/// Test backends `b{n}` on 127.0.0.{n} for each `n` of `hosts`, all on one
/// port (which is returned): servers a DNS name can list by address alone.
pub async fn loopback_backends(hosts: &[u8]) -> (u16, Vec<TestBackend>) {
    let at = |n: u8, port: u16| SocketAddr::from((std::net::Ipv4Addr::new(127, 0, 0, n), port));
    'again: loop {
        let first = backend(&format!("b{}", hosts[0])).start_on(at(hosts[0], 0)).await;
        let port = first.addr.port();
        let mut all = vec![first];
        for n in &hosts[1..] {
            if std::net::TcpListener::bind(at(*n, port)).is_err() {
                continue 'again;
            }
            all.push(backend(&format!("b{n}")).start_on(at(*n, port)).await);
        }
        return (port, all);
    }
}
