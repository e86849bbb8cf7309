//! The admin listener: the stats page (`/`), `/metrics` for Prometheus and
//! the JSON API under `/api/v1/`, on its own address, never on a frontend.
//!
//! - `auth`: address allow-lists, HTTP Basic logins against argon2 hashes,
//!   the limit on failed logins;
//! - `api`: the JSON views and the operator actions (drain, enable,
//!   disable, maint, weight, reload, stick-table entries, cluster instances);
//! - `metrics`: the Prometheus exposition, collected from the snapshot at scrape time;
//! - `page`: the HTML stats page with its polling script.
//!
//! The listener is bound with the frontends (`Tether::bind`), serves from
//! `Tether::run`, and stops accepting when the graceful stop begins. Its
//! settings (users, allow-lists) live in the snapshot, so a reload changes
//! them; its address is read once at start.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod page;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::proxy::Stop;
use crate::snapshot::{AdminSettings, Snapshot};
use crate::state::Changes;
use crate::util::lock;

/// The realm of the HTTP Basic challenge (RFC 7617 §2), shown by browsers in the login prompt.
pub const REALM: &str = "tether admin";

/// The largest request body the API reads (a weight is a few bytes).
const MAX_BODY: usize = 4096;

/// Every route of the admin listener: method and path template (`{name}`
/// is one path segment). `docs/openapi.yaml` lists exactly these; a test keeps them in step.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/frontends"),
    ("GET", "/api/v1/backends"),
    ("GET", "/api/v1/servers"),
    ("POST", "/api/v1/backends/{backend}/servers/{server}/drain"),
    ("POST", "/api/v1/backends/{backend}/servers/{server}/enable"),
    ("POST", "/api/v1/backends/{backend}/servers/{server}/disable"),
    ("POST", "/api/v1/backends/{backend}/servers/{server}/maint"),
    ("PUT", "/api/v1/backends/{backend}/servers/{server}/weight"),
    ("GET", "/api/v1/backends/{backend}/sticky"),
    ("POST", "/api/v1/reload"),
    ("GET", "/api/v1/cluster"),
];

/// What the admin listener needs of the instance it serves, and nothing
/// more: `instance` implements it, so the admin listener never sees the
/// instance's insides (and `admin` never imports `instance`).
pub trait Context: Send + Sync + 'static {
    /// The snapshot in force.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// The admin listener's own state: its socket and the login limits.
    fn admin(&self) -> &AdminShared;
    /// The instance's stop signals: the listener stops at the graceful stop.
    fn stop(&self) -> &Stop;
    /// Where operator actions (drain, maint, enable) are made, so
    /// `instance` acts on them.
    fn changes(&self) -> &Changes;
    /// The cluster this instance is a member of, if any.
    fn cluster(&self) -> Option<&Arc<Cluster>>;
    /// Reads the configuration file again and reloads it (`POST
    /// /api/v1/reload`); the error's text if the running config stays.
    fn reload_config_file(&self) -> Result<(), String>;
    /// Reloads so far: `(succeeded, refused)`.
    fn reloads(&self) -> (u64, u64);
    /// Open client connections and tunnels.
    fn open_connections(&self) -> usize;
    /// Connections each worker accepted since start (worker 0 first).
    fn accepted_per_worker(&self) -> Vec<u64>;
}

/// The admin listener's own state within an instance.
#[derive(Debug, Default)]
pub struct AdminShared {
    /// The bound socket until `run` starts serving it.
    listener: Mutex<Option<std::net::TcpListener>>,
    /// The address actually bound (after port 0), for tests and logs.
    local: Mutex<Option<SocketAddr>>,
    /// Failed-login limits and remembered logins.
    logins: auth::Logins,
}

impl AdminShared {
    /// The address the admin listener is bound to, if `[admin]` is configured.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.local)
    }
}

