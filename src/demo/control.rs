//! The demo page's own small HTTP server: serves `page.html`, passes
//! `GET /api/v1/backends` on to tether's admin listener (so the page needs
//! no cross-origin request), and answers the buttons. "Add" and "kill" need
//! the demo process itself, which owns the echo servers; "drain" and
//! "bring back" are the admin API's drain and enable.
//!
//! | route | effect |
//! |---|---|
//! | `GET /` | the demo page |
//! | `GET /api/v1/backends` | tether's answer, as is |
//! | `GET /demo/state` | `{ backend, admin (the stats page's URL), killed: [names], clients: { count, connected, handshakes, failed, reconnects } }` |
//! | `POST /demo/servers` | starts one more echo server and adds it by `POST /api/v1/backends/{b}/servers` |
//! | `POST /demo/servers/{name}/kill` | stops that echo server at once (port and connections) |
//! | `POST /demo/servers/{name}/drain` | the admin API's drain |
//! | `POST /demo/servers/{name}/back` | restarts a killed echo server on its port, then the admin API's enable |
//!
//! A request whose `Host` is not an IP address or `localhost` gets 421, a
//! POST a browser sends from another origin 403.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use super::clients::Counts;
use super::echo::{start_killable, Kill};
use crate::util::lock;

/// The page, served as is.
const PAGE: &str = include_str!("page.html");

/// One echo server of the demo.
#[derive(Debug)]
struct EchoServer {
    /// Where it listens (kept when killed, so "bring back" reuses the port
    /// and tether's server entry stays the same).
    address: SocketAddr,
    /// Stops it; `None` while it is killed.
    kill: Option<Kill>,
}

/// What the demo page's server acts on.
#[derive(Debug)]
pub struct Control {
    /// tether's admin listener.
    admin: SocketAddr,
    /// The demo's backend.
    backend: String,
    /// The echo servers by name; the lock is held only to read or swap entries.
    servers: Mutex<BTreeMap<String, EchoServer>>,
    /// The simulated users' counts.
    counts: Arc<Counts>,
    /// How many users are simulated.
    users: usize,
}

impl Control {
    /// The demo page's state: tether's `admin` listener, the `backend`, the
    /// running echo `servers` with their kill switches, the users' `counts`.
    pub fn new(
        admin: SocketAddr,
        backend: &str,
        servers: Vec<(String, SocketAddr, Kill)>,
        counts: Arc<Counts>,
        users: usize,
    ) -> Self {
        let servers = servers
            .into_iter()
            .map(|(name, address, kill)| {
                (
                    name,
                    EchoServer {
                        address,
                        kill: Some(kill),
                    },
                )
            })
            .collect();
        Self {
            admin,
            backend: backend.to_string(),
            servers: Mutex::new(servers),
            counts,
            users,
        }
    }

