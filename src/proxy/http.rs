//! One HTTP exchange, as a pipeline of small steps, each with its own
//! failure (a [`ProxyError`]): admit → route → choose (sticky, then
//! balance, in `choose`) → connect (with retries) → exchange, or upgrade
//! and hand both connections to a tunnel (`upgrade`, `handoff`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HOST, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;

use super::body::{BodyProgress, ClientBodyError, RequestBody};
use super::choose::{self, Stickiness, Upstream};
use super::context::ConnContext;
use super::error::ProxyError;
use super::exchange::{Exchange, ResponseBody};
use super::handoff::TunnelJob;
use super::headers::{add_forwarding, apply_rules, remove_hop_by_hop, set_websocket_upgrade};
use super::log::{HttpLog, Protocol, RequestId};
use super::pool::{self, ClientAddrs};
use super::upgrade::{self, Handshake};
use super::{client_addr, trace, Shared};
use crate::balance::{ip_octets_of, RequestKey};
use crate::route;
use crate::snapshot::{Backend, Frontend, Server, Snapshot};
use crate::sticky::StickyPolicy;

/// hyper's service function: forwards `request` and never fails (errors
/// become responses). On HTTP/2 a request dropped before its response head
/// (the client reset its stream) is counted against the connection (see
/// `ConnActivity::stream_cancelled`).
pub async fn handle(
    context: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let watch = (context.protocol == Protocol::Http2).then(|| CancelWatch(Some(context.activity.clone())));
    let response = respond(context, request).await;
    if let Some(mut watch) = watch {
        watch.0 = None;
    }
    response
}

/// Reports a stream whose request was dropped unanswered, unless disarmed
/// (its `Option` taken) when the response head is ready.
struct CancelWatch(Option<Arc<super::conn::ConnActivity>>);

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.stream_cancelled();
        }
    }
}

/// Forwards `request`: the steps of the module's pipeline.
async fn respond(
    context: Arc<ConnContext>,
    mut request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let index = context.activity.request_started();
    let framing_conflict = context.activity.framing_conflict_in(index);
    let host_fault = host_fault(&request);
    // Before anything reads it: routing, Origin checks, redirects, the
    // forwarding headers and the server all see this one host.
    settle_host(&mut request, context.local);
    if context.protocol == Protocol::Http2 {
        join_cookies(request.headers_mut());
    }
    let snapshot = context.shared.snapshot.load_full();
    let frontend = snapshot.frontend(&context.frontend);
    // Behind trusted proxies the client is the rightmost untrusted X-Forwarded-For hop.
    let client_ip = match frontend {
        Some(f) if !f.trusted_proxies.is_empty() => {
            client_addr::client_ip(context.client.ip(), request.headers(), &f.trusted_proxies)
        }
        _ => context.client.ip(),
    };
    let mut exchange = Box::new(Exchange::new(
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
            redact_query: snapshot.redact_query.clone(),
            access: snapshot.access_log.clone(),
            protocol: context.protocol,
            trace_id: None,
        },
        context.activity.clone(),
    ));
    if let Some(tracer) = &context.shared.tracer {
        exchange.trace = Some(trace::start(tracer, &context, &request, &exchange.log));
    }
    if let Some(f) = frontend {
        f.state.requests.fetch_add(1, Ordering::Relaxed);
        if context.protocol == Protocol::Http2 {
            f.state.http2_requests.fetch_add(1, Ordering::Relaxed);
        }
    }
    // RFC 8441: a WebSocket over HTTP/2 goes on as the HTTP/1.1 handshake
    // the server will get, so every check below sees one kind of handshake.
    if context.protocol == Protocol::Http2 {
        if let Err(refused) = upgrade::bridge_extended_connect(&mut request) {
            return Ok(ProxyError::from(refused).into_response(exchange));
        }
    }
    let frontend = match admit(&context, framing_conflict, host_fault, frontend) {
        Ok(frontend) => frontend,
        Err(refused) => return Ok(refused.into_response(exchange)),
    };
    // RFC 8555 §8.3: the CA's HTTP-01 validation, on any plain frontend,
    // answered before `redirect_https` (the CA follows no redirect to a
    // frontend that has no certificate yet).
    if !context.https {
        if let Some(key_authorization) = http01_key_authorization(&request) {
            return Ok(acme_answer(key_authorization, exchange));
        }
    }
    if let Some(port) = frontend.redirect_https {
        return Ok(match https_location(&request, port) {
            Ok(location) => redirect(location, exchange),
            Err(refused) => refused.into_response(exchange),
        });
    }
    let mut response = forward(&context, &snapshot, frontend, request, exchange).await;
    if let (true, Some(hsts)) = (context.https, &frontend.hsts) {
        response.headers_mut().insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if context.protocol == Protocol::Http2 {
        // RFC 9113 §8.2.2: no connection-specific fields; an error that
        // closes an HTTP/1.1 connection ends only its stream here.
        response.headers_mut().remove(http::header::CONNECTION);
    }
    Ok(response)
}