/// Binds the admin listener if the snapshot has `[admin]` (called by `Tether::bind`).
pub fn bind(context: &dyn Context) -> std::io::Result<()> {
    let Some(settings) = context.snapshot().admin.clone() else {
        return Ok(());
    };
    let listener = std::net::TcpListener::bind(settings.bind)?;
    listener.set_nonblocking(true)?;
    let admin = context.admin();
    *lock(&admin.local) = Some(listener.local_addr()?);
    *lock(&admin.listener) = Some(listener);
    Ok(())
}

/// Starts serving the admin listener bound by `bind`, if any, until the graceful stop begins.
pub fn start(context: Arc<dyn Context>) -> Option<JoinHandle<()>> {
    let std_listener = lock(&context.admin().listener).take()?;
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(cause = %err, "admin listener unusable: the stats page, /metrics and the API are off");
            return None;
        }
    };
    let address = context.admin().local_addr();
    match context.snapshot().admin.as_deref() {
        Some(settings) if settings.users.is_empty() => tracing::warn!(
            address = ?address,
            "admin listener has no users: it serves loopback only, without login; add [admin] users to require one"
        ),
        _ => tracing::info!(address = ?address, "admin listener: stats page, /metrics and /api/v1/"),
    }
    Some(tokio::spawn(accept_loop(listener, context)))
}

async fn accept_loop(listener: tokio::net::TcpListener, context: Arc<dyn Context>) {
    let stopping = context.stop().graceful();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, context.clone()));
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, context: Arc<dyn Context>) {
    let service_context = context.clone();
    let service = service_fn(move |request| respond(service_context.clone(), peer, request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(10))
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let stopping = context.stop().graceful();
    let hard = context.stop().hard();
    tokio::pin!(stopping, hard);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = &mut stopping => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = &mut hard => {}
    }
}

/// The body of every admin response.
pub type AdminBody = Full<Bytes>;

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON error: `{ "error": message }`.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response<AdminBody> {
    json_response(status, &json!({ "error": message.into() }))
}

fn no_store(mut response: Response<AdminBody>) -> Response<AdminBody> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn respond(
    context: Arc<dyn Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    Ok(no_store(route(&*context, peer.ip(), request).await))
}

/// Finds the route for `method` and `path`: its template and path parameters.
pub fn match_route(method: &Method, path: &str) -> Result<(&'static str, Vec<String>), StatusCode> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut path_matched = false;
    for (route_method, template) in ROUTES {
        let pattern: Vec<&str> = template.split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matched = pattern.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') && p.ends_with('}') {
                params.push(percent_decode(s));
                !s.is_empty()
            } else {
                p == s
            }
        });
        if matched {
            path_matched = true;
            if method.as_str() == *route_method {
                return Ok((template, params));
            }
        }
    }
    Err(if path_matched {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    })
}

/// Decodes `%XX` escapes of a path segment or query value (`+` stays `+` in paths).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who made a request: `None` when no login is configured.
enum Login {
    Open,
    User(String),
}

