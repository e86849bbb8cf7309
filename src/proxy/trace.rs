//! The data path's side of `[tracing]`: starting a request's span from what
//! the connection and the request say, and ending it with what the
//! exchange came to. Called only when `Shared::tracer` is set.

use http::header::HOST;
use http::Request;

use super::context::ConnContext;
use super::log::{HttpLog, Protocol};
use crate::route::Route;
use crate::snapshot::Frontend;
use crate::telemetry::{RequestEnd, RequestSpan, RequestStart, TraceId, Tracer};

/// Starts the span of `request`, described by `log` (its id, client and frontend).
pub(super) fn start<B>(
    tracer: &Tracer,
    context: &ConnContext,
    request: &Request<B>,
    log: &HttpLog,
) -> Box<RequestSpan> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    Box::new(tracer.request(RequestStart {
        headers: request.headers(),
        method: request.method(),
        path: request.uri().path(),
        host: host.as_ref().map(|a| a.host()),
        https: context.https,
        http2: context.protocol == Protocol::Http2,
        client: log.client,
        frontend: &log.frontend,
        request_id: &log.request_id,
    }))
}

/// Records the routing decision: the rule that matched (its index in the
/// frontend's rules; `None` for the default backend), and whether the
/// request is a WebSocket handshake.
pub(super) fn routed(span: &mut RequestSpan, frontend: &Frontend, route: Option<&Route>, websocket: bool) {
    span.set_route(route.and_then(|r| frontend.routes.iter().position(|each| std::ptr::eq(each, r))));
    if websocket {
        span.set_websocket();
    }
}

/// Ends the span with the exchange's outcome as its log line has it.
pub(super) fn finish(span: Box<RequestSpan>, log: &HttpLog, retries: u32) {
    span.end(RequestEnd {
        status: log.status,
        backend: log.backend.as_deref(),
        server: log.server.as_deref(),
        retries,
        error: log.error.as_deref(),
    });
}

/// A trace id as the access log writes it (32 hex digits, as in `traceparent`).
pub(super) fn trace_id_number(id: TraceId) -> u128 {
    u128::from_be_bytes(id.to_bytes())
}