/// Makes `Host` name the host the request is for (RFC 9112 §3.2.2): an
/// absolute-form target's authority wins over any `Host` the client sent
/// (rewritten, not refused: the RFC tells a server to ignore `Host` then,
/// as NGINX does); an HTTP/1.0 request without `Host` gets the address the
/// client reached, so the HTTP/1.1 request forwarded has one.
fn settle_host<B>(request: &mut Request<B>, local: SocketAddr) {
    let host = match request.uri().authority() {
        // RFC 9110 §7.2: the authority without its userinfo.
        Some(authority) => HeaderValue::from_str(authority.as_str().rsplit('@').next().unwrap_or_default()).ok(),
        None if request.version() <= Version::HTTP_10 && !request.headers().contains_key(HOST) => {
            HeaderValue::from_str(&local.to_string()).ok()
        }
        None => None,
    };
    if let Some(host) = host {
        request.headers_mut().insert(HOST, host);
    }
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `Cookie` into one field per
/// cookie; an HTTP/1.1 server (and tether's own cookie reading) expects one
/// field, so they are joined with "; ".
fn join_cookies(headers: &mut http::HeaderMap) {
    use http::header::COOKIE;
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// Step 1, admit the connection's request: its head is not ambiguous (its
/// framing, its host) and its frontend is still configured.
fn admit<'s>(
    context: &ConnContext,
    framing_conflict: bool,
    host_fault: Option<&'static str>,
    frontend: Option<&'s Frontend>,
) -> Result<&'s Frontend, ProxyError> {
    if framing_conflict {
        tracing::info!(client = %context.client, "request with both Content-Length and Transfer-Encoding refused");
        return Err(ProxyError::FramingConflict);
    }
    if let Some(fault) = host_fault {
        tracing::info!(client = %context.client, "request refused: {fault}");
        return Err(ProxyError::BadHost(fault));
    }
    frontend.ok_or(ProxyError::FrontendGone)
}

/// RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without
/// `Host` (one in absolute form names its host in the target) and to any
/// request with more than one `Host`; forwarded, either would leave the
/// server and tether's routing to guess the host.
fn host_fault<B>(request: &Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("the request has more than one Host header"),
        (None, None) if request.version() == Version::HTTP_11 && request.uri().authority().is_none() => {
            Some("an HTTP/1.1 request must have a Host header")
        }
        _ => None,
    }
}

/// The key authorization for a `GET /.well-known/acme-challenge/{token}`
/// whose token is under validation (RFC 8555 §8.3).
fn http01_key_authorization<B>(request: &Request<B>) -> Option<String> {
    if request.method() != http::Method::GET {
        return None;
    }
    let token = request.uri().path().strip_prefix("/.well-known/acme-challenge/")?;
    crate::tls::acme::http_challenge(token)
}

/// 200 with the key authorization as the body (`application/octet-stream`).
fn acme_answer(key_authorization: String, mut exchange: Box<Exchange>) -> Response<ResponseBody> {
    exchange.log.status = StatusCode::OK.as_u16();
    let mut response = Response::new(ResponseBody::local(Bytes::from(key_authorization), exchange));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `redirect_https`: the same host, path and query over https, on `port`
/// when it is not 443.
fn https_location<B>(request: &Request<B>, port: Option<u16>) -> Result<HeaderValue, ProxyError> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .ok_or(ProxyError::NoHostToRedirect)?;
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match port {
        Some(port) if port != 443 => format!("https://{}:{port}{target}", host.host()),
        _ => format!("https://{}{target}", host.host()),
    };
    HeaderValue::from_str(&location).map_err(|_| ProxyError::Unredirectable)
}

/// 308 Permanent Redirect (RFC 9110 §15.4.9, which keeps the method and
/// body, unlike 301) to `location`.
fn redirect(location: HeaderValue, mut exchange: Box<Exchange>) -> Response<ResponseBody> {
    exchange.log.status = StatusCode::PERMANENT_REDIRECT.as_u16();
    let mut response = Response::new(ResponseBody::local(Bytes::new(), exchange));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
}