async fn route(context: &dyn Context, ip: IpAddr, request: Request<Incoming>) -> Response<AdminBody> {
    let snapshot = context.snapshot();
    let Some(settings) = snapshot.admin.clone() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "[admin] was removed from the configuration: restart tether to close this listener",
        );
    };
    let path = request.uri().path().to_string();
    let scraper = path == "/metrics" && settings.metrics_allow.iter().any(|c| c.contains(ip));
    if !scraper && !settings.allows(ip) {
        tracing::info!(peer = %ip, path = %path, "admin request refused: address not in [admin] allow");
        return error_response(StatusCode::FORBIDDEN, format!("{ip} is not in [admin] allow"));
    }
    let (template, params) = match match_route(request.method(), &path) {
        Ok(found) => found,
        Err(status) => {
            let message = if status == StatusCode::METHOD_NOT_ALLOWED {
                format!("{} is not allowed on {path}", request.method())
            } else {
                format!("no such page or endpoint: {path} (see docs/admin-api.md)")
            };
            return error_response(status, message);
        }
    };
    if scraper && template == "/metrics" {
        return metrics::respond(context);
    }
    let login = match authenticate(context, &settings, ip, &request).await {
        Ok(login) => login,
        Err(response) => return response,
    };
    if request.method() != Method::GET && !same_origin(&request) {
        return error_response(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: actions must come from the admin page itself or a non-browser client",
        );
    }
    let user = match &login {
        Login::Open => "-",
        Login::User(name) => name.as_str(),
    };
    let param = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
    match template {
        "/" => page::respond(&snapshot),
        "/metrics" => metrics::respond(context),
        "/api/v1/frontends" => api::frontends(&snapshot),
        "/api/v1/backends" => api::backends(&snapshot),
        "/api/v1/servers" => api::servers(&snapshot),
        "/api/v1/backends/{backend}/sticky" => api::sticky(&snapshot, param(0), request.uri().query()),
        "/api/v1/reload" => api::reload(context, user),
        "/api/v1/backends/{backend}/servers/{server}/weight" => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(err) => {
                    return error_response(StatusCode::BAD_REQUEST, format!("cannot read the request body: {err}"))
                }
            };
            let response = api::set_weight(&snapshot, param(0), param(1), &body, user);
            announce(context, &snapshot, &response, param(0), param(1), user);
            response
        }
        "/api/v1/cluster" => api::cluster(context),
        action => {
            let verb = action.rsplit('/').next().unwrap_or_default();
            let response = api::server_action(&snapshot, context.changes(), param(0), param(1), verb, user);
            announce(context, &snapshot, &response, param(0), param(1), user);
            response
        }
    }
}

/// In a cluster, shares an operator change that succeeded with the other instances.
fn announce(
    context: &dyn Context,
    snapshot: &crate::snapshot::Snapshot,
    response: &Response<AdminBody>,
    backend: &str,
    server: &str,
    user: &str,
) {
    if let (Some(cluster), StatusCode::OK) = (context.cluster(), response.status()) {
        cluster.announce(snapshot, backend, server, user);
    }
}

/// A browser sends `Origin` with a cross-site POST: refuse it unless it
/// names this listener (the `Host` the request was sent to), so a page
/// elsewhere cannot use the browser's remembered login (CSRF).
fn same_origin<B>(request: &Request<B>) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

fn challenge(message: &str) -> Response<AdminBody> {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message);
    let value = format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"");
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn authenticate<B>(
    context: &dyn Context,
    settings: &AdminSettings,
    ip: IpAddr,
    request: &Request<B>,
) -> Result<Login, Response<AdminBody>> {
    if settings.users.is_empty() {
        return Ok(Login::Open);
    }
    let logins = &context.admin().logins;
    let Some(credentials) = request.headers().get(header::AUTHORIZATION) else {
        return Err(challenge("log in to use the admin listener"));
    };
    if let Some(wait) = logins.blocked_for(ip) {
        tracing::warn!(peer = %ip, "admin login refused: too many failed logins from this address");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins from {ip}: try again in {} s",
                wait.as_secs() + 1
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        return Err(response);
    }
    let parsed = credentials.to_str().ok().and_then(auth::parse_basic);
    let (user, password) = parsed.unwrap_or_default();
    let hash = settings
        .users
        .iter()
        .find(|u| u.name == user)
        .map(|u| u.password_hash.as_str());
    let ok = match hash {
        Some(hash) => logins.verify(&user, &password, hash).await,
        None => false,
    };
    if ok {
        return Ok(Login::User(user));
    }
    let failures = logins.failed(ip);
    tracing::warn!(peer = %ip, user = %user, failures, "admin login failed");
    Err(challenge("wrong user name or password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_parameters_and_methods() {
        let (template, params) =
            match_route(&Method::POST, "/api/v1/backends/web/servers/s%201/drain").expect("drain route");
        assert_eq!(template, "/api/v1/backends/{backend}/servers/{server}/drain");
        assert_eq!(params, vec!["web".to_string(), "s 1".to_string()]);
        assert_eq!(
            match_route(&Method::GET, "/api/v1/reload"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(match_route(&Method::GET, "/nope"), Err(StatusCode::NOT_FOUND));
        assert_eq!(
            match_route(&Method::POST, "/api/v1/backends//servers/s/drain"),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
