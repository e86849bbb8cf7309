//! The admin listener: the stats page (`/`), `/metrics` for Prometheus and
//! the JSON API under `/api/v1/`, on its own address, never on a frontend.
//!
//! - `auth`: address allow-lists, HTTP Basic logins against argon2 hashes,
//!   the limit on failed logins;
//! - `api`: the JSON views and the operator actions (drain, enable,
//!   disable, maint, weight, servers added and deleted, reload, stick-table
//!   entries, cluster instances);
//! - `metrics`: the Prometheus exposition, collected from the snapshot at scrape time;
//! - `page`: the HTML stats page with its polling script.
//!
//! The listener is bound with the frontends (`Tether::bind`), serves from
//! `Tether::run`, and stops accepting when the graceful stop begins. Its
//! settings (users, allow-lists, host names, TLS certificates) live in the
//! snapshot, so a reload changes them; its address is read once at start.
//!
//! Every request passes, in order: the `Host` check (421 unless it names this
//! listener: DNS rebinding), the address allow-list, the route, the login, the
//! `Origin` check of actions (CSRF); every response gets `harden`'s headers.

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
use crate::dynamic::Refusal;
use crate::proxy::Stop;
use crate::snapshot::{AdminSettings, Snapshot};
use crate::state::Changes;
use crate::tls::{ClientStream, MaybeTls};
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
    ("GET", "/api/v1/backends/{backend}"),
    ("GET", "/api/v1/servers"),
    ("POST", "/api/v1/backends/{backend}/servers"),
    ("DELETE", "/api/v1/backends/{backend}/servers/{server}"),
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
    /// Adds a server to `backend` from the JSON `body` of `POST
    /// …/servers`, checked like the config and applied without a reload
    /// of the file; its name, or why not (with the HTTP class).
    fn add_server(&self, backend: &str, body: &[u8], user: &str) -> Result<String, Refusal>;
    /// Deletes a server added through the API: it drains and leaves once
    /// it holds no connection; why not (with the HTTP class).
    fn delete_server(&self, backend: &str, server: &str, user: &str) -> Result<(), Refusal>;
    /// An operator change (drain, enable, maint, weight) of `backend`/`server`
    /// succeeded: kept across restarts where the instance keeps state.
    fn operator_changed(&self, backend: &str, server: &str);
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
    // The one start-up line of the admin listener (the binary does not log another).
    let address = context
        .admin()
        .local_addr()
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    match context.snapshot().admin.as_deref() {
        Some(settings) if settings.users.is_empty() => tracing::warn!(
            %address,
            "admin listening (stats page at /, /metrics, /api/v1/) with no users: it serves loopback only, \
             without login; add [admin] users to require one"
        ),
        Some(settings) if settings.tls.is_none() && !settings.bind.ip().is_loopback() => tracing::warn!(
            %address,
            "admin listening (stats page at /, /metrics, /api/v1/) as plain HTTP off loopback: its passwords \
             cross the network readable on every poll; add [admin] tls = {{ cert, key }}"
        ),
        _ => tracing::info!(%address, "admin listening: stats page at /, /metrics, /api/v1/"),
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
                    tokio::spawn(accept_connection(stream, peer, context.clone()));
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Speaks TLS on a connection when `[admin] tls` is set (read per
/// connection, so a reload renews the certificate), then serves it.
async fn accept_connection(stream: tokio::net::TcpStream, peer: SocketAddr, context: Arc<dyn Context>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let tls = context.snapshot().admin.as_ref().and_then(|a| a.tls.clone());
    let stream: ClientStream = match tls {
        None => MaybeTls::Plain(stream),
        Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => MaybeTls::Tls(Box::new(stream)),
            Ok(Err(err)) => {
                tracing::debug!(peer = %peer, cause = %err, "admin TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "admin TLS handshake did not finish in time");
                return;
            }
        },
    };
    serve_connection(stream, Peer { ip: peer.ip(), local }, context).await;
}

/// The two ends of an admin connection, as the checks need them.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The client's address.
    ip: IpAddr,
    /// The address the client reached (the bind address, or one of the host's when bound to `0.0.0.0`).
    local: SocketAddr,
}

async fn serve_connection(stream: ClientStream, peer: Peer, context: Arc<dyn Context>) {
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

/// The `Content-Security-Policy` of every response but the page (which
/// allows its own script and style by hash): nothing may load, nothing may frame it.
pub const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Adds the headers every admin response carries, errors included: not
/// cached, never framed (the page's Drain and Maint buttons cannot be
/// clickjacked), not MIME-sniffed, no referrer sent onward.
pub fn harden(mut response: Response<AdminBody>) -> Response<AdminBody> {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEFAULT_CSP));
    }
    response
}

async fn respond(
    context: Arc<dyn Context>,
    peer: Peer,
    request: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    Ok(harden(route(&*context, peer, request).await))
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

/// The host a request names: an absolute URI's authority (which wins,
/// RFC 9112 §3.2.2), else its `Host` header.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
    }
}