/// What the server answered, ready for the client except for its body.
enum Answer {
    /// A response whose body streams from the server, which may pause it
    /// at most this long (the backend's `server_body`).
    Relayed(http::response::Parts, Incoming, std::time::Duration),
    /// A 101: both connections now belong to a tunnel task.
    Switched(http::response::Parts),
}

/// Runs the request through the pipeline and turns its outcome into the
/// client's response (the exchange goes with the body, which finishes it).
async fn forward(
    context: &ConnContext,
    snapshot: &Snapshot,
    frontend: &Frontend,
    request: Request<Incoming>,
    mut exchange: Box<Exchange>,
) -> Response<ResponseBody> {
    match pipeline(context, snapshot, frontend, request, &mut exchange).await {
        Ok(Answer::Relayed(parts, body, stall)) => {
            Response::from_parts(parts, ResponseBody::upstream(body, stall, exchange))
        }
        Ok(Answer::Switched(parts)) => Response::from_parts(parts, ResponseBody::local(Bytes::new(), exchange)),
        Err(failure) => failure.into_response(exchange),
    }
}

/// The steps after admission: check the request, route it, choose and
/// connect a server, send, and relay or switch protocols.
async fn pipeline(
    context: &ConnContext,
    snapshot: &Snapshot,
    frontend: &Frontend,
    mut request: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Answer, ProxyError> {
    let websocket = check_request(frontend, &request, exchange.log.client)? == Handshake::WebSocket;
    let (backend, route) = route_request(snapshot, frontend, &request, websocket, &exchange.log)?;
    if let Some(span) = &mut exchange.trace {
        trace::routed(span, frontend, route, websocket);
    }
    // A WebSocket on an HTTP/2 stream counts as a connection of its own.
    let counted = match (websocket, context.protocol) {
        (true, Protocol::Http2) => Some(
            context
                .counted
                .try_another(frontend.maxconn, frontend.per_ip_connections)
                .ok_or(ProxyError::TooManyConnections)?,
        ),
        _ => None,
    };
    exchange.log.backend = Some(backend.name.clone());
    let client_ip = ip_octets_of(exchange.log.client.ip());
    let key = RequestKey {
        hash_input: backend.key_source.extract(&request, client_ip.as_slice()),
    };
    let sticky = Stickiness::of(backend, &request).await;
    let whom = ClientAddrs {
        client: exchange.log.client,
        reached: context.local,
    };
    let upstream = choose::connect(
        backend,
        &key,
        websocket,
        whom,
        sticky.as_ref(),
        exchange.log.request_id,
        &context.shared,
    )
    .await?;
    exchange.retries += upstream.retries;
    served_by(exchange, &backend.servers[upstream.server]);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let accept = websocket.then(|| upgrade::expected_accept(&request));
    let policy = sticky.as_ref().map(|s| s.policy);
    let progress = Arc::new(BodyProgress::default());
    exchange.request_progress = Some(progress.clone());
    let mut request = prepare_request(
        request,
        frontend,
        context,
        websocket,
        policy,
        (exchange.log.bytes_in.clone(), progress),
    );
    if let Some(span) = &exchange.trace {
        span.propagate(request.headers_mut());
    }
    // The operator's rules come last, so they may override tether's own forwarding headers.
    apply_rules(
        request.headers_mut(),
        &backend.request_headers,
        route.map(|r| &r.request_headers),
    );
    let (upstream, mut response) = send(backend, upstream, whom, request, websocket, exchange, &context.shared).await?;
    exchange.log.status = response.status().as_u16();
    *response.version_mut() = Version::HTTP_11;
    let server = &backend.servers[upstream.server];
    if !websocket {
        server.state.first_byte_times.observe(exchange.log.started.elapsed());
    }
    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, response.status()) {
        // A 101 that does not answer the handshake: the client would fail
        // it (RFC 6455 §4.1), so no tunnel; the server's connection drops.
        upgrade::check_switch(response.headers(), accept.as_deref().unwrap_or_default()).map_err(|cause| {
            ProxyError::BadSwitch {
                server: server.name.clone(),
                cause,
            }
        })?;
        let (mut parts, server_upgrade) = upgrade::switch_protocols(response);
        let stick = sticky
            .as_ref()
            .and_then(|sticky| sticky.on_switch(&mut parts.headers, upstream.server, &server.name, context.https));
        apply_rules(
            &mut parts.headers,
            &backend.response_headers,
            route.map(|r| &r.response_headers),
        );
        match context.protocol {
            // The whole connection becomes the tunnel.
            Protocol::Http1 => {
                exchange.upgraded = true;
                frontend.state.websockets_http1.fetch_add(1, Ordering::Relaxed);
            }
            // Only this stream does; the tunnel holds it (`TunnelJob`).
            Protocol::Http2 => {
                upgrade::answer_over_http2(&mut parts);
                exchange.log.status = parts.status.as_u16();
                frontend.state.websockets_http2.fetch_add(1, Ordering::Relaxed);
            }
        }
        let tunnel = TunnelJob::new(
            context,
            frontend,
            backend,
            (server, upstream.guard, upstream.moved),
            &exchange.log,
            stick,
            counted,
        )
        .traced(exchange.trace.as_deref())
        .carried_by(snapshot.tunnel_engine);
        upgrade::start_tunnel(tunnel, client_upgrade, server_upgrade);
        server.state.handshake_times.observe(exchange.log.started.elapsed());
        return Ok(Answer::Switched(parts));
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(sticky) = &sticky {
        exchange.learner = sticky.on_response(&mut parts.headers, upstream.server, &server.name, context.https);
    }
    apply_rules(
        &mut parts.headers,
        &backend.response_headers,
        route.map(|r| &r.response_headers),
    );
    exchange.guard = Some(upstream.guard);
    if let Some(pool) = upstream.pool {
        exchange.keep_alive = Some((upstream.sender, pool));
    }
    Ok(Answer::Relayed(parts, body, backend.server_body_timeout))
}

/// Step 2, check the request against the frontend: a well-formed handshake
/// if it is one, within the size limits, and within the address's
/// handshake rate. Says whether it is a WebSocket handshake.
fn check_request<B>(frontend: &Frontend, request: &Request<B>, client: SocketAddr) -> Result<Handshake, ProxyError> {
    let handshake = upgrade::classify(request)?;
    within_limits(request, &frontend.limits)?;
    if let (Handshake::WebSocket, Some(rate)) = (handshake, frontend.per_ip_rate) {
        frontend
            .state
            .admission
            .try_handshake(client.ip(), rate)
            .map_err(|wait| {
                tracing::debug!(client = %client, "WebSocket handshake over the per-address rate: 429");
                ProxyError::HandshakeRate { wait }
            })?;
    }
    Ok(handshake)
}

/// Refuses a request over the frontend's limits (hyper already refuses
/// heads and header counts over theirs with 431).
fn within_limits<B>(request: &Request<B>, limits: &crate::snapshot::Limits) -> Result<(), ProxyError> {
    let target_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri {
        return Err(ProxyError::TargetTooLong);
    }
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match (limits.max_body, declared) {
        (Some(max), Some(len)) if len > max => Err(ProxyError::DeclaredBodyTooLarge),
        _ => Ok(()),
    }
}

/// Step 3, route: the backend of the first matching rule (or the default)
/// with that rule, and for a WebSocket handshake an `Origin` that rule allows.
fn route_request<'s, 'f, B>(
    snapshot: &'s Snapshot,
    frontend: &'f Frontend,
    request: &Request<B>,
    websocket: bool,
    log: &HttpLog,
) -> Result<(&'s Backend, Option<&'f crate::route::Route>), ProxyError> {
    let (backend_id, matched) =
        route::select(&frontend.routes, frontend.default_backend, request).ok_or(ProxyError::NoRoute)?;
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
                request_id = %log.request_id,
                client = %log.client,
                origin = origin.unwrap_or("-"),
                "WebSocket handshake from an origin that is not allowed"
            );
            return Err(ProxyError::OriginNotAllowed);
        }
    }
    Ok((&snapshot.backends[backend_id], matched))
}

