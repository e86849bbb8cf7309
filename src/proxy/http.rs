//! Forwarding one request: route, pick a server (retrying failed connects
//! elsewhere), rewrite headers, send, and relay the response — or, after a
//! 101, hand both connections to a tunnel.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, STRICT_TRANSPORT_SECURITY};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::{ClientBodyError, Exchange, RequestBody, ResponseBody};
use super::conn::ConnActivity;
use super::handoff::TunnelJob;
use super::headers::{add_forwarding, remove_hop_by_hop, set_websocket_upgrade};
use super::log::{HttpLog, RequestId};
use super::pool::{self, UpstreamSender};
use super::upgrade::{self, Handshake};
use super::{client_addr, Shared};
use crate::balance::{ip_octets_of, Candidates, RequestKey, ServerId};
use crate::route;
use crate::snapshot::{Backend, Frontend, Server, Snapshot};
use crate::state::{ActiveGuard, AdminState};
use crate::sticky::StickyPolicy;

/// The header carrying tether's request id in its own responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every request on one client connection shares.
pub struct ConnContext {
    /// The instance's shared state.
    pub shared: Arc<Shared>,
    /// Name of the frontend that accepted the connection (looked up in each
    /// request's snapshot, so reloads that reorder frontends are harmless).
    pub frontend: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The connection's phase tracker (for its timeouts).
    pub activity: Arc<ConnActivity>,
    /// Whether the client connection is TLS (for `X-Forwarded-Proto`).
    pub https: bool,
    /// Keeps the connection counted in its frontend (and for its address).
    pub counted: crate::state::FrontendConnection,
}

/// hyper's service function: forwards `request` and never fails (errors become responses).
pub async fn handle(
    context: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    context.activity.request_started();
    let framing_conflict = context.activity.take_framing_conflict();
    let snapshot = context.shared.snapshot.load_full();
    let frontend = snapshot.frontend(&context.frontend);
    // Behind trusted proxies the client is the rightmost untrusted X-Forwarded-For hop.
    let client_ip = match frontend {
        Some(f) if !f.trusted_proxies.is_empty() => {
            client_addr::client_ip(context.client.ip(), request.headers(), &f.trusted_proxies)
        }
        _ => context.client.ip(),
    };
    let exchange = Box::new(Exchange::new(
        HttpLog {
            request_id: RequestId::next(),
            client: SocketAddr::new(client_ip, context.client.port()),
            frontend: frontend.map_or_else(|| Arc::from("-"), |f| f.name.clone()),
            backend: None,
            server: None,
            method: request.method().clone(),
            uri: request.uri().clone(),
            status: 0,
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            error: None,
        },
        context.activity.clone(),
    ));
    if let Some(f) = frontend {
        f.state.requests.fetch_add(1, Ordering::Relaxed);
    }
    if framing_conflict {
        // RFC 9112 §6.1 allows refusing it; a front-line proxy should (request smuggling).
        tracing::info!(client = %context.client, "request with both Content-Length and Transfer-Encoding refused");
        return Ok(local_response(
            StatusCode::BAD_REQUEST,
            "the request has both Content-Length and Transfer-Encoding",
            exchange,
            true,
        ));
    }
    let Some(frontend) = frontend else {
        return Ok(local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "this frontend is no longer configured",
            exchange,
            true,
        ));
    };
    if let Some(port) = frontend.redirect_https {
        return Ok(redirect_to_https(&request, port, exchange));
    }
    let mut response = forward(&context, &snapshot, frontend, request, exchange).await;
    if let (true, Some(hsts)) = (context.https, &frontend.hsts) {
        response.headers_mut().insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    Ok(response)
}

