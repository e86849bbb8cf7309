//! Accepting client connections and serving each with hyper's HTTP/1 or
//! HTTP/2 server (ALPN `h2`, or h2c with prior knowledge), under a watchdog that applies the `client` and `http_request` timeouts
//! and the stop signals.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::client_addr::{is_trusted, read_proxy_header};
use super::conn::{ClientTimeouts, ConnActivity, ConnectionWake, Expiry, WatchedIo};
use super::context::ConnContext;
use super::error::ProxyError;
use super::http::handle;
use super::log::Protocol;
use super::wakes::Woke;
use super::{Shared, TrackerToken};
use crate::state::{FrontendConnection, FrontendState};
use crate::tls::server::Accepted;
use crate::tls::{ClientStream, ALPN_H2};

/// How long a connection that flooded resets keeps its GOAWAY in flight before it is cut.
const FLOOD_GOAWAY_GRACE: Duration = Duration::from_millis(200);

/// How long a graceful stop waits for a just-accepted connection's first request.
const FRESH_CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Accepts connections for frontend `frontend` until the graceful stop
/// begins or `removed` resolves (a reload dropped this address), counting
/// each in `accepted_count` (the worker's count).
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    frontend: Arc<str>,
    removed: impl std::future::Future<Output = ()>,
    accepted_count: Arc<AtomicU64>,
) {
    let stopping = shared.stop.graceful();
    tokio::pin!(stopping, removed);
    // Bound to one address, every connection's local address is the
    // listener's: no `getsockname` per connection (a wildcard bind asks).
    let bound = listener.local_addr().ok().filter(|addr| !addr.ip().is_unspecified());
    loop {
        let Some((state, maxconn)) = shared
            .snapshot
            .load()
            .frontend(&frontend)
            .map(|f| (f.state.clone(), f.maxconn))
        else {
            break;
        };
        // At `maxconn`, leave new connections in the kernel's backlog.
        if let Some(max) = maxconn.filter(|max| state.connections_open.load(Ordering::Acquire) >= *max) {
            if slot_or_stop(&state, max, stopping.as_mut(), removed.as_mut()).await {
                continue;
            }
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stopping => break,
            _ = &mut removed => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accepted_count.fetch_add(1, Ordering::Relaxed);
                    // Counted here, not in the task, so the next `maxconn` check sees it.
                    // Another worker may have taken the last slot since the check
                    // above: then this connection waits, accepted, for the next one.
                    let counted = loop {
                        if let Some(counted) = state.try_connection_opened(maxconn) {
                            break counted;
                        }
                        let max = maxconn.unwrap_or(u64::MAX);
                        if !slot_or_stop(&state, max, stopping.as_mut(), removed.as_mut()).await {
                            return;
                        }
                    };
                    let token = shared.open.enter();
                    let addrs = (peer, bound);
                    tokio::spawn(serve_connection(stream, addrs, shared.clone(), frontend.clone(), counted, token));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Waits until fewer than `max` connections of `state` are open: true then,
/// false if the graceful stop began or the address was removed first.
async fn slot_or_stop(
    state: &FrontendState,
    max: u64,
    stopping: impl std::future::Future<Output = ()>,
    removed: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::select! {
        biased;
        _ = stopping => false,
        _ = removed => false,
        _ = state.admission.wait_for_slot(&state.connections_open, max) => true,
    }
}

/// Serves one accepted connection from `peer` (`addrs`), whose local
/// address is the listener's when that is known (`addrs.1`, else asked).
async fn serve_connection(
    mut stream: TcpStream,
    (mut peer, local): (SocketAddr, Option<SocketAddr>),
    shared: Arc<Shared>,
    frontend: Arc<str>,
    mut counted: FrontendConnection,
    _token: TrackerToken,
) {
    let _ = stream.set_nodelay(true);
    let Some(local) = local.or_else(|| stream.local_addr().ok()) else {
        return;
    };
    // The TLS settings are those in force at accept: a reload that changes
    // certificates applies to the next connections, never to this one.
    let (client_timeout, head_timeout, body_timeout, expects_proxy_header, limits, per_ip, tls, http2) = {
        let snapshot = shared.snapshot.load();
        match snapshot.frontend(&frontend) {
            Some(f) => (
                f.client_timeout,
                f.http_request_timeout,
                f.client_body_timeout,
                f.proxy_protocol && is_trusted(&f.trusted_proxies, peer.ip()),
                f.limits,
                f.per_ip_connections,
                f.tls.as_ref().map(|t| (t.clone(), f.state.clone())),
                f.http2,
            ),
            None => return,
        }
    };
    if expects_proxy_header {
        match tokio::time::timeout(head_timeout, read_proxy_header(&mut stream)).await {
            Ok(Ok(Some(client))) => peer = client,
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::warn!(peer = %peer, cause = %err, "PROXY header refused: connection closed");
                return;
            }
            Err(_) => {
                tracing::info!(peer = %peer, "no PROXY header in time: connection closed");
                return;
            }
        }
    }
    if let Some(max) = per_ip {
        if !counted.count_for(peer.ip(), max) {
            refuse_busy_client(stream, peer, max, tls.is_none()).await;
            return;
        }
    }
    // The PROXY header (above) comes before TLS; the handshake must finish
    // within `http_request`, so a client that never completes it is closed.
    let stream = match tls {
        None => ClientStream::Plain(stream),
        Some((acceptor, counters)) => {
            let hard = shared.stop.hard();
            let started = tokio::time::Instant::now();
            let answers = shared.acme_answers.get().map(|a| &**a);
            tokio::select! {
                handshake = tokio::time::timeout(head_timeout, acceptor.accept(stream, answers)) => match handshake {
                    Ok(Ok(Accepted::Connection(tls))) => {
                        counters.tls_handshakes.observe(started.elapsed());
                        ClientStream::Tls(tls)
                    }
                    Ok(Ok(Accepted::ChallengeAnswered)) => {
                        tracing::info!(client = %peer, frontend = %frontend, "ACME TLS-ALPN-01 validation answered");
                        return;
                    }
                    Ok(Err(err)) => {
                        counters.tls_handshake_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(client = %peer, frontend = %frontend, cause = %err, "TLS handshake failed: connection closed");
                        return;
                    }
                    Err(_) => {
                        counters.tls_handshake_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(client = %peer, frontend = %frontend, timeout = ?head_timeout, "TLS handshake not finished in time: connection closed");
                        return;
                    }
                },
                _ = hard => return,
            }
        }
    };
    let protocol = match &stream {
        ClientStream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(ALPN_H2) => Protocol::Http2,
        ClientStream::Plain(tcp) if http2 => {
            let hard = shared.stop.hard();
            tokio::select! {
                sniffed = tokio::time::timeout(client_timeout, starts_with_h2_preface(tcp)) => match sniffed {
                    Ok(Ok(true)) => Protocol::Http2,
                    Ok(Ok(false)) => Protocol::Http1,
                    Ok(Err(_)) | Err(_) => return,
                },
                _ = hard => return,
            }
        }
        _ => Protocol::Http1,
    };
    let activity = Arc::new(ConnActivity::new(ClientTimeouts {
        client: client_timeout,
        http_request: head_timeout,
        client_body: body_timeout,
    }));
    let context = Arc::new(ConnContext {
        shared: shared.clone(),
        frontend,
        client: peer,
        local,
        activity: activity.clone(),
        https: stream.is_tls(),
        counted,
        protocol,
    });
    match protocol {
        Protocol::Http1 => {
            // A plain connection in a cluster answers an HTTP-01 validation
            // of another instance's order from the cluster's answers.
            let answers = shared.acme_answers.get().filter(|_| !context.https).cloned();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (context, answers) = (context.clone(), answers.clone());
                async move {
                    if let Some(answers) = answers.filter(|_| request.method() == hyper::Method::GET) {
                        crate::tls::acme::fetch_http_challenge(&*answers, request.uri().path()).await;
                    }
                    handle(context, request).await
                }
            });
            let mut builder = http1::Builder::new();
            // A head larger than the buffer, or with more fields, is answered 431 by hyper.
            // `half_close`: a client that shuts its sending side after a whole
            // request still gets the response (RFC 9112 §9.6); without it hyper
            // drops the request in flight when it reads the end of the stream.
            builder
                .keep_alive(true)
                .half_close(true)
                .writev(false)
                .max_buf_size(limits.max_request_head);
            if limits.max_headers != 100 {
                // hyper's default; any other count moves its header array to the heap.
                builder.max_headers(limits.max_headers);
            }
            let connection = builder
                .serve_connection(TokioIo::new(WatchedIo::new(stream, activity.clone())), service)
                .with_upgrades();
            tokio::pin!(connection);
            watch(
                connection,
                http1::UpgradeableConnection::graceful_shutdown,
                false,
                &shared,
                &activity,
                peer,
            )
            .await;
        }
        Protocol::Http2 => {
            if let Some(f) = shared.snapshot.load().frontend(&context.frontend) {
                f.state.http2_connections.fetch_add(1, Ordering::Relaxed);
            }
            let service = service_fn(move |request| handle(context.clone(), request));
            let connection = http2_builder(&limits)
                .serve_connection(TokioIo::new(WatchedIo::unscanned(stream, activity.clone())), service);
            tokio::pin!(connection);
            watch(
                connection,
                http2::Connection::graceful_shutdown,
                true,
                &shared,
                &activity,
                peer,
            )
            .await;
        }
    }
}