/// Records `server` as the one serving the exchange (its counters move when the exchange ends).
fn served_by(exchange: &mut Exchange, server: &Server) {
    exchange.log.server = Some(server.name.clone());
    exchange.server_state = Some(server.state.clone());
}

/// What to try after a request could not be sent.
#[derive(Debug, PartialEq, Eq)]
enum Retry<R> {
    /// The pooled connection was closed under an unsent request: send it on a fresh one.
    Reconnect(R),
    /// A WebSocket handshake was dropped unanswered: send its copy to another server.
    Replay(R),
}

/// Decides the next try, if any, from whether the connection came from
/// the pool, the request if hyper handed it back unsent, and the
/// handshake's copy (taken when used, so a handshake is replayed once).
fn next_try<R>(reused: bool, unsent: Option<R>, replay: &mut Option<R>) -> Option<Retry<R>> {
    match (reused, unsent) {
        (true, Some(request)) => Some(Retry::Reconnect(request)),
        _ => replay.take().map(Retry::Replay),
    }
}

/// Step 5, the exchange: sends `request` on `upstream` within the backend's
/// `server` timeout, once more on a fresh connection when a pooled one was
/// closed under it, and for a WebSocket handshake the server dropped
/// unanswered (it died mid-handshake) once more to another server.
async fn send(
    backend: &Backend,
    mut upstream: Upstream,
    whom: ClientAddrs,
    mut request: Request<RequestBody>,
    websocket: bool,
    exchange: &mut Exchange,
    shared: &Shared,
) -> Result<(Upstream, Response<Incoming>), ProxyError> {
    // A WebSocket handshake is a GET without a body: it can be sent again.
    let mut replay = websocket.then(|| replay_of(&request, exchange.log.bytes_in.clone()));
    loop {
        let server = &backend.servers[upstream.server];
        let sent = upstream.sender.try_send_request(request);
        let answered = match upstream.connection.take() {
            // A handshake's connection runs here until the response head.
            Some(connection) => match tokio::time::timeout(backend.server_timeout, pool::along(connection, sent)).await
            {
                Ok((answer, rest)) => {
                    // What is left (a refusal's body) streams from a task of its own.
                    if let Some(rest) = rest {
                        pool::run_apart(rest);
                    }
                    Ok(answer)
                }
                Err(elapsed) => Err(elapsed),
            },
            None => tokio::time::timeout(backend.server_timeout, sent).await,
        };
        let failed = match answered {
            Err(_) => {
                return Err(ProxyError::ServerTimeout {
                    server: server.name.clone(),
                    timeout: backend.server_timeout,
                })
            }
            Ok(Ok(response)) => return Ok((upstream, response)),
            Ok(Err(failed)) => failed,
        };
        match after_failure(failed, upstream.reused, &mut replay, server, exchange.log.request_id)? {
            // Both retries are rare: their connect futures (a TLS handshake
            // among them) are boxed so every request's future stays small.
            Retry::Reconnect(again) => {
                (upstream.sender, upstream.connection) = Box::pin(choose::open(server, backend, websocket, whom))
                    .await
                    .map_err(|cause| ProxyError::Unreachable {
                        server: server.name.clone(),
                        cause: Box::new(cause),
                    })?;
                upstream.reused = false;
                exchange.retries += 1;
                request = again;
            }
            Retry::Replay(again) => {
                upstream = Box::pin(choose::connect_elsewhere(
                    backend,
                    upstream.server,
                    whom,
                    exchange.log.request_id,
                    shared,
                ))
                .await?;
                exchange.retries += 1 + upstream.retries;
                served_by(exchange, &backend.servers[upstream.server]);
                request = again;
            }
        }
    }
}