/// `redirect_https`: 308 Permanent Redirect (RFC 9110 §15.4.9, which keeps
/// the method and body, unlike 301) to the same host, path and query over
/// https, on `port` when it is not 443.
fn redirect_to_https(
    request: &Request<Incoming>,
    port: Option<u16>,
    exchange: Box<Exchange>,
) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        return local_response(
            StatusCode::BAD_REQUEST,
            "no valid Host header to redirect to https",
            exchange,
            true,
        );
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match port {
        Some(port) if port != 443 => format!("https://{}:{port}{target}", host.host()),
        _ => format!("https://{}{target}", host.host()),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return local_response(
            StatusCode::BAD_REQUEST,
            "the request cannot be redirected",
            exchange,
            true,
        );
    };
    let mut exchange = exchange;
    exchange.log.status = StatusCode::PERMANENT_REDIRECT.as_u16();
    let mut response = Response::new(ResponseBody::local(Bytes::new(), exchange));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
}

/// Why no upstream connection could be had.
enum NoUpstream {
    /// No server was available at all (all down, full or weight 0): 503.
    NoServer,
    /// Servers were tried and every connect failed: 502.
    AllFailed(String),
    /// The client is stuck to a server that is unavailable and `redispatch` is off: 503.
    StuckUnavailable(Arc<str>),
    /// Every server stayed at `maxconn` for the whole `queue_timeout`: 503 with `Retry-After`.
    QueueTimeout,
}

/// A connection to the chosen server, with the slot held on it.
struct Upstream {
    server: ServerId,
    guard: ActiveGuard,
    sender: UpstreamSender,
    /// Taken from the pool (it may turn out to be closed by the server).
    reused: bool,
}