    /// Serves the page and its buttons on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let control = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let control = control.clone();
                    async move { Ok::<_, Infallible>(control.answer(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        if !local_host(&request) {
            let error = "this page answers at an IP address or localhost only";
            return reply(StatusCode::MISDIRECTED_REQUEST, &json!({ "error": error }));
        }
        if method == Method::POST && !same_origin(&request) {
            return reply(
                StatusCode::FORBIDDEN,
                &json!({ "error": "a request from another page" }),
            );
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => page(),
            (&Method::GET, ["api", "v1", "backends"]) => self.admin_reply(Method::GET, "/api/v1/backends", None).await,
            (&Method::GET, ["demo", "state"]) => self.state(),
            (&Method::POST, ["demo", "servers"]) => self.add().await,
            (&Method::POST, ["demo", "servers", name, "kill"]) => self.kill(name),
            (&Method::POST, ["demo", "servers", name, "drain"]) => self.operator(name, "drain").await,
            (&Method::POST, ["demo", "servers", name, "back"]) => self.back(name).await,
            _ => reply(StatusCode::NOT_FOUND, &json!({ "error": "no such page" })),
        }
    }

    fn state(&self) -> Response<Full<Bytes>> {
        let killed: Vec<String> = lock(&self.servers)
            .iter()
            .filter(|(_, server)| server.kill.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        let counts = &self.counts;
        reply(
            StatusCode::OK,
            &json!({
                "backend": self.backend,
                "admin": format!("http://{}/", self.admin),
                "killed": killed,
                "clients": {
                    "count": self.users,
                    "connected": counts.connected.load(Ordering::Relaxed),
                    "handshakes": counts.handshakes.load(Ordering::Relaxed),
                    "failed": counts.failed.load(Ordering::Relaxed),
                    "reconnects": counts.reconnects.load(Ordering::Relaxed),
                },
            }),
        )
    }

    /// Starts `echo-N` (the first free N) on a free port and adds it through the admin API.
    async fn add(&self) -> Response<Full<Bytes>> {
        let name = {
            let servers = lock(&self.servers);
            (1..)
                .map(|n| format!("echo-{n}"))
                .find(|n| !servers.contains_key(n))
                .unwrap_or_default()
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (address, kill) = match start_killable(any, Arc::from(name.as_str())).await {
            Ok(started) => started,
            Err(err) => return reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": err.to_string() })),
        };
        let body = json!({ "name": name, "address": address.to_string() }).to_string();
        let path = format!("/api/v1/backends/{}/servers", self.backend);
        match admin_call(self.admin, Method::POST, &path, Some(body)).await {
            Ok((status, bytes)) => {
                if status.is_success() {
                    lock(&self.servers).insert(
                        name,
                        EchoServer {
                            address,
                            kill: Some(kill),
                        },
                    );
                }
                raw(status, bytes)
            }
            Err(err) => reply(StatusCode::BAD_GATEWAY, &json!({ "error": err })),
        }
    }

    fn kill(&self, name: &str) -> Response<Full<Bytes>> {
        let kill = match lock(&self.servers).get_mut(name) {
            Some(server) => server.kill.take(),
            None => {
                return reply(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": format!("no echo server {name}") }),
                )
            }
        };
        if let Some(kill) = kill {
            kill.kill();
            tracing::info!(server = name, "demo: echo server killed");
        }
        reply(StatusCode::OK, &json!({ "killed": name }))
    }

    /// Restarts a killed server on its old port, then enables it in tether.
    async fn back(&self, name: &str) -> Response<Full<Bytes>> {
        let address = match lock(&self.servers).get(name) {
            Some(server) if server.kill.is_none() => Some(server.address),
            Some(_) => None,
            None => {
                return reply(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": format!("no echo server {name}") }),
                )
            }
        };
        if let Some(address) = address {
            match start_killable(address, Arc::from(name)).await {
                Ok((_, kill)) => {
                    if let Some(server) = lock(&self.servers).get_mut(name) {
                        server.kill = Some(kill);
                    }
                    tracing::info!(server = name, %address, "demo: echo server restarted");
                }
                Err(err) => {
                    let error = format!("cannot restart {name} on {address}: {err}");
                    return reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": error }));
                }
            }
        }
        self.operator(name, "enable").await
    }

    /// The admin API's `POST …/servers/{name}/{action}`.
    async fn operator(&self, name: &str, action: &str) -> Response<Full<Bytes>> {
        if !lock(&self.servers).contains_key(name) {
            return reply(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no echo server {name}") }),
            );
        }
        let path = format!("/api/v1/backends/{}/servers/{name}/{action}", self.backend);
        self.admin_reply(Method::POST, &path, None).await
    }

    async fn admin_reply(&self, method: Method, path: &str, body: Option<String>) -> Response<Full<Bytes>> {
        match admin_call(self.admin, method, path, body).await {
            Ok((status, bytes)) => raw(status, bytes),
            Err(err) => reply(StatusCode::BAD_GATEWAY, &json!({ "error": err })),
        }
    }
}

/// The request's `Host` is an IP address or `localhost` (any port): a page
/// whose own name an attacker re-points at 127.0.0.1 (DNS rebinding) can
/// neither read the demo's state nor press its buttons.
fn local_host(request: &Request<Incoming>) -> bool {
    let Some(host) = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// A POST is refused when a browser says it comes from another page
/// (`Origin` present and naming another host than the request's `Host`).
fn same_origin(request: &Request<Incoming>) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        _ => false,
    }
}

/// One request to tether's admin listener (no login: the demo's listener
/// is on loopback without users); returns its status and body.
async fn admin_call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let stream = tokio::net::TcpStream::connect(admin).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, admin.to_string());
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), call)
        .await
        .map_err(|_| "tether's admin listener did not answer within 5 s".to_string())?
        .map_err(|e: String| format!("tether's admin listener: {e}"))
}

fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    response
}

fn reply(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    raw(status, Bytes::from(value.to_string()))
}

fn raw(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