/// Takes a failed send apart (before any await, so the future does not
/// hold it): the next try, or the error for the client.
fn after_failure(
    mut failed: TrySendError<Request<RequestBody>>,
    reused: bool,
    replay: &mut Option<Request<RequestBody>>,
    server: &Server,
    request_id: RequestId,
) -> Result<Retry<Request<RequestBody>>, ProxyError> {
    match next_try(reused, failed.take_message(), replay) {
        None => Err(send_failed(failed, server)),
        Some(Retry::Replay(again)) => {
            tracing::warn!(
                request_id = %request_id,
                server = %server.name,
                cause = %failed.error(),
                "server dropped the handshake unanswered: trying another server"
            );
            Ok(Retry::Replay(again))
        }
        Some(reconnect) => Ok(reconnect),
    }
}

/// The error for a request that could not be sent: the client's own body
/// at fault (the server saw a cut-off body and its connection is dropped),
/// else the server's failure.
fn send_failed(failed: TrySendError<Request<RequestBody>>, server: &Server) -> ProxyError {
    if let Some(fault) = ClientBodyError::behind(failed.error()) {
        return ProxyError::from(fault);
    }
    ProxyError::ServerFailed {
        server: server.name.clone(),
        cause: failed.into_error(),
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

/// Rewrites the client's request for the server: hop-by-hop headers out,
/// forwarding headers in, origin-form target, Host kept (as `settle_host` left it).
fn prepare_request(
    request: Request<Incoming>,
    frontend: &Frontend,
    context: &ConnContext,
    websocket: bool,
    sticky: Option<&StickyPolicy>,
    (received, progress): (Arc<AtomicU64>, Arc<BodyProgress>),
) -> Request<RequestBody> {
    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(policy) = sticky {
        policy.rewrite_request(&mut parts.headers);
    }
    if websocket {
        set_websocket_upgrade(&mut parts.headers);
    }
    if parts.uri.authority().is_some() {
        // An absolute-form target: the server gets origin-form (`Host`
        // already names the authority, see `settle_host`).
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
    let body = RequestBody::new(
        body,
        received,
        frontend.limits.max_body,
        frontend.client_body_timeout,
        progress,
    );
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsent_request_on_a_pooled_connection_goes_on_a_fresh_one() {
        let mut replay = None;
        assert_eq!(next_try(true, Some("req"), &mut replay), Some(Retry::Reconnect("req")));
    }

    #[test]
    fn a_fresh_connection_is_not_retried() {
        let mut replay = None;
        assert_eq!(next_try(false, Some("req"), &mut replay), None);
        assert_eq!(next_try::<&str>(true, None, &mut replay), None);
    }

    #[test]
    fn a_dropped_handshake_is_replayed_once() {
        let mut replay = Some("copy");
        assert_eq!(next_try(false, None, &mut replay), Some(Retry::Replay("copy")));
        assert_eq!(next_try(false, None, &mut replay), None);
    }

    #[test]
    fn a_reconnect_keeps_the_handshake_copy() {
        let mut replay = Some("copy");
        assert_eq!(next_try(true, Some("req"), &mut replay), Some(Retry::Reconnect("req")));
        assert_eq!(replay, Some("copy"));
    }

    fn limits(max_uri: usize, max_body: Option<u64>) -> crate::snapshot::Limits {
        crate::snapshot::Limits {
            max_request_head: 8192,
            max_headers: 100,
            max_uri,
            max_body,
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 32768,
        }
    }

    #[test]
    fn a_target_over_max_uri_is_414() {
        let request = Request::get("/0123456789").body(()).unwrap();
        assert!(matches!(
            within_limits(&request, &limits(5, None)),
            Err(ProxyError::TargetTooLong)
        ));
        assert!(within_limits(&request, &limits(11, None)).is_ok());
    }

    #[test]
    fn a_declared_body_over_max_body_is_413() {
        let request = Request::post("/").header("content-length", "10").body(()).unwrap();
        assert!(matches!(
            within_limits(&request, &limits(100, Some(9))),
            Err(ProxyError::DeclaredBodyTooLarge)
        ));
        assert!(within_limits(&request, &limits(100, Some(10))).is_ok());
    }

    #[test]
    fn https_location_keeps_host_path_and_query_and_names_a_non_default_port() {
        let request = Request::get("/a?b=1")
            .header("host", "example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(https_location(&request, None).unwrap(), "https://example.com/a?b=1");
        assert_eq!(
            https_location(&request, Some(443)).unwrap(),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            https_location(&request, Some(8443)).unwrap(),
            "https://example.com:8443/a?b=1"
        );
    }

    #[test]
    fn an_absolute_target_names_the_host_whatever_host_says() {
        let local: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        let mut request = Request::get("http://user:pw@public.example:81/x")
            .header("host", "internal.example")
            .body(())
            .unwrap();
        settle_host(&mut request, local);
        assert_eq!(request.headers()["host"], "public.example:81");
        let mut request = Request::get("/x").header("host", "a.example").body(()).unwrap();
        settle_host(&mut request, local);
        assert_eq!(request.headers()["host"], "a.example", "origin-form keeps its Host");
    }

    #[test]
    fn an_http10_request_without_host_gets_the_address_reached() {
        let local: SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
        let mut request = Request::get("/x").version(Version::HTTP_10).body(()).unwrap();
        settle_host(&mut request, local);
        assert_eq!(request.headers()["host"], "[2001:db8::1]:8080");
    }

    #[test]
    fn https_location_needs_a_host() {
        let request = Request::get("/").body(()).unwrap();
        assert!(matches!(
            https_location(&request, None),
            Err(ProxyError::NoHostToRedirect)
        ));
    }
}