async fn forward(
    context: &ConnContext,
    snapshot: &Snapshot,
    frontend: &Frontend,
    mut request: Request<Incoming>,
    mut exchange: Box<Exchange>,
) -> Response<ResponseBody> {
    let handshake = match upgrade::classify(&request) {
        Ok(handshake) => handshake,
        Err(bad) => return local_response(StatusCode::BAD_REQUEST, &bad.to_string(), exchange, true),
    };
    let websocket = handshake == Handshake::WebSocket;
    if let Some(refusal) = over_limits(&request, &frontend.limits) {
        return local_response(refusal.0, refusal.1, exchange, true);
    }
    if let (true, Some(rate)) = (websocket, frontend.per_ip_rate) {
        if let Err(wait) = frontend.state.admission.try_handshake(exchange.log.client.ip(), rate) {
            return too_many_handshakes(wait, exchange);
        }
    }
    let Some((backend_id, matched)) = route::select(&frontend.routes, frontend.default_backend, &request) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no route matches this request and the frontend has no default_backend",
            exchange,
            false,
        );
    };
    if websocket {
        let patterns = matched
            .and_then(|r| r.allowed_origins.as_deref())
            .unwrap_or(&frontend.allowed_origins);
        let origin = request
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !crate::origin::allowed(patterns, origin) {
            tracing::warn!(
                request_id = %exchange.log.request_id,
                client = %exchange.log.client,
                origin = origin.unwrap_or("-"),
                "WebSocket handshake from an origin that is not allowed"
            );
            return local_response(
                StatusCode::FORBIDDEN,
                "this origin may not open a WebSocket here",
                exchange,
                true,
            );
        }
    }
    let backend = &snapshot.backends[backend_id];
    exchange.log.backend = Some(backend.name.clone());

    let client_ip = ip_octets_of(exchange.log.client.ip());
    let key = RequestKey {
        hash_input: backend.key_source.extract(&request, client_ip.as_slice()),
    };
    if let Some(policy) = &backend.sticky {
        // A cluster's shared table may need one bounded Redis lookup first.
        policy.fetch_shared(&request).await;
    }
    let sticky = backend
        .sticky
        .as_ref()
        .map(|policy| (policy, policy.lookup(&request, &backend.server_index)));
    let stuck = sticky
        .as_ref()
        .and_then(|(policy, lookup)| Some((*policy, lookup.target?)));
    let upstream = match connect_with_retries(backend, &key, websocket, stuck, exchange.log.request_id, &[]).await {
        Ok(upstream) => upstream,
        Err(failure) => return no_upstream_response(failure, backend, exchange),
    };
    let mut server = &backend.servers[upstream.server];
    exchange.log.server = Some(server.name.clone());
    exchange.server_state = Some(server.state.clone());

    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let policy = sticky.as_ref().map(|(policy, _)| *policy);
    let request = prepare_request(
        request,
        frontend,
        context,
        websocket,
        policy,
        exchange.log.bytes_in.clone(),
    );
    let Upstream {
        server: mut server_id,
        mut guard,
        mut sender,
        mut reused,
    } = upstream;
    // A WebSocket handshake is a GET without a body: if the server drops it
    // unanswered (it died mid-handshake), it can be sent once more elsewhere.
    let mut replay = websocket.then(|| replay_of(&request, exchange.log.bytes_in.clone()));
    let mut pending = Some(request);
    let mut response = loop {
        let Some(request) = pending.take() else {
            return local_response(StatusCode::BAD_GATEWAY, "internal error: request lost", exchange, true);
        };
        match tokio::time::timeout(backend.server_timeout, sender.try_send_request(request)).await {
            Err(_) => {
                let message = format!(
                    "server `{}` did not answer within {:?}",
                    server.name, backend.server_timeout
                );
                return local_response(StatusCode::GATEWAY_TIMEOUT, &message, exchange, false);
            }
            Ok(Ok(response)) => break response,
            Ok(Err(mut failed)) => {
                // A pooled connection the server closed while idle fails before
                // anything is sent: try once more on a fresh connection.
                if let (true, Some(request)) = (reused, failed.take_message()) {
                    match open(server, backend, websocket).await {
                        Ok(fresh) => {
                            sender = fresh;
                            reused = false;
                            pending = Some(request);
                            continue;
                        }
                        Err(err) => {
                            let message = format!("server `{}` could not be reached again: {err}", server.name);
                            return local_response(StatusCode::BAD_GATEWAY, &message, exchange, false);
                        }
                    }
                }
                if let Some(again) = replay.take() {
                    tracing::warn!(
                        request_id = %exchange.log.request_id,
                        server = %server.name,
                        cause = %failed.error(),
                        "server dropped the handshake unanswered: trying another server"
                    );
                    let key = RequestKey::default();
                    let request_id = exchange.log.request_id;
                    match connect_with_retries(backend, &key, true, None, request_id, &[server_id]).await {
                        Ok(next) => {
                            server_id = next.server;
                            guard = next.guard;
                            sender = next.sender;
                            reused = next.reused;
                            server = &backend.servers[server_id];
                            exchange.log.server = Some(server.name.clone());
                            exchange.server_state = Some(server.state.clone());
                            pending = Some(again);
                            continue;
                        }
                        Err(failure) => return no_upstream_response(failure, backend, exchange),
                    }
                }
                if let Some(fault) = ClientBodyError::behind(failed.error()) {
                    // The client's body was at fault, not the server: the
                    // server saw a cut-off body and its connection is dropped.
                    let status = match fault {
                        ClientBodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                        ClientBodyError::Malformed(_) => StatusCode::BAD_REQUEST,
                    };
                    return local_response(status, &fault.to_string(), exchange, true);
                }
                let message = format!("server `{}` failed before answering: {}", server.name, failed.error());
                return local_response(StatusCode::BAD_GATEWAY, &message, exchange, false);
            }
        }
    };
    exchange.log.status = response.status().as_u16();
    *response.version_mut() = Version::HTTP_11;

    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, response.status()) {
        let server_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _empty) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        set_websocket_upgrade(&mut parts.headers);
        if let Some((policy, lookup)) = &sticky {
            policy.on_response(&mut parts.headers, server_id, &server.name, lookup, context.https);
        }
        exchange.upgraded = true;
        let tunnel = TunnelJob::new(context, frontend, backend, server, guard, &exchange.log);
        tokio::spawn(tunnel.run(client_upgrade, server_upgrade));
        return Response::from_parts(parts, ResponseBody::local(Bytes::new(), exchange));
    }

    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some((policy, lookup)) = &sticky {
        exchange.learner = policy.on_response(&mut parts.headers, server_id, &server.name, lookup, context.https);
    }
    exchange.guard = Some(guard);
    if !websocket {
        exchange.keep_alive = Some(sender);
    }
    Response::from_parts(parts, ResponseBody::upstream(body, exchange))
}