/// A client may open at most this many streams that it resets before
/// tether accepted them; beyond it the connection gets GOAWAY
/// `ENHANCE_YOUR_CALM` (the "rapid reset" attack, CVE-2023-44487; h2's
/// counter, hyper's default, set here so it stays deliberate).
pub const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// A client may make tether reset at most this many of its streams for
/// protocol errors; beyond it the connection gets GOAWAY (the
/// server-side reset variant of CVE-2023-44487; h2's default).
pub const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// hyper's HTTP/2 server as a frontend's limits set it: extended CONNECT
/// (RFC 8441) advertised, concurrent streams and header list size capped
/// (the header list size also caps CONTINUATION frames per header block,
/// h2's defence against CVE-2024-27316), reset floods answered with GOAWAY.
fn http2_builder(limits: &crate::snapshot::Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS);
    builder
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a plain client that
/// starts with it speaks h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection's first bytes are the HTTP/2 preface, read
/// without consuming them (so an HTTP/1.1 connection is served from its
/// first byte, on the socket itself). False at the end of the stream.
async fn starts_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A preface split across segments (rare): wait for the rest
        // without spinning on the bytes already there.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Serves `connection` under the watchdog: the `client`, `http_request`
/// and `client_body` timeouts of `activity` and the stop signals, each
/// polled only when it woke the task (see `wakes`). `stop` asks hyper to finish gracefully; with `eager_stop`
/// (HTTP/2, whose GOAWAY lets streams in flight finish) it is asked at
/// once, else only between requests.
async fn watch<C>(
    mut connection: std::pin::Pin<&mut C>,
    stop: fn(std::pin::Pin<&mut C>),
    eager_stop: bool,
    shared: &Shared,
    activity: &Arc<ConnActivity>,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let graceful = shared.stop.graceful();
    let hard = shared.stop.hard();
    // Armed lazily: a deadline later than the armed one is found when the
    // timer fires, so a keep-alive connection re-arms about once per
    // `http_request` timeout rather than twice per request.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(graceful, hard, timer);
    let mut armed: Option<std::time::Instant> = None;
    let connection_waker = Waker::from(Arc::new(ConnectionWake(activity.clone())));
    let watchdog_waker = Waker::from(activity.clone());
    let wakes = activity.wakes();
    let mut stop_requested: Option<std::time::Instant> = None;
    let mut stop_sent = false;
    // When a reset flood was seen: the connection is cut shortly after its
    // GOAWAY (a graceful close would wait for the flooder's PING answer).
    let mut flood_since: Option<std::time::Instant> = None;
    loop {
        if activity.resets_too_many() && flood_since.is_none() {
            tracing::warn!(client = %peer, "the client reset most of its HTTP/2 streams (rapid reset): GOAWAY, connection closed");
            flood_since = Some(std::time::Instant::now());
            if !stop_sent {
                stop_sent = true;
                stop(connection.as_mut());
                wakes.mark_connection();
            }
        }
        if let (Some(since), false) = (stop_requested, stop_sent) {
            if eager_stop
                || activity.may_stop_now()
                || (!activity.is_busy() && since.elapsed() >= FRESH_CONNECTION_GRACE)
            {
                stop_sent = true;
                stop(connection.as_mut());
                wakes.mark_connection();
            }
        }
        // A stop waiting for the connection to fall idle wants every phase change.
        let waiting_to_stop = stop_requested.is_some() && !stop_sent;
        activity.watchdog_armed(armed.filter(|_| !waiting_to_stop));
        let mut deadline = activity.deadline().map(|(at, _)| at);
        if let (Some(since), false, false) = (stop_requested, stop_sent, activity.is_busy()) {
            let stop_at = since + FRESH_CONNECTION_GRACE;
            deadline = Some(deadline.map_or(stop_at, |d| d.min(stop_at)));
        }
        if let Some(since) = flood_since {
            let cut_at = since + FLOOD_GOAWAY_GRACE;
            deadline = Some(deadline.map_or(cut_at, |d| d.min(cut_at)));
        }
        if let Some(at) = deadline.filter(|at| armed.is_none_or(|armed| at < &armed)) {
            timer.as_mut().reset(at.into());
            armed = Some(at);
            activity.watchdog_armed(armed.filter(|_| !waiting_to_stop));
            wakes.mark_watchdog();
        }
        let woke = std::future::poll_fn(|cx| {
            wakes.poll(cx, connection.as_mut(), &connection_waker, &watchdog_waker, |cx| {
                if hard.as_mut().poll(cx).is_ready() {
                    return Watchdog::Hard;
                }
                if stop_requested.is_none() && graceful.as_mut().poll(cx).is_ready() {
                    return Watchdog::Graceful;
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Watchdog::Fired;
                }
                Watchdog::Changed
            })
        })
        .await;
        match woke {
            Woke::Connection(result) => {
                if let Err(err) = result {
                    tracing::debug!(client = %peer, cause = %err, "client connection ended with an error");
                }
                break;
            }
            Woke::Watchdog(Watchdog::Hard) => break,
            Woke::Watchdog(Watchdog::Graceful) => stop_requested = Some(std::time::Instant::now()),
            Woke::Watchdog(Watchdog::Changed) => {}
            Woke::Watchdog(Watchdog::Fired) => {
                armed = None;
                if flood_since.is_some_and(|since| since.elapsed() >= FLOOD_GOAWAY_GRACE) {
                    break;
                }
                if let Some((at, why)) = activity.deadline() {
                    if at <= std::time::Instant::now() {
                        let timeouts = activity.timeouts();
                        match why {
                            Expiry::Head => {
                                tracing::info!(client = %peer, timeout = ?timeouts.http_request, "request head not received in time: connection closed")
                            }
                            Expiry::NotReading => {
                                activity.cut_for_not_reading();
                                tracing::info!(client = %peer, timeout = ?timeouts.client_body, "the client read nothing of its response in time: connection closed");
                            }
                            Expiry::Idle => {}
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// What woke a connection's watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watchdog {
    /// The hard stop began.
    Hard,
    /// The graceful stop began.
    Graceful,
    /// The armed timer fired.
    Fired,
    /// A phase change: the deadline may have moved.
    Changed,
}

/// Answers a client over its address's connection cap with a short 429 and
/// closes (a TLS frontend just closes: no handshake is spent on it). The
/// answer is best effort (at most a moment's wait to write it), so a flood
/// of such connections costs almost nothing.
async fn refuse_busy_client(mut stream: TcpStream, peer: SocketAddr, max: u32, plain: bool) {
    tracing::debug!(client = %peer, max, "connection refused: too many from this address");
    if !plain {
        return;
    }
    let reply = ProxyError::TooManyConnections.to_http1_bytes();
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(&reply)).await;
    let _ = stream.shutdown().await;
}