/// Whether `host` (a `Host` value, port optional) names this listener:
/// an IP literal equal to the address the client reached or to the bind
/// address, `localhost`, or one of `[admin] hosts`. Ports are not compared
/// (a port mapping may change them; they do not matter to DNS rebinding,
/// which needs a name the attacker controls). Names compare case-insensitively,
/// a trailing dot ignored.
pub fn host_allowed(host: &str, local: SocketAddr, bind: SocketAddr, names: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, _)) => ip,
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => name,
            Some(_) if host.contains(':') => return false,
            _ => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return false;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return ip == local.ip().to_canonical()
            || ip == bind.ip().to_canonical()
            || names
                .iter()
                .any(|n| n.parse::<IpAddr>().is_ok_and(|n| n.to_canonical() == ip));
    }
    name.eq_ignore_ascii_case("localhost") || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

async fn route(context: &dyn Context, peer: Peer, request: Request<Incoming>) -> Response<AdminBody> {
    let ip = peer.ip;
    let snapshot = context.snapshot();
    let Some(settings) = snapshot.admin.clone() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "[admin] was removed from the configuration: restart tether to close this listener",
        );
    };
    let host = request_host(&request);
    if !host.is_some_and(|h| host_allowed(h, peer.local, settings.bind, &settings.hosts)) {
        let shown = auth::printable(host.unwrap_or_default());
        tracing::info!(peer = %ip, host = %shown, "admin request refused: its Host is not this listener's (DNS rebinding?)");
        return error_response(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this admin listener does not answer for host `{shown}`: use its address, localhost, \
                 or a name listed in [admin] hosts"
            ),
        );
    }
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
        "/api/v1/backends/{backend}" => api::backend(&snapshot, param(0)),
        "/api/v1/servers" => api::servers(&snapshot),
        "/api/v1/backends/{backend}/sticky" => api::sticky(&snapshot, param(0), request.uri().query()),
        "/api/v1/reload" => api::reload(context, user),
        "/api/v1/backends/{backend}/servers/{server}/weight" => {
            let body = match read_body(request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let response = api::set_weight(&snapshot, param(0), param(1), &body, user);
            announce(context, &snapshot, &response, param(0), param(1), user);
            response
        }
        "/api/v1/backends/{backend}/servers" => {
            let body = match read_body(request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            api::add_server(context, param(0), &body, user)
        }
        "/api/v1/backends/{backend}/servers/{server}" => api::delete_server(context, param(0), param(1), user),
        "/api/v1/cluster" => api::cluster(context),
        action => {
            let verb = action.rsplit('/').next().unwrap_or_default();
            let response = api::server_action(&snapshot, context.changes(), param(0), param(1), verb, user);
            announce(context, &snapshot, &response, param(0), param(1), user);
            response
        }
    }
}

/// The body of an action (at most `MAX_BODY` bytes), or the 400 answer.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<AdminBody>> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) => Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
    }
}

/// Keeps an operator change that succeeded: shared with the other
/// instances of a cluster, or written to the state file.
fn announce(
    context: &dyn Context,
    snapshot: &crate::snapshot::Snapshot,
    response: &Response<AdminBody>,
    backend: &str,
    server: &str,
    user: &str,
) {
    if response.status() != StatusCode::OK {
        return;
    }
    match context.cluster() {
        Some(cluster) => cluster.announce(snapshot, backend, server, user),
        None => context.operator_changed(backend, server),
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
    let parsed = credentials.to_str().ok().and_then(auth::parse_basic);
    let (user, password) = parsed.unwrap_or_default();
    let too_many = |wait: Duration, message: String| {
        let seconds = wait.as_secs() + 1;
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{message}: try again in {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    };
    match logins.login(ip, &user, &password, &settings.users).await {
        auth::Outcome::Accepted => Ok(Login::User(user)),
        auth::Outcome::Refused { failures } => {
            tracing::warn!(peer = %ip, user = %auth::printable(&user), failures, "admin login failed");
            Err(challenge("wrong user name or password"))
        }
        auth::Outcome::Blocked(wait) => {
            tracing::warn!(peer = %ip, user = %auth::printable(&user), "admin login refused: too many failed logins from this address");
            Err(too_many(wait, format!("too many failed logins from {ip}")))
        }
        auth::Outcome::Busy(wait) => {
            tracing::warn!(peer = %ip, "admin login refused: every password check is busy");
            Err(too_many(wait, "too many logins being checked at once".to_string()))
        }
    }
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
    fn only_hosts_that_name_this_listener_are_served() {
        let bind: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let wildcard: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        let reached: SocketAddr = "10.0.0.5:9000".parse().expect("addr");
        let names = vec!["lb1.example.net".to_string(), "2001:db8::5".to_string()];
        for ok in [
            "127.0.0.1:9000",
            "127.0.0.1",
            "localhost",
            "LOCALHOST:9000",
            "localhost.",
        ] {
            assert!(host_allowed(ok, bind, bind, &[]), "{ok}");
        }
        for ok in [
            "10.0.0.5:9000",
            "Lb1.Example.Net:9000",
            "lb1.example.net",
            "[2001:db8::5]:9000",
        ] {
            assert!(host_allowed(ok, reached, wildcard, &names), "{ok}");
        }
        for refused in [
            "rebind.attacker.example",
            "rebind.attacker.example:9000",
            "127.0.0.2:9000",
            "",
            "localhost.attacker.example",
            "[::1",
            "a:b:c",
        ] {
            assert!(!host_allowed(refused, bind, bind, &names), "{refused}");
        }
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