/// Picks a server and connects, moving on to another server when a connect
/// fails, at most `retries` times, so a dead port costs the client nothing.
/// A client `stuck` to a server goes there first; if that server is
/// unavailable or fails, it is balanced normally when the policy redispatches.
async fn connect_with_retries(
    backend: &Backend,
    key: &RequestKey<'_>,
    websocket: bool,
    stuck: Option<(&StickyPolicy, ServerId)>,
    request_id: RequestId,
    exclude: &[ServerId],
) -> Result<Upstream, NoUpstream> {
    let mut tried: Vec<ServerId> = exclude.to_vec();
    let attempt = Attempt {
        backend,
        websocket,
        request_id,
    };
    let mut last_error = String::new();
    if let Some((policy, id)) = stuck {
        let server = &backend.servers[id];
        let limit = if policy.respects_maxconn { server.maxconn } else { None };
        let admitted = match server.state.admin() {
            AdminState::Ready => true,
            AdminState::Drain => backend.drain_sticky,
            AdminState::Maint => false,
        };
        let guard = if server.state.is_up() && admitted {
            server.state.try_acquire(limit)
        } else {
            None
        };
        match guard {
            Some(guard) => {
                if let Some(upstream) = attempt.connect(id, guard, &mut tried, &mut last_error).await {
                    return Ok(upstream);
                }
                if !policy.redispatch {
                    return Err(NoUpstream::AllFailed(last_error));
                }
            }
            None if !policy.redispatch => return Err(NoUpstream::StuckUnavailable(server.name.clone())),
            None => {}
        }
    }
    let queue_deadline = tokio::time::Instant::now() + backend.queue_timeout;
    loop {
        let Some((id, guard)) = pick(backend, key, &tried) else {
            if !tried.is_empty() {
                return Err(NoUpstream::AllFailed(last_error));
            }
            if !only_full(backend) {
                return Err(NoUpstream::NoServer);
            }
            if !wait_for_slot(backend, key, queue_deadline).await {
                return Err(NoUpstream::QueueTimeout);
            }
            continue;
        };
        if let Some(upstream) = attempt.connect(id, guard, &mut tried, &mut last_error).await {
            return Ok(upstream);
        }
        if tried.len() > backend.retries as usize {
            return Err(NoUpstream::AllFailed(last_error));
        }
    }
}

/// One connect attempt's context.
struct Attempt<'a> {
    backend: &'a Backend,
    websocket: bool,
    request_id: RequestId,
}

impl Attempt<'_> {
    /// Connects to server `id` (holding its slot `guard`); a failure is
    /// counted, logged, and recorded in `tried` and `last_error`.
    async fn connect(
        &self,
        id: ServerId,
        guard: ActiveGuard,
        tried: &mut Vec<ServerId>,
        last_error: &mut String,
    ) -> Option<Upstream> {
        let server = &self.backend.servers[id];
        match connection_to(server, self.backend, self.websocket).await {
            Ok((sender, reused)) => Some(Upstream {
                server: id,
                guard,
                sender,
                reused,
            }),
            Err(err) => {
                *last_error = connect_failed(self.backend, server, &err, self.request_id);
                tried.push(id);
                None
            }
        }
    }
}

/// The status and reason when `request` breaks the frontend's limits
/// (hyper already refuses heads and header counts over theirs with 431).
fn over_limits<B>(request: &Request<B>, limits: &crate::snapshot::Limits) -> Option<(StatusCode, &'static str)> {
    let target_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri {
        return Some((
            StatusCode::URI_TOO_LONG,
            "the request target is longer than this frontend accepts",
        ));
    }
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(len)) = (limits.max_body, declared) {
        if len > max {
            return Some((
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this frontend accepts",
            ));
        }
    }
    None
}

/// 429 for a client over its address's handshake rate, with the whole
/// seconds until its next handshake would pass in `Retry-After`.
fn too_many_handshakes(wait: std::time::Duration, exchange: Box<Exchange>) -> Response<ResponseBody> {
    tracing::debug!(client = %exchange.log.client, "WebSocket handshake over the per-address rate: 429");
    let mut response = local_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too many WebSocket handshakes from your address: retry later",
        exchange,
        false,
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// The response for a request no server could take.
fn no_upstream_response(failure: NoUpstream, backend: &Backend, exchange: Box<Exchange>) -> Response<ResponseBody> {
    match failure {
        NoUpstream::NoServer => {
            let message = format!("no server of backend `{}` is available", backend.name);
            local_response(StatusCode::SERVICE_UNAVAILABLE, &message, exchange, false)
        }
        NoUpstream::StuckUnavailable(name) => {
            let message = format!(
                "this session is stuck to server `{name}` of backend `{}`, which is unavailable, and redispatch is off",
                backend.name
            );
            local_response(StatusCode::SERVICE_UNAVAILABLE, &message, exchange, false)
        }
        NoUpstream::QueueTimeout => {
            let message = format!(
                "every server of backend `{}` stayed at maxconn for {:?}: try again shortly",
                backend.name, backend.queue_timeout
            );
            // 1–5 s, varied per request so refused clients do not come back together.
            let retry_after = 1 + spread_of(exchange.log.request_id, 5);
            let mut response = local_response(StatusCode::SERVICE_UNAVAILABLE, &message, exchange, false);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        NoUpstream::AllFailed(cause) => {
            let message = format!(
                "no server of backend `{}` accepted the connection ({cause})",
                backend.name
            );
            local_response(StatusCode::BAD_GATEWAY, &message, exchange, false)
        }
    }
}

/// A copy of a forwarded WebSocket handshake (a GET without body) to send again.
fn replay_of(request: &Request<RequestBody>, received: Arc<AtomicU64>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty(received));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether the backend has servers that could take the request but for
/// `maxconn` (then a request may queue rather than fail).
fn only_full(backend: &Backend) -> bool {
    backend
        .servers
        .iter()
        .any(|s| s.state.is_up() && s.state.admin() == AdminState::Ready && s.state.weight() > 0 && s.maxconn.is_some())
}

/// Waits in the backend's queue until a slot frees on some server and the
/// algorithm can pick again, or `deadline` passes (false).
async fn wait_for_slot(backend: &Backend, key: &RequestKey<'_>, deadline: tokio::time::Instant) -> bool {
    /// Counts this request in `Backend::queued` while it waits.
    struct Queued<'a>(&'a std::sync::atomic::AtomicU32);
    impl Drop for Queued<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    backend.queued.fetch_add(1, Ordering::Relaxed);
    let _queued = Queued(&backend.queued);
    loop {
        // Register on every server before looking again, so no release is missed.
        let mut waits: Vec<_> = backend.servers.iter().map(|s| Box::pin(s.state.slot_freed())).collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        if backend
            .balancer
            .pick(&Candidates::new(&backend.candidates, &[]), key)
            .is_some()
        {
            return true;
        }
        if tokio::time::timeout_at(deadline, futures_util::future::select_all(waits))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// A pooled keep-alive connection to `server` (plain HTTP only), or a new one.
/// The flag says whether it came from the pool.
async fn connection_to(
    server: &Server,
    backend: &Backend,
    websocket: bool,
) -> Result<(UpstreamSender, bool), pool::ConnectError> {
    if !websocket {
        if let Some(sender) = server.state.pool.take().await {
            return Ok((sender, true));
        }
    }
    let sender = open(server, backend, websocket).await?;
    // Clears passive failures counted against the server (one atomic load when there are none).
    server.state.connect_succeeded();
    Ok((sender, false))
}

/// Counts and logs a failed connect; returns the cause for the client's error.
fn connect_failed(backend: &Backend, server: &Server, err: &pool::ConnectError, request_id: RequestId) -> String {
    server.state.connect_failures.fetch_add(1, Ordering::Relaxed);
    if let Some(health) = &backend.health {
        // Passive detection (`observe`): counts toward `fall`, may take the server out now.
        crate::health::connect_failed(&backend.name, &server.name, &server.state, health, &err.to_string());
    }
    tracing::warn!(
        request_id = %request_id,
        backend = %backend.name,
        server = %server.name,
        cause = %err,
        "connect to server failed"
    );
    format!("`{}`: {err}", server.name)
}

/// Asks the algorithm for a server and takes a slot on it; a server that
/// filled up in the meantime is skipped.
fn pick(backend: &Backend, key: &RequestKey<'_>, tried: &[ServerId]) -> Option<(ServerId, ActiveGuard)> {
    let mut excluded = tried.to_vec();
    loop {
        let id = backend
            .balancer
            .pick(&Candidates::new(&backend.candidates, &excluded), key)?;
        let server = &backend.servers[id];
        if let Some(guard) = server.state.try_acquire(server.maxconn) {
            return Some((id, guard));
        }
        excluded.push(id);
    }
}

async fn open(server: &Server, backend: &Backend, upgrades: bool) -> Result<UpstreamSender, pool::ConnectError> {
    let stream = pool::connect_stream(server.address, backend.connect_timeout, server.tls.as_ref()).await?;
    pool::handshake(stream, upgrades).await
}

/// Rewrites the client's request for the server: hop-by-hop headers out,
/// forwarding headers in, origin-form target, Host kept.
fn prepare_request(
    request: Request<Incoming>,
    frontend: &Frontend,
    context: &ConnContext,
    websocket: bool,
    sticky: Option<&StickyPolicy>,
    received: Arc<AtomicU64>,
) -> Request<RequestBody> {
    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(policy) = sticky {
        policy.rewrite_request(&mut parts.headers);
    }
    if websocket {
        set_websocket_upgrade(&mut parts.headers);
    }
    if let Some(authority) = parts.uri.authority() {
        // An absolute-form target: the server gets origin-form plus Host.
        if !parts.headers.contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        let origin = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = origin.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    add_forwarding(
        &mut parts.headers,
        &frontend.forward,
        context.client.ip(),
        context.https,
    );
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, RequestBody::new(body, received, frontend.limits.max_body))
}

/// A short plain-text response written by tether itself, naming what
/// happened and the request id (also in the access log).
fn local_response(
    status: StatusCode,
    message: &str,
    mut exchange: Box<Exchange>,
    close: bool,
) -> Response<ResponseBody> {
    let request_id = exchange.log.request_id;
    exchange.log.status = status.as_u16();
    exchange.log.error = Some(message.to_string());
    if status.is_server_error() {
        tracing::warn!(request_id = %request_id, status = status.as_u16(), cause = message, "request failed");
    }
    let body = format!(
        "{} {}: {message}\nrequest id: {request_id}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::local(Bytes::from(body), exchange));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(&request_id.to_string()) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An integer in `0..n` derived from a request id (ids are well mixed, so
/// this varies from request to request like a random number).
fn spread_of(request_id: RequestId, n: u64) -> u64 {
    request_id.as_u64() % n.max(1)
}
